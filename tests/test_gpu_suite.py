"""benchmarks/gpu_suite.sh in its CPU dry-run mode, end to end, so the one GPU script cannot rot between the
rare sessions that have a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.integration
def test_gpu_suite_dry_run_writes_every_part(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable}
    done = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_suite.sh"), "--dry-run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((out / "gpu_suite.json").read_text())
    assert report["dry_run"] is True
    statuses = {name: part["status"] for name, part in report["parts"].items()}
    assert statuses == dict.fromkeys(["environment", "matmul peak", "scoring", "training", "sampling fidelity"], "ok")
    assert report["environment"]["packed_attention"] == "dasd_packed"
    scoring = report["parts"]["scoring"]["result"]
    assert len(scoring["ways"]) == 5 and scoring["max_abs_difference"] < 1e-4  # every path scores the same
    assert scoring["padding_fraction_packed"] < 0.05
    training = report["parts"]["training"]["result"]
    assert training["packed"]["attention"] == "dasd_packed" and training["packed"]["padding_fraction"] == 0.0
    assert training["padded (TRL default)"]["padding_fraction"] > 0 and training["packed_over_padded"] > 0
    fidelity = report["parts"]["sampling fidelity"]["result"]
    assert max(fidelity["float32"].values()) < 1e-4
    table = (out / "gpu_suite.md").read_text()
    for heading in ("# dasd GPU suite", "## Scoring", "## Training", "Sampling log-prob fidelity"):
        assert heading in table


@pytest.mark.integration
def test_a_failing_part_is_reported_and_the_rest_still_run(tmp_path):
    """The tokenizer folder is missing: sampling fidelity fails, recorded with its error; training, after it,
    still runs; the suite exits 0 with both in its report."""
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "gpu_suite.py"),
            "--dry-run",
            "--out",
            str(out),
            "--tokenizer",
            str(tmp_path / "no-tokenizer-here"),
            "--parts",
            "environment,sampling fidelity,training",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "gpu_suite.json").read_text())
    assert report["parts"]["sampling fidelity"]["status"] == "failed"
    assert report["parts"]["sampling fidelity"]["error"]
    assert report["parts"]["training"]["status"] == "ok" and "scoring" not in report["parts"]
    assert "**sampling fidelity failed:**" in (out / "gpu_suite.md").read_text()
