"""One fingerprint rule (`dasd.config.fingerprint_view`), one model identity (`dasd.cache.keys`), and markers that an
earlier dasd wrote recognised (`dasd.pipeline.step.legacy_fingerprint`)."""

from __future__ import annotations

import importlib
import inspect
import json
import os
import pkgutil
import shutil
import time
from pathlib import Path

from pydantic import Field, create_model

import dasd
from dasd.cache import keys
from dasd.cache.keys import file_sha256
from dasd.config import ADDED, SPEED_ONLY, StageConfig, fingerprint_rule, fingerprint_view
from dasd.models.identity import folder_identity, model_identity
from dasd.pipeline.config import PipelineConfig
from dasd.pipeline.plan import plan
from dasd.stages.run import step_jobs
from dasd.stages.sample import SampleConfig

SNAPSHOT = Path(__file__).parent / "data" / "fingerprinted_fields.json"
# The configs of `dasd run` and `dasd demo` themselves are never fingerprinted: what they set reaches each step as
# that stage's config, which is.
NOT_STEP_CONFIGS = ("dasd.pipeline.", "dasd.stages.demo.")


def config_classes() -> dict[str, type[StageConfig]]:
    found = {}
    for info in pkgutil.walk_packages(dasd.__path__, "dasd."):
        if info.name == "dasd.__main__":
            continue
        module = importlib.import_module(info.name)
        for name, cls in inspect.getmembers(module, inspect.isclass):
            qualified = f"{info.name}.{name}"
            if issubclass(cls, StageConfig) and cls is not StageConfig and cls.__module__ == info.name:
                if not qualified.startswith(NOT_STEP_CONFIGS):
                    found[qualified] = cls
    return found


def fingerprinted_fields() -> dict[str, list[str]]:
    """Per config class, the fields a step's fingerprint holds whatever their value (declared neither SPEED_ONLY
    nor ADDED). `python -c 'from tests.test_fingerprints import *; write_snapshot()'` rewrites the snapshot."""
    return {
        name: sorted(field for field, spec in cls.model_fields.items() if fingerprint_rule(spec) is None)
        for name, cls in config_classes().items()
    }


def write_snapshot() -> None:
    SNAPSHOT.write_text(json.dumps(fingerprinted_fields(), indent=1, sort_keys=True) + "\n")


def test_a_field_added_to_a_config_is_declared_so_old_steps_keep_their_fingerprint():
    # A new field that is fingerprinted at its default changes every existing step's fingerprint: each finished
    # step of every user's run would be stale after the upgrade. It must be declared ADDED (left out at its
    # default) or SPEED_ONLY — or, when its default must redo old work, added to the snapshot on purpose.
    known = json.loads(SNAPSHOT.read_text())
    # every class of the snapshot is still found (a moved class would otherwise drop out of this check unseen)
    assert not set(known) - set(fingerprinted_fields()), sorted(set(known) - set(fingerprinted_fields()))
    undeclared = {
        f"{name}.{field}"
        for name, fields in fingerprinted_fields().items()
        if name in known  # a new section class is reached only through a new (declared) field
        for field in fields
        if field not in known[name]
    }
    assert not undeclared, f"declare these fields ADDED or SPEED_ONLY (dasd.config): {sorted(undeclared)}"


def test_speed_and_bookkeeping_fields_are_outside_and_an_added_field_counts_only_when_set():
    base = SampleConfig(input="q.jsonl", output="o.jsonl", backend={"model": "m"})
    faster = base.model_copy(
        update={"backend": base.backend.model_copy(update={"batch_size": 64, "concurrency": 99}), "cache": "off"}
    )
    assert fingerprint_view(faster) == fingerprint_view(base)
    hotter = base.model_copy(update={"top_p": 0.9})
    assert fingerprint_view(hotter) != fingerprint_view(base)
    # the resolved config (written beside each output) still lists every field
    assert {"cache", "suggest_temperatures"} <= set(base.model_dump()) and "batch_size" in base.model_dump()["backend"]
    assert "suggest_temperatures" not in fingerprint_view(base)
    assert fingerprint_view(base.model_copy(update={"suggest_temperatures": True}))["suggest_temperatures"] is True


def test_an_upgrade_that_adds_fields_to_a_config_class_keeps_every_fingerprint(tmp_path):
    # the sample stage's config class gains two fields, as a new dasd version would: one that changes outputs when
    # set (declared ADDED) and one that only changes speed (SPEED_ONLY); a plan made with it fingerprints alike
    config = PipelineConfig.model_validate(
        {
            "workdir": str(tmp_path / "work"),
            "questions": str(tmp_path / "q.jsonl"),
            "teacher": {"model": "t"},
            "student": {"model": "s"},
        }
    )
    before = {name: job.fingerprint for name, job in step_jobs(config, plan(config), tmp_path / "state").items()}
    grown = create_model(
        "SampleConfig",
        __base__=SampleConfig,
        new_filter=(float, Field(0.0, json_schema_extra=ADDED)),
        prefetch=(int, Field(4, json_schema_extra=SPEED_ONLY)),
    )
    import dasd.stages.sample as sample_module

    original = sample_module.SampleConfig
    sample_module.SampleConfig = grown
    try:
        after = {name: job.fingerprint for name, job in step_jobs(config, plan(config), tmp_path / "state").items()}
        set_steps = {**config.sample, "new_filter": 0.5}
        changed = config.model_copy(update={"sample": set_steps})
        set_after = step_jobs(changed, plan(changed), tmp_path / "state")
    finally:
        sample_module.SampleConfig = original
    assert after == before
    assert set_after["sample"].fingerprint != before["sample"]  # set, it is part of the work
    assert set_after["score"].fingerprint != before["score"]  # and of every step that reads it


def test_a_model_is_its_files_content_whatever_their_times_or_folder(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"hidden_size": 8}')
    (model / "model.safetensors").write_bytes(os.urandom(1 << 16))
    (model / "README.md").write_text("a card training writes; not the model")
    identity = folder_identity(model)
    os.utime(model / "model.safetensors", ns=(1, 1))  # a touch, as a re-sync does
    (model / "README.md").write_text("another card")
    assert folder_identity(model) == identity
    copy = tmp_path / "copy"
    shutil.copytree(model, copy)  # a copied folder with the same weights is the same model
    assert folder_identity(copy) == identity == model_identity(str(copy), None)
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[100] ^= 1
    (copy / "model.safetensors").write_bytes(bytes(data))  # one changed weight is another model
    assert folder_identity(copy) != identity


def test_a_file_hash_is_memoised_until_the_file_changes(tmp_path, monkeypatch):
    path = tmp_path / "data.jsonl"
    path.write_bytes(b'{"id": "a"}\n' * 1000)
    old = time.time() - 60
    os.utime(path, (old, old))
    calls = []
    real = keys._sha256_pieces
    monkeypatch.setattr(keys, "_sha256_pieces", lambda *args: calls.append(1) or real(*args))
    monkeypatch.setattr(keys, "HASH_PIECE", 4096)  # several pieces, hashed by threads
    value = file_sha256(path, tmp_path / "memo")
    assert file_sha256(path, tmp_path / "memo") == value and len(calls) == 1
    path.write_bytes(b'{"id": "b"}\n' * 1000)  # same size, new mtime
    assert file_sha256(path, tmp_path / "memo") != value and len(calls) == 2
    # a file written just now is hashed every time (a write in the same clock tick would keep its mtime)
    assert file_sha256(path, tmp_path / "memo") and len(calls) == 3


# Fingerprints the previous dasd (commit 7ed3679 = ef26cd2 + unused constants; no basis yet) gave this spec's steps,
# computed by that code: markers it wrote must still be recognised as the same work.
GOLDEN_SPEC = {
    "workdir": "/nonexistent/dasd-golden/work",
    "questions": "/nonexistent/dasd-golden/q.jsonl",
    "teacher": {"name": "hf", "model": "teacher"},
    "student": {"model": "student"},
    "select": {"k": 2},
    "filter": {"workers": 3},
    "sample": {"suggest_temperatures": False},
}
GOLDEN = {
    "sample": "9340a18a6892661c",
    "score": "09bd5bbcf6038716",
    "filter": "37b12e2080142ca9",
    "select_das": "fcd056903c0b65c9",
    "train_das": "64bf7d413ed888a9",
    "mix": "2c71843cf99dbd9a",
    "eval_teacher": "2e60f5e793df6457",
    "provenance": "eb4664b3cc933343",
}


def test_markers_an_earlier_dasd_wrote_are_recognised_by_its_fingerprints(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / "sample.json").write_text(json.dumps({"fingerprint": GOLDEN["sample"], "status": "done"}))
    config = PipelineConfig.model_validate(GOLDEN_SPEC)
    jobs = step_jobs(config, plan(config), state)
    assert {name: jobs[name].earlier_fingerprint for name in GOLDEN} == GOLDEN
    from dasd.pipeline.step import adopt_earlier_markers, is_done, marker_of

    assert is_done(jobs["sample"]) and adopt_earlier_markers(jobs["sample"])
    marker = marker_of(jobs["sample"])
    assert marker["fingerprint"] == jobs["sample"].fingerprint and marker["basis"] == jobs["sample"].basis
    # a marker with its basis is compared with the current fingerprint only
    jobs["sample"].earlier_fingerprint = "0" * 16
    assert is_done(jobs["sample"])
