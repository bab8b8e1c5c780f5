"""One step of `dasd run`, the same wherever it runs: its fingerprint, its marker, and `run_step`.

    job = StepJob("score", "score", "dasd.stages.score", "ScoreConfig", resolved_config, fingerprint, state_dir)
    if not is_done(job):
        outcome = run_step(job)             # here (the local executor) or in a Slurm job (the Slurm executor)

A step's fingerprint covers what decides its outputs and nothing else (`fingerprint`): its config less the
speed-only fields (declared on each field: `dasd.config.SPEED_ONLY` / `ADDED`), the fingerprints of the steps it
reads, and the content of its input files and start models (`dasd.cache.keys`). Its marker
(`<workdir>/.dasd/<step>.json`, one shape for both executors) says which fingerprint it last ran with, what that
fingerprint covered (its basis) and how that ended: `running`, `done` or `skipped`. A step is done when its marker
has its current fingerprint and says done or skipped; a killed step is rerun and resumes by id; a step whose
fingerprint changed and whose outputs are there is stale: its outputs are never deleted — `dasd run` stops naming
what changed, unless told `rerun=stale`, and then `set_aside` moves them under `<workdir>/stale/`. A job names its
stage by module and config class, so running it needs no registry (nothing below the stages imports them), and it
pickles for Slurm.

Sharded steps (sample, score, eval as job arrays) also keep one marker per task (`<workdir>/.dasd/tasks/`).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.io import write_json_atomic
from ..errors import DasdError
from ..models.identity import path_identity
from ..naming import STALE_DIR, step_marker

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
    basis: dict[str, Any] = field(default_factory=dict)  # what the fingerprint covers (`fingerprint`)
    earlier_fingerprint: str | None = None  # an earlier dasd's fingerprint of the same step (`legacy_fingerprint`)
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


def fingerprint(
    name: str, view: dict[str, Any], depends: list[str], inputs: list[Path], fingerprints: dict[str, str]
) -> tuple[str, dict[str, Any]]:
    """(fingerprint, basis) of a step: its basis is what decides its outputs — the fingerprint view of its config
    (`dasd.config.fingerprint_view`: no speed-only fields, added ones only when set), the fingerprints of the steps
    it reads (computed before: plan order) and the identity of its input files and start models
    (`dasd.models.identity.path_identity`: content, so a `touch` or a copied model changes nothing). The basis is kept
    in the marker, to say what changed when the fingerprint does; the fingerprint is recorded in `fingerprints`."""
    basis = {
        "step": name,
        "config": view,
        "depends": {dependency: fingerprints.get(dependency, "off") for dependency in depends},
        "inputs": [[path.name, path_identity(path)] for path in inputs],
    }
    fingerprints[name] = hashlib.sha256(json.dumps(basis, sort_keys=True).encode()).hexdigest()[:16]
    return fingerprints[name], basis


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


def what_changed(before: dict[str, Any] | None, now: dict[str, Any], *, most: int = 3) -> str:
    """The differences between the basis a step ran with and its basis now, in a few words.

    >>> old = {"config": {"schedule": [{"temperature": 0.6}]}, "depends": {"score": "a"}, "inputs": [["q.jsonl", "x"]]}
    >>> new = {"config": {"schedule": [{"temperature": 0.7}]}, "depends": {"score": "b"}, "inputs": [["q.jsonl", "x"]]}
    >>> what_changed(old, new)
    'schedule.0.temperature: 0.6 -> 0.7; score changed'
    """
    if not before:
        return "its settings or inputs changed (it ran before dasd recorded what a step is made from)"
    changes: list[str] = []

    def walk(old: Any, new: Any, where: str) -> None:
        if isinstance(old, dict) and isinstance(new, dict):
            for key in list(old) + [key for key in new if key not in old]:
                walk(old.get(key, "<unset>"), new.get(key, "<unset>"), f"{where}.{key}" if where else str(key))
        elif isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
            for index, (a, b) in enumerate(zip(old, new)):
                walk(a, b, f"{where}.{index}")
        elif old != new:
            changes.append(f"{where}: {_short(old)} -> {_short(new)}")

    walk(before.get("config", {}), now.get("config", {}), "")
    for dependency, value in now.get("depends", {}).items():
        if before.get("depends", {}).get(dependency) != value:
            changes.append(f"{dependency} changed")
    old_inputs = {name: identity for name, identity in before.get("inputs", [])}
    for name, identity in now.get("inputs", []):
        if old_inputs.get(name) != identity:
            changes.append(f"the content of {name} changed")
    if not changes:
        return "its inputs changed"
    more = f" (+{len(changes) - most} more)" if len(changes) > most else ""
    return "; ".join(changes[:most]) + more


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 40 else text[:37] + "..."


# --- fingerprints of markers written before the basis was recorded (dasd before issue 35) --------------------------

# Fields an earlier dasd left out of a step's resolved config (its `omitted`), by the section class declaring them.
LEGACY_OMITTED = {"SampleConfig": ("cache",), "FilterConfig": ("workers",), "TrainConfig": ("data_workers",)}
# Fields that did not exist then (at their default they are left out; set, they cannot match an old marker).
LEGACY_ABSENT = {"BackendConfig": ("stream",)}


def legacy_view(config: Any) -> Any:
    """A config as an earlier dasd serialized it for its fingerprint: every field, but those it omitted and the
    added ones at their default."""
    from pydantic import BaseModel
    from pydantic_core import to_jsonable_python

    from ..config import fingerprint_rule

    if isinstance(config, BaseModel):
        classes = [cls.__name__ for cls in type(config).__mro__]
        omitted = {name for cls in classes for name in LEGACY_OMITTED.get(cls, ())}
        absent = {name for cls in classes for name in LEGACY_ABSENT.get(cls, ())}
        view = {}
        for field_name, field in type(config).model_fields.items():
            value = getattr(config, field_name)
            at_default = value == field.get_default(call_default_factory=True)
            if field_name in omitted or (at_default and (fingerprint_rule(field) == "added" or field_name in absent)):
                continue
            view[field_name] = legacy_view(value)
        return view
    if isinstance(config, (list, tuple)):
        return [legacy_view(item) for item in config]
    if isinstance(config, dict):
        return {key: legacy_view(item) for key, item in config.items()}
    return to_jsonable_python(config)


def legacy_fingerprint(
    name: str, config: Any, depends: list[str], inputs: list[Path], fingerprints: dict[str, str]
) -> str:
    """The fingerprint an earlier dasd gave the step: its whole serialized config, its dependencies' (earlier)
    fingerprints, its input files' sha256 and its start models' config.json modification time. A marker with it
    is the same work, and is carried over to the current fingerprint (`adopt_earlier_markers`)."""

    def digest_of(path: Path) -> str:
        if path.is_dir():
            marker = path / "config.json"
            return f"{path}:{(marker if marker.exists() else path).stat().st_mtime_ns}"
        if not path.exists():
            return f"{path}:missing"
        hasher = hashlib.sha256()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                hasher.update(chunk)
        return hasher.hexdigest()

    payload = json.dumps(
        {
            "step": name,
            "config": legacy_view(config),
            "depends": [fingerprints.get(dependency, "off") for dependency in depends],
            "inputs": [digest_of(path) for path in inputs],
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
    """The step's marker, in the one shape both executors write and read; it keeps the basis of its fingerprint,
    so that a later run can say what changed."""
    marker: dict[str, Any] = {"fingerprint": job.fingerprint, "status": status, "finished": time.time()}
    if seconds is not None:
        marker["seconds"] = seconds
    if reason is not None:
        marker["reason"] = reason
    marker["basis"] = job.basis
    write_json_atomic(step_marker(job.state_dir, job.name), marker)


def marker_of(job: StepJob) -> dict[str, Any]:
    return read_marker(step_marker(job.state_dir, job.name))


def matches(job: StepJob, marker: dict[str, Any]) -> bool:
    """Whether a marker was written by this step with its current fingerprint — or by an earlier dasd, before the
    marker kept its basis, with the fingerprint that dasd gives the same step."""
    if not marker:
        return False
    if marker.get("fingerprint") == job.fingerprint:
        return True
    return (
        "basis" not in marker
        and job.earlier_fingerprint is not None
        and (marker.get("fingerprint") == job.earlier_fingerprint)
    )


def is_done(job: StepJob) -> bool:
    """Whether the step ran to its end with its current fingerprint: a run reuses it. (A skipped step is looked
    at again: whether it must be skipped is decided when it would run.)"""
    marker = marker_of(job)
    return matches(job, marker) and marker.get("status") == "done"


def has_ended(job: StepJob) -> bool:
    """Whether the step is done or was skipped with its current fingerprint: nothing of it is left to wait for."""
    marker = marker_of(job)
    return matches(job, marker) and marker.get("status") in ENDED


def status_now(job: StepJob, outputs: list[Path] | None = None) -> str:
    """What a run would do with the step: reuse it, resume it (same fingerprint, unfinished), run it, or — when
    another fingerprint's outputs are there — find it stale."""
    marker = marker_of(job)
    if not matches(job, marker):
        return "stale" if outputs is not None and is_stale(job, outputs) else "run"
    return "reuse" if marker.get("status") == "done" else "resume"


def cached_row(job: StepJob, outputs: list[Path]) -> dict[str, Any] | None:
    """Both executors' first look at a step: its table row when it is done with its current fingerprint (reused),
    else None. (What another fingerprint left was moved aside before the executor started, or the run stopped:
    `dasd.stages.run`.)"""
    if is_done(job):
        return {"step": job.name, "status": "cached", "seconds": marker_of(job).get("seconds", 0.0)}
    return None


# --- stale work: kept, and moved aside only when the user says so ---------------------------------------------------


def is_stale(job: StepJob, outputs: list[Path]) -> bool:
    """Whether the step ran with another fingerprint and left outputs: resuming into them would mix two configs'
    work, and running afresh would need them gone — which only the user decides (`rerun=stale`)."""
    marker = marker_of(job)
    return bool(marker) and not matches(job, marker) and any(path.exists() for path in outputs)


def stale_reason(job: StepJob) -> str:
    """What changed since the step ran, in a few words (`what_changed`)."""
    return what_changed(marker_of(job).get("basis"), job.basis)


def stale_message(stale: list[StepJob], workdir: Path) -> str:
    """One line: the first stale step, what changed, and what to do (the later stale steps follow from it)."""
    after = f" (and {len(stale) - 1} stale step(s) after it)" if len(stale) > 1 else ""
    return (
        f"{stale[0].name} is stale: {stale_reason(stale[0])}; its outputs were made with other settings and are "
        f"kept{after}. Undo the change, or run again with rerun=stale to move them to {workdir / STALE_DIR}/ and "
        "redo the step"
    )


def markers_without_basis(state_dir: Path) -> bool:
    """Whether any step marker was written without its basis (by a dasd before issue 35): then each step's earlier
    fingerprint is worth computing (`legacy_fingerprint`)."""
    return any("basis" not in read_marker(path) for path in state_dir.glob("*.json")) if state_dir.is_dir() else False


def set_aside(job: StepJob, outputs: list[Path], workdir: Path) -> Path:
    """Move a stale step's outputs (and its markers) under `<workdir>/stale/<step>-<old fingerprint>/`, keeping
    their paths relative to the workdir, and return that folder: nothing is deleted, and a rename moves no bytes."""
    marker = marker_of(job)
    folder = workdir / STALE_DIR / f"{job.name}-{marker.get('fingerprint', 'unknown')}"
    for path in outputs:
        if not path.exists():
            continue
        target = folder / (path.resolve().relative_to(workdir.resolve()) if _inside(path, workdir) else path.name)
        if target.exists():  # the same old outputs moved aside before, and made again by that same config
            target = target.with_name(f"{target.name}.{int(time.time())}")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
    for state in (step_marker(job.state_dir, job.name), job.state_dir / "tasks" / job.name):
        if state.exists():
            target = folder / ".dasd" / state.name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(state, target)
    return folder


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def adopt_earlier_markers(job: StepJob) -> bool:
    """Rewrite a marker (and the step's task markers) an earlier dasd wrote with its fingerprint of this same step
    to the current fingerprint and basis, so that every later check compares one value. Returns whether it did."""
    marker = marker_of(job)
    if not marker or marker.get("fingerprint") == job.fingerprint or not matches(job, marker):
        return False
    write_json_atomic(
        step_marker(job.state_dir, job.name), {**marker, "fingerprint": job.fingerprint, "basis": job.basis}
    )
    tasks = job.state_dir / "tasks" / job.name
    for path in sorted(tasks.glob("*.json")) if tasks.is_dir() else []:
        task = read_marker(path)
        if task.get("fingerprint") == job.earlier_fingerprint:
            write_json_atomic(path, {**task, "fingerprint": job.fingerprint})
    return True


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
