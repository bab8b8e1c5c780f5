"""`dasd run`: input mistakes found before any work (the head of each question and benchmark file), and a run that
fails on a step still writes its table and `run.summary.json`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from dasd.cli import main
from dasd.errors import DasdError
from dasd.models.demo_world import world_dir
from dasd.pipeline.config import PipelineConfig
from dasd.pipeline.plan import plan
from dasd.pipeline.preflight import HEAD
from dasd.pipeline.step import write_marker
from dasd.stages import run as pipeline_run


def _questions(count: int, **bad: dict) -> list[dict]:
    """`count` well-formed questions; `bad` replaces the record on a line (`line_3={...}`)."""
    records = [
        {
            "id": f"q{index}",
            "messages": [{"role": "user", "content": f"What is {index} + 1?"}],
            "answer": str(index + 1),
        }
        for index in range(count)
    ]
    for key, record in bad.items():
        records[int(key.removeprefix("line_")) - 1] = record
    return records


def _write(path: Path, records: list[dict]) -> str:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return str(path)


def _pipeline(tmp_path: Path, **spec) -> Path:
    path = tmp_path / "pipeline.yaml"
    base = {"workdir": str(tmp_path / "work"), "teacher": {"name": "hf", "model": "t"}, "student": {"model": "s"}}
    path.write_text(yaml.safe_dump({**base, **spec}))
    return path


def _world_pipeline(**spec) -> dict:
    """The demo world's tiny teacher and student on 4 questions × 2 samples, no RS branch; `spec` adds to it."""
    world = world_dir()
    return {
        "questions": str(world / "train_questions.jsonl"),
        "teacher": {"name": "hf", "model": str(world / "teacher")},
        "student": {"model": str(world / "student")},
        "rs_baseline": False,
        "threads": 1,
        "sample": {"limit": 4, "schedule": [{"temperature": 0.6, "n": 2}], "max_new_tokens": 256, "cache": "off"},
        **spec,
    }


def test_dry_run_names_each_bad_record_and_missing_file_and_a_run_stops_on_them_before_any_work(tmp_path, capsys):
    questions = _write(
        tmp_path / "q.jsonl",
        _questions(
            HEAD + 10,
            line_3={"id": "q2", "messages": [{"role": "human", "content": "2 + 2?"}]},
            line_5={"id": "q4", "prompt": 7},
            line_7={"id": "q0", "prompt": "again?"},  # the id of line 1
            line_25={"id": "q24", "messages": "not read: past the first records"},
        ),
    )
    bench = _write(
        tmp_path / "bench.jsonl", [{"id": "b1", "prompt": "1 + 1?", "answer": "2"}, {"id": "b2", "prompt": "?"}]
    )
    missing = str(tmp_path / "held_out.jsonl")
    path = _pipeline(tmp_path, questions=questions, eval_benchmarks=["aime24", bench, missing])

    assert main(["run", str(path), "dry_run=true"]) == 0  # a dry run shows the problems, with the plan and the cost
    printed = capsys.readouterr().out
    lines = printed.split("\n\ninputs: ")[1].split("\n\n")[0].splitlines()
    assert lines[0] == f"5 problem(s) in the first {HEAD} records of each file — a run stops on them before any work:"
    assert [line.strip() for line in lines[1:]] == [
        f"{questions}:3: field 'messages[0].role': must be one of system, developer, user, assistant, tool "
        "(got 'human')",
        f"{questions}:5: field 'prompt': must be a non-empty string",
        f"{questions}:7: field 'id': duplicate id 'q0' (first on line 1)",
        f"{bench}:2: field 'answer': a benchmark question needs a reference answer",
        f"{missing}: file not found (nor a shipped benchmark: aime24, aime25, code, rg:<task>, lcb:<file>, "
        "gpqa:<file>)",
    ]
    assert not (tmp_path / "work").exists()

    # a real run stops on them with one line, before anything is written
    assert main(["run", str(path)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(
        f"dasd run: error: 5 input problem(s), nothing ran: {questions}:3: field 'messages[0].role'"
    )
    assert error.endswith("(+2 more: dry_run=true lists them)") and "\n" not in error
    assert not (tmp_path / "work").exists()

    # a missing question file is named too; well-formed inputs say what was read
    path = _pipeline(tmp_path, questions=str(tmp_path / "nowhere.jsonl"), eval_benchmarks=["aime24"])
    assert main(["run", str(path)]) == 2
    assert capsys.readouterr().err.strip().endswith(f"nothing ran: {tmp_path / 'nowhere.jsonl'}: file not found")
    good = _write(tmp_path / "good.jsonl", _questions(3))
    summary = pipeline_run.run(
        PipelineConfig.model_validate(
            yaml.safe_load(_pipeline(tmp_path, questions=good).read_text()) | {"dry_run": True}
        )
    )
    assert summary["inputs"] == {"checked": [good], "problems": []}
    assert f"inputs: the first {HEAD} records of {good}: no problem" in capsys.readouterr().out


@pytest.mark.integration
def test_a_failed_step_leaves_the_table_and_the_summary_with_its_reason_and_the_steps_not_run(tmp_path, capsys):
    """The demo world's tiny teacher and student, 4 questions × 2 samples; filter is given a tokenizer that does not
    exist, so it fails after sample and score ran."""
    spec = _world_pipeline(
        stages={"train": False, "mix": False, "train_mixed": False, "eval": False, "provenance": False}
    )
    path = _pipeline(tmp_path, **spec, filter={"student_tokenizer": "no-such-tokenizer"})
    assert main(["run", str(path)]) == 2
    out, err = capsys.readouterr()
    reason = (
        "tokenizer 'no-such-tokenizer' is not a local folder, a .gguf file or an asset, nor found in the local "
        "Hugging Face cache (HF_HUB_OFFLINE is set)"
    )
    assert err.strip().splitlines()[-1] == f"dasd run: error: {reason}"  # the exit status and the line as before
    summary = json.loads((tmp_path / "work" / "run.summary.json").read_text())
    rows = {row["step"]: row for row in summary["steps"]}
    assert {name: row["status"] for name, row in rows.items()} == {
        "sample": "ran",
        "score": "ran",
        "filter": "failed",
        "select_das": "not run",
        "build_sft_das": "not run",
    }
    assert rows["sample"]["result"] == "responses written 8"  # the steps before it keep their results
    assert rows["filter"]["reason"] == summary["error"] == reason
    table = out[out.index("dasd run -> ") :]
    assert "filter                 failed" in table and reason in table  # the reason whole, in the result column
    assert "select_das             not run" in table

    # fixed, the run goes on from the failed step (its started outputs are set aside: rerun=stale), what ran before it
    # is reused
    path = _pipeline(tmp_path, **spec)
    assert main(["run", str(path), "rerun=stale"]) == 0
    statuses = {
        row["step"]: row["status"] for row in json.loads((tmp_path / "work" / "run.summary.json").read_text())["steps"]
    }
    assert statuses == {
        "sample": "cached",
        "score": "cached",
        "filter": "ran",
        "select_das": "ran",
        "build_sft_das": "ran",
    }


@pytest.mark.integration
def test_a_pipeline_whose_training_would_only_warm_up_stops_at_that_step_with_one_line(tmp_path, capsys):
    """The issue-36 case end to end: a handful of questions and a batch larger than the selection, so each SFT stage
    makes one optimizer step, inside warmup, at learning rate 0. The run stops at train_das before any model is
    trained, with the numbers and the fix in one line and in its table; nothing is left that looks trained."""
    spec = _world_pipeline(
        stages={"mix": False, "train_mixed": False, "eval": False, "provenance": False},
        train={"global_batch_size": 64, "epochs": 1, "packing": False, "max_length": 1024},
    )
    assert main(["run", str(_pipeline(tmp_path, **spec))]) == 2
    out, err = capsys.readouterr()
    line = err.strip().splitlines()[-1]
    assert line.startswith("dasd run: error: stage low_temp would not change the weights: ")
    assert "make 1 optimizer step(s), all inside warmup" in line and "fix: warmup_ratio=0" in line
    rows = {row["step"]: row for row in json.loads((tmp_path / "work" / "run.summary.json").read_text())["steps"]}
    assert rows["build_sft_das"]["status"] == "ran" and rows["train_das"]["status"] == "failed"
    assert "would not change the weights" in rows["train_das"]["reason"]
    assert "train_das              failed" in out
    assert not list((tmp_path / "work").rglob("model.safetensors"))  # no stage saved weights


def test_a_slurm_runs_rows_after_an_error_come_from_the_markers(tmp_path):
    """With `executor: slurm` the rows are read back from the markers the jobs left: a step whose inputs had all
    ended but which did not end itself failed; the steps waiting on it were not run."""
    config = PipelineConfig.model_validate(
        yaml.safe_load(_pipeline(tmp_path, questions="q.jsonl", rs_baseline=False).read_text())
    )
    steps = plan(config)
    jobs = pipeline_run.step_jobs(config, steps, tmp_path / "state")
    write_marker(jobs["sample"], "done", seconds=12.5)
    write_marker(jobs["score"], "running")
    error = DasdError("1 step(s) did not finish on Slurm (score); rerun the same `dasd run` to resubmit")
    rows = {row["step"]: row for row in pipeline_run.rows_from_markers(steps, jobs, set(), error)}
    assert (rows["sample"]["status"], rows["sample"]["seconds"]) == ("ran (slurm)", 12.5)
    assert (rows["score"]["status"], rows["score"]["reason"]) == ("failed", str(error))
    assert rows["eval_student"]["status"] == "failed"  # it reads no step: its job could run, and did not end
    assert rows["filter"]["status"] == rows["train_das"]["status"] == "not run"
