"""The plan of `dasd run`: which steps, with which configs, reading which others — pure, no I/O.

    steps = plan(load_config(PipelineConfig, "configs/gpt-oss-qwen3-4b-run.yaml"))
    [step.name for step in steps][:4]      # ['sample', 'score', 'filter', 'select_das']

A step names the stage it runs (a key of `dasd.stages.STAGES`), that stage's config as a dict, the paths it
writes and the steps it reads from; the executors (`local`, `slurm`) run them in plan order, which puts every
step after the steps it depends on. The folders come from `dasd.naming`'s run layout.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import did_you_mean
from ..errors import ConfigError
from ..naming import (
    EVAL_MODELS,
    HIGH_TEMP_STAGE,
    LOW_TEMP_STAGE,
    MIXED_POLICY_STAGE,
    SFT_STAGES,
    arm_dir,
    eval_dir,
    final_dir,
    seed_dir,
    sft_stage_file,
    sidecar,
    summary_file,
)
from ..text.render import DEFAULT_SYSTEM_PROMPT
from .config import PUSHABLE, STEPS, ArmConfig, PipelineConfig


@dataclass
class Step:
    name: str
    stage: str  # the command it runs (a key of dasd.stages.STAGES)
    config: dict[str, Any]
    outputs: list[Path]
    depends: list[str] = field(default_factory=list)
    inputs: list[Path] = field(default_factory=list)  # external files whose content is fingerprinted
    skip_if: Callable[[], str | None] | None = None  # returns a reason to skip, checked right before running


def _model_path(model: str) -> Path | None:
    path = Path(model)
    return path if path.exists() else None


def plan(config: PipelineConfig) -> list[Step]:
    """Every step of the pipeline, in an order that runs each after the steps it reads."""
    unknown = set(config.stages) - set(STEPS)
    if unknown:
        hint = did_you_mean(sorted(unknown)[0], STEPS, "stages.")
        raise ConfigError(f"stages: unknown step(s) {sorted(unknown)}{hint} (known: {', '.join(STEPS)})")
    enabled = {name: config.stages.get(name, True) for name in STEPS}
    recipe = [step for switch, step in _recipe_steps(config) if enabled[switch]]
    evals = _eval_steps(config, {step.name for step in recipe})  # checked even when eval is off
    provenance = _provenance_step(config, {step.name for step in evals} if enabled["eval"] else set())
    steps = recipe + (evals if enabled["eval"] else []) + (provenance if enabled["provenance"] else [])
    steps += plan_arms(config)
    steps += plan_push(config, steps)
    _check_order(steps)
    _check_claims(config)
    return steps


def _work(config: PipelineConfig) -> Path:
    return Path(config.workdir)


def _record_outputs(config: PipelineConfig) -> dict[str, Path]:
    """The files of the big record steps (sample, score, filter), in the run's record format (select's too)."""
    work, ext = _work(config), config.record_format
    return {
        "sample": work / "sample" / f"responses.{ext}",
        "score": work / "score" / f"scored.{ext}",
        "filter": work / "filter" / f"filtered.{ext}",
    }


def _filter_drops_unfinished(config: PipelineConfig) -> bool:
    """Whether the pipeline's filter drops every response that did not finish (its structure check with
    require_stop, the defaults): then scoring them is wasted work, and score passes them through unscored — except
    in a workdir sampled before this existed (its score step would otherwise be redone from scratch).

    >>> from types import SimpleNamespace
    >>> _filter_drops_unfinished(SimpleNamespace(filter={})), _filter_drops_unfinished(
    ...     SimpleNamespace(filter={"structure": {"require_stop": False}}))
    (True, False)
    """
    structure = (config.filter or {}).get("structure") or {}
    made_before = getattr(config, "_made_before_parquet", False)  # an existing run's score step stays as it was
    return bool(structure.get("enabled", True) and structure.get("require_stop", True)) and not made_before


def _earlier_build_sft_defaults(config: PipelineConfig) -> dict[str, Any]:
    """In a workdir made before build-sft wrote only what is read (and Parquet was the default), build-sft keeps
    writing every export unless told otherwise: the same config, so its step and those after it — training — are
    not redone after an upgrade."""
    if getattr(config, "_made_before_parquet", False):
        return {"exports": ["trl_messages", "trl_prompt_completion", "sharegpt"]}
    return {}


def _branches(config: PipelineConfig) -> list[str]:
    return ["das"] + (["rs"] if config.rs_baseline else [])


def _student_tokenizer(config: PipelineConfig) -> str:
    return config.student.tokenizer or config.student.model


def _recipe_steps(config: PipelineConfig) -> list[tuple[str, Step]]:
    """(switch, step) for sample → score → filter → select/build-sft/train per branch → mix → train mixed."""
    work, outputs = _work(config), _record_outputs(config)
    student, teacher = config.student.model_dump(), config.teacher.model_dump()
    sample_out, score_out, filter_out = outputs["sample"], outputs["score"], outputs["filter"]
    steps = [
        (
            "sample",
            Step(
                "sample",
                "sample",
                {**config.sample, "input": config.questions, "output": str(sample_out), "backend": teacher},
                [sample_out.parent],
                inputs=[Path(config.questions)] + ([p] if (p := _model_path(config.teacher.model)) else []),
            ),
        ),
        (
            "score",
            Step(
                "score",
                "score",
                {
                    "skip_unfinished": _filter_drops_unfinished(config),
                    **config.score,
                    "input": str(sample_out),
                    "output": str(score_out),
                    "student": student,
                },
                [score_out.parent],
                ["sample"],
            ),
        ),
        (
            "filter",
            Step(
                "filter",
                "filter",
                {
                    "student_tokenizer": _student_tokenizer(config),
                    **config.filter,
                    "input": str(score_out),
                    "output": str(filter_out),
                },
                [filter_out.parent],
                ["score"],
            ),
        ),
    ]
    for branch in _branches(config):
        steps += _branch_steps(config, branch, filter_out)
    mix_out = work / "mix" / "mixed.jsonl"
    das_train = work / "train" / "das"
    das_final = final_dir(das_train, HIGH_TEMP_STAGE)
    steps.append(
        (
            "mix",
            Step(
                "mix",
                "mix",
                mix_step_config(config, config.mix, teacher, work / "sft" / "das" / "sft.jsonl", mix_out, das_final),
                [mix_out.parent],
                ["train_das", "build_sft_das"],
            ),
        )
    )
    mixed_stage = {"name": MIXED_POLICY_STAGE, "data": str(mix_out), "epochs": config.train_mixed.get("epochs", 1)}
    train_mixed = {**config.train, **{k: v for k, v in config.train_mixed.items() if k != "epochs"}}

    def mix_is_empty() -> str | None:
        return None if mix_out.exists() and mix_out.stat().st_size else "dasd mix kept no records"

    steps.append(
        (
            "train_mixed",
            _named_run(
                Step(
                    "train_mixed",
                    "train",
                    {
                        **train_mixed,
                        "output_dir": str(das_train),
                        "student": student,
                        "stages": stages_for(work, "das") + [mixed_stage],
                    },
                    [das_train / MIXED_POLICY_STAGE],
                    ["train_das", "mix"],
                    skip_if=mix_is_empty,
                )
            ),
        )
    )
    return steps


def _branch_steps(config: PipelineConfig, branch: str, filter_out: Path) -> list[tuple[str, Step]]:
    """select (DAS: most teacher sentences; RS: random) → build-sft → the two temperature stages."""
    work = _work(config)
    select_out = work / "select" / f"{branch}.{config.record_format}"
    sft_out = work / "sft" / branch / "sft.jsonl"
    train_dir = work / "train" / branch
    return [
        (
            "select",
            Step(
                f"select_{branch}",
                "select",
                {
                    **config.select,
                    "input": str(filter_out),
                    "output": str(select_out),
                    "strategy": "count" if branch == "das" else "random",
                },
                [select_out, summary_file(select_out, "select"), sidecar(select_out, "config", ".yaml")],
                ["filter"],
            ),
        ),
        (
            "build_sft",
            Step(
                f"build_sft_{branch}",
                "build-sft",
                {
                    "student_tokenizer": _student_tokenizer(config),
                    **_earlier_build_sft_defaults(config),
                    **config.build_sft,
                    "input": str(select_out),
                    "output": str(sft_out),
                },
                [sft_out.parent],
                [f"select_{branch}"],
            ),
        ),
        (
            "train",
            _named_run(
                Step(
                    f"train_{branch}",
                    "train",
                    {
                        **config.train,
                        "output_dir": str(train_dir),
                        "student": config.student.model_dump(),
                        "stages": stages_for(work, branch),
                    },
                    [train_dir / stage for stage in SFT_STAGES],
                    [f"build_sft_{branch}"],
                )
            ),
        ),
    ]


def _named_run(step: Step) -> Step:
    """One tracker run per branch and stage: <run_name>-<branch>-<stage>, not das and rs under one name."""
    if step.config.get("run_name"):
        step.config["run_name"] = f"{step.config['run_name']}-{Path(step.config['output_dir']).name}"
    return step


def _models(config: PipelineConfig) -> dict[str, tuple[dict[str, Any], list[str]]]:
    """Each model the pipeline can evaluate: (its generation backend, the steps that produce it)."""
    work = _work(config)
    das, rs = work / "train" / "das", work / "train" / "rs"
    return {
        "student": (
            {"name": "hf", "model": config.student.model, "tokenizer": config.student.tokenizer},
            [],
        ),
        LOW_TEMP_STAGE: ({"name": "hf", "model": str(final_dir(das, LOW_TEMP_STAGE))}, ["train_das"]),
        HIGH_TEMP_STAGE: ({"name": "hf", "model": str(final_dir(das, HIGH_TEMP_STAGE))}, ["train_das"]),
        MIXED_POLICY_STAGE: ({"name": "hf", "model": str(final_dir(das, MIXED_POLICY_STAGE))}, ["train_mixed"]),
        f"rs_{HIGH_TEMP_STAGE}": ({"name": "hf", "model": str(final_dir(rs, HIGH_TEMP_STAGE))}, ["train_rs"]),
        "teacher": (config.teacher.model_dump(), []),
    }


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


def _eval_steps(config: PipelineConfig, planned: set[str]) -> list[Step]:
    """The student before training, each trained model whose training step is `planned`, and the teacher."""
    models = _models(config)
    steps = []
    for label in config.eval_models:
        if label not in models:
            raise ConfigError(f"eval_models: unknown model {label!r} (known: {', '.join(EVAL_MODELS)})")
        backend, producers = models[label]
        if any(producer not in planned for producer in producers):
            continue  # its training was switched off
        steps.append(
            eval_step(
                config, f"eval_{label}", backend, eval_dir(config.workdir, label), producers, teacher=label == "teacher"
            )
        )
    return steps


def _provenance_step(config: PipelineConfig, evaluated: set[str]) -> list[Step]:
    """`dasd provenance` on the answers of one evaluated distilled model (default high_temp), when its eval step
    is among the `evaluated` steps."""
    models = _models(config)
    analysed = config.provenance.get("model", HIGH_TEMP_STAGE)
    if analysed not in models or analysed in ("student", "teacher"):
        raise ConfigError(
            f"provenance.model: {analysed!r} is not a distilled model (one of low_temp, high_temp, "
            "mixed_policy, rs_high_temp)"
        )
    if f"eval_{analysed}" not in evaluated:
        return []
    work = _work(config)
    # the teacher sees the questions as it did when sampling: with sample's system prompt, or none
    teacher_prompt = config.sample.get("system_prompt") or ""
    settings = {k: v for k, v in config.provenance.items() if k != "model"}
    return [
        Step(
            "provenance",
            "provenance",
            {
                **settings,
                "outputs": str(eval_dir(work, analysed)),
                "output_dir": str(work / "provenance"),
                "teacher": {
                    **config.teacher.model_dump(),
                    "system_prompt": teacher_prompt,
                    **settings.get("teacher", {}),
                },
                "student": {**config.student.model_dump(), **settings.get("student", {})},
                "distilled": {
                    **models[analysed][0],
                    "device": config.student.device,
                    "dtype": config.student.dtype,
                    **settings.get("distilled", {}),
                },
            },
            [work / "provenance"],
            [f"eval_{analysed}"],
        )
    ]


def _check_order(steps: list[Step]) -> None:
    """A step's fingerprint includes its dependencies': they must come first."""
    seen: set[str] = set()
    planned = {step.name for step in steps}
    for step in steps:
        late = [name for name in step.depends if name in planned and name not in seen]
        if late:
            raise AssertionError(f"plan: {step.name} is planned before {late}")
        seen.add(step.name)


def _check_claims(config: PipelineConfig) -> None:
    known = set(config.arms) | set(EVAL_MODELS)  # a model switched off makes its claims "not run", not an error
    for claim in config.claims:
        for side in (claim.better, claim.worse):
            if side not in known:
                raise ConfigError(
                    f"claims: {claim.name!r} compares {side!r}, which is neither an arm nor an evaluated model "
                    f"({', '.join(sorted(known))})"
                )


def plan_push(config: PipelineConfig, steps: list[Step]) -> list[Step]:
    """`dasd push` steps for `push_to_hub`: each artefact after the step that makes it (and the model after its
    evaluation, whose table goes in its card)."""
    settings = dict(config.push_to_hub)
    shared = {key: settings.pop(key) for key in ("private", "license", "dry_run") if key in settings}
    unknown = set(settings) - set(PUSHABLE)
    if unknown:
        hint = did_you_mean(sorted(unknown)[0], PUSHABLE, "push_to_hub.")
        raise ConfigError(
            f"push_to_hub: unknown artefact(s) {sorted(unknown)}{hint}; choose from {', '.join(PUSHABLE)}"
        )
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


def arm_final(work: Path, config: PipelineConfig, arm: str, seed: int) -> Path:
    """The weights an arm ends with for one training seed."""
    return final_dir(seed_dir(work, arm, seed), arm_last_stage(config.arms[arm]))


def arm_last_stage(spec: ArmConfig) -> str:
    if spec.after is None:
        return spec.stages[-1]
    if spec.stage2_select is not None:
        return HIGH_TEMP_STAGE
    return "off_policy" if spec.control_of else MIXED_POLICY_STAGE


def _check_arms(config: PipelineConfig) -> None:
    for arm, spec in config.arms.items():
        if spec.sample and spec.sample_from is None:
            raise ConfigError(f"arms.{arm}.sample: sample settings need sample_from: student")
        if spec.sample_from is not None:
            if spec.after is not None or spec.score_with is not None:
                raise ConfigError(
                    f"arms.{arm}.sample_from: an arm that samples from the student trains from the student on its "
                    "own rollouts (no `after`, no `score_with`)"
                )
            strategy = arm_select_settings(config, spec).get("strategy")
            if strategy not in UNSCORED_STRATEGIES:
                raise ConfigError(
                    f"arms.{arm}.select.strategy: {strategy!r} needs scored candidates, and the student's own "
                    f"rollouts are not scored (choose {' or '.join(UNSCORED_STRATEGIES)})"
                )
        if spec.after is not None:
            if spec.after not in config.arms or config.arms[spec.after].after is not None:
                raise ConfigError(f"arms.{arm}.after: {spec.after!r} is not an arm that trains from the student")
            kinds = [name for name in ("mix", "control_of", "stage2_select") if getattr(spec, name) is not None]
            if len(kinds) != 1:
                raise ConfigError(
                    f"arms.{arm}: an arm with `after` needs exactly one of `mix`, `control_of` or `stage2_select`"
                )
            if spec.stage2_select is not None:
                stages = config.arms[spec.after].stages
                if stages != list(SFT_STAGES):
                    raise ConfigError(
                        f"arms.{arm}.stage2_select: {spec.after!r} trains {stages}, not both SFT stages "
                        f"({', '.join(SFT_STAGES)}): there is no stage 1 to score with and continue from"
                    )
                _stage2_temperatures(config, arm, spec)  # its one-line error, before anything runs
            if spec.control_of is not None:
                mixed = config.arms.get(spec.control_of)
                if mixed is None or mixed.mix is None or mixed.after != spec.after:
                    raise ConfigError(
                        f"arms.{arm}.control_of: {spec.control_of!r} is not a mix arm after {spec.after!r}"
                    )
            continue
        if spec.mix is not None or spec.control_of is not None or spec.stage2_select is not None:
            raise ConfigError(
                f"arms.{arm}: `mix`, `control_of` and `stage2_select` need `after` (the arm whose weights they "
                "continue)"
            )
        unknown = [stage for stage in spec.stages if stage not in SFT_STAGES]
        if unknown or not spec.stages:
            raise ConfigError(f"arms.{arm}.stages: choose among {', '.join(SFT_STAGES)} (got {spec.stages})")


UNSCORED_STRATEGIES = ("random", "longest")  # the select strategies that need no `dasd score`
STUDENT_SAMPLE_SETTINGS = ("schedule", "top_p", "top_k", "max_new_tokens", "seed", "limit", "cache")


def arm_select_settings(config: PipelineConfig, spec: ArmConfig) -> dict[str, Any]:
    """An arm's `dasd select` settings over the pipeline's (strategy random for an arm sampling from the student,
    unless it says otherwise), before its input and output are filled in."""
    defaults = {"strategy": "random"} if spec.sample_from == "student" else {}
    return {**config.select, **defaults, **spec.select}


def redrawn_per_seed(config: PipelineConfig, spec: ArmConfig) -> bool:
    """Whether an arm selects at random (RS): then it selects, and builds its SFT data, once per training seed.

    >>> from types import SimpleNamespace
    >>> arm = lambda **select: SimpleNamespace(select=select, sample_from=None)
    >>> pipeline = SimpleNamespace(select={})
    >>> redrawn_per_seed(pipeline, arm(strategy="random")), redrawn_per_seed(pipeline, arm())
    (True, False)
    """
    return arm_select_settings(config, spec).get("strategy", "count") == "random"


def arm_sft(config: PipelineConfig, arm: str, seed: int) -> tuple[Path, str]:
    """The SFT file an arm trains on for one training seed, and the step that builds it: one for every seed, or
    (RS) the seed's own."""
    spec = config.arms[arm]
    if redrawn_per_seed(config, spec):
        return seed_dir(config.workdir, arm, seed) / "sft" / "sft.jsonl", f"{arm}.s{seed}.build_sft"
    return arm_dir(config.workdir, arm) / "sft" / "sft.jsonl", f"{arm}.build_sft"


def plan_arms(config: PipelineConfig) -> list[Step]:
    """Each arm's steps: select and build-sft once (once per training seed for a random selection), then per
    training seed train (or mix + train from another arm's weights) and evaluate. Sample, score and filter are the
    pipeline's, computed once for all arms; an arm sampling from the student samples and filters its own."""
    _check_arms(config)
    work = _work(config)
    steps: list[Step] = []
    for arm, spec in config.arms.items():
        if spec.after is None:
            steps += _arm_data_steps(config, arm, spec)
    # dependencies first: arms from the student, then the mix arms after them, then their controls
    ordered = sorted(config.arms.items(), key=lambda item: (item[1].after is not None, item[1].control_of is not None))
    for arm, spec in ordered:
        for seed in config.seeds:
            steps += _arm_seed_steps(config, arm, spec, seed)
            final = arm_final(work, config, arm, seed)
            backend = {"name": "hf", "model": str(final)}
            steps.append(
                eval_step(
                    config,
                    f"{arm}.s{seed}.eval",
                    backend,
                    seed_dir(work, arm, seed) / "eval",
                    [f"{arm}.s{seed}.train"],
                    model_name=f"{arm}/seed{seed}",
                )
            )
    return steps


def _arm_data_steps(config: PipelineConfig, arm: str, spec: ArmConfig) -> list[Step]:
    """An arm's selection from the pipeline's filtered records (or another student's scores of them, or its own
    rollouts of the student), and its SFT files: once, or once per training seed for a random selection."""
    folder = arm_dir(config.workdir, arm)
    filtered = str(_record_outputs(config)["filter"])
    steps, candidates, compare, upstream = [], {"input": filtered}, {}, "filter"
    if spec.score_with is not None:
        # the same candidates, scored by another student: select from those scores, compare with the pipeline's
        rescored = folder / "score" / f"scored.{config.record_format}"
        settings = {key: value for key, value in spec.score_with.items() if key != "student"}
        student = {**config.student.model_dump(), "tokenizer": None, **(spec.score_with.get("student") or {})}
        score_config = {**config.score, **settings, "input": filtered, "output": str(rescored), "student": student}
        steps.append(Step(f"{arm}.score", "score", score_config, [rescored.parent], ["filter"]))
        candidates, compare, upstream = {"input": str(rescored)}, {"compare_with": filtered}, f"{arm}.score"
    if spec.sample_from == "student":
        steps += _student_sample_steps(config, arm, spec)
        # select's summary counts the groups where the student had no rollout kept, from the filter's rejected file
        filtered_rollouts = folder / "filter" / f"filtered.{config.record_format}"
        rejected = sidecar(filtered_rollouts, "rejected", f".{config.record_format}")
        candidates = {"input": str(filtered_rollouts), "rejected": str(rejected)}
        upstream = f"{arm}.filter"
    settings = {**arm_select_settings(config, spec), **candidates, **compare}
    for seed in config.seeds if redrawn_per_seed(config, spec) else [None]:
        where, name = (folder, arm) if seed is None else (seed_dir(config.workdir, arm, seed), f"{arm}.s{seed}")
        select_out = where / f"select.{config.record_format}"
        sft_out = where / "sft" / "sft.jsonl"
        steps += [
            Step(
                f"{name}.select",
                "select",
                {**settings, **({} if seed is None else {"seed": seed}), "output": str(select_out)},
                [select_out, summary_file(select_out, "select"), sidecar(select_out, "config", ".yaml")],
                [upstream],
            ),
            Step(
                f"{name}.build_sft",
                "build-sft",
                {
                    "student_tokenizer": _student_tokenizer(config),
                    **_earlier_build_sft_defaults(config),
                    **config.build_sft,
                    **spec.build_sft,
                    "input": str(select_out),
                    "output": str(sft_out),
                },
                [sft_out.parent],
                [f"{name}.select"],
            ),
        ]
    return steps


def _student_sample_steps(config: PipelineConfig, arm: str, spec: ArmConfig) -> list[Step]:
    """A self-distillation arm's candidates: the pipeline's student answers the pipeline's questions with its sample
    schedule (prompted as it is trained and evaluated: the SFT system prompt, think format), and the pipeline's
    filter (correctness included) keeps its careful, correct rollouts."""
    folder = arm_dir(config.workdir, arm)
    rollouts = folder / "sample" / f"rollouts.{config.record_format}"
    filtered = folder / "filter" / f"filtered.{config.record_format}"
    student = config.student
    backend = {
        "name": "hf",
        "model": student.model,
        "tokenizer": student.tokenizer,
        "device": student.device,
        "dtype": student.dtype,
        **config.eval.get("backend", {}),
        **spec.sample.get("backend", {}),
    }
    sample_config = {
        **{key: value for key, value in config.sample.items() if key in STUDENT_SAMPLE_SETTINGS},
        "system_prompt": config.build_sft.get("system_prompt", DEFAULT_SYSTEM_PROMPT),
        "reasoning_format": config.eval.get("reasoning_format", "think"),
        **{key: value for key, value in spec.sample.items() if key != "backend"},
        "input": config.questions,
        "output": str(rollouts),
        "backend": backend,
    }
    filter_config = {
        "student_tokenizer": _student_tokenizer(config),
        **config.filter,
        "input": str(rollouts),
        "output": str(filtered),
    }
    inputs = [Path(config.questions)] + ([p] if (p := _model_path(student.model)) else [])
    return [
        Step(f"{arm}.sample", "sample", sample_config, [rollouts.parent], inputs=inputs),
        Step(f"{arm}.filter", "filter", filter_config, [filtered.parent], [f"{arm}.sample"]),
    ]


def _arm_seed_steps(config: PipelineConfig, arm: str, spec: ArmConfig, seed: int) -> list[Step]:
    """One training seed of an arm: its SFT stages from the student, or (with `after`) mix + one stage from the
    other arm's weights for that seed."""
    work = _work(config)
    folder = seed_dir(work, arm, seed)
    steps = []
    if spec.stage2_select is not None:
        steps, stages = _stage2_steps(config, arm, spec, seed)
        settings = {**config.train, **config.arms[str(spec.after)].train, **spec.train}
        depends = [f"{arm}.s{seed}.build_sft"]
    elif spec.after is None:
        sft_out, built = arm_sft(config, arm, seed)
        stages = [{"name": stage, "data": str(sft_stage_file(sft_out, stage))} for stage in spec.stages]
        settings = {**config.train, **spec.train}
        depends = [built]
    else:
        base_sft, base_built = arm_sft(config, spec.after, seed)
        base_final = arm_final(work, config, spec.after, seed)
        mix_out = folder / "mix" / "mixed.jsonl"
        arm_mix = spec.mix if spec.mix is not None else config.arms[str(spec.control_of)].mix
        mix_settings = {**config.mix, **(arm_mix or {}), "seed": seed}
        teacher = config.teacher.model_dump()
        mix_config = mix_step_config(config, mix_settings, teacher, base_sft, mix_out, base_final)
        mix_depends = [f"{spec.after}.s{seed}.train", base_built]
        if spec.control_of is not None:
            mixed_out = seed_dir(work, spec.control_of, seed) / "mix" / "mixed.jsonl"
            mix_config["equal_size_as"] = str(mixed_out)
            mix_depends.append(f"{spec.control_of}.s{seed}.mix")
        steps.append(Step(f"{arm}.s{seed}.mix", "mix", mix_config, [mix_out.parent], mix_depends))
        extra = {**config.train_mixed, **spec.train}
        stages = [
            {
                "name": arm_last_stage(spec),
                "data": str(mix_out),
                "init": str(base_final),
                "epochs": extra.pop("epochs", 1),
            }
        ]
        settings = {**config.train, **extra}
        depends = [f"{arm}.s{seed}.mix"]

    def empty_data(path=Path(stages[-1]["data"])) -> str | None:
        return None if path.exists() and path.stat().st_size else f"{path} holds no records"

    steps.append(
        Step(
            f"{arm}.s{seed}.train",
            "train",
            {
                **settings,
                "output_dir": str(folder),
                "student": config.student.model_dump(),
                "seed": seed,
                "stages": stages,
            },
            [folder / stage["name"] for stage in stages],
            depends,
            skip_if=empty_data,
        )
    )
    return steps


def _stage2_temperatures(config: PipelineConfig, arm: str, spec: ArmConfig) -> list[float]:
    """The temperatures of a `stage2_select` arm's candidates: its own `temperatures`, else the sampled ones that
    build-sft puts in stage 2 (above `low_temperature_max`) among those the `after` arm selects from."""
    assert spec.stage2_select is not None and spec.after is not None
    given = spec.stage2_select.get("temperatures")
    if given is not None:
        return [float(t) for t in given]
    low_max = float({**config.build_sft, **config.arms[spec.after].build_sft}.get("low_temperature_max", 0.8))
    allowed = {**config.select, **config.arms[spec.after].select}.get("temperatures")
    sampled = [float(entry["temperature"]) for entry in config.sample.get("schedule") or [] if "temperature" in entry]
    high = [t for t in sampled if t > low_max and (allowed is None or any(abs(t - a) < 1e-9 for a in allowed))]
    if not high:
        raise ConfigError(
            f"arms.{arm}.stage2_select: no sampled temperature is above low_temperature_max {low_max:g} (sampled: "
            f"{sampled or 'none in sample.schedule'}); give `temperatures`"
        )
    return high


def _stage2_steps(
    config: PipelineConfig, arm: str, spec: ArmConfig, seed: int
) -> tuple[list[Step], list[dict[str, Any]]]:
    """A `stage2_select` arm's data for one seed: the filtered candidates scored with the `after` arm's stage-1
    weights, selected with the boosted classes those scores give, built into SFT records — and its one stage,
    high_temp from those stage-1 weights (the `after` arm's own stage 2 is the control: the same first stage)."""
    assert spec.after is not None and spec.stage2_select is not None
    work, base = _work(config), config.arms[spec.after]
    folder = seed_dir(work, arm, seed)
    stage1 = final_dir(seed_dir(work, spec.after, seed), LOW_TEMP_STAGE)
    filtered = str(_record_outputs(config)["filter"])
    scored, select_out, sft_out = (
        folder / "score" / f"scored.{config.record_format}",
        folder / f"select.{config.record_format}",
        folder / "sft" / "sft.jsonl",
    )
    score_config = {
        **config.score,
        "input": filtered,
        "output": str(scored),
        "student": {**config.student.model_dump(), "model": str(stage1)},
    }
    settings = {**config.select, **base.select, **spec.stage2_select}
    select_config = {
        **settings,
        **({"seed": seed} if settings.get("strategy") == "random" else {}),  # RS: each seed its own draw
        "temperatures": _stage2_temperatures(config, arm, spec),
        "input": filtered,
        "boosted_scores": str(scored),
        "output": str(select_out),
    }
    build_config = {
        "student_tokenizer": _student_tokenizer(config),
        **_earlier_build_sft_defaults(config),
        **config.build_sft,
        **base.build_sft,
        "input": str(select_out),
        "output": str(sft_out),
    }
    trained = f"{spec.after}.s{seed}.train"
    steps = [
        Step(f"{arm}.s{seed}.score", "score", score_config, [scored.parent], ["filter", trained]),
        Step(
            f"{arm}.s{seed}.select",
            "select",
            select_config,
            [select_out, summary_file(select_out, "select"), sidecar(select_out, "config", ".yaml")],
            [f"{arm}.s{seed}.score"],
        ),
        Step(f"{arm}.s{seed}.build_sft", "build-sft", build_config, [sft_out.parent], [f"{arm}.s{seed}.select"]),
    ]
    stage = {"name": HIGH_TEMP_STAGE, "data": str(sft_stage_file(sft_out, HIGH_TEMP_STAGE)), "init": str(stage1)}
    return steps, [stage]


def stages_for(work: Path, branch: str) -> list[dict[str, Any]]:
    """The temperature-scheduled SFT stages of a branch, on the files its build-sft step wrote."""
    sft_output = work / "sft" / branch / "sft.jsonl"
    return [{"name": stage, "data": str(sft_stage_file(sft_output, stage))} for stage in SFT_STAGES]
