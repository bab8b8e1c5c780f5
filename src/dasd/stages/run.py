"""`dasd run PIPELINE.yaml`: the whole recipe from one config, cached and resumable.

    dasd run configs/gpt-oss-qwen3-4b-run.yaml dry_run=true    # validate, and show what would run or be reused
    dasd run configs/gpt-oss-qwen3-4b-run.yaml
    dasd run configs/gpt-oss-qwen3-4b-run.yaml workdir=runs/exp2 train.epochs=3 \\
        'stages={mix: false, train_mixed: false}'

Stages, in order (any can be switched off under `stages:`):

    sample → score → filter → select (DAS; and RS when rs_baseline) → build-sft → train low → high
    (DAS; and RS) → mix → train mixed_policy → eval (the student before training, after each stage,
    the RS baseline, and the teacher) → provenance of one distilled model's answers

Each stage writes under `<workdir>/<stage>/` with its resolved config beside its output. A stage's
fingerprint is its resolved config plus the fingerprints of the stages it reads from (and the
content of the question files): a finished stage with an unchanged fingerprint is skipped; one that
was killed is rerun and resumes by id; one whose fingerprint changed starts afresh (its old output
is removed). A table at the end gives each stage's status and time, and the evaluation results.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError

from ..backends.base import BackendConfig
from ..config import StageConfig, dump_config, format_validation_error
from ..errors import ConfigError
from ..io import write_json_atomic
from ..models import ModelConfig
from ..naming import EVAL_MODELS, HIGH_TEMP_STAGE, LOW_TEMP_STAGE, MIXED_POLICY_STAGE, SFT_STAGES, sft_stage_file
from . import STAGES

STEPS = ("sample", "score", "filter", "select", "build_sft", "train", "mix", "train_mixed", "eval", "provenance")


class PipelineConfig(StageConfig):
    workdir: str = Field(..., description="folder of the run; every stage writes into its own subfolder")
    questions: str = Field(
        ..., description="training questions (`dasd.records.Question` records, or the released format)"
    )
    teacher: BackendConfig = Field(..., description="the teacher (sampling and mixed-policy continuations)")
    student: ModelConfig = Field(..., description="the student to distil into")
    eval_benchmarks: list[str] = Field(
        default_factory=lambda: ["aime24", "aime25"],
        description="benchmarks for the final evaluation (names or question files)",
    )
    eval_models: list[str] = Field(
        default_factory=lambda: list(EVAL_MODELS),
        description=f"which models to evaluate, among {', '.join(EVAL_MODELS)}",
    )
    rs_baseline: bool = Field(
        True, description="also select by random sampling (same budget) and train that student, for comparison"
    )
    stages: dict[str, bool] = Field(
        default_factory=dict, description=f"switch stages off, e.g. {{mix: false}}; steps: {', '.join(STEPS)}"
    )
    sample: dict[str, Any] = Field(
        default_factory=dict, description="`dasd sample` settings (input/output/backend are filled in)"
    )
    score: dict[str, Any] = Field(default_factory=dict, description="`dasd score` settings")
    filter: dict[str, Any] = Field(default_factory=dict, description="`dasd filter` settings")
    select: dict[str, Any] = Field(
        default_factory=dict, description="`dasd select` settings (strategy is set per branch)"
    )
    build_sft: dict[str, Any] = Field(default_factory=dict, description="`dasd build-sft` settings")
    train: dict[str, Any] = Field(default_factory=dict, description="`dasd train` settings for the low/high stages")
    mix: dict[str, Any] = Field(default_factory=dict, description="`dasd mix` settings (student/teacher are filled in)")
    train_mixed: dict[str, Any] = Field(
        default_factory=lambda: {"epochs": 1},
        description="settings of the mixed_policy training stage (on top of `train`)",
    )
    eval: dict[str, Any] = Field(
        default_factory=dict,
        description="`dasd eval` settings (backend and benchmarks are filled in; a `teacher:` sub-section "
        "overrides them for the teacher)",
    )
    provenance: dict[str, Any] = Field(
        default_factory=dict,
        description="`dasd provenance` settings for the answers of one evaluated model (`model:`, default "
        "high_temp); the three models are filled in",
    )
    dry_run: bool = Field(
        False, description="check every step's config and print what would run or be reused, without running anything"
    )


@dataclass
class Step:
    name: str
    stage: str  # the command it runs (a key of dasd.stages.STAGES)
    config: dict[str, Any]
    outputs: list[Path]
    depends: list[str] = field(default_factory=list)
    inputs: list[Path] = field(default_factory=list)  # external files whose content is fingerprinted
    skip_if: Callable[[], str | None] | None = None  # returns a reason to skip, checked right before running


def _file_digest(path: Path) -> str:
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


def _model_path(model: str) -> Path | None:
    path = Path(model)
    return path if path.exists() else None


def plan(config: PipelineConfig) -> list[Step]:
    work = Path(config.workdir)
    student = config.student.model_dump()
    student_tokenizer = config.student.tokenizer or config.student.model
    teacher = config.teacher.model_dump()
    enabled = {name: config.stages.get(name, True) for name in STEPS}
    unknown = set(config.stages) - set(STEPS)
    if unknown:
        raise ConfigError(f"stages: unknown step(s) {sorted(unknown)} (known: {', '.join(STEPS)})")
    branches = ["das"] + (["rs"] if config.rs_baseline else [])
    steps: list[Step] = []

    def add(step: Step, switch: str) -> None:
        if enabled[switch]:
            steps.append(step)

    sample_out = work / "sample" / "responses.jsonl"
    add(
        Step(
            "sample",
            "sample",
            {**config.sample, "input": config.questions, "output": str(sample_out), "backend": teacher},
            [sample_out.parent],
            inputs=[Path(config.questions)] + ([p] if (p := _model_path(config.teacher.model)) else []),
        ),
        "sample",
    )
    score_out = work / "score" / "scored.jsonl"
    add(
        Step(
            "score",
            "score",
            {**config.score, "input": str(sample_out), "output": str(score_out), "student": student},
            [score_out.parent],
            ["sample"],
        ),
        "score",
    )
    filter_out = work / "filter" / "filtered.jsonl"
    add(
        Step(
            "filter",
            "filter",
            {
                "student_tokenizer": student_tokenizer,
                **config.filter,
                "input": str(score_out),
                "output": str(filter_out),
            },
            [filter_out.parent],
            ["score"],
        ),
        "filter",
    )
    for branch in branches:
        select_out = work / "select" / f"{branch}.jsonl"
        add(
            Step(
                f"select_{branch}",
                "select",
                {
                    **config.select,
                    "input": str(filter_out),
                    "output": str(select_out),
                    "strategy": "count" if branch == "das" else "random",
                },
                [
                    select_out,
                    select_out.with_name(f"{branch}.summary.json"),
                    select_out.with_name(f"{branch}.config.yaml"),
                ],
                ["filter"],
            ),
            "select",
        )
        sft_out = work / "sft" / branch / "sft.jsonl"
        add(
            Step(
                f"build_sft_{branch}",
                "build-sft",
                {
                    "student_tokenizer": student_tokenizer,
                    **config.build_sft,
                    "input": str(select_out),
                    "output": str(sft_out),
                },
                [sft_out.parent],
                [f"select_{branch}"],
            ),
            "build_sft",
        )
        train_dir = work / "train" / branch
        add(
            Step(
                f"train_{branch}",
                "train",
                {**config.train, "output_dir": str(train_dir), "student": student, "stages": stages_for(work, branch)},
                [train_dir / stage for stage in SFT_STAGES],
                [f"build_sft_{branch}"],
            ),
            "train",
        )
    das_final = work / "train" / "das" / HIGH_TEMP_STAGE / "final"
    mix_out = work / "mix" / "mixed.jsonl"
    add(
        Step(
            "mix",
            "mix",
            {
                **config.mix,
                "input": str(work / "sft" / "das" / "sft.jsonl"),
                "output": str(mix_out),
                "student": {
                    "name": "hf",
                    "model": str(das_final),
                    "device": config.student.device,
                    "dtype": config.student.dtype,
                    **config.mix.get("student", {}),
                },
                "teacher": {**teacher, **config.mix.get("teacher", {})},
            },
            [mix_out.parent],
            ["train_das", "build_sft_das"],
        ),
        "mix",
    )
    mixed_stage = {"name": MIXED_POLICY_STAGE, "data": str(mix_out), "epochs": config.train_mixed.get("epochs", 1)}
    train_mixed = {**config.train, **{k: v for k, v in config.train_mixed.items() if k != "epochs"}}

    def mix_is_empty() -> str | None:
        return None if mix_out.exists() and mix_out.stat().st_size else "dasd mix kept no records"

    add(
        Step(
            "train_mixed",
            "train",
            {
                **train_mixed,
                "output_dir": str(work / "train" / "das"),
                "student": student,
                "stages": stages_for(work, "das") + [mixed_stage],
            },
            [work / "train" / "das" / MIXED_POLICY_STAGE],
            ["train_das", "mix"],
            skip_if=mix_is_empty,
        ),
        "train_mixed",
    )
    models = {
        "student": {"name": "hf", "model": config.student.model, "tokenizer": config.student.tokenizer},
        LOW_TEMP_STAGE: {"name": "hf", "model": str(work / "train" / "das" / LOW_TEMP_STAGE / "final")},
        HIGH_TEMP_STAGE: {"name": "hf", "model": str(das_final)},
        MIXED_POLICY_STAGE: {"name": "hf", "model": str(work / "train" / "das" / MIXED_POLICY_STAGE / "final")},
        f"rs_{HIGH_TEMP_STAGE}": {"name": "hf", "model": str(work / "train" / "rs" / HIGH_TEMP_STAGE / "final")},
        "teacher": teacher,
    }
    producers = {
        "student": [],
        LOW_TEMP_STAGE: ["train_das"],
        HIGH_TEMP_STAGE: ["train_das"],
        MIXED_POLICY_STAGE: ["train_mixed"],
        f"rs_{HIGH_TEMP_STAGE}": ["train_rs"],
        "teacher": [],
    }
    names = {step.name for step in steps}
    for label in config.eval_models:
        if label not in models:
            raise ConfigError(f"eval_models: unknown model {label!r} (known: {', '.join(EVAL_MODELS)})")
        if any(producer not in names for producer in producers[label]):
            continue  # its training was switched off
        backend = {**models[label]}
        if label != "teacher":
            backend.update(device=config.student.device, dtype=config.student.dtype)
        overrides = dict(config.eval)
        if label == "teacher" and "teacher" in overrides:
            overrides = {**overrides, **overrides.pop("teacher")}
        overrides.pop("teacher", None)
        eval_dir = work / "eval" / label
        inputs = [Path(spec) for spec in config.eval_benchmarks if Path(spec).exists()]
        skip = (
            (lambda path=Path(backend["model"]): None if path.exists() else f"{path} was not produced")
            if label == MIXED_POLICY_STAGE
            else None
        )
        add(
            Step(
                f"eval_{label}",
                "eval",
                {
                    **overrides,
                    "output_dir": str(eval_dir),
                    "backend": backend,
                    "benchmarks": list(config.eval_benchmarks),
                },
                [eval_dir],
                producers[label],
                inputs=inputs,
                skip_if=skip,
            ),
            "eval",
        )
    analysed = config.provenance.get("model", HIGH_TEMP_STAGE)
    if analysed not in models or analysed in ("student", "teacher"):
        raise ConfigError(
            f"provenance.model: {analysed!r} is not a distilled model (one of low_temp, high_temp, "
            "mixed_policy, rs_high_temp)"
        )
    if f"eval_{analysed}" in {step.name for step in steps}:
        # the teacher sees the questions as it did when sampling: with sample's system prompt, or none
        teacher_prompt = config.sample.get("system_prompt") or ""
        settings = {k: v for k, v in config.provenance.items() if k != "model"}
        add(
            Step(
                "provenance",
                "provenance",
                {
                    **settings,
                    "outputs": str(work / "eval" / analysed),
                    "output_dir": str(work / "provenance"),
                    "teacher": {**teacher, "system_prompt": teacher_prompt, **settings.get("teacher", {})},
                    "student": {**config.student.model_dump(), **settings.get("student", {})},
                    "distilled": {
                        **models[analysed],
                        "device": config.student.device,
                        "dtype": config.student.dtype,
                        **settings.get("distilled", {}),
                    },
                },
                [work / "provenance"],
                [f"eval_{analysed}"],
            ),
            "provenance",
        )
    return steps


def stages_for(work: Path, branch: str) -> list[dict[str, Any]]:
    """The temperature-scheduled SFT stages of a branch, on the files its build-sft step wrote."""
    sft_output = work / "sft" / branch / "sft.jsonl"
    return [{"name": stage, "data": str(sft_stage_file(sft_output, stage))} for stage in SFT_STAGES]


def _validate(step: Step):
    _, config_class = STAGES[step.stage].load()
    try:
        return config_class.model_validate(step.config)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, f"pipeline step {step.name}")) from None


def run(config: PipelineConfig) -> dict[str, Any]:
    work = Path(config.workdir)
    steps = plan(config)
    resolved = {step.name: _validate(step) for step in steps}  # every step's config is checked before any work
    state_dir = work / ".dasd"
    fingerprints: dict[str, str] = {}
    report = []
    if config.dry_run:
        for step in steps:
            fingerprint = _fingerprint(step, resolved[step.name], fingerprints)
            previous = _marker(state_dir / f"{step.name}.json")
            done = previous.get("fingerprint") == fingerprint and previous.get("status") == "done"
            status = (
                "would reuse"
                if done
                else ("would resume" if previous.get("fingerprint") == fingerprint else "would run")
            )
            print(f"{step.name:22} {status:14} {', '.join(str(path) for path in step.outputs)}", flush=True)
        return {"workdir": str(work), "dry_run": True, "steps": [step.name for step in steps]}
    work.mkdir(parents=True, exist_ok=True)
    dump_config(config, work / "pipeline.config.yaml")
    started_run = time.perf_counter()
    for step in steps:
        fingerprint = _fingerprint(step, resolved[step.name], fingerprints)
        marker = state_dir / f"{step.name}.json"
        previous = _marker(marker)
        if previous.get("fingerprint") == fingerprint and previous.get("status") == "done":
            report.append({"step": step.name, "status": "cached", "seconds": previous.get("seconds", 0.0)})
            continue
        reason = step.skip_if() if step.skip_if else None
        if reason:
            report.append({"step": step.name, "status": f"skipped: {reason}", "seconds": 0.0})
            continue
        if previous and previous.get("fingerprint") != fingerprint:
            for path in step.outputs:  # stale results of another config would be resumed into
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                elif path.exists():
                    path.unlink()
        print(f"\n=== dasd run: {step.name} ===", file=sys.stderr, flush=True)
        write_json_atomic(marker, {"fingerprint": fingerprint, "status": "running"})
        started = time.perf_counter()
        result = STAGES[step.stage].load()[0].run(resolved[step.name])
        seconds = round(time.perf_counter() - started, 2)
        write_json_atomic(marker, {"fingerprint": fingerprint, "status": "done", "seconds": seconds})
        report.append({"step": step.name, "status": "ran", "seconds": seconds, "result": _headline(step.name, result)})
    total = round(time.perf_counter() - started_run, 2)
    evals = collect_evals(work)
    summary = {"workdir": str(work), "seconds": total, "steps": report, "eval": evals}
    write_json_atomic(work / "run.summary.json", summary)
    print(render_table(summary), file=sys.stdout, flush=True)
    return summary


def _fingerprint(step: Step, resolved, fingerprints: dict[str, str]) -> str:
    """The step's resolved config, the fingerprints of the steps it reads, and its input files' content."""
    payload = json.dumps(
        {
            "step": step.name,
            "config": resolved.model_dump(mode="json"),
            "depends": [fingerprints.get(name, "off") for name in step.depends],
            "inputs": [_file_digest(path) for path in step.inputs],
        },
        sort_keys=True,
    )
    fingerprints[step.name] = hashlib.sha256(payload.encode()).hexdigest()[:16]
    return fingerprints[step.name]


def _marker(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text()) if path.exists() else {}
    except json.JSONDecodeError:  # torn by a crash: treat as never run
        return {}


def _headline(name: str, result: dict[str, Any]) -> str:
    if not isinstance(result, dict):
        return ""
    for key in ("responses_written", "records_scored", "kept", "selected", "records"):
        if key in result and not isinstance(result[key], dict):
            return f"{key.replace('_', ' ')} {result[key]}"
    if "stages" in result:
        return ", ".join(
            f"{s['stage']} loss {s['first_loss']:.2f}→{s['final_loss']:.2f}"
            for s in result["stages"]
            if not s.get("skipped") and s.get("final_loss") is not None
        )
    if "delta" in result and isinstance(result["delta"], dict):
        return ", ".join(f"Δ {kind} {value:+.3f}" for kind, value in result["delta"].items() if value is not None)
    if "benchmarks" in result:
        return ", ".join(f"{b} {100 * m['avg_at_k']:.1f}" for b, m in result["benchmarks"].items())
    return ""


def collect_evals(work: Path) -> dict[str, dict]:
    evals = {}
    for label in EVAL_MODELS:
        path = work / "eval" / label / "summary.json"
        if path.exists():
            evals[label] = json.loads(path.read_text())["benchmarks"]
    return evals


def render_table(summary: dict[str, Any]) -> str:
    lines = [
        f"dasd run -> {summary['workdir']}  ({summary['seconds']:.0f} s)",
        "",
        f"{'step':22} {'status':34} {'seconds':>8}  result",
        "-" * 96,
    ]
    for item in summary["steps"]:
        lines.append(f"{item['step']:22} {item['status'][:34]:34} {item['seconds']:8.1f}  {item.get('result', '')}")
    if summary["eval"]:
        benchmarks = sorted({name for values in summary["eval"].values() for name in values})
        lines += [
            "",
            f"{'model':16} " + " ".join(f"{name[:22]:>24}" for name in benchmarks),
            "-" * (17 + 25 * len(benchmarks)),
        ]
        for label, values in summary["eval"].items():
            cells = [
                f"{100 * values[name]['avg_at_k']:6.2f} ± {100 * values[name]['standard_error']:5.2f} "
                f"(k={values[name]['n']})"
                if name in values
                else "-"
                for name in benchmarks
            ]
            lines.append(f"{label:16} " + " ".join(f"{cell:>24}" for cell in cells))
        lines.append("(avg@k in %, ± one standard error)")
    return "\n".join(lines)
