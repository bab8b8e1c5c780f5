"""`dasd run PIPELINE.yaml`: the whole recipe from one config, cached and resumable.

    dasd run configs/gpt-oss-qwen3-4b-run.yaml dry_run=true    # validate; what would run or be reused; the cost
    dasd run configs/gpt-oss-qwen3-4b-run.yaml
    dasd run configs/gpt-oss-qwen3-4b-run.yaml rerun=stale     # redo changed steps, their old outputs in stale/
    dasd run configs/gpt-oss-qwen3-4b-run.yaml workdir=runs/exp2 train.epochs=3 \\
        'stages={mix: false, train_mixed: false}'
    dasd run configs/gpt-oss-qwen3-4b-ablation-run.yaml        # arms × seeds, claims with paired statistics
    dasd run configs/gpt-oss-qwen3-4b-slurm-run.yaml           # every step as Slurm jobs (executor: slurm)

Stages, in order (any can be switched off under `stages:`):

    sample → score → filter → select (DAS; and RS when rs_baseline) → build-sft → train low → high
    (DAS; and RS) → mix → train mixed_policy → eval (the student before training, after each stage,
    the RS baseline, and the teacher) → provenance of one distilled model's answers

The parts live in `dasd.pipeline`: the schema (`config`), the plan (`plan`), a step's fingerprint, markers
and `run_step` (`step`), the check of the input files (`preflight`), the executors (`local`, `slurm`) and the
closing table (`summary`); this command reads top to bottom: config → plan → check every step and the first records
of its question and benchmark files → run them → table.

Before any work, the first records of each question file and benchmark file the steps will read are checked as
their stages check every record: `dry_run=true` prints one line per problem (file, line, field; a missing file by
name), and a run stops on them with one line. A step that fails ends the run with exit status 2 and its one-line
error, after the table and `run.summary.json` are written all the same: the steps before it, the failed step with
its reason, and the steps not reached as `not run`.

Each stage writes under `<workdir>/<stage>/` with its resolved config beside its output. A stage's
fingerprint covers what decides its outputs: its config less the settings that only change speed or bookkeeping
(batch sizes, concurrency, timeouts, workers, caches, launch settings), the fingerprints of the stages it reads from,
and the content of the question files and of the model folders it starts from (a `touch` or a copy changes
nothing). A finished stage with an unchanged fingerprint is reused; one that was killed is rerun and resumes by id;
one whose fingerprint changed is stale: the run stops before any work with one line naming it and what changed
(nothing is ever deleted), and with `rerun=stale` its old outputs are moved to `<workdir>/stale/` and it runs
again. A table at the end gives each stage's status and time, and the evaluation results.

Ablation arms (`arms:`, README "Ablations"; their keys are listed below as `arms.<name>.*`): named variants that
share sample, score and filter and differ in selection (or select from another student's scores, `score_with`),
SFT schedule and training, or continue another arm's weights (`after:`) with mixed-policy data (`mix`), its
equal-size off-policy control (`control_of`) or a stage 2 selected again after that arm's stage 1 with the boosted
filter (`stage2_select`). Each arm × training seed (`seeds:`) is a step of its own (`<arm>.select`,
`<arm>.build_sft`, `<arm>.s<seed>.train`, `<arm>.s<seed>.mix`, `<arm>.s<seed>.score`, `<arm>.s<seed>.eval`, under
`<workdir>/arms/<arm>/`); `claims:` are then reported with paired statistics (`dasd.reporting.ablation`).

With `executor: slurm` (`dasd.pipeline.slurm`, README "Running on a cluster") each step is submitted as a job —
sample, score and eval as job arrays of `tasks:` shards and a finalize — chained by dependencies; the same
fingerprints and markers decide what is done, so a rerun resubmits only what is not.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..config import dump_config, fingerprint_view, format_validation_error
from ..data.io import write_json_atomic
from ..errors import ConfigError, DasdError
from ..naming import RunLayout
from ..pipeline.config import PipelineConfig
from ..pipeline.cost import render_cost
from ..pipeline.local import run_local
from ..pipeline.plan import plan
from ..pipeline.preflight import input_problems, problems_error, render_inputs
from ..pipeline.slurm import check_cluster, placement, run_slurm
from ..pipeline.step import (
    StepJob,
    adopt_earlier_markers,
    external_models,
    fingerprint,
    has_ended,
    is_done,
    is_stale,
    legacy_fingerprint,
    marker_of,
    markers_without_basis,
    set_aside,
    stale_message,
    status_now,
)
from ..pipeline.steps import Step
from ..pipeline.summary import collect_ablation, collect_evals, render_table
from . import STAGES

__all__ = ["PipelineConfig", "plan", "run"]


def run(config: PipelineConfig) -> dict[str, Any]:
    run_folder = RunLayout(config.workdir)
    work = run_folder.work
    if config.threads is not None:
        import torch

        torch.set_num_threads(config.threads)
    steps = plan(config)
    jobs = step_jobs(config, steps, run_folder.state)  # every step's config is checked before any work
    where = placement(config, steps, list(STAGES))
    stale = [step for step in steps if is_stale(jobs[step.name], step.outputs)]
    checked, problems = input_problems(steps, jobs)  # the first records of the files the steps to run will read
    if config.dry_run:
        statuses = {}
        for step in steps:
            status = statuses[step.name] = f"would {status_now(jobs[step.name], step.outputs)}"
            if status == "would stale":  # kept; run again only when told (rerun=stale)
                status = statuses[step.name] = "would move+run" if config.rerun == "stale" else "is stale"
            place = f" [{where[step.name]}]" if where else ""
            print(f"{step.name:22} {status:14} {', '.join(str(path) for path in step.outputs)}{place}", flush=True)
        if stale and config.rerun != "stale":
            print(stale_message([jobs[step.name] for step in stale], work), flush=True)
        print("\n" + render_inputs(checked, problems), flush=True)
        print("\n" + render_cost(config, steps, {name: job.config for name, job in jobs.items()}), flush=True)
        return {
            "workdir": str(work),
            "dry_run": True,
            "steps": [step.name for step in steps],
            "status": statuses,
            "inputs": {"checked": checked, "problems": problems},
        }
    if stale and config.rerun != "stale":
        raise DasdError(stale_message([jobs[step.name] for step in stale], work))
    if problems:
        raise DasdError(problems_error(problems))
    on_slurm = config.executor.name == "slurm"
    if on_slurm:
        check_cluster(run_folder.state)  # before anything is written
    work.mkdir(parents=True, exist_ok=True)
    dump_config(config, run_folder.resolved_config)
    moved = {step.name: set_aside(jobs[step.name], step.outputs, work) for step in stale}
    for job in jobs.values():
        adopt_earlier_markers(job)
    started = time.perf_counter()
    rows, failure = execute(config, steps, jobs, run_folder.state)
    for row in rows:
        if row["step"] in moved:
            row["moved_aside"] = str(moved[row["step"]])
    summary = {
        "workdir": str(work),
        "seconds": round(time.perf_counter() - started, 2),
        "threads": _threads(),
        "steps": rows,
        "eval": collect_evals(work),
        **collect_ablation(config),
    }
    if failure is not None:
        summary["error"] = one_line(failure)
    write_json_atomic(run_folder.summary, summary)
    print(render_table(summary), file=sys.stdout, flush=True)
    if failure is not None:
        raise failure  # after the table: the command still ends with the step's one-line error (exit status 2)
    return summary


def execute(
    config: PipelineConfig, steps: list[Step], jobs: dict[str, StepJob], state_dir: Path
) -> tuple[list[dict[str, Any]], BaseException | None]:
    """Each step's row, from the executor; and when a step fails (or the run is interrupted) the error, kept for
    after the table, with the rows as far as the run went: the failed step's with its one-line reason, and the steps
    not reached as not run. Locally the steps go to the executor one by one, so the rows of those before the failure
    keep their results; a Slurm run's rows are read back from the markers its jobs left."""
    if config.executor.name == "slurm":
        done_before = {step.name for step in steps if is_done(jobs[step.name])}
        try:
            return run_slurm(config, steps, jobs, state_dir), None
        except (Exception, KeyboardInterrupt) as exc:
            return rows_from_markers(steps, jobs, done_before, exc), exc
    rows: list[dict[str, Any]] = []
    for index, step in enumerate(steps):
        started = time.perf_counter()
        try:
            rows += run_local([step], jobs)
        except (Exception, KeyboardInterrupt) as exc:
            rows.append(failed_row(step.name, exc, time.perf_counter() - started))
            return rows + [not_run_row(later.name) for later in steps[index + 1 :]], exc
    return rows, None


def rows_from_markers(
    steps: list[Step], jobs: dict[str, StepJob], done_before: set[str], error: BaseException
) -> list[dict[str, Any]]:
    """The rows of a Slurm run that ended in an error, from the steps' markers: reused, ran or skipped when their
    jobs ended; failed (with the run's error) when every step it reads had ended but it did not; not run when it
    waited on a step that did not end (Slurm cancels such jobs)."""
    planned = {step.name for step in steps}
    ended: set[str] = set()
    rows: list[dict[str, Any]] = []
    for step in steps:
        job, marker = jobs[step.name], marker_of(jobs[step.name])
        if step.name in done_before or has_ended(job):
            ended.add(step.name)
            status = "cached" if step.name in done_before else "ran (slurm)"
            if marker.get("status") != "done":
                status = f"skipped: {marker.get('reason', '')}"
            rows.append({"step": step.name, "status": status, "seconds": marker.get("seconds", 0.0)})
        elif all(name in ended for name in step.depends if name in planned):
            rows.append(failed_row(step.name, error, 0.0))
        else:
            rows.append(not_run_row(step.name))
    return rows


def failed_row(name: str, error: BaseException, seconds: float) -> dict[str, Any]:
    """The row of the step a run ended on; its reason in the table's result column too (the status is cut short)."""
    reason = one_line(error)
    status = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
    return {"step": name, "status": status, "seconds": round(seconds, 2), "reason": reason, "result": reason}


def not_run_row(name: str) -> dict[str, Any]:
    return {"step": name, "status": "not run", "seconds": 0.0}


def one_line(error: BaseException, most: int = 300) -> str:
    """An error as the one line the command prints: a dasd error's own text, else its type and first line.

    >>> one_line(ValueError("bad\\nvalue")), one_line(DasdError("q.jsonl: not found")), one_line(KeyboardInterrupt())
    ('ValueError: bad', 'q.jsonl: not found', 'interrupted')
    """
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    text = str(error) if isinstance(error, DasdError) else f"{type(error).__name__}: {error}".rstrip(": ")
    return (text.strip().splitlines() or [type(error).__name__])[0][:most]


def step_jobs(config: PipelineConfig, steps: list[Step], state_dir: Path) -> dict[str, StepJob]:
    """Each step validated by its stage's config class and fingerprinted (in plan order: a step's fingerprint
    includes those of the steps it reads), as the job the executors run. Where a marker comes from a dasd that did
    not record its basis, each step also gets that dasd's fingerprint, so its finished work is recognised."""
    fingerprints: dict[str, str] = {}
    earlier: dict[str, str] | None = {} if markers_without_basis(state_dir) else None
    jobs = {}
    for step in steps:
        stage = STAGES[step.stage]
        validated = _validate(step)
        resolved = validated.model_dump(mode="json")
        # the models it starts from count as inputs: a model folder whose files changed reruns it
        inputs = step.inputs + [
            path for path in external_models(resolved, Path(config.workdir)) if path not in step.inputs
        ]
        key, basis = fingerprint(step.name, fingerprint_view(validated), step.depends, inputs, fingerprints)
        jobs[step.name] = StepJob(
            step.name,
            step.stage,
            stage.module,
            stage.config_class,
            resolved,
            key,
            state_dir,
            basis=basis,
            earlier_fingerprint=(
                legacy_fingerprint(step.name, validated, step.depends, inputs, earlier) if earlier is not None else None
            ),
            threads=config.threads,
            skip_if=step.skip_if,
        )
    return jobs


def _validate(step: Step):
    _, config_class = STAGES[step.stage].load()
    try:
        return config_class.model_validate(step.config)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, f"pipeline step {step.name}", config_class)) from None


def _threads() -> int:
    import torch

    return torch.get_num_threads()
