"""The sampling cache (`dasd.sampling.sample_cache`): a whole run made with the same teacher, questions and settings in
another workdir is copied — the same bytes as generating it — and only a run made in one go is kept."""

from __future__ import annotations

import yaml

from dasd.config import fingerprint_view
from dasd.stages import sample

from .conftest import read_jsonl
from .test_sample_hf import _config


def test_a_second_workdir_copies_the_run_and_gets_the_same_bytes(tmp_path, tiny_llama_smollm2, questions_file):
    cache = f"cache={tmp_path / 'cache'}"
    first_out, second_out = tmp_path / "a" / "responses.jsonl", tmp_path / "b" / "responses.jsonl"
    first = sample.run(_config(questions_file, first_out, tiny_llama_smollm2, "max_new_tokens=8", cache))
    assert first["responses_written"] == 12 and first["cache"]["stored"] and first["cache"]["reused"] == 0
    second = sample.run(_config(questions_file, second_out, tiny_llama_smollm2, "max_new_tokens=8", cache))
    assert second["cache"]["reused"] == 12 and second["responses_written"] == 0
    assert second["responses_already_done"] == 12
    assert second_out.read_bytes() == first_out.read_bytes()
    # generating it again without the cache gives those bytes too: the copy is what the run would have made
    third_out = tmp_path / "c" / "responses.jsonl"
    third = sample.run(_config(questions_file, third_out, tiny_llama_smollm2, "max_new_tokens=8", "cache=off"))
    assert third["responses_written"] == 12 and third["cache"]["reason"] == "cache=off"
    assert third_out.read_bytes() == first_out.read_bytes()
    # the resolved config lists the cache; a step's fingerprint leaves it out (it changes nothing written)
    resolved = yaml.safe_load((tmp_path / "b" / "responses.config.yaml").read_text())
    assert resolved["cache"] == str(tmp_path / "cache")
    assert "cache" not in fingerprint_view(sample.SampleConfig.model_validate(resolved))


def test_another_setting_misses_and_a_resumed_run_is_not_kept(tmp_path, tiny_llama_smollm2, questions_file):
    cache = f"cache={tmp_path / 'cache'}"
    base = tmp_path / "a" / "responses.jsonl"
    sample.run(_config(questions_file, base, tiny_llama_smollm2, "max_new_tokens=8", cache))
    other = sample.run(
        _config(questions_file, tmp_path / "b" / "r.jsonl", tiny_llama_smollm2, "max_new_tokens=8", "seed=7", cache)
    )
    assert other["cache"]["reused"] == 0 and other["responses_written"] == 12
    # a run that finds part of its output written resumes: it generates the rest and does not store itself
    partial = tmp_path / "c" / "responses.jsonl"
    partial.parent.mkdir()
    lines = base.read_bytes().splitlines(keepends=True)
    partial.write_bytes(b"".join(lines[:5]))
    resumed = sample.run(_config(questions_file, partial, tiny_llama_smollm2, "max_new_tokens=9", cache))
    assert resumed["responses_already_done"] == 5 and resumed["responses_written"] == 7
    assert not resumed["cache"]["stored"] and resumed["cache"]["reused"] == 0
    fresh = sample.run(
        _config(questions_file, tmp_path / "d" / "r.jsonl", tiny_llama_smollm2, "max_new_tokens=9", cache)
    )
    assert fresh["cache"]["reused"] == 0 and fresh["responses_written"] == 12  # nothing was kept for these settings
    assert len(read_jsonl(tmp_path / "d" / "r.jsonl")) == 12
