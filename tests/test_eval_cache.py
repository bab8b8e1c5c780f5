"""The evaluation cache (issue 28): an evaluation already generated with the same model weights and settings — in
any workdir — is read back instead of generated, batch by fixed batch, and the records are the bytes a run without
the cache writes. Tiny random-init models on CPU; each eval is a few seconds."""

from __future__ import annotations

import json
import multiprocessing
import shutil
from pathlib import Path

import pytest

from dasd.backends import BackendConfig
from dasd.config import load_config
from dasd.data.io import RecordWriter, read_shared_records
from dasd.data.summaries import EvalCacheSummary, EvalSummary
from dasd.sampling.eval_cache import cache_settings, digest
from dasd.stages import eval as eval_stage

from .conftest import write_jsonl

OUTPUT_FILES = ("q/samples.jsonl", "q/results.jsonl", "summary.md")


@pytest.fixture
def questions(tmp_path):
    return write_jsonl(
        tmp_path / "q.jsonl", [{"id": f"q{i}", "prompt": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(6)]
    )


def evaluate(folder, model, questions, *settings):
    """`dasd eval` of the 6 questions, 2 samples each, in batches of 4 samples (2 questions)."""
    overrides = [
        f"output_dir={folder}",
        f"backend.model={model}",
        f"benchmarks=[{questions}]",
        "n=2",
        "max_new_tokens=12",
        "backend.batch_size=4",
        "system_prompt=null",
        *settings,
    ]
    return eval_stage.run(load_config(eval_stage.EvalConfig, None, overrides))


def outputs(folder) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in OUTPUT_FILES}


def no_generation(*args, **kwargs):
    raise AssertionError("this run should have read every sample from the cache, not loaded the model")


def test_a_second_eval_in_another_workdir_reads_the_cache_and_writes_the_same_bytes(
    tmp_path, tiny_llama_smollm2, questions, monkeypatch
):
    monkeypatch.delenv("DASD_EVAL_CACHE")  # cache=auto: $DASD_EVAL_CACHE, else $DASD_CACHE/eval
    monkeypatch.setenv("DASD_CACHE", str(tmp_path / "dasd-cache"))
    first = evaluate(tmp_path / "a", tiny_llama_smollm2, questions)
    assert (first["cache"]["reused"], first["cache"]["generated"]) == (0, 12)
    assert first["cache"]["folder"].startswith(str(tmp_path / "dasd-cache" / "eval"))
    with monkeypatch.context() as patch:  # the second workdir never loads the model
        patch.setattr(eval_stage, "make_backend", no_generation)
        second = evaluate(tmp_path / "b", tiny_llama_smollm2, questions)
    assert second["cache"] == {
        **first["cache"],
        "reused": 12,
        "generated": 0,
        "benchmarks": {"q": {"reused": 12, "generated": 0}},
    }
    without = evaluate(tmp_path / "c", tiny_llama_smollm2, questions, "cache=off")
    assert without["cache"] == {
        "folder": None,
        "reason": "cache=off",
        "reused": 0,
        "generated": 12,
        "benchmarks": {"q": {"reused": 0, "generated": 12}},
    }
    assert outputs(tmp_path / "a") == outputs(tmp_path / "b") == outputs(tmp_path / "c")
    summaries = [json.loads((tmp_path / run / "summary.json").read_text()) for run in "abc"]
    assert [{**summary, "cache": None} for summary in summaries[1:]] == [{**summaries[0], "cache": None}] * 2
    assert set(summaries[0]) == set(EvalSummary.__annotations__)
    assert set(summaries[0]["cache"]) == set(EvalCacheSummary.__annotations__)
    folder = Path(first["cache"]["folder"])  # named by the digest of what its settings.json says the key covers
    settings = json.loads((folder / "settings.json").read_text())
    assert folder.name == digest(settings) and settings["backend"] == "hf" and len(settings["model"]) == 32


def test_a_larger_limit_generates_only_the_batches_a_smaller_one_did_not(tmp_path, tiny_llama_smollm2, questions):
    """Batches of 4 samples in question order: limit 5 makes [q0 q1] [q2 q3] [q4]; limit 6 reuses the two whole
    batches and generates [q4 q5] whole — its q4 samples are made in the batch a run without cache makes them in."""
    cache = f"cache={tmp_path / 'cache'}"
    smaller = evaluate(tmp_path / "five", tiny_llama_smollm2, questions, cache, "limit=5")
    assert (smaller["cache"]["reused"], smaller["cache"]["generated"]) == (0, 10)
    larger = evaluate(tmp_path / "six", tiny_llama_smollm2, questions, cache, "limit=6")
    assert (larger["cache"]["reused"], larger["cache"]["generated"]) == (8, 4)
    evaluate(tmp_path / "fresh", tiny_llama_smollm2, questions, "cache=off", "limit=6")
    assert outputs(tmp_path / "six") == outputs(tmp_path / "fresh")
    # resuming a workdir: the samples it lacks are generated in their whole batch, the others are not written twice
    again = evaluate(tmp_path / "five", tiny_llama_smollm2, questions, cache, "limit=6")
    assert (again["cache"]["reused"], again["cache"]["generated"]) == (2, 0)  # q5's two, from limit 6's batch
    lines = (tmp_path / "five" / "q" / "samples.jsonl").read_text().splitlines()
    assert len(lines) == len({json.loads(line)["id"] for line in lines}) == 12


def test_a_changed_setting_or_changed_weights_miss_the_cache(tmp_path, tiny_llama_smollm2, questions):
    cache = f"cache={tmp_path / 'cache'}"
    evaluate(tmp_path / "base", tiny_llama_smollm2, questions, cache)
    hotter = evaluate(tmp_path / "hotter", tiny_llama_smollm2, questions, cache, "temperature=0.7")
    assert (hotter["cache"]["reused"], hotter["cache"]["generated"]) == (0, 12)
    # the same files in another folder are the same model (a content hash, not a path) ...
    copy = tmp_path / "copy"
    shutil.copytree(tiny_llama_smollm2, copy)
    (copy / "README.md").write_text("a card that does not change the model\n")
    assert evaluate(tmp_path / "copied", copy, questions, cache)["cache"]["reused"] == 12
    # ... and other weights are another model
    from safetensors.torch import load_file, save_file

    weights = load_file(copy / "model.safetensors")
    name = sorted(weights)[0]
    weights[name] = weights[name] + 1e-3
    save_file(weights, copy / "model.safetensors", metadata={"format": "pt"})
    changed = evaluate(tmp_path / "changed", copy, questions, cache)
    assert (changed["cache"]["reused"], changed["cache"]["generated"]) == (0, 12)


def test_the_key_covers_the_runtime_and_only_local_models_are_cached(tiny_llama_smollm2):
    import torch

    backend = BackendConfig(model=str(tiny_llama_smollm2), device="cpu")
    threads = torch.get_num_threads()
    try:
        keys = set()
        for count in (1, 2):  # the same request on another number of threads differs in its last bits
            torch.set_num_threads(count)
            keys.add(digest(cache_settings(backend, chat_template_kwargs={})[0]))
    finally:
        torch.set_num_threads(threads)
    assert len(keys) == 2
    assert digest(cache_settings(backend, chat_template_kwargs={"enable_thinking": False})[0]) not in keys
    settings, reason = cache_settings(BackendConfig(name="openai", model="served"), chat_template_kwargs={})
    assert settings is None and "openai backend is not cached" in reason
    settings, reason = cache_settings(BackendConfig(model="nobody/no-such-model"), chat_template_kwargs={})
    assert settings is None and "not a local model" in reason


def _append(path, worker: int) -> None:
    writer = RecordWriter(path, shared=True)
    for index in range(200):
        writer.write({"id": f"{worker}:{index}", "text": "x" * (index * 97 % 20000)})  # lines beyond one buffer
    writer.close()


def test_shared_writers_never_interleave_and_a_torn_line_is_skipped_then_cut(tmp_path):
    path = tmp_path / "records.jsonl"
    # fork: spawn would start multiprocessing's resource tracker, a process that outlives the test (the sandbox
    # tests count leftover children of the test process)
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_append, args=(path, worker)) for worker in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [worker.exitcode for worker in workers] == [0, 0, 0]
    records = list(read_shared_records(path))
    assert len(records) == len({record["id"] for record in records}) == 600
    with open(path, "a") as handle:  # a writer that died mid-line
        handle.write('{"id":"torn","text":"xx')
    assert len(list(read_shared_records(path))) == 600
    writer = RecordWriter(path, shared=True)
    with open(path, "a") as handle:  # and one that died after this writer opened
        handle.write('{"id":"torn again"')
    writer.write({"id": "after", "text": ""})
    writer.close()
    ids = [record["id"] for record in read_shared_records(path)]
    assert len(ids) == 601 and ids[-1] == "after"
    assert path.read_bytes().count(b"\n") == 601 and b"torn" not in path.read_bytes()
