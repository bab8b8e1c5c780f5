"""README's "Your own questions on a CPU" walkthrough, run exactly as written: the `dasd` lines of its command block
(between the `own-questions` markers) are read from README.md and run one after the other, from a folder that
holds the repository's configs/, examples/ and src/ (so `runs/own` is made there, not in the checkout). The
teacher is the real SmolLM2-135M-Instruct; the walkthrough cannot rot without this test failing."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def documented_commands() -> list[list[str]]:
    """The `dasd …` lines of README's own-questions block, split as a shell would (comments dropped)."""
    text = (REPO / "README.md").read_text()
    found = re.search(r"<!-- own-questions:begin -->\n```bash\n(.*?)```\n<!-- own-questions:end -->", text, re.S)
    assert found, "README.md lost its own-questions command block (<!-- own-questions:begin --> … end)"
    commands = [shlex.split(line, comments=True) for line in found.group(1).splitlines()]
    commands = [words for words in commands if words]
    assert commands and all(words[0] == "dasd" for words in commands), commands
    return commands


def test_the_readme_walkthrough_on_own_questions_runs_as_written(tmp_path):
    for name in ("configs", "examples", "src"):
        (tmp_path / name).symlink_to(REPO / name)
    commands = documented_commands()
    assert ["dasd", "run", "configs/own-questions-cpu-run.yaml"] in commands
    for words in commands:
        finished = subprocess.run(
            [sys.executable, "-m", "dasd", *words[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=1800
        )
        assert finished.returncode == 0, f"{shlex.join(words)}:\n{finished.stderr[-4000:]}"
        if "dry_run=true" in words:
            assert "no problem" in finished.stdout, finished.stdout[-3000:]  # the question files were read
    work = tmp_path / "runs" / "own"
    steps = json.loads((work / "run.summary.json").read_text())["steps"]
    assert {row["status"] for row in steps} == {"ran"}, steps

    sample = json.loads((work / "sample" / "responses.summary.json").read_text())
    assert sample["reasoning_format"] == "none" and not sample["warnings"], sample
    assert sample["questions_defaulted"] == {"id": 0, "domain": 0}, sample["questions_defaulted"]
    score = json.loads((work / "score" / "scored.summary.json").read_text())
    assert score["answer_only_scored"] >= 1 and not score.get("failure_reasons"), score
    # no silent no-op: both stages moved the weights, at a rate above 0
    train = json.loads((work / "train" / "das" / "train.summary.json").read_text())
    for stage in train["stages"]:
        assert stage["peak_learning_rate"] > 0 and stage["optimizer_steps"] >= 2, stage
        assert stage["changed_tensors"] == stage["compared_tensors"] > 0, stage
    evals = json.loads((work / "run.summary.json").read_text())["eval"]
    assert set(evals) == {"student", "low_temp", "high_temp", "teacher"}
    for benchmarks in evals.values():
        assert benchmarks["eval"]["questions"] == 8 and benchmarks["eval"]["complete"], benchmarks
    assert (work / "report" / "index.html").exists()
