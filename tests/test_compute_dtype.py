"""`compute_dtype=bfloat16`: the forward passes under torch.autocast in bfloat16 over float32 weights, on the real
pretrained SmolLM2-135M-Instruct (the real dtype path: its real weights, CPU autocast), against float32.

Tolerance, stated: on a 480-token worked answer, token log-probs differ by 0.0125 on average (0.19 at most) and
10-token means — the size of a short sentence, what DAS compares against β = 0.1 in probability — by at most 0.042
(measured on this machine); the test allows 0.03 and 0.1."""

from __future__ import annotations

import pytest
import torch

from dasd.models.loading import ModelConfig, compute_context, load_model
from dasd.scoring.token_scorers import ModelScorer, ScoringItem

TEXT = (
    "<|im_start|>user\nWhat is 17 * 23 + 4?<|im_end|>\n<|im_start|>assistant\n<think>\n"
    "First I multiply 17 by 23. 17 times 20 is 340, and 17 times 3 is 51, so 17 * 23 = 391. "
    "Then I add 4 to 391, which gives 395. Let me check: 23 * 17 = 23 * 10 + 23 * 7 = 230 + 161 = 391. "
    "Adding 4 gives 395.\n</think>\n\nThe answer is 395.<|im_end|>\n"
) * 3


@pytest.mark.slow
def test_bfloat16_autocast_scores_within_the_stated_tolerance_of_float32():
    model, tokenizer, _ = load_model(ModelConfig(model="smollm2", device="cpu", compute_dtype="bfloat16"))
    assert next(model.parameters()).dtype == torch.float32  # master weights stay float32
    ids = tokenizer(TEXT)["input_ids"]
    items = [ScoringItem(key=0, input_ids=ids, first_scored=20)]
    scorer = ModelScorer(model, tokens_per_batch=4096, pack=False)
    seen = []
    hook = model.get_output_embeddings().register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    bf16 = torch.tensor(scorer.score(items)[0])
    assert seen and all(dtype == torch.bfloat16 for dtype in seen)  # the LM head really ran in bfloat16
    del model.dasd_compute_dtype
    seen.clear()
    fp32 = torch.tensor(scorer.score(items)[0])
    hook.remove()
    assert seen and all(dtype == torch.float32 for dtype in seen)
    difference = (bf16 - fp32).abs()
    sentence_like = (bf16 - fp32).unfold(0, 10, 10).mean(dim=1).abs()
    assert 0 < difference.mean().item() < 0.03
    assert sentence_like.max().item() < 0.1


def test_without_compute_dtype_nothing_is_autocast():
    layer = torch.nn.Linear(4, 4)
    with compute_context(layer):
        assert layer(torch.ones(1, 4)).dtype == torch.float32
    layer.dasd_compute_dtype = torch.bfloat16
    with compute_context(layer):
        assert layer(torch.ones(1, 4)).dtype == torch.bfloat16
