"""`dasd sample` with the hf backend: log-prob fidelity, records, resume, crash safety, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from dasd.backends.base import BackendConfig, GenerationRequest
from dasd.backends.hf import HFBackend
from dasd.cli import main
from dasd.config import load_config
from dasd.stages import sample

from .conftest import REPO, kill_when, line_count, read_jsonl, write_jsonl


def _requests(temperature: float, count: int = 6, max_new_tokens: int = 24, **sampling) -> list[GenerationRequest]:
    return [
        GenerationRequest(
            id=f"r{i}",
            messages=[{"role": "user", "content": "What is " + "2 + " * i + "3?"}],
            temperature=temperature,
            max_new_tokens=max_new_tokens,
            seed=100 + i,
            **sampling,
        )
        for i in range(count)
    ]


def _teacher_forced_logprobs(backend: HFBackend, request: GenerationRequest, token_ids: list[int]) -> list[float]:
    prompt_ids, _ = backend.render(request)
    ids = torch.tensor([prompt_ids + token_ids])
    with torch.no_grad():
        logits = backend.model(input_ids=ids, use_cache=False).logits.float()
    logprobs = torch.log_softmax(logits, dim=-1)[0]
    start = len(prompt_ids) - 1
    return [logprobs[start + k, token].item() for k, token in enumerate(token_ids)]


@pytest.mark.parametrize("model_fixture", ["tiny_llama_smollm2", "tiny_qwen3"])
@pytest.mark.parametrize("temperature, sampling", [(0.6, {}), (1.0, {}), (0.6, {"top_p": 0.9, "top_k": 20})])
def test_recorded_logprobs_equal_a_teacher_forced_pass(model_fixture, temperature, sampling, request):
    model_dir = request.getfixturevalue(model_fixture)
    backend = HFBackend(BackendConfig(model=str(model_dir), batch_size=4), chat_template_kwargs={})
    requests = _requests(temperature, **sampling)
    results = {result.id: result for result in backend.generate(requests)}
    assert set(results) == {r.id for r in requests}
    worst = 0.0
    for req in requests:
        result = results[req.id]
        assert len(result.token_ids) == len(result.token_logprobs) > 0
        reference = _teacher_forced_logprobs(backend, req, result.token_ids)
        worst = max(worst, max(abs(a - b) for a, b in zip(reference, result.token_logprobs)))
    # raw log-probs (temperature 1, no top-k/top-p), not the sampling distribution's
    assert worst < 1e-4


def test_samples_do_not_depend_on_batching(tiny_llama_smollm2):
    backend = HFBackend(BackendConfig(model=str(tiny_llama_smollm2), batch_size=6), chat_template_kwargs={})
    requests = _requests(1.0)
    batched = {r.id: r.token_ids for r in backend.generate(requests)}
    backend.config.batch_size = 1
    single = {r.id: r.token_ids for r in backend.generate(requests)}
    assert batched == single
    # and the seed matters
    reseeded = [GenerationRequest(**{**vars(r), "seed": r.seed + 1}) for r in requests]
    assert {r.id: r.token_ids for r in backend.generate(reseeded)} != batched


def _config(questions: Path, output: Path, model: Path, *overrides: str):
    return load_config(
        sample.SampleConfig,
        None,
        [
            f"input={questions}",
            f"output={output}",
            f"backend.model={model}",
            "backend.batch_size=4",
            "schedule=[{temperature: 0.6, n: 2}, {temperature: 1.0, n: 2}]",
            "max_new_tokens=40",
            *overrides,
        ],
    )


def test_stage_writes_think_split_records_with_exact_offsets(tmp_path, taught_teacher):
    questions = write_jsonl(
        tmp_path / "q.jsonl",
        [
            {"id": f"q{a}{b}", "prompt": f"What is {a} + {b}?", "answer": str(a + b), "domain": "math"}
            for a, b in [(2, 3), (4, 4), (5, 3)]
        ],
    )
    output = tmp_path / "run" / "responses.jsonl"
    summary = sample.run(_config(questions, output, taught_teacher))
    records = read_jsonl(output)
    assert len(records) == 12 == summary["responses_written"]
    assert Counter(r["temperature"] for r in records) == {0.6: 6, 1.0: 6}
    stopped = [r for r in records if r["finish_reason"] == "stop"]
    assert len(stopped) >= 8, Counter(r["finish_reason"] for r in records)  # the taught model ends its answers
    for record in records:
        assert record["id"] == f"{record['question_id']}:t{record['temperature']:g}:{record['sample_index']}"
        assert record["messages"][-1]["role"] == "user" and record["logprob_mode"] == "raw"
        for part in ("reasoning", "content"):
            entry = record["teacher_logprobs"][part]
            assert len(entry["offsets"]) == len(entry["logprobs"])
            text = record[part]
            # offsets index into the stored string, in order, and tile it
            assert "".join(text[s:e] for s, e in entry["offsets"]) == text
            assert all(lp <= 0 for lp in entry["logprobs"])
    well_formed = [
        r for r in stopped if r["reasoning"].startswith("I add") and r["content"].startswith("The answer is")
    ]
    assert len(well_formed) >= 6, [(r["reasoning"], r["content"]) for r in stopped]
    for record in well_formed:
        assert "think>" not in record["reasoning"] + record["content"]
    run_dir = output.parent
    assert (run_dir / "responses.config.yaml").exists() and (run_dir / "responses.summary.json").exists()
    assert summary["finish_reasons"].get("stop", 0) == len(stopped)
    # a teacher that writes its think blocks: no warning; the records carry the format they were sampled in
    assert summary["warnings"] == [] and {r["reasoning_format"] for r in records} == {"think"}
    assert summary["missing_parts"]["checked"] == 12 and summary["questions_defaulted"] == {"id": 0, "domain": 0}


def test_rerun_skips_done_ids_and_extends_the_schedule(tmp_path, tiny_llama_smollm2, questions_file):
    output = tmp_path / "responses.jsonl"
    first = sample.run(_config(questions_file, output, tiny_llama_smollm2, "max_new_tokens=8"))
    assert first["responses_written"] == 12
    again = sample.run(_config(questions_file, output, tiny_llama_smollm2, "max_new_tokens=8"))
    assert again["responses_written"] == 0 and again["responses_already_done"] == 12
    more = sample.run(
        _config(
            questions_file,
            output,
            tiny_llama_smollm2,
            "max_new_tokens=8",
            "schedule=[{temperature: 0.6, n: 3}, {temperature: 1.0, n: 2}]",
        )
    )
    assert more["responses_written"] == 3
    ids = [r["id"] for r in read_jsonl(output)]
    assert len(ids) == len(set(ids)) == 15


def test_shards_partition_the_questions_and_a_reshard_redoes_nothing(tmp_path, tiny_llama_smollm2):
    """Shards write their own files; a rerun with another shard count skips what any shard wrote; the run
    without shard merges them into the output, every id once, and removes the shard files."""
    questions = write_jsonl(tmp_path / "q.jsonl", [{"id": f"q{i}", "prompt": f"Say {i}."} for i in range(10)])
    output = tmp_path / "responses.jsonl"
    settings = ("max_new_tokens=2", "schedule=[{temperature: 1.0, n: 1}]")
    written = [sample.run(_config(questions, output, tiny_llama_smollm2, *settings, f"shard={i}/3")) for i in (0, 1)]
    seen = [r["question_id"] for i in (0, 1) for r in read_jsonl(tmp_path / f"responses.shard-{i}-of-3.jsonl")]
    assert sum(summary["responses_written"] for summary in written) == len(seen) < 10
    # shard 2 of 3 was never run: two tasks of a 2-shard rerun write only its questions
    rerun = [sample.run(_config(questions, output, tiny_llama_smollm2, *settings, f"shard={i}/2")) for i in (0, 1)]
    assert sum(summary["responses_written"] for summary in rerun) == 10 - len(seen)
    final = sample.run(_config(questions, output, tiny_llama_smollm2, *settings))
    assert final["responses_written"] == 0 and final["responses_already_done"] == 10
    ids = [r["question_id"] for r in read_jsonl(output)]
    assert sorted(ids) == sorted(f"q{i}" for i in range(10))
    assert not list(tmp_path.glob("responses.shard-*.jsonl"))
    # `limit` takes the first N questions of the file, whichever shard answers them
    limited = tmp_path / "limited.jsonl"
    for index in (0, 1):
        sample.run(_config(questions, limited, tiny_llama_smollm2, *settings, "limit=4", f"shard={index}/2"))
    answered = [r["question_id"] for i in (0, 1) for r in read_jsonl(tmp_path / f"limited.shard-{i}-of-2.jsonl")]
    assert sorted(answered) == ["q0", "q1", "q2", "q3"]


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"id": "a", "prompt": "ok"}\n{"id": "b", "prompt": "unterminated}\n', "q.jsonl:2: invalid JSON"),
        ('{"id": "a", "prompt": "ok"}\n{"id": "b", "text": "no prompt"}\n', "q.jsonl:2: field 'messages': missing"),
        ("", "q.jsonl: no records (empty file)"),
        (None, "q.jsonl: file not found"),
    ],
)
def test_bad_input_exits_with_one_line_and_writes_nothing(tmp_path, capsys, tiny_llama_smollm2, content, message):
    questions = tmp_path / "q.jsonl"
    if content is not None:
        questions.write_text(content)
    output = tmp_path / "out" / "responses.jsonl"
    status = main(["sample", f"input={questions}", f"output={output}", f"backend.model={tiny_llama_smollm2}"])
    error = capsys.readouterr().err.strip()
    assert status == 2
    assert len(error.splitlines()) == 1 and message in error, error
    assert not output.parent.exists()


@pytest.mark.slow  # a long integration test: `make test-slow` (CI runs it)
def test_kill_9_mid_run_then_rerun_gives_every_id_once(tmp_path, tiny_llama_smollm2):
    questions = write_jsonl(tmp_path / "q.jsonl", [{"id": f"q{i:02d}", "prompt": f"Count to {i}."} for i in range(40)])
    output = tmp_path / "responses.jsonl"
    command = [
        sys.executable,
        "-m",
        "dasd",
        "sample",
        f"input={questions}",
        f"output={output}",
        f"backend.model={tiny_llama_smollm2}",
        "backend.batch_size=1",
        "max_new_tokens=48",
        "schedule=[{temperature: 0.6, n: 1}, {temperature: 1.0, n: 1}]",
    ]
    kill_when(command, lambda: line_count(output) >= 10)
    partial = output.read_bytes().count(b"\n")
    assert 10 <= partial < 80
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
    lines = output.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line is whole JSON
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids)) == 80
    summary = json.loads((tmp_path / "responses.summary.json").read_text())
    assert (
        summary["responses_already_done"] >= partial - 1
        and summary["responses_written"] == 80 - summary["responses_already_done"]
    )


@pytest.mark.slow
def test_real_smollm2_demo_config(tmp_path):
    """The README's first command, on the real pretrained SmolLM2-135M-Instruct (about 40 s)."""
    output = tmp_path / "responses.jsonl"
    config = load_config(
        sample.SampleConfig,
        str(REPO / "configs" / "demo-sample.yaml"),
        [f"input={REPO / 'examples' / 'questions.jsonl'}", f"output={output}", "max_new_tokens=48"],
    )
    summary = sample.run(config)
    assert summary["responses_written"] == 24 and summary["failed"] == 0
    records = read_jsonl(output)
    assert all(r["content"] or r["reasoning"] for r in records)


def test_rows_with_different_budgets_share_a_batch_and_stop_at_their_own(tiny_llama_smollm2):
    backend = HFBackend(BackendConfig(model=str(tiny_llama_smollm2), batch_size=8), chat_template_kwargs={})
    requests = [
        GenerationRequest(
            id=f"r{i}", messages=[{"role": "user", "content": "Go on."}], temperature=1.0, max_new_tokens=budget, seed=i
        )
        for i, budget in enumerate([3, 9, 17, 30])
    ]
    together = {r.id: r for r in backend.generate(requests)}
    for request in requests:
        result = together[request.id]
        assert result.finish_reason == "length" and len(result.token_ids) == request.max_new_tokens
        alone = next(backend.generate([request]))  # the same sample when generated on its own
        assert alone.token_ids == result.token_ids
