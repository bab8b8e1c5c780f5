"""Hub ids as users write them — `student.model=OWNER/NAME`, `input=hf://datasets/OWNER/NAME` — resolved
through the real Hugging Face cache layout (refs/, snapshots/) with HF_HUB_OFFLINE=1: the same code path
an online user takes after the first download, with no network."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dasd.data.hub import hub_data_files, parse_hub_url
from dasd.errors import InputError

REPO = Path(__file__).resolve().parents[1]
COMMIT = "0123456789abcdef0123456789abcdef01234567"
OTHER_COMMIT = "fedcba9876543210fedcba9876543210fedcba98"


def _cached_repo(cache: Path, kind: str, repo_id: str, files: dict[str, Path | str], commit: str = COMMIT) -> Path:
    """A repository in the HF cache exactly as huggingface_hub lays it out after a download."""
    root = cache / f"{kind}s--{repo_id.replace('/', '--')}"
    snapshot = root / "snapshots" / commit
    for name, source in files.items():
        target = snapshot / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(source, Path):
            shutil.copy(source, target)
        else:
            target.write_text(source)
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    return snapshot


def _questions_parquet(path: Path, count: int, prefix: str = "q") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [
        {"id": f"{prefix}{i}", "messages": [{"role": "user", "content": f"What is {i} + 1?"}], "answer": str(i + 1)}
        for i in range(count)
    ]
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


CARD = """---
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*.parquet
  - split: test
    path: data/test-*.parquet
- config_name: hard
  data_files:
  - split: train
    path: hard/*.parquet
---
# questions
"""


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache


def test_hub_dataset_urls_resolve_from_the_cache_by_card_config_split_and_path(hub_cache, tmp_path):
    staging = tmp_path / "staging"
    _cached_repo(
        hub_cache,
        "dataset",
        "dasd-test/questions",
        {
            "README.md": CARD,
            "data/train-00000-of-00001.parquet": _questions_parquet(staging / "train.parquet", 3),
            "data/test-00000-of-00001.parquet": _questions_parquet(staging / "test.parquet", 2, "t"),
            "hard/part-0.parquet": _questions_parquet(staging / "hard.parquet", 1, "h"),
        },
    )
    from dasd.data.io import read_records

    def ids(url):
        return [record["id"] for _, record in read_records(url)]

    assert ids("hf://datasets/dasd-test/questions") == ["q0", "q1", "q2"]
    assert ids("hf://datasets/dasd-test/questions?split=test") == ["t0", "t1"]
    assert ids("hf://datasets/dasd-test/questions?config=hard") == ["h0"]
    assert ids(f"hf://datasets/dasd-test/questions@{COMMIT}/data/test-*.parquet") == ["t0", "t1"]
    with pytest.raises(InputError, match="no data files for config default, split validation"):
        read_records("hf://datasets/dasd-test/questions?split=validation")
    with pytest.raises(InputError, match="not found in the local Hugging Face cache"):
        hub_data_files("hf://datasets/dasd-test/never-downloaded")
    with pytest.raises(InputError, match="unknown option"):
        parse_hub_url("hf://datasets/a/b?spilt=train")


def test_a_dataset_without_configs_follows_the_hub_naming_conventions(hub_cache, tmp_path):
    _cached_repo(
        hub_cache,
        "dataset",
        "dasd-test/plain",
        {"train.jsonl": json.dumps({"id": "a", "messages": [{"role": "user", "content": "Hi?"}]}) + "\n"},
    )
    assert [path.name for path in hub_data_files("hf://datasets/dasd-test/plain")] == ["train.jsonl"]


def test_a_config_and_split_download_only_their_files(hub_cache, tmp_path, monkeypatch):
    """What an online user would download: huggingface_hub's own filter (the one snapshot_download applies to the
    repository's file list) over each allow_patterns dasd asks for — the card first, then that config's files."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import filter_repo_objects

    staging = tmp_path / "staging"
    repository = {
        "README.md": CARD,
        "data/train-00000-of-00001.parquet": _questions_parquet(staging / "train.parquet", 3),
        "data/test-00000-of-00001.parquet": _questions_parquet(staging / "test.parquet", 2, "t"),
        "hard/part-0.parquet": _questions_parquet(staging / "hard.parquet", 1, "h"),
        "logprobs/huge-00000.parquet": _questions_parquet(staging / "huge.parquet", 1, "x"),
    }
    _cached_repo(hub_cache, "dataset", "dasd-test/questions", repository)
    asked: list[list[str] | None] = []

    def recording_snapshot_download(*args, **kwargs):
        asked.append(kwargs.get("allow_patterns"))
        return snapshot_download(*args, **kwargs)

    monkeypatch.setattr("huggingface_hub.snapshot_download", recording_snapshot_download)

    def downloaded(url):
        asked.clear()
        hub_data_files(url)
        return [sorted(filter_repo_objects(list(repository), allow_patterns=patterns)) for patterns in asked]

    assert downloaded("hf://datasets/dasd-test/questions?config=hard&split=train") == [
        ["README.md"],
        ["README.md", "hard/part-0.parquet"],
    ]
    assert downloaded("hf://datasets/dasd-test/questions?split=test") == [
        ["README.md"],
        ["README.md", "data/test-00000-of-00001.parquet"],
    ]
    assert downloaded("hf://datasets/dasd-test/questions/data/train-*.parquet") == [
        ["README.md", "data/train-00000-of-00001.parquet"]
    ]


def test_a_hub_model_id_at_a_revision_loads_from_the_cache(hub_cache, tiny_qwen3):
    from dasd.models.loading import ModelConfig, load_model

    files = {path.name: path for path in Path(tiny_qwen3).iterdir() if path.is_file()}
    _cached_repo(hub_cache, "model", "dasd-test/tiny-qwen3", files)
    model, tokenizer, device = load_model(ModelConfig(model="dasd-test/tiny-qwen3"))
    assert model.config.model_type == "qwen3" and device == "cpu" and len(tokenizer) > 150_000
    pinned, _, _ = load_model(ModelConfig(model="dasd-test/tiny-qwen3", revision=COMMIT))
    assert pinned.config.vocab_size == model.config.vocab_size
    from dasd.errors import DasdError

    with pytest.raises(DasdError, match=f"nor found at revision '{OTHER_COMMIT}' in the local Hugging Face cache"):
        load_model(ModelConfig(model="dasd-test/tiny-qwen3", revision=OTHER_COMMIT))


@pytest.mark.integration  # a whole `dasd sample` run (5-9 s): make test, not test-unit
def test_dasd_sample_reads_a_hub_dataset_with_a_hub_model_end_to_end(hub_cache, tmp_path, tiny_qwen3):
    """The CLI as a user runs it (a subprocess, HF_HUB_OFFLINE=1 only because this is a test)."""
    files = {path.name: path for path in Path(tiny_qwen3).iterdir() if path.is_file()}
    _cached_repo(hub_cache, "model", "dasd-test/tiny-teacher", files)
    _cached_repo(
        hub_cache,
        "dataset",
        "dasd-test/questions",
        {"README.md": CARD, "data/train-00000-of-00001.parquet": _questions_parquet(tmp_path / "q.parquet", 2)},
    )
    out = tmp_path / "responses.jsonl"
    env = {**os.environ, "HF_HUB_CACHE": str(hub_cache), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "dasd",
            "sample",
            "input=hf://datasets/dasd-test/questions",
            f"output={out}",
            "backend.model=dasd-test/tiny-teacher",
            "schedule=[{temperature: 1.0, n: 1}]",
            "max_new_tokens=4",
            "backend.logprob_check=skip",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(record["question_id"] for record in records) == ["q0", "q1"]
    assert all(record["teacher_logprobs"] for record in records)
