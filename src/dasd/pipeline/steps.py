"""What a plan is made of: a `Step`, and one builder for each step that the recipe and the arms both plan (select,
build-sft, train, eval, mix) — so each stage's settings are merged in one place. Pure, no I/O.

A step names the stage it runs (a key of `dasd.stages.STAGES`), that stage's config as a dict, the paths it writes
and the steps it reads from. Its paths come from the run's `dasd.naming.RunLayout` (`layout(config)`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..naming import RunLayout, sft_stage_file, sidecar, summary_file
from .config import PipelineConfig


@dataclass
class Step:
    name: str
    stage: str  # the command it runs (a key of dasd.stages.STAGES)
    config: dict[str, Any]
    outputs: list[Path]
    depends: list[str] = field(default_factory=list)
    inputs: list[Path] = field(default_factory=list)  # external files whose content is fingerprinted
    skip_if: Callable[[], str | None] | None = None  # returns a reason to skip, checked right before running


def layout(config: PipelineConfig) -> RunLayout:
    """The run's folders and files, in its record format."""
    return RunLayout(config.workdir, record_format=config.record_format)


def model_path(model: str) -> Path | None:
    """A local model's path (its content is fingerprinted), or None for a Hub id or an asset name."""
    path = Path(model)
    return path if path.exists() else None


def student_tokenizer(config: PipelineConfig) -> str:
    return config.student.tokenizer or config.student.model


def earlier_build_sft_defaults(config: PipelineConfig) -> dict[str, Any]:
    """In a workdir made before build-sft wrote only what is read (and Parquet was the default), build-sft keeps
    writing every export unless told otherwise: the same config, so its step and those after it — training — are
    not redone after an upgrade."""
    if getattr(config, "_made_before_parquet", False):
        return {"exports": ["trl_messages", "trl_prompt_completion", "sharegpt"]}
    return {}


def select_step(name: str, settings: dict[str, Any], output: Path, depends: list[str]) -> Step:
    """A `dasd select` step writing `output` (and its summary and config beside it)."""
    return Step(
        name,
        "select",
        {**settings, "output": str(output)},
        [output, summary_file(output, "select"), sidecar(output, "config", ".yaml")],
        depends,
    )


def build_sft_step(
    config: PipelineConfig,
    name: str,
    selected: Path,
    output: Path,
    depends: list[str],
    settings: dict[str, Any] | None = None,
) -> Step:
    """A `dasd build-sft` step over `selected`: the pipeline's build-sft settings, then `settings` (an arm's)."""
    step_config = {
        "student_tokenizer": student_tokenizer(config),
        **earlier_build_sft_defaults(config),
        **config.build_sft,
        **(settings or {}),
        "input": str(selected),
        "output": str(output),
    }
    return Step(name, "build-sft", step_config, [output.parent], depends)


def sft_stages(sft_output: Path, stages: list[str] | tuple[str, ...]) -> list[dict[str, Any]]:
    """Training stages on the per-stage files build-sft wrote beside `sft_output`."""
    return [{"name": stage, "data": str(sft_stage_file(sft_output, stage))} for stage in stages]


def train_step(
    config: PipelineConfig,
    name: str,
    settings: dict[str, Any],
    output_dir: Path,
    stages: list[dict[str, Any]],
    depends: list[str],
    *,
    outputs: list[Path] | None = None,
    skip_if: Callable[[], str | None] | None = None,
) -> Step:
    """A `dasd train` step of the pipeline's student: `settings`, then where, whom and which stages; its outputs are
    the stages' folders unless given."""
    step_config = {**settings, "output_dir": str(output_dir), "student": config.student.model_dump(), "stages": stages}
    trained = outputs if outputs is not None else [output_dir / stage["name"] for stage in stages]
    return Step(name, "train", step_config, trained, depends, skip_if=skip_if)


def named_run(step: Step) -> Step:
    """One tracker run per branch and stage: <run_name>-<branch>-<stage>, not das and rs under one name."""
    if step.config.get("run_name"):
        step.config["run_name"] = f"{step.config['run_name']}-{Path(step.config['output_dir']).name}"
    return step


def eval_step(
    config: PipelineConfig,
    name: str,
    backend: dict[str, Any],
    output_dir: Path,
    depends: list[str],
    *,
    teacher: bool = False,
    model_name: str | None = None,
) -> Step:
    """The `dasd eval` step of one model (pipeline models and arms alike). `eval.backend` is for the student-side
    models, which run on the student's device and dtype; the teacher takes `eval.teacher` (and its `backend`).
    A model that was not produced (its training was skipped) is skipped, not an error."""
    overrides = {key: value for key, value in config.eval.items() if key not in ("teacher", "backend")}
    if teacher:
        overrides.update(config.eval.get("teacher", {}))
        backend = {**backend, **overrides.pop("backend", {})}
        skip_if = None
    else:
        backend = {
            **backend,
            "device": config.student.device,
            "dtype": config.student.dtype,
            **config.eval.get("backend", {}),
        }
        produced = Path(backend["model"])
        skip_if = (lambda path=produced: None if path.exists() else f"{path} was not produced") if depends else None
    step_config = {
        **overrides,
        "output_dir": str(output_dir),
        "backend": backend,
        "benchmarks": list(config.eval_benchmarks),
    }
    if model_name is not None:
        step_config["model_name"] = model_name
    inputs = [Path(spec) for spec in config.eval_benchmarks if Path(spec).exists()]
    return Step(name, "eval", step_config, [output_dir], depends, inputs=inputs, skip_if=skip_if)


def mix_step_config(
    config: PipelineConfig, settings: dict[str, Any], teacher: dict[str, Any], sft: Path, output: Path, student: Path
) -> dict[str, Any]:
    """`dasd mix` settings: the trained `student` (hf, on the student's device) writes the rollouts on the
    curated `sft` records, the teacher continues them; `settings` may override either backend."""
    return {
        **settings,
        "input": str(sft),
        "output": str(output),
        "student": {
            "name": "hf",
            "model": str(student),
            "device": config.student.device,
            "dtype": config.student.dtype,
            **settings.get("student", {}),
        },
        "teacher": {**teacher, **settings.get("teacher", {})},
    }
