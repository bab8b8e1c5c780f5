"""The hf backend's seeded sampler draws from the right distribution (temperature, top-k, top-p)."""

from __future__ import annotations

import math

import pytest
import torch

from dasd.backends.base import GenerationRequest
from dasd.backends.hf import SeededSampler, seeded_uniform

LOGITS = torch.tensor([2.0, 1.5, 1.0, 0.0, -1.0, -3.0])


def _draw(rows: int, **sampling) -> torch.Tensor:
    requests = [
        GenerationRequest(id=str(i), messages=[], seed=1000 + i, **{"temperature": 1.0, **sampling})
        for i in range(rows)
    ]
    sampler = SeededSampler(requests, "cpu")
    sampler(None, LOGITS.expand(rows, -1).clone())
    return sampler.step_tokens[0]


def _expected(temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    probs = torch.softmax(LOGITS / temperature, dim=-1)
    keep = torch.ones_like(probs, dtype=torch.bool)
    order = torch.argsort(probs, descending=True)
    if top_k:
        keep[order[top_k:]] = False
    if top_p < 1.0:
        cumulative = 0.0
        for index in order.tolist():
            if cumulative > top_p:
                keep[index] = False
            cumulative += probs[index].item()
    probs = probs * keep
    return probs / probs.sum()


@pytest.mark.parametrize(
    "sampling",
    [
        {"temperature": 1.0},
        {"temperature": 0.6},
        {"temperature": 1.0, "top_k": 2},
        {"temperature": 1.0, "top_p": 0.7},
        {"temperature": 0.6, "top_k": 4, "top_p": 0.9},
    ],
)
def test_draw_frequencies_match_the_warped_distribution(sampling):
    rows = 40_000
    counts = torch.bincount(_draw(rows, **sampling), minlength=len(LOGITS)).double() / rows
    expected = _expected(**sampling).double()
    for observed, probability in zip(counts.tolist(), expected.tolist()):
        sigma = math.sqrt(max(probability * (1 - probability), 1e-12) / rows)
        assert abs(observed - probability) <= 5 * sigma + 1e-9, (sampling, counts, expected)


def test_greedy_rows_take_the_argmax():
    assert set(_draw(50, temperature=0.0).tolist()) == {0}


def test_uniforms_depend_only_on_seed_and_step():
    seeds = torch.tensor([7, 8, 9], dtype=torch.int64)
    full = seeded_uniform(seeds, step=3)
    assert torch.equal(full[1:2], seeded_uniform(seeds[1:2], step=3))
    assert len(set(full.tolist())) == 3
    assert not torch.equal(seeded_uniform(seeds, step=4), full)
    sample = seeded_uniform(torch.arange(100_000, dtype=torch.int64), step=0)
    assert 0 < sample.min().item() and sample.max().item() < 1
    assert abs(sample.mean().item() - 0.5) < 0.005 and abs(sample.var().item() - 1 / 12) < 0.002
    # neighbouring seeds and steps are not correlated
    next_step = seeded_uniform(torch.arange(100_000, dtype=torch.int64), step=1)
    assert abs(torch.corrcoef(torch.stack([sample, next_step]))[0, 1].item()) < 0.02
