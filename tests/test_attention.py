"""dasd_packed attention: packed rows scored and trained exactly as one sample at a time, on the real
Qwen3 architecture (tiny, random-init), in float32 and in the bf16 path a GPU run uses."""

from __future__ import annotations

import pytest
import torch

from dasd.models.attention import PACKED, register, sample_bounds
from dasd.scoring.token_scorers import ModelScorer, ScoringItem, plan_batches


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
    single = ModelScorer(_model(tiny_qwen3, "sdpa", dtype), tokens_per_batch=1, pack=False).score(items)
    packed_model = _model(tiny_qwen3, PACKED, dtype)
    packed = ModelScorer(packed_model, tokens_per_batch=200, pack=True).score(items)
    assert all(len(packed[item.key]) == item.length - item.first_scored for item in items)
    assert _worst(packed, single) < tolerance
    if dtype == torch.float32:
        # a sample's scores do not move when its neighbours in the row change (no attention across samples)
        again = ModelScorer(packed_model, tokens_per_batch=200, pack=True).score(
            [items[0], items[3], *_items([20, 20, 20, 20], seed=1)]
        )
        assert max(abs(a - b) for a, b in zip(again[3], single[3])) < tolerance


def test_packed_attention_is_the_masked_attention_exactly_in_float32(tiny_qwen3):
    """Against transformers' own block-diagonal SDPA mask on the same packed rows: the same numbers."""
    items = _items([40, 17, 88, 5, 60, 33])
    masked = ModelScorer(_model(tiny_qwen3, "sdpa"), tokens_per_batch=256, pack=True).score(items)
    packed = ModelScorer(_model(tiny_qwen3, PACKED), tokens_per_batch=256, pack=True).score(items)
    assert _worst(packed, masked) < 1e-5


def test_padding_free_training_gradients_match_the_masked_path(tiny_qwen3):
    """One padding-free row of three samples: loss and every gradient as with SDPA's block-diagonal mask."""
    from dasd.training.sft import PaddingFreeCollator

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
    single = ModelScorer(single_model, tokens_per_batch=1, pack=False).score(items)
    packed_model = _model(tiny_qwen3, PACKED, torch.bfloat16).to("cuda")
    packed = ModelScorer(packed_model, tokens_per_batch=200, pack=True).score(items)
    assert _worst(packed, single) < 0.1


def _tiny(config_class, **overrides):
    """A real transformers model class, tiny and random-init, under dasd_packed."""
    from transformers import AutoModelForCausalLM

    register()
    shape = dict(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
    )
    config = config_class(**{**shape, **overrides})
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, attn_implementation=PACKED).eval(), config


def _packed_row(lengths):
    ids = torch.randint(10, 500, (1, sum(lengths)), generator=torch.Generator().manual_seed(1))
    positions = torch.cat([torch.arange(n) for n in lengths]).unsqueeze(0)
    return {"input_ids": ids, "position_ids": positions, "use_cache": False}


@pytest.mark.parametrize(
    "name, overrides, refusal",
    [
        ("GptOssConfig", {"num_local_experts": 4, "num_experts_per_tok": 2, "sliding_window": 64}, "attention sinks"),
        ("Gemma2Config", {"sliding_window": 64}, "soft-capping"),
        ("MistralConfig", {"sliding_window": 8}, "longer than this model's 8-token window"),
        (
            "Qwen3Config",
            {"use_sliding_window": True, "sliding_window": 8, "layer_types": ["sliding_attention"] * 2},
            "8-token window",
        ),
    ],
)
def test_attention_features_it_cannot_compute_are_refused_not_dropped(name, overrides, refusal):
    """transformers passes sinks, soft-capping and sliding windows as keyword arguments: dasd_packed must refuse a
    model that has them (one line) instead of running plain causal attention, and `auto` must not pick it."""
    import transformers

    from dasd.models.attention import packed_attention, unsupported_features

    model, config = _tiny(getattr(transformers, name), **overrides)
    with pytest.raises(ValueError, match=refusal):
        model(**_packed_row([20, 6]))
    assert unsupported_features(config) and packed_attention("cpu", config) is None


def test_a_sliding_window_no_sample_reaches_is_exact():
    """Samples no longer than the window attend to every earlier token under it too: the same numbers as
    transformers' own sliding-window mask (sdpa) on the packed row, and no refusal."""
    from transformers import MistralConfig

    model, _ = _tiny(MistralConfig, sliding_window=16)
    batch = _packed_row([16, 9, 12])
    with torch.no_grad():
        packed = model(**batch).logits
        model.set_attn_implementation("sdpa")
        masked = model(**batch).logits
    assert (packed - masked).abs().max().item() < 1e-5


def test_auto_picks_dasd_packed_for_a_plain_causal_model():
    from transformers import Qwen3Config

    from dasd.models.attention import packed_attention, unsupported_features

    assert unsupported_features(Qwen3Config()) == [] and packed_attention("cpu", Qwen3Config()) == PACKED
