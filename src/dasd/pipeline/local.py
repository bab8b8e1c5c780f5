"""The local executor of `dasd run` (`executor: local`, the default): every step here, one after another.

    rows = run_local(steps, jobs)      # one row per step: cached, skipped: <why>, or ran, with its time

Steps come in plan order, so each runs after the steps it reads. A step done with its current fingerprint is
reused; anything else goes through `run_step`, as a Slurm job would run it.
"""

from __future__ import annotations

from typing import Any

from .step import StepJob, cached_row, run_step
from .steps import Step
from .summary import headline


def run_local(steps: list[Step], jobs: dict[str, StepJob]) -> list[dict[str, Any]]:
    rows = []
    for step in steps:
        job = jobs[step.name]
        cached = cached_row(job, step.outputs)
        if cached:
            rows.append(cached)
            continue
        outcome = run_step(job)
        if outcome.status == "skipped":
            rows.append({"step": step.name, "status": f"skipped: {outcome.reason}", "seconds": 0.0})
        else:
            rows.append(
                {
                    "step": step.name,
                    "status": "ran",
                    "seconds": outcome.seconds,
                    "result": headline(step.stage, outcome.result),
                }
            )
    return rows
