"""`dasd run`, `dasd demo` and `dasd report`: the whole recipe on the embedded world, cached and resumable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dasd.cli import main
from dasd.config import load_config
from dasd.data.io import read_records
from dasd.data.records import PROVENANCE_CLASSES
from dasd.errors import DasdError
from dasd.stages import demo
from dasd.stages import run as pipeline_run

from .conftest import kill_when, read_jsonl

# The demo, made small enough for CI: 12 training questions, 6 held-out questions × 2 samples, 1 epoch.
REDUCED = [
    "train_questions=12",
    "samples_per_temperature=2",
    "eval_questions=6",
    "eval_n=2",
    "epochs=1",
    "mix_questions=8",
    "off_policy=4",
    "global_batch_size=2",  # every SFT stage makes several optimizer steps, past warmup
]
ALL_STEPS = [
    "sample",
    "score",
    "filter",
    "select_das",
    "build_sft_das",
    "train_das",
    "select_rs",
    "build_sft_rs",
    "train_rs",
    "mix",
    "train_mixed",
    "eval_student",
    "eval_low_temp",
    "eval_high_temp",
    "eval_mixed_policy",
    "eval_rs_high_temp",
    "eval_teacher",
    "provenance",
]


def _status(work: Path) -> dict[str, str]:
    return {step["step"]: step["status"] for step in json.loads((work / "run.summary.json").read_text())["steps"]}


def _marker(work: Path, step: str) -> dict:
    path = work / ".dasd" / f"{step}.json"
    return json.loads(path.read_text()) if path.exists() else {}


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """The reduced demo, killed (-9) inside its first training step, then rerun to the end."""
    work = tmp_path_factory.mktemp("demo") / "run"
    command = [sys.executable, "-m", "dasd", "demo", f"workdir={work}", *REDUCED]
    # the marker says running from the moment the step starts; loading TRL and the model alone takes seconds
    kill_when(command, lambda: _marker(work, "train_das").get("status") == "running", timeout=600)
    killed = {step: _marker(work, step).get("status") for step in ALL_STEPS}
    finished = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    assert finished.returncode == 0, finished.stderr[-4000:]
    return work, killed, finished.stdout


@pytest.mark.slow  # shares the module's kill -9 and resume run (3-4 min): make test-slow
def test_killed_demo_resumes_where_it_stopped(demo_run):
    work, killed, stdout = demo_run
    assert killed["sample"] == "done" and killed["train_das"] == "running" and killed["eval_teacher"] is None
    status = _status(work)
    assert list(status) == ALL_STEPS
    # everything before the killed step is reused; the killed step and everything after it ran
    assert all(status[step] == "cached" for step in ("sample", "score", "filter", "select_das", "build_sft_das"))
    assert status["train_das"] == "ran" and status["eval_teacher"] == "ran"
    assert all(_marker(work, step)["status"] == "done" for step in ALL_STEPS if not status[step].startswith("skipped"))
    # the table: every step and the evaluation of each model with its standard error
    for step in ALL_STEPS:
        assert step in stdout
    evals = json.loads((work / "run.summary.json").read_text())["eval"]
    assert set(evals) >= {"student", "low_temp", "high_temp", "rs_high_temp", "teacher"}
    for benchmarks in evals.values():
        metrics = benchmarks["eval_questions"]
        assert metrics["questions"] == 6 and metrics["n"] == 2 and metrics["complete"]
        assert f"{100 * metrics['avg_at_k']:6.2f} ± {100 * metrics['standard_error']:5.2f}" in stdout
    # each stage's folder holds its resolved config; the trained students are real checkpoints
    assert (work / "sample" / "responses.config.yaml").exists() and (
        work / "train" / "das" / "train.config.yaml"
    ).exists()
    assert (work / "train" / "rs" / "high_temp" / "final" / "config.json").exists()
    responses = [record for _, record in read_records(work / "sample" / "responses.parquet")]  # the default format
    assert len(responses) == 12 * 4 and len({r["id"] for r in responses}) == 48
    assert {r["temperature"] for r in responses} == {0.6, 1.0}


@pytest.mark.slow  # shares the module's kill -9 and resume run (3-4 min): make test-slow
def test_rerunning_a_finished_pipeline_does_no_work(demo_run):
    work, _, _ = demo_run
    before = {path: path.stat().st_mtime_ns for path in work.rglob("*") if path.is_file()}
    summary = demo.run(load_config(demo.DemoConfig, None, [f"workdir={work}", *REDUCED]))
    assert {step["status"] for step in summary["steps"]} <= {"cached", "skipped: dasd mix kept no records"}
    changed = {path.name for path, mtime in before.items() if path.exists() and path.stat().st_mtime_ns != mtime}
    assert changed <= {"run.summary.json", "pipeline.config.yaml", "pipeline.yaml"}


@pytest.mark.slow  # shares the module's kill -9 and resume run (3-4 min): make test-slow
def test_speed_settings_and_a_touched_model_leave_every_step_reused(demo_run, capsys):
    work, _, _ = demo_run
    spec = yaml.safe_load((work / "pipeline.yaml").read_text())
    for path in Path(spec["teacher"]["model"]).iterdir():  # a re-sync of the teacher's folder: new times, same bytes
        os.utime(path)
    spec["teacher"]["batch_size"] = 32  # generates the same samples (up to rounding, as a resumed run does)
    spec["filter"]["workers"] = 2
    spec["score"]["tokens_per_batch"] = 1024
    statuses = pipeline_run.run(pipeline_run.PipelineConfig.model_validate({**spec, "dry_run": True}))["status"]
    assert list(statuses) == ALL_STEPS and set(statuses.values()) == {"would reuse"}, statuses
    assert "would reuse" in capsys.readouterr().out
    # a sampling temperature is the work itself: the run stops before anything, naming the step and the change
    spec["sample"]["schedule"][0]["temperature"] = 0.7
    with pytest.raises(DasdError, match=r"^sample is stale: schedule\.0\.temperature: 0\.6 -> 0\.7; .* rerun=stale"):
        pipeline_run.run(pipeline_run.PipelineConfig.model_validate(spec))
    assert _marker(work, "sample")["status"] == "done" and not (work / "stale").exists()


@pytest.mark.slow  # shares the module's kill -9 and resume run (3-4 min): make test-slow
def test_a_changed_setting_stops_the_run_until_told_to_set_the_stale_outputs_aside(demo_run, capsys):
    work, _, _ = demo_run
    spec = yaml.safe_load((work / "pipeline.yaml").read_text())
    spec["eval"]["max_new_tokens"] = 64
    spec["eval_models"] = ["student", "teacher"]
    old_results = (work / "eval" / "student" / "eval_questions" / "results.jsonl").read_bytes()
    with pytest.raises(DasdError) as stopped:
        pipeline_run.run(pipeline_run.PipelineConfig.model_validate(spec))
    message = str(stopped.value)
    assert "\n" not in message and message.startswith("eval_student is stale: max_new_tokens: 256 -> 64")
    assert "rerun=stale" in message
    assert not (work / "stale").exists()  # nothing moved, nothing deleted, nothing run
    assert (work / "eval" / "student" / "eval_questions" / "results.jsonl").read_bytes() == old_results

    summary = pipeline_run.run(pipeline_run.PipelineConfig.model_validate({**spec, "rerun": "stale"}))
    status = {step["step"]: step["status"] for step in summary["steps"]}
    assert status["eval_student"] == "ran" and status["eval_teacher"] == "ran"
    assert "provenance" not in status  # it reads eval_high_temp, which is not evaluated this time
    assert all(status[step] == "cached" for step in ALL_STEPS[:11] if not status[step].startswith("skipped"))
    config = yaml.safe_load((work / "eval" / "student" / "eval.config.yaml").read_text())
    assert config["max_new_tokens"] == 64  # run afresh, not resumed into the old results
    moved = Path(next(step for step in summary["steps"] if step["step"] == "eval_student")["moved_aside"])
    assert moved.parent == work / "stale" and moved.name.startswith("eval_student-")
    assert (moved / "eval" / "student" / "eval_questions" / "results.jsonl").read_bytes() == old_results
    assert str(moved) in capsys.readouterr().out  # named in the run table


@pytest.mark.slow  # shares the module's kill -9 and resume run (3-4 min): make test-slow
def test_report_is_one_self_contained_page_with_the_figures(demo_run, tmp_path):
    work, _, _ = demo_run
    output = tmp_path / "report" / "index.html"
    assert main(["report", str(work), f"output={output}"]) == 0
    page = output.read_text()
    for figure in ("response_probability", "training_loss", "sentence_types", "cutoff_ratio"):
        png = output.parent / f"{figure}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f'alt="{figure}"' in page
    # the pipeline's provenance step adds Figures 5 and 6; all six are embedded, not linked
    assert 'alt="positions"' in page and 'alt="example"' in page
    assert page.count("data:image/png;base64,") == 6 and '<img src="runs' not in page
    assert "Evaluation" in page and "eval/teacher" in page and "±" in page
    assert "T=0.6" in page and "DAS" in page and "RS" in page


def test_report_of_a_folder_without_outputs_is_a_one_line_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "no dasd outputs" in error


def _plan_lines(printed: str) -> list[str]:
    """dry_run's plan: one line per step, before the cost table (after a blank line)."""
    return [line for line in printed.split("\n\n")[0].splitlines() if line.strip()]


def _spec(tmp_path: Path, **extra) -> dict:
    return {
        "workdir": str(tmp_path / "work"),
        "questions": str(tmp_path / "q.jsonl"),
        "teacher": {"name": "hf", "model": "teacher"},
        "student": {"model": "student"},
        **extra,
    }


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"stages": {"sampling": False}}, "stages: unknown step(s) ['sampling']; did you mean 'stages.sample'?"),
        ({"train": {"epoch": 2}}, "pipeline step train_das: field 'epoch': unknown key; did you mean 'epochs'?"),
        ({"eval_models": ["distilled"]}, "eval_models: unknown model 'distilled'"),
        ({"score": {"student": {"model": "x"}, "batch": 3}}, "pipeline step score"),
        ({"executor": {"name": "slurm", "steps": {"filter": {"tasks": 4}}}}, "filter (filter) cannot run as several"),
        ({"executor": {"name": "slurm", "steps": {"sampel": {"tasks": 4}}}}, "unknown step or stage ['sampel']"),
        ({"executor": {"name": "slurm", "steps": {"train": {"gpus": 4}}}}, "gpus"),
    ],
)
def test_pipeline_config_errors_are_one_line_and_nothing_runs(tmp_path, capsys, extra, message):
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(_spec(tmp_path, **extra)))
    assert main(["run", str(path)]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and "\n" not in error
    assert not (tmp_path / "work").exists()


def test_dry_run_lists_the_plan_and_switching_off_stages(tmp_path, capsys):
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(_spec(tmp_path, rs_baseline=False, stages={"mix": False, "train_mixed": False})))
    assert main(["run", str(path), "dry_run=true", "eval_models=[student, high_temp, mixed_policy, rs_high_temp]"]) == 0
    printed = [line.split()[0] for line in _plan_lines(capsys.readouterr().out)]
    # no RS branch, no mix: the mixed_policy and rs models are not evaluated
    assert printed == [
        "sample",
        "score",
        "filter",
        "select_das",
        "build_sft_das",
        "train_das",
        "eval_student",
        "eval_high_temp",
        "provenance",
    ]
    assert not (tmp_path / "work").exists()


def test_new_runs_write_parquet_and_skip_scoring_unfinished_ones_and_an_existing_jsonl_run_stays_as_it_was(tmp_path):
    """Parquet is the default for the record files, and score passes unfinished responses through unscored; a
    workdir sampled as JSONL before that keeps JSONL and its score settings unless told otherwise (an upgrade must
    not re-sample or re-score: the steps' fingerprints would change and they would be redone from scratch)."""
    from dasd.pipeline.config import PipelineConfig
    from dasd.pipeline.plan import plan

    def steps(**extra):
        return {step.name: step for step in plan(PipelineConfig.model_validate(_spec(tmp_path, **extra)))}

    fresh = steps()
    assert fresh["sample"].config["output"].endswith("sample/responses.parquet")
    assert fresh["select_das"].config["output"].endswith("select/das.parquet")
    assert fresh["score"].config["skip_unfinished"] is True
    assert steps(filter={"structure": {"require_stop": False}})["score"].config["skip_unfinished"] is False
    (tmp_path / "work" / "sample").mkdir(parents=True)
    (tmp_path / "work" / "sample" / "responses.jsonl").write_text("")
    existing = steps()
    assert existing["score"].config["output"].endswith("score/scored.jsonl")
    assert existing["score"].config["skip_unfinished"] is False
    assert steps(record_format="parquet")["score"].config["output"].endswith("score/scored.parquet")


def test_dry_run_on_slurm_shows_each_steps_jobs_and_the_resources_merge(tmp_path, capsys, monkeypatch):
    """Resources: every job's defaults, then the stage's, then the step's; sample/score/eval as arrays."""
    from dasd.pipeline.config import ExecutorConfig

    executor = {
        "name": "slurm",
        "slurm": {"partition": "h100", "cpus_per_task": 8, "time_min": 60},
        "steps": {
            "eval": {"tasks": 4, "gpus_per_node": 1},
            "eval_teacher": {"gpus_per_node": 0},
            "train": {"nodes": 2},
        },
    }
    config = ExecutorConfig.model_validate(executor)
    teacher = config.resources("eval", "eval_teacher")
    assert (teacher.tasks, teacher.gpus_per_node, teacher.partition, teacher.cpus_per_task) == (4, 0, "h100", 8)
    assert ExecutorConfig.model_validate("slurm").name == "slurm"
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(_spec(tmp_path, rs_baseline=False, executor=executor)))
    assert main(["run", str(path), "dry_run=true"]) == 0
    rows = {line.split()[0]: line for line in _plan_lines(capsys.readouterr().out)}
    assert rows["eval_student"].endswith("[slurm: 4 tasks + finalize, 1 GPU/node]")
    assert rows["eval_teacher"].endswith("[slurm: 4 tasks + finalize]")
    assert rows["train_das"].endswith("[slurm: 1 job, 2 nodes]")
    assert rows["sample"].endswith("[slurm: 1 job]")
    # without Slurm's client tools, a real run stops with one line before anything is submitted (its question file
    # is here and well-formed: the inputs are checked first)
    (tmp_path / "q.jsonl").write_text('{"id": "q1", "prompt": "What is 1 + 1?"}\n')
    monkeypatch.setenv("PATH", str(tmp_path))
    assert main(["run", str(path)]) == 2
    error = capsys.readouterr().err.strip()
    assert "executor: slurm needs the Slurm client tools; not found on PATH: sbatch" in error and "\n" not in error
    assert not (tmp_path / "work").exists()


@pytest.mark.slow  # shares the module's kill -9 and resume run (3-4 min): make test-slow
def test_provenance_on_the_demo_world(demo_run, tmp_path):
    """Teacher, original student and distilled student of the demo on the distilled student's answers."""
    from dasd.models.demo_world import world_dir

    work, _, _ = demo_run
    world = world_dir()
    output = tmp_path / "provenance"
    assert (
        main(
            [
                "provenance",
                "--outputs",
                str(work / "eval" / "high_temp"),
                "--teacher",
                str(world / "teacher"),
                "--student",
                str(world / "student"),
                "--distilled",
                str(work / "train" / "das" / "high_temp" / "final"),
                'teacher.system_prompt=""',
                "min_samples=1",
                f"output_dir={output}",
            ]
        )
        == 0
    )
    summary = json.loads((output / "summary.json").read_text())
    analysed = summary["responses"]["analysed"]
    assert analysed == summary["responses"]["correct"] + summary["responses"]["incorrect"] == 12  # 6 questions x 2
    records = read_jsonl(output / "provenance.jsonl")
    assert len(records) == analysed and all(r["sentences"] for r in records)
    # three different models: not everything is shared, and each class count matches the records
    kinds = [s["type"] for r in records for s in r["sentences"]]
    assert set(kinds) - {"shared"}
    for kind in PROVENANCE_CLASSES:
        assert summary["sentences"]["correct"][kind] + summary["sentences"]["incorrect"][kind] == kinds.count(kind)
    for figure in ("example", "positions"):
        assert (output / f"{figure}.png").read_bytes()[:4] == b"\x89PNG"


def test_the_shipped_gpt_oss_run_evaluates_as_the_report_did():
    """configs/gpt-oss-qwen3-4b-run.yaml: per-benchmark generation limits (102,400 for AIME), and the teacher
    evaluated in its own prompt format (harmony) at its own reasoning effort."""
    from dasd.data.benchmarks import DEFAULT_MAX_NEW_TOKENS

    config = load_config(
        pipeline_run.PipelineConfig, str(Path(__file__).parents[1] / "configs" / "gpt-oss-qwen3-4b-run.yaml")
    )
    steps = {step.name: step.config for step in pipeline_run.plan(config)}
    assert DEFAULT_MAX_NEW_TOKENS["aime24"] == DEFAULT_MAX_NEW_TOKENS["aime25"] == 102400
    for name in ("eval_student", "eval_high_temp", "eval_teacher"):
        assert steps[name].get("max_new_tokens") is None, f"{name} overrides the per-benchmark limits"
    teacher = steps["eval_teacher"]
    assert (teacher["prompt_format"], teacher["reasoning_format"]) == ("harmony", "harmony")
    assert teacher["chat_template_kwargs"] == {"reasoning_effort": "high"} and teacher["system_prompt"] is None
    assert steps["eval_student"].get("prompt_format", "chat_template") == "chat_template"


@pytest.mark.slow
def test_two_fresh_runs_give_identical_numbers(tmp_path):
    """Determinism: the demo pins torch's threads (float reductions depend on them) and seeds every step, so
    two runs from empty folders write the same samples, the same trained weights and the same results."""
    import hashlib

    runs = []
    for name in ("first", "second"):
        work = tmp_path / name
        done = subprocess.run(
            [sys.executable, "-m", "dasd", "demo", f"workdir={work}", *REDUCED, "mix_questions=4"],
            capture_output=True,
            text=True,
            timeout=1200,
        )
        assert done.returncode == 0, done.stderr[-4000:]
        runs.append(work)
    for relative in (
        "sample/responses.parquet",
        "score/scored.parquet",
        "select/das.parquet",
        "train/das/high_temp/final/model.safetensors",
        "eval/high_temp/eval_questions/results.jsonl",
        "eval/rs_high_temp/eval_questions/results.jsonl",
    ):

        def digest(path):  # a file, or a Parquet output's parts in order
            parts = sorted(path.glob("part-*.parquet")) if path.is_dir() else [path]
            return hashlib.sha256(b"".join(part.read_bytes() for part in parts)).hexdigest()

        digests = {digest(work / relative) for work in runs}
        assert len(digests) == 1, f"{relative} differs between two fresh runs"
    numbers = [json.loads((work / "run.summary.json").read_text()) for work in runs]
    assert numbers[0]["eval"] == numbers[1]["eval"] and numbers[0]["claims"] == numbers[1]["claims"]
    assert numbers[0]["threads"] == 2


def test_a_start_model_replaced_under_the_same_path_reruns_the_steps_that_read_it(tmp_path):
    # A model folder's content is part of the fingerprint of every step that starts from it (world v6 was first
    # tuned on a stale student restored under the same path: the score step counted as done).
    from dasd.pipeline.plan import plan
    from dasd.stages.run import step_jobs

    teacher, student = tmp_path / "teacher", tmp_path / "student"
    for folder in (teacher, student):
        folder.mkdir()
        (folder / "config.json").write_text("{}")
    spec = {**_spec(tmp_path), "teacher": {"name": "hf", "model": str(teacher)}, "student": {"model": str(student)}}
    config = pipeline_run.PipelineConfig.model_validate(spec)

    def fingerprints() -> dict[str, str]:
        return {name: job.fingerprint for name, job in step_jobs(config, plan(config), tmp_path / "state").items()}

    before = fingerprints()
    (student / "config.json").unlink()
    (student / "config.json").write_text('{"trained": 1}')  # a new student under the old path: other content
    after = fingerprints()
    assert after["sample"] == before["sample"]  # the teacher's work does not read the student
    for step in ("score", "train_das", "train_rs", "eval_student"):
        assert after[step] != before[step], step
