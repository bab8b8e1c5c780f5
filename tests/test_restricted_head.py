"""The LM head restricted to a model's non-zero rows (`restrict_vocab=auto`, dasd.models.restricted_head) gives
what the full head gives, on the real demo world teacher (the real Qwen3 vocabulary, 151,669 rows, 81 non-zero):
the same sampled tokens and raw log-probs from the hf backend at T=0.6 and 1.0 (same seeds), the same
`ModelScorer` log-probs; and a model without zero rows, or one loaded for training, keeps its head.

Measured here (CPU, float32, MKL): logits of two or more positions at once are bit-identical; a single position
(a batch of one) differs by about a float32 ulp — `TOLERANCE` bounds the log-probs' difference.
"""

from __future__ import annotations

import json

import pytest
import torch

from dasd.backends import BackendConfig, GenerationRequest
from dasd.backends.hf import HFBackend
from dasd.models.loading import ModelConfig, load_causal_lm, load_model
from dasd.models.restricted_head import RestrictedLMHead, nonzero_rows, restrict_output_vocab
from dasd.scoring.token_scorers import ModelScorer, ScoringItem

TOLERANCE = 1e-5  # on log-probs; measured: 0 for batched rows, ~1e-6 for a single row
MAX_NEW_TOKENS = 32


@pytest.fixture(scope="module")
def teacher():
    from dasd.models.demo_world import world_dir

    world = world_dir()
    questions = [json.loads(line) for line in (world / "eval_questions.jsonl").read_text().splitlines()[:2]]
    return world / "teacher", questions


def _requests(questions) -> list[GenerationRequest]:
    return [
        GenerationRequest(
            id=f"{question['id']}-{temperature}",
            messages=question["messages"],
            temperature=temperature,
            max_new_tokens=MAX_NEW_TOKENS,
            seed=7919 * index + int(10 * temperature),
        )
        for index, question in enumerate(questions)
        for temperature in (0.6, 1.0)
    ]


def _backend(model_dir, restrict_vocab: str, batch_size: int) -> HFBackend:
    config = BackendConfig(model=str(model_dir), device="cpu", batch_size=batch_size, restrict_vocab=restrict_vocab)
    return HFBackend(config, chat_template_kwargs={})


def _sample(backend: HFBackend, requests) -> dict[str, tuple[list[int], list[float]]]:
    return {result.id: (result.token_ids, result.token_logprobs) for result in backend.generate(requests)}


def _assert_same_samples(restricted, full) -> None:
    assert restricted.keys() == full.keys()
    for key, (tokens, logprobs) in full.items():
        assert restricted[key][0] == tokens, key
        assert restricted[key][1] == pytest.approx(logprobs, abs=TOLERANCE, rel=0), key


def test_the_demo_teacher_is_restricted_and_keeps_its_input_embedding(teacher):
    model_dir, _ = teacher
    model, _, _ = load_model(ModelConfig(model=str(model_dir), device="cpu"))
    head = model.get_output_embeddings()
    assert isinstance(head, RestrictedLMHead) and model.lm_head is head
    assert head.out_features == 151669 and head.ids.numel() == 81
    embedding = model.get_input_embeddings().weight
    assert embedding.shape == (151669, 128) and torch.equal(nonzero_rows(embedding), head.ids)
    off, _, _ = load_model(ModelConfig(model=str(model_dir), device="cpu", restrict_vocab="off"))
    assert type(off.get_output_embeddings()) is torch.nn.Linear
    # the logits themselves: every row, batched positions and a single one
    generator = torch.Generator().manual_seed(0)
    for shape in ((4, 7, 128), (1, 1, 128)):
        hidden = 3 * torch.randn(shape, generator=generator)
        with torch.inference_mode():
            restricted, full = head(hidden), off.lm_head(hidden)
        assert restricted.shape == full.shape == (*shape[:-1], 151669)
        torch.testing.assert_close(restricted, full, rtol=0, atol=1e-5)
        zero = torch.ones(151669, dtype=torch.bool)
        zero[head.ids] = False
        assert not restricted[..., zero].any() and not full[..., zero].any()


@pytest.fixture(scope="module")
def full_head_samples(teacher):
    """The teacher's samples with the full head: the reference, and the text the scorer test scores."""
    model_dir, questions = teacher
    backend = _backend(model_dir, "off", 4)
    requests = _requests(questions)
    return backend, requests, _sample(backend, requests)


def test_hf_samples_and_raw_logprobs_are_unchanged(teacher, full_head_samples):
    model_dir, _ = teacher
    _, requests, full = full_head_samples
    assert sum(len(tokens) for tokens, _ in full.values()) >= len(requests) * MAX_NEW_TOKENS // 2
    restricted_backend = _backend(model_dir, "auto", 4)
    assert isinstance(restricted_backend.model.lm_head, RestrictedLMHead)
    _assert_same_samples(_sample(restricted_backend, requests), full)


def test_a_batch_of_one_samples_the_same_within_the_tolerance(teacher, full_head_samples):
    # One position through the head: a matrix-vector kernel whose rounding depends on the matrix's shape.
    model_dir, _ = teacher
    _, requests, _ = full_head_samples
    requests = requests[:2]  # one question at T=0.6 and 1.0
    full = _sample(_backend(model_dir, "off", 1), requests)
    _assert_same_samples(_sample(_backend(model_dir, "auto", 1), requests), full)


def test_model_scorer_logprobs_are_unchanged_and_a_wrong_restriction_shows(teacher, full_head_samples):
    model_dir, _ = teacher
    backend, requests, samples = full_head_samples
    items = [
        ScoringItem(key=key, input_ids=prompt + samples[request.id][0], first_scored=len(prompt))
        for key, request in enumerate(requests)
        for prompt in [backend.render(request)[0]]
    ]
    scores = {}
    for mode in ("off", "auto"):
        model, _, _ = load_model(ModelConfig(model=str(model_dir), device="cpu", restrict_vocab=mode))
        scores[mode] = ModelScorer(model, tokens_per_batch=1, pack=False).score(items)
    assert scores["auto"].keys() == scores["off"].keys() and len(scores["off"]) == len(items)
    for key, logprobs in scores["off"].items():
        assert scores["auto"][key] == pytest.approx(logprobs, abs=TOLERANCE, rel=0)
    # The comparison sees a restriction that leaves out one used row (its logit 0 instead of its value).
    head = model.lm_head
    model.lm_head = RestrictedLMHead(model.get_input_embeddings().weight, head.ids[head.ids != items[0].input_ids[-1]])
    wrong = ModelScorer(model, tokens_per_batch=1, pack=False).score(items)
    assert any(wrong[key] != pytest.approx(scores["off"][key], abs=TOLERANCE, rel=0) for key in scores["off"])


def test_a_model_without_zero_rows_keeps_its_head(tiny_qwen3):
    model, _, _ = load_model(ModelConfig(model=str(tiny_qwen3), device="cpu"))
    assert type(model.get_output_embeddings()) is torch.nn.Linear


def test_training_loads_the_full_head(teacher):
    model_dir, _ = teacher
    # `dasd train` loads with load_causal_lm: the zero rows must stay trainable parameters of the head
    model = load_causal_lm(str(model_dir), dtype=torch.float32, attention="sdpa", trainable=True)
    assert type(model.get_output_embeddings()) is torch.nn.Linear
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight


def _tiny_model(zero_rows: int, *, bias: bool = False):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=10, hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2)
    model = LlamaForCausalLM(config)
    model.lm_head = torch.nn.Linear(8, 10, bias=bias)
    with torch.no_grad():
        model.lm_head.weight[:zero_rows] = 0
    return model


def test_restrict_only_a_bias_free_head_with_enough_zero_rows():
    assert restrict_output_vocab(_tiny_model(4)) is None  # 40% zero rows: below MIN_ZERO_SHARE
    assert restrict_output_vocab(_tiny_model(8, bias=True)) is None  # a bias makes every logit non-zero
    model = _tiny_model(5)
    full = model.lm_head
    assert restrict_output_vocab(model) == 5
    hidden = torch.randn(3, 2, 8)
    torch.testing.assert_close(model.lm_head(hidden), full(hidden), rtol=0, atol=1e-6)
