"""dasd_packed attention: packed rows scored and trained exactly as one sample at a time, on the real
Qwen3 architecture (tiny, random-init), in float32 and in the bf16 path a GPU run uses."""

from __future__ import annotations

import pytest
import torch

from dasd.attention import PACKED, register, sample_bounds
from dasd.scoring import ScoringItem, StudentScorer, plan_batches


def _model(path, attention: str, dtype=torch.float32):
    from transformers import AutoModelForCausalLM

    if attention == PACKED:
        register()
    return AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, attn_implementation=attention).eval()


def _items(lengths, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [
        ScoringItem(
            key=i, input_ids=torch.randint(10, 5000, (n,), generator=generator).tolist(), first_scored=max(1, n // 3)
        )
        for i, n in enumerate(lengths)
    ]


def _worst(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(abs(x - y) for key in a for x, y in zip(a[key], b[key], strict=True))


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 0.1)])
def test_packed_rows_score_like_one_sample_per_forward(tiny_qwen3, dtype, tolerance):
    items = _items([5, 37, 12, 64, 3, 90, 21, 48, 7, 30, 1, 2])
    assert any(len(row) > 1 for rows in plan_batches(items, 200) for row in rows), "the plan must actually pack"
    single = StudentScorer(_model(tiny_qwen3, "sdpa", dtype), tokens_per_batch=1, pack=False).score(items)
    packed_model = _model(tiny_qwen3, PACKED, dtype)
    packed = StudentScorer(packed_model, tokens_per_batch=200, pack=True).score(items)
    assert all(len(packed[item.key]) == item.length - item.first_scored for item in items)
    assert _worst(packed, single) < tolerance
    if dtype == torch.float32:
        # a sample's scores do not move when its neighbours in the row change (no attention across samples)
        again = StudentScorer(packed_model, tokens_per_batch=200, pack=True).score(
            [items[0], items[3], *_items([20, 20, 20, 20], seed=1)]
        )
        assert max(abs(a - b) for a, b in zip(again[3], single[3])) < tolerance


def test_packed_attention_is_the_masked_attention_exactly_in_float32(tiny_qwen3):
    """Against transformers' own block-diagonal SDPA mask on the same packed rows: the same numbers."""
    items = _items([40, 17, 88, 5, 60, 33])
    masked = StudentScorer(_model(tiny_qwen3, "sdpa"), tokens_per_batch=256, pack=True).score(items)
    packed = StudentScorer(_model(tiny_qwen3, PACKED), tokens_per_batch=256, pack=True).score(items)
    assert _worst(packed, masked) < 1e-5


def test_padding_free_training_gradients_match_the_masked_path(tiny_qwen3):
    """One padding-free row of three samples: loss and every gradient as with SDPA's block-diagonal mask."""
    from dasd.training import PaddingFreeCollator

    generator = torch.Generator().manual_seed(0)
    examples = []
    for length in (30, 11, 52):
        ids = torch.randint(10, 5000, (length,), generator=generator).tolist()
        examples.append({"input_ids": ids, "labels": [-100] * 3 + ids[3:]})
    # dasd's collator makes one padding-free row: position_ids restart per sample, no attention mask
    batch = PaddingFreeCollator(pad_token_id=0, padding_free=True)(examples)
    assert "attention_mask" not in batch and batch["input_ids"].shape == (1, 93)
    results = []
    for attention in ("sdpa", PACKED):
        model = _model(tiny_qwen3, attention).train()
        loss = model(**batch, use_cache=False).loss
        loss.backward()
        results.append((loss.item(), {name: p.grad.clone() for name, p in model.named_parameters()}))
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert abs(loss_a - loss_b) < 1e-5
    assert max((grads_a[name] - grads_b[name]).abs().max().item() for name in grads_a) < 1e-5


def test_packed_attention_refuses_what_it_cannot_do_rightly(tiny_qwen3):
    model = _model(tiny_qwen3, PACKED)
    ids = torch.tensor([[11, 12, 13, 14]])
    with pytest.raises(ValueError, match="without padding masks"):
        model(input_ids=ids, attention_mask=torch.tensor([[0, 1, 1, 1]]), use_cache=False)
    with pytest.raises(ValueError, match="KV cache"):
        model.generate(ids, max_new_tokens=2, do_sample=False)


def test_sample_bounds_from_position_ids():
    assert sample_bounds(torch.tensor([[0, 1, 0, 1, 2, 0]])) == [[(0, 2), (2, 5), (5, 6)]]
    assert sample_bounds(torch.tensor([[5, 6, 0, 1]])) == [[(0, 2), (2, 4)]]  # a row that starts mid-sample


@pytest.mark.gpu
def test_varlen_kernel_on_the_gpu_scores_like_one_sample_per_forward(tiny_qwen3):
    """On CUDA dasd_packed runs PyTorch's varlen flash kernel (bf16): same log-probs as SDPA per sample."""
    items = _items([5, 37, 12, 64, 3, 90, 21, 48, 7, 30, 1, 2])
    single_model = _model(tiny_qwen3, "sdpa", torch.bfloat16).to("cuda")
    single = StudentScorer(single_model, tokens_per_batch=1, pack=False).score(items)
    packed_model = _model(tiny_qwen3, PACKED, torch.bfloat16).to("cuda")
    packed = StudentScorer(packed_model, tokens_per_batch=200, pack=True).score(items)
    assert _worst(packed, single) < 0.1
