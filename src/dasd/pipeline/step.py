"""One step of `dasd run`, the same wherever it runs: its fingerprint, its marker, and `run_step`.

    job = StepJob("score", "score", "dasd.stages.score", "ScoreConfig", resolved_config, fingerprint, state_dir)
    if not is_done(job):
        outcome = run_step(job)             # here (the local executor) or in a Slurm job (the Slurm executor)

A step's fingerprint is its resolved config, the fingerprints of the steps it reads and the content of its input
files. Its marker (`<workdir>/.dasd/<step>.json`, one shape for both executors) says which fingerprint it last
ran with and how that ended: `running`, `done` or `skipped`. A step is done when its marker has its current
fingerprint and says done or skipped; a killed step is rerun and resumes by id; a step whose fingerprint changed
starts afresh (`clear_stale` removes what another config wrote). A job names its stage by module and config
class, so running it needs no registry (nothing below the stages imports them), and it pickles for Slurm.

Sharded steps (sample, score, eval as job arrays) also keep one marker per task (`<workdir>/.dasd/tasks/`).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.io import write_json_atomic
from ..errors import DasdError
from ..naming import step_marker

ENDED = ("done", "skipped")


@dataclass
class StepJob:
    """What it takes to run one step (or one shard of it) on any machine: picklable."""

    name: str
    stage: str  # the dasd command (`dasd train`): what `accelerate launch -m dasd` runs on each node
    module: str  # the stage's module and config class: how the step runs in this process
    config_class: str
    config: dict[str, Any]  # the step's resolved config
    fingerprint: str
    state_dir: Path
    threads: int | None = None
    skip_if: Callable[[], str | None] | None = None
    accelerate: list[str] | None = None  # `accelerate launch` options: training on several GPUs or nodes
    nodes: int = 1
    gpus_per_node: int = 0

    def stage_config(self, config: dict[str, Any]):
        """`config` validated by the stage's config class."""
        return getattr(importlib.import_module(self.module), self.config_class).model_validate(config)

    def run_stage(self, config: dict[str, Any]) -> dict[str, Any]:
        """The stage itself, in this process, on `config` (the step's, or one shard's)."""
        if self.threads is not None:
            import torch

            torch.set_num_threads(self.threads)
        return importlib.import_module(self.module).run(self.stage_config(config))


@dataclass
class StepOutcome:
    status: str  # done | skipped | node done (a training node other than the first)
    seconds: float = 0.0
    reason: str | None = None  # why it was skipped
    result: dict[str, Any] = field(default_factory=dict)  # the stage's summary, when it ran in this process


# --- fingerprints ------------------------------------------------------------------------------------------------


def file_digest(path: Path) -> str:
    """A file's content hash; a folder (a model) by its config's modification time; a missing path by name."""
    if path.is_dir():
        marker = path / "config.json"
        stat = (marker if marker.exists() else path).stat()
        return f"{path}:{stat.st_mtime_ns}"
    if not path.exists():
        return f"{path}:missing"
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def external_models(resolved: dict[str, Any], workdir: Path) -> list[Path]:
    """The local model folders a step's config names (any `model` key, at any depth) outside the run's workdir:
    the models the run starts from, whose content must be part of the fingerprint (a model the run trains is
    covered by the fingerprint of the step that trains it, and does not exist yet when a fresh run is planned).

    >>> external_models({"student": {"model": "/"}, "backend": {"model": "smollm2"}}, Path("runs/x"))
    [PosixPath('/')]
    """
    found: list[Path] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key == "model" and isinstance(item, str) and Path(item).is_dir():
                    path = Path(item).resolve()
                    if not path.is_relative_to(workdir.resolve()) and path not in found:
                        found.append(path)
                else:
                    walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(resolved)
    return found


def fingerprint(
    name: str, resolved: dict[str, Any], depends: list[str], inputs: list[Path], fingerprints: dict[str, str]
) -> str:
    """The step's resolved config, the fingerprints of the steps it reads (computed before: plan order) and its
    input files' content; recorded in `fingerprints` for the steps after it."""
    payload = json.dumps(
        {
            "step": name,
            "config": resolved,
            "depends": [fingerprints.get(dependency, "off") for dependency in depends],
            "inputs": [file_digest(path) for path in inputs],
        },
        sort_keys=True,
    )
    fingerprints[name] = hashlib.sha256(payload.encode()).hexdigest()[:16]
    return fingerprints[name]


# --- markers -----------------------------------------------------------------------------------------------------


def read_marker(path: Path) -> dict[str, Any]:
    """A marker's content; {} when there is none, or when a crash tore it (as if the step never ran)."""
    try:
        return json.loads(path.read_text()) if path.exists() else {}
    except (OSError, json.JSONDecodeError):
        return {}


def write_marker(job: StepJob, status: str, *, seconds: float | None = None, reason: str | None = None) -> None:
    """The step's marker, in the one shape both executors write and read."""
    marker: dict[str, Any] = {"fingerprint": job.fingerprint, "status": status, "finished": time.time()}
    if seconds is not None:
        marker["seconds"] = seconds
    if reason is not None:
        marker["reason"] = reason
    write_json_atomic(step_marker(job.state_dir, job.name), marker)


def marker_of(job: StepJob) -> dict[str, Any]:
    return read_marker(step_marker(job.state_dir, job.name))


def is_done(job: StepJob) -> bool:
    """Whether the step ran to its end with its current fingerprint: a run reuses it. (A skipped step is looked
    at again: whether it must be skipped is decided when it would run.)"""
    marker = marker_of(job)
    return marker.get("fingerprint") == job.fingerprint and marker.get("status") == "done"


def has_ended(job: StepJob) -> bool:
    """Whether the step is done or was skipped with its current fingerprint: nothing of it is left to wait for."""
    marker = marker_of(job)
    return marker.get("fingerprint") == job.fingerprint and marker.get("status") in ENDED


def status_now(job: StepJob) -> str:
    """What a run would do with the step: reuse it, resume it (same fingerprint, unfinished), or run it."""
    marker = marker_of(job)
    if marker.get("fingerprint") != job.fingerprint:
        return "run"
    return "reuse" if marker.get("status") == "done" else "resume"


def cached_row(job: StepJob, outputs: list[Path]) -> dict[str, Any] | None:
    """Both executors' first look at a step: its table row when it is done with its current fingerprint (reused),
    else None — after removing what another fingerprint left (`clear_stale`), so that it runs afresh or resumes."""
    if is_done(job):
        return {"step": job.name, "status": "cached", "seconds": marker_of(job).get("seconds", 0.0)}
    clear_stale(job, outputs)
    return None


def clear_stale(job: StepJob, outputs: list[Path]) -> None:
    """Remove what the step wrote under another fingerprint: it would be resumed into — or, for a step skipped
    now, read by the steps after it as if this config had produced it."""
    marker = marker_of(job)
    if not marker or marker.get("fingerprint") == job.fingerprint:
        return
    for path in outputs:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists():
            path.unlink()


# --- running -----------------------------------------------------------------------------------------------------


def run_step(job: StepJob, launch: Callable[[StepJob], bool] | None = None) -> StepOutcome:
    """A whole step (or the finalize of a sharded one: the stage without shard merges the shard files), between
    its markers. Both executors call this: the local one here, the Slurm one in the step's job — with `launch`,
    which runs a multi-GPU/multi-node training step's `accelerate launch` on this node (True on the first)."""
    reason = job.skip_if() if job.skip_if else None
    if reason:
        write_marker(job, "skipped", reason=reason)
        return StepOutcome("skipped", reason=reason)
    print(f"\n=== dasd run: {job.name} ===", file=sys.stderr, flush=True)
    write_marker(job, "running")
    started = time.perf_counter()
    result: dict[str, Any] = {}
    if job.accelerate is None:
        result = job.run_stage(job.config) or {}
    elif launch is None:
        raise ValueError(f"{job.name}: a step with accelerate options runs only through an executor's launch")
    elif not launch(job):
        return StepOutcome("node done")  # only the first node writes the marker
    seconds = round(time.perf_counter() - started, 2)
    write_marker(job, "done", seconds=seconds)
    return StepOutcome("done", seconds=seconds, result=result if isinstance(result, dict) else {})


def task_marker(job: StepJob, shard: tuple[int, int]) -> Path:
    return job.state_dir / "tasks" / job.name / f"{shard[0]}-of-{shard[1]}.json"


def task_done(job: StepJob, shard: tuple[int, int]) -> bool:
    return read_marker(task_marker(job, shard)).get("fingerprint") == job.fingerprint


def run_shard(job: StepJob, shard: tuple[int, int]) -> str:
    """One task of a job array: the stage on shard i/n; its marker once it finished with nothing left to retry. A
    task whose records failed (its errors files are not empty) writes no marker and fails, naming them: its
    finalize — a CPU-only merge — never has generation or scoring to redo, and the rerun of `dasd run` resubmits
    just this task, which retries only what failed (resume by id). A step that will be skipped (its model was not
    produced) does no work here: its finalize records why."""
    result: dict[str, Any] = {}
    if not (job.skip_if and job.skip_if()):
        result = job.run_stage({**job.config, "shard": f"{shard[0]}/{shard[1]}"}) or {}
        failed = shard_failures(job, shard)
        if failed:
            count = sum(failed.values())
            raise DasdError(
                f"{job.name} shard {shard[0]}/{shard[1]}: {count} records failed (see {', '.join(map(str, failed))});"
                " rerun `dasd run` to retry them in this shard's task"
            )
    tokens = result.get("completion_tokens", result.get("student_tokens_scored", 0))  # sample / score
    marker = {"fingerprint": job.fingerprint, "time": time.time(), "tokens": tokens if isinstance(tokens, int) else 0}
    write_json_atomic(task_marker(job, shard), marker)
    return f"{job.name} shard {shard[0]}/{shard[1]} done"


def shard_failures(job: StepJob, shard: tuple[int, int]) -> dict[Path, int]:
    """The errors files shard (i, n) of a step left with entries (sample, score: beside the output; eval: in each
    benchmark's folder), with their line counts."""
    output = job.config.get("output") or job.config.get("output_dir")
    if not output:
        return {}
    folder = Path(output) if job.config.get("output_dir") else Path(output).parent
    if not folder.is_dir():
        return {}
    found = {}
    for path in sorted(folder.rglob(f"*.shard-{shard[0]}-of-{shard[1]}.errors.jsonl")):
        lines = sum(1 for line in path.read_bytes().splitlines() if line.strip())
        if lines:
            found[path] = lines
    return found
