"""`dasd run PIPELINE.yaml`: the whole recipe from one config, cached and resumable.

    dasd run configs/gpt-oss-qwen3-4b-run.yaml dry_run=true    # validate, and show what would run or be reused
    dasd run configs/gpt-oss-qwen3-4b-run.yaml
    dasd run configs/gpt-oss-qwen3-4b-run.yaml workdir=runs/exp2 train.epochs=3 \\
        'stages={mix: false, train_mixed: false}'
    dasd run configs/gpt-oss-qwen3-4b-ablation-run.yaml        # arms × seeds, claims with paired statistics
    dasd run configs/gpt-oss-qwen3-4b-slurm-run.yaml           # every step as Slurm jobs (executor: slurm)

Stages, in order (any can be switched off under `stages:`):

    sample → score → filter → select (DAS; and RS when rs_baseline) → build-sft → train low → high
    (DAS; and RS) → mix → train mixed_policy → eval (the student before training, after each stage,
    the RS baseline, and the teacher) → provenance of one distilled model's answers

Each stage writes under `<workdir>/<stage>/` with its resolved config beside its output. A stage's
fingerprint is its resolved config plus the fingerprints of the stages it reads from (and the
content of the question files): a finished stage with an unchanged fingerprint is skipped; one that
was killed is rerun and resumes by id; one whose fingerprint changed starts afresh (its old output
is removed). A table at the end gives each stage's status and time, and the evaluation results.

Ablation arms (`arms:`, README "Ablations"): named variants that share sample, score and filter and
differ in selection, SFT schedule and training, or continue another arm's weights (`after:`) with
mixed-policy data or its equal-size off-policy control. Each arm × training seed (`seeds:`) is a step
of its own (`<arm>.select`, `<arm>.build_sft`, `<arm>.s<seed>.train`, `<arm>.s<seed>.mix`,
`<arm>.s<seed>.eval`, under `<workdir>/arms/<arm>/`); `claims:` are then reported with paired
statistics (`dasd.ablation`).

With `executor: slurm` (`dasd.executors`, README "Running on a cluster") each step is submitted as a job —
sample, score and eval as job arrays of `tasks:` shards and a finalize — chained by dependencies; the same
fingerprints and markers decide what is done, so a rerun resubmits only what is not.
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
from typing import Any, Literal

from pydantic import Field, ValidationError

from ..ablation import arm_results, claim_results, claims_table
from ..backends.base import BackendConfig
from ..config import StageConfig, dump_config, format_validation_error
from ..errors import ConfigError, DasdError
from ..executors import SHARDABLE, ExecutorConfig, StepJob, Submitted
from ..io import write_json_atomic
from ..models import ModelConfig
from ..naming import EVAL_MODELS, HIGH_TEMP_STAGE, LOW_TEMP_STAGE, MIXED_POLICY_STAGE, SFT_STAGES, sft_stage_file
from . import STAGES

PUSHABLE = ("responses", "scored", "filtered", "selected", "sft", "mixed", "model")
STEPS = ("sample", "score", "filter", "select", "build_sft", "train", "mix", "train_mixed", "eval", "provenance")


class ArmConfig(StageConfig):
    description: str = Field("", description="what the arm tests, shown in the tables")
    after: str | None = Field(
        None,
        description="continue from this arm's final weights (the same training seed) instead of the student: "
        "the arm then trains one more stage on `dasd mix` output (`mix`) or on its off-policy control "
        "(`control_of`)",
    )
    select: dict[str, Any] = Field(
        default_factory=dict,
        description="`dasd select` settings of this arm over the pipeline's `select` (strategy, k, temperatures, "
        "beta/space for a threshold sweep)",
    )
    build_sft: dict[str, Any] = Field(default_factory=dict, description="`dasd build-sft` settings of this arm")
    stages: list[str] = Field(
        default_factory=lambda: list(SFT_STAGES),
        description="the SFT stages trained, in order (low_temp, high_temp: the report's schedule)",
    )
    train: dict[str, Any] = Field(default_factory=dict, description="`dasd train` settings of this arm")
    mix: dict[str, Any] | None = Field(
        None, description="with `after`: `dasd mix` settings over the pipeline's `mix` (e.g. cut_low, cut_high)"
    )
    control_of: str | None = Field(
        None,
        description="with `after`: train instead on as many off-policy records as this (mix) arm's mixed data "
        "holds — the equal-size control of mixed-policy distillation",
    )


class ClaimConfig(StageConfig):
    name: str = Field(..., description="the claim, e.g. '0.6 → 1.0 beats 0.6 only'")
    better: str = Field(..., description="the arm (or evaluated model: student, teacher, …) the report finds better")
    worse: str = Field(..., description="the arm or model it is compared with")
    source: str = Field("", description="where the report makes the claim, e.g. 'Table 1'")


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
        description="`dasd eval` settings (benchmarks and the model are filled in; `backend:` settings such as "
        "batch_size apply to every evaluated model; a `teacher:` sub-section overrides them for the teacher)",
    )
    provenance: dict[str, Any] = Field(
        default_factory=dict,
        description="`dasd provenance` settings for the answers of one evaluated model (`model:`, default "
        "high_temp); the three models are filled in",
    )
    arms: dict[str, ArmConfig] = Field(
        default_factory=dict,
        description="named ablation arms: they share sample/score/filter and differ in selection, schedule and "
        "training; each arm × seed is a cached step (README: ablations)",
    )
    seeds: list[int] = Field(
        default_factory=lambda: [42], min_length=1, description="training seeds of every arm (one model per seed)"
    )
    claims: list[ClaimConfig] = Field(
        default_factory=list,
        description="comparisons to report with paired statistics: {name, better, worse, source}",
    )
    executor: ExecutorConfig = Field(
        default_factory=ExecutorConfig,
        description="where the steps run: local (here, in order) or slurm (jobs; resources per step, README: "
        "running on a cluster)",
    )
    record_format: Literal["jsonl", "parquet"] = Field(
        "jsonl",
        description="files of the big record steps (sample, score, filter): jsonl, or parquet (folders of parts, "
        "log-probs as list columns; README: running on a cluster)",
    )
    threads: int | None = Field(
        None,
        ge=1,
        description="torch CPU threads for every step (float reductions depend on it: pin it for runs that must "
        "be identical); default: torch's, recorded in the summary",
    )
    dry_run: bool = Field(
        False, description="check every step's config and print what would run or be reused, without running anything"
    )
    push_to_hub: dict[str, Any] = Field(
        default_factory=dict,
        description="publish on the Hub as the last steps (`dasd push`): OWNER/NAME per artefact among "
        f"{', '.join(PUSHABLE)} (model: the mixed-policy model if trained, else high_temp, with its evals in the "
        "card), plus private, license, dry_run",
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
        if step.stage == "train" and step.config.get("run_name"):
            # one tracker run per branch and stage: <run_name>-<branch>-<stage>, not das and rs under one name
            step.config["run_name"] = f"{step.config['run_name']}-{Path(step.config['output_dir']).name}"
        if enabled[switch]:
            steps.append(step)

    ext = config.record_format
    sample_out = work / "sample" / f"responses.{ext}"
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
    score_out = work / "score" / f"scored.{ext}"
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
    filter_out = work / "filter" / f"filtered.{ext}"
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
            mix_step_config(config, config.mix, teacher, work / "sft" / "das" / "sft.jsonl", mix_out, das_final),
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
        # `eval.backend` is for the student-side models; the teacher takes `eval.teacher` (and its `backend`)
        overrides = {key: value for key, value in config.eval.items() if key not in ("teacher", "backend")}
        if label == "teacher":
            overrides.update(config.eval.get("teacher", {}))
        backend.update(overrides.pop("backend", {}) if label == "teacher" else config.eval.get("backend", {}))
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
    steps += plan_arms(config, {"select": config.select, "filter_output": filter_out, "teacher": teacher})
    steps += plan_push(config, steps)
    seen: set[str] = set()
    planned = {step.name for step in steps}
    for step in steps:  # a step's fingerprint includes its dependencies': they must come first
        late = [name for name in step.depends if name in planned and name not in seen]
        if late:
            raise AssertionError(f"plan: {step.name} is planned before {late}")
        seen.add(step.name)
    known = set(config.arms) | set(EVAL_MODELS)  # a model switched off makes its claims "not run", not an error
    for claim in config.claims:
        for side in (claim.better, claim.worse):
            if side not in known:
                raise ConfigError(
                    f"claims: {claim.name!r} compares {side!r}, which is neither an arm nor an evaluated model "
                    f"({', '.join(sorted(known))})"
                )
    return steps


def plan_push(config: PipelineConfig, steps: list[Step]) -> list[Step]:
    """`dasd push` steps for `push_to_hub`: each artefact after the step that makes it (and the model after its
    evaluation, whose table goes in its card)."""
    settings = dict(config.push_to_hub)
    shared = {key: settings.pop(key) for key in ("private", "license", "dry_run") if key in settings}
    unknown = set(settings) - set(PUSHABLE)
    if unknown:
        raise ConfigError(f"push_to_hub: unknown artefact(s) {sorted(unknown)}; choose from {', '.join(PUSHABLE)}")
    by_name = {step.name: step for step in steps}
    producers = {
        "responses": "sample",
        "scored": "score",
        "filtered": "filter",
        "selected": "select_das",
        "sft": "build_sft_das",
        "mixed": "mix",
    }
    pushes = []
    for artefact, repo_id in settings.items():
        if artefact == "model":
            trained = "train_mixed" if "train_mixed" in by_name else "train_das"
            stage = MIXED_POLICY_STAGE if trained == "train_mixed" else HIGH_TEMP_STAGE
            if trained not in by_name:
                raise ConfigError("push_to_hub.model: no model is trained in this pipeline")
            final = Path(by_name[trained].config["output_dir"]) / stage / "final"
            evaluated = f"eval_{stage}"
            evals = [by_name[evaluated].config["output_dir"]] if evaluated in by_name else []
            depends = [trained] + ([evaluated] if evals else [])
            push_config = {"path": str(final), "repo_id": repo_id, "eval": evals}
            outputs = [final / "README.md"]
        else:
            producer = by_name.get(producers[artefact])
            if producer is None:
                raise ConfigError(f"push_to_hub.{artefact}: the step that makes it ({producers[artefact]}) is off")
            made = Path(producer.config["output"])
            folder = made.with_name(f"{made.name.split('.')[0]}.hf")
            push_config = {"path": str(made), "repo_id": repo_id, "folder": str(folder)}
            depends, outputs = [producer.name], [folder]
        pushes.append(Step(f"push_{artefact}", "push", {**shared, **push_config}, outputs, depends))
    return pushes


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


def arm_dir(work: Path, arm: str) -> Path:
    return work / "arms" / arm


def arm_final(work: Path, config: PipelineConfig, arm: str, seed: int) -> Path:
    """The weights an arm ends with for one training seed."""
    spec = config.arms[arm]
    return arm_dir(work, arm) / f"seed{seed}" / arm_last_stage(spec) / "final"


def arm_last_stage(spec: ArmConfig) -> str:
    if spec.after is None:
        return spec.stages[-1]
    return "off_policy" if spec.control_of else MIXED_POLICY_STAGE


def plan_arms(config: PipelineConfig, shared: dict[str, Any]) -> list[Step]:
    """Each arm's steps: select and build-sft once, then per training seed train (or mix + train from another
    arm's weights) and evaluate. Sample, score and filter are the pipeline's, computed once for all arms."""
    work = Path(config.workdir)
    student = config.student.model_dump()
    student_tokenizer = config.student.tokenizer or config.student.model
    steps: list[Step] = []
    for arm, spec in config.arms.items():
        if spec.after is not None:
            if spec.after not in config.arms or config.arms[spec.after].after is not None:
                raise ConfigError(f"arms.{arm}.after: {spec.after!r} is not an arm that trains from the student")
            if (spec.mix is None) == (spec.control_of is None):
                raise ConfigError(f"arms.{arm}: an arm with `after` needs exactly one of `mix` or `control_of`")
            if spec.control_of is not None:
                mixed = config.arms.get(spec.control_of)
                if mixed is None or mixed.mix is None or mixed.after != spec.after:
                    raise ConfigError(
                        f"arms.{arm}.control_of: {spec.control_of!r} is not a mix arm after {spec.after!r}"
                    )
            continue
        if spec.mix is not None or spec.control_of is not None:
            raise ConfigError(f"arms.{arm}: `mix` and `control_of` need `after` (the arm whose weights they continue)")
        unknown = [stage for stage in spec.stages if stage not in SFT_STAGES]
        if unknown or not spec.stages:
            raise ConfigError(f"arms.{arm}.stages: choose among {', '.join(SFT_STAGES)} (got {spec.stages})")
        folder = arm_dir(work, arm)
        select_out = folder / "select.jsonl"
        steps.append(
            Step(
                f"{arm}.select",
                "select",
                {**shared["select"], **spec.select, "input": str(shared["filter_output"]), "output": str(select_out)},
                [select_out, select_out.with_name("select.summary.json"), select_out.with_name("select.config.yaml")],
                ["filter"],
            )
        )
        sft_out = folder / "sft" / "sft.jsonl"
        steps.append(
            Step(
                f"{arm}.build_sft",
                "build-sft",
                {
                    "student_tokenizer": student_tokenizer,
                    **config.build_sft,
                    **spec.build_sft,
                    "input": str(select_out),
                    "output": str(sft_out),
                },
                [sft_out.parent],
                [f"{arm}.select"],
            )
        )
    # dependencies first: arms from the student, then the mix arms after them, then their controls
    ordered = sorted(config.arms.items(), key=lambda item: (item[1].after is not None, item[1].control_of is not None))
    for arm, spec in ordered:
        folder = arm_dir(work, arm)
        for seed in config.seeds:
            seed_dir = folder / f"seed{seed}"
            if spec.after is None:
                sft_out = folder / "sft" / "sft.jsonl"
                stages = [{"name": stage, "data": str(sft_stage_file(sft_out, stage))} for stage in spec.stages]
                settings = {**config.train, **spec.train}
                depends = [f"{arm}.build_sft"]
            else:
                base_sft = arm_dir(work, spec.after) / "sft" / "sft.jsonl"
                base_final = arm_final(work, config, spec.after, seed)
                mix_out = seed_dir / "mix" / "mixed.jsonl"
                arm_mix = spec.mix if spec.mix is not None else config.arms[str(spec.control_of)].mix
                mix_settings = {**config.mix, **(arm_mix or {}), "seed": seed}
                mix_config = mix_step_config(config, mix_settings, shared["teacher"], base_sft, mix_out, base_final)
                mix_depends = [f"{spec.after}.s{seed}.train", f"{spec.after}.build_sft"]
                if spec.control_of is not None:
                    mixed_out = arm_dir(work, spec.control_of) / f"seed{seed}" / "mix" / "mixed.jsonl"
                    mix_config["equal_size_as"] = str(mixed_out)
                    mix_depends.append(f"{spec.control_of}.s{seed}.mix")
                steps.append(Step(f"{arm}.s{seed}.mix", "mix", mix_config, [mix_out.parent], mix_depends))
                stage = arm_last_stage(spec)
                extra = {**config.train_mixed, **spec.train}
                stages = [
                    {"name": stage, "data": str(mix_out), "init": str(base_final), "epochs": extra.pop("epochs", 1)}
                ]
                settings = {**config.train, **extra}
                depends = [f"{arm}.s{seed}.mix"]

            def empty_data(path=Path(stages[-1]["data"])) -> str | None:
                return None if path.exists() and path.stat().st_size else f"{path} holds no records"

            steps.append(
                Step(
                    f"{arm}.s{seed}.train",
                    "train",
                    {**settings, "output_dir": str(seed_dir), "student": student, "seed": seed, "stages": stages},
                    [seed_dir / stage["name"] for stage in stages],
                    depends,
                    skip_if=empty_data,
                )
            )
            final = arm_final(work, config, arm, seed)
            overrides = {key: value for key, value in config.eval.items() if key not in ("teacher", "backend")}
            eval_dir = seed_dir / "eval"
            steps.append(
                Step(
                    f"{arm}.s{seed}.eval",
                    "eval",
                    {
                        **overrides,
                        "output_dir": str(eval_dir),
                        "model_name": f"{arm}/seed{seed}",
                        "backend": {
                            "name": "hf",
                            "model": str(final),
                            "device": config.student.device,
                            "dtype": config.student.dtype,
                            **config.eval.get("backend", {}),
                        },
                        "benchmarks": list(config.eval_benchmarks),
                    },
                    [eval_dir],
                    [f"{arm}.s{seed}.train"],
                    inputs=[Path(spec_) for spec_ in config.eval_benchmarks if Path(spec_).exists()],
                    skip_if=lambda path=final: None if path.exists() else f"{path} was not produced",
                )
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
    if config.threads is not None:
        import torch

        torch.set_num_threads(config.threads)
    steps = plan(config)
    resolved = {step.name: _validate(step) for step in steps}  # every step's config is checked before any work
    placement = _placement(config, steps)
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
            where = f" [{placement[step.name]}]" if placement else ""
            print(f"{step.name:22} {status:14} {', '.join(str(path) for path in step.outputs)}{where}", flush=True)
        return {"workdir": str(work), "dry_run": True, "steps": [step.name for step in steps]}
    on_slurm = config.executor.name == "slurm"
    if on_slurm:  # before anything is written
        from ..executors import check_no_jobs_left, record_jobs, require_slurm

        require_slurm()
        check_no_jobs_left(state_dir)
    work.mkdir(parents=True, exist_ok=True)
    dump_config(config, work / "pipeline.config.yaml")
    started_run = time.perf_counter()
    submitted: list[Submitted] = []
    jobs: dict[str, StepJob] = {}
    for step in steps:
        fingerprint = _fingerprint(step, resolved[step.name], fingerprints)
        marker = state_dir / f"{step.name}.json"
        previous = _marker(marker)
        if previous.get("fingerprint") == fingerprint and previous.get("status") == "done":
            report.append({"step": step.name, "status": "cached", "seconds": previous.get("seconds", 0.0)})
            continue
        if previous and previous.get("fingerprint") != fingerprint:
            # stale results of another config would be resumed into — or, for a step skipped now, read by
            # the steps after it as if this config had produced them
            for path in step.outputs:
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                elif path.exists():
                    path.unlink()
        if on_slurm:  # a job (or a job array and its finalize) that waits for the steps it reads
            jobs[step.name], item = _submit(config, step, resolved[step.name], fingerprint, state_dir, submitted)
            submitted.append(item)
            record_jobs(state_dir, submitted)  # at once: an interrupted run must not lose track of its jobs
            continue
        reason = step.skip_if() if step.skip_if else None
        if reason:
            write_json_atomic(marker, {"fingerprint": fingerprint, "status": "skipped"})
            report.append({"step": step.name, "status": f"skipped: {reason}", "seconds": 0.0})
            continue
        print(f"\n=== dasd run: {step.name} ===", file=sys.stderr, flush=True)
        write_json_atomic(marker, {"fingerprint": fingerprint, "status": "running"})
        started = time.perf_counter()
        result = STAGES[step.stage].load()[0].run(resolved[step.name])
        seconds = round(time.perf_counter() - started, 2)
        write_json_atomic(marker, {"fingerprint": fingerprint, "status": "done", "seconds": seconds})
        report.append({"step": step.name, "status": "ran", "seconds": seconds, "result": _headline(step.name, result)})
    if on_slurm:
        report += _collect_slurm(config, submitted, jobs, state_dir)
    total = round(time.perf_counter() - started_run, 2)
    evals = collect_evals(work)
    summary = {
        "workdir": str(work),
        "seconds": total,
        "threads": _threads(),
        "steps": report,
        "eval": evals,
        **collect_ablation(config),
    }
    write_json_atomic(work / "run.summary.json", summary)
    print(render_table(summary), file=sys.stdout, flush=True)
    return summary


def _placement(config: PipelineConfig, steps: list[Step]) -> dict[str, str]:
    """With `executor: slurm`, each step's jobs in words (checked before anything is submitted); else {}."""
    if config.executor.name != "slurm":
        return {}
    known = {step.name for step in steps} | {step.stage for step in steps} | set(STAGES)
    unknown = sorted(set(config.executor.steps) - known)
    if unknown:
        raise ConfigError(f"executor.steps: unknown step or stage {unknown} (steps: {', '.join(sorted(known))})")
    placement = {}
    for step in steps:
        resources = config.executor.resources(step.stage, step.name)
        tasks = resources.tasks or 1
        words = [f"{tasks} tasks + finalize" if tasks > 1 and step.stage in SHARDABLE else "1 job"]
        if (resources.nodes or 1) > 1:
            words.append(f"{resources.nodes} nodes")
        if resources.gpus_per_node:
            words.append(f"{resources.gpus_per_node} GPU/node")
        placement[step.name] = "slurm: " + ", ".join(words)
    return placement


def _submit(
    config: PipelineConfig, step: Step, resolved, fingerprint: str, state_dir: Path, submitted: list[Submitted]
) -> tuple[StepJob, Submitted]:
    from ..executors import slurm_folder, submit

    resources = config.executor.resources(step.stage, step.name)
    multi = step.stage == "train" and ((resources.nodes or 1) > 1 or (resources.gpus_per_node or 0) > 1)
    accelerate = None
    if multi:
        accelerate = ["--config_file", config.executor.accelerate_config] if config.executor.accelerate_config else []
        accelerate += [] if accelerate else ["--multi_gpu"]
    job = StepJob(
        step.name,
        step.stage,
        resolved.model_dump(mode="json"),
        fingerprint,
        state_dir,
        threads=config.threads,
        skip_if=step.skip_if,
        accelerate=accelerate,
        nodes=resources.nodes or 1,
        gpus_per_node=resources.gpus_per_node or 0,
    )
    after = [item.jobs[-1] for item in submitted if item.step in step.depends]
    item = submit(config.executor, slurm_folder(config.executor, state_dir), job, after, resources)
    print(f"dasd run: {step.name} submitted: job {' '.join(item.jobs[-1:])}", file=sys.stderr, flush=True)
    return job, item


def _collect_slurm(
    config: PipelineConfig, submitted: list[Submitted], jobs: dict[str, StepJob], state_dir: Path
) -> list[dict[str, Any]]:
    """Follow the jobs to their end, then each step's row from its marker; a one-line error per unfinished
    step, with its log's last lines, and what a rerun will do."""
    from ..executors import follow, log_tail, slurm_folder

    if not config.executor.wait:
        return [{"step": item.step, "status": f"submitted: job {item.jobs[-1]}", "seconds": 0.0} for item in submitted]
    states = follow(submitted, jobs, config.executor.poll_s)
    rows, failed = [], []
    for item in submitted:
        marker = _marker(state_dir / f"{item.step}.json")
        if marker.get("fingerprint") == jobs[item.step].fingerprint and marker.get("status") in ("done", "skipped"):
            status = "ran (slurm)" if marker["status"] == "done" else f"skipped: {marker.get('reason', '')}"
            # from submission to the end of its last job: queueing, every shard task and the finalize
            seconds = round(marker.get("finished", item.at) - item.at, 2)
            rows.append({"step": item.step, "status": status, "seconds": seconds})
            continue
        bad = [job_id for job_id in item.jobs if states.get(job_id) not in ("COMPLETED", "gone")]
        culprit = bad[0] if bad else item.jobs[-1]
        log = log_tail(slurm_folder(config.executor, state_dir), culprit)
        failed.append(f"{item.step}: job {culprit} {states.get(culprit, 'gone')}; {log}")
        rows.append(
            {"step": item.step, "status": f"failed: job {culprit} {states.get(culprit, 'gone')}", "seconds": 0.0}
        )
    if failed:
        print("\n".join(failed), file=sys.stderr, flush=True)
        raise DasdError(
            f"{len(failed)} step(s) did not finish on Slurm ({', '.join(line.split(':')[0] for line in failed)}); "
            "rerun the same `dasd run` to resubmit only the unfinished tasks"
        )
    return rows


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


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def collect_ablation(config: PipelineConfig) -> dict[str, Any]:
    """The arms' results over seeds and the claims' paired comparisons (empty without arms and claims)."""
    if not config.arms and not config.claims:
        return {}
    work = Path(config.workdir)
    seed_runs = {
        arm: {seed: arm_dir(work, arm) / f"seed{seed}" / "eval" for seed in config.seeds} for arm in config.arms
    }
    model_runs = {arm: {str(seed): run for seed, run in runs.items()} for arm, runs in seed_runs.items()}
    for label in EVAL_MODELS:
        model_runs.setdefault(label, {"-": work / "eval" / label})
    return {
        "seeds": list(config.seeds),
        "arms": {
            arm: {"description": config.arms[arm].description, "after": config.arms[arm].after, "benchmarks": values}
            for arm, values in arm_results(seed_runs).items()
        },
        "claims": claim_results([claim.model_dump() for claim in config.claims], model_runs),
    }


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
    if summary.get("arms"):
        lines += ["", f"{'arm':20} {'benchmark':18} {'mean':>7}  per seed", "-" * 80]
        for arm, info in summary["arms"].items():
            for benchmark, values in info["benchmarks"].items():
                per_seed = ", ".join(f"s{seed} {100 * value:.2f}" for seed, value in values["per_seed"].items())
                lines.append(f"{arm[:20]:20} {benchmark[:18]:18} {100 * values['mean']:7.2f}  {per_seed}")
        lines.append("(avg@k in %, mean over the training seeds)")
    if summary.get("claims"):
        lines += [""] + claims_table(summary["claims"])
    return "\n".join(lines)
