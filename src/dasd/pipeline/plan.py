"""The plan of `dasd run`: which steps, with which configs, reading which others — pure, no I/O.

    steps = plan(load_config(PipelineConfig, "configs/gpt-oss-qwen3-4b-run.yaml"))
    [step.name for step in steps][:4]      # ['sample', 'score', 'filter', 'select_das']

The recipe's steps are planned here (sample → score → filter → select/build-sft/train per branch → mix → train
mixed, then the evaluations, provenance and pushes); the ablation arms' in `dasd.pipeline.arm_steps` (their kinds:
`dasd.pipeline.arms`); the steps both plan, and `Step` itself, in `dasd.pipeline.steps`. The executors (`local`,
`slurm`) run the steps in plan order, which puts every step after the steps it depends on. Every path comes from the
run's `dasd.naming.RunLayout`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import did_you_mean
from ..errors import ConfigError
from ..naming import EVAL_MODELS, HIGH_TEMP_STAGE, LOW_TEMP_STAGE, MIXED_POLICY_STAGE, SFT_STAGES, final_dir
from .arm_steps import plan_arms
from .config import PUSHABLE, STEPS, PipelineConfig
from .steps import (
    Step,
    build_sft_step,
    eval_step,
    layout,
    mix_step_config,
    model_path,
    named_run,
    select_step,
    sft_stages,
    student_tokenizer,
    train_step,
)

__all__ = ["Step", "plan"]


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


def _branches(config: PipelineConfig) -> list[str]:
    return ["das"] + (["rs"] if config.rs_baseline else [])


def _recipe_steps(config: PipelineConfig) -> list[tuple[str, Step]]:
    """(switch, step) for sample → score → filter → select/build-sft/train per branch → mix → train mixed."""
    run = layout(config)
    student, teacher = config.student.model_dump(), config.teacher.model_dump()
    sample_out, score_out, filter_out = run.record("sample"), run.record("score"), run.record("filter")
    sample_config = {**config.sample, "input": config.questions, "output": str(sample_out), "backend": teacher}
    score_config = {
        "skip_unfinished": _filter_drops_unfinished(config),
        **config.score,
        "input": str(sample_out),
        "output": str(score_out),
        "student": student,
    }
    filter_config = {
        "student_tokenizer": student_tokenizer(config),
        **config.filter,
        "input": str(score_out),
        "output": str(filter_out),
    }
    teacher_inputs = [Path(config.questions)] + ([p] if (p := model_path(config.teacher.model)) else [])
    steps = [
        ("sample", Step("sample", "sample", sample_config, [sample_out.parent], inputs=teacher_inputs)),
        ("score", Step("score", "score", score_config, [score_out.parent], ["sample"])),
        ("filter", Step("filter", "filter", filter_config, [filter_out.parent], ["score"])),
    ]
    for branch in _branches(config):
        selected, sft, train_dir = run.select(branch), run.sft(branch), run.train(branch)
        strategy = "count" if branch == "das" else "random"
        select_config = {**config.select, "input": str(filter_out), "strategy": strategy}
        steps += [
            ("select", select_step(f"select_{branch}", select_config, selected, ["filter"])),
            ("build_sft", build_sft_step(config, f"build_sft_{branch}", selected, sft, [f"select_{branch}"])),
            (
                "train",
                named_run(
                    train_step(
                        config,
                        f"train_{branch}",
                        config.train,
                        train_dir,
                        sft_stages(sft, SFT_STAGES),
                        [f"build_sft_{branch}"],
                    )
                ),
            ),
        ]
    mix_out, das_train = run.mix, run.train("das")
    mix_config = mix_step_config(
        config, config.mix, teacher, run.sft("das"), mix_out, run.final("das", HIGH_TEMP_STAGE)
    )
    steps.append(("mix", Step("mix", "mix", mix_config, [mix_out.parent], ["train_das", "build_sft_das"])))
    mixed_stage = {"name": MIXED_POLICY_STAGE, "data": str(mix_out), "epochs": config.train_mixed.get("epochs", 1)}
    train_mixed = {**config.train, **{k: v for k, v in config.train_mixed.items() if k != "epochs"}}

    def mix_is_empty() -> str | None:
        return None if mix_out.exists() and mix_out.stat().st_size else "dasd mix kept no records"

    stages = sft_stages(run.sft("das"), SFT_STAGES) + [mixed_stage]
    trained = train_step(
        config,
        "train_mixed",
        train_mixed,
        das_train,
        stages,
        ["train_das", "mix"],
        outputs=[das_train / MIXED_POLICY_STAGE],
        skip_if=mix_is_empty,
    )
    steps.append(("train_mixed", named_run(trained)))
    return steps


def _models(config: PipelineConfig) -> dict[str, tuple[dict[str, Any], list[str]]]:
    """Each model the pipeline can evaluate: (its generation backend, the steps that produce it)."""
    run = layout(config)
    return {
        "student": (
            {"name": "hf", "model": config.student.model, "tokenizer": config.student.tokenizer},
            [],
        ),
        LOW_TEMP_STAGE: ({"name": "hf", "model": str(run.final("das", LOW_TEMP_STAGE))}, ["train_das"]),
        HIGH_TEMP_STAGE: ({"name": "hf", "model": str(run.final("das", HIGH_TEMP_STAGE))}, ["train_das"]),
        MIXED_POLICY_STAGE: ({"name": "hf", "model": str(run.final("das", MIXED_POLICY_STAGE))}, ["train_mixed"]),
        f"rs_{HIGH_TEMP_STAGE}": ({"name": "hf", "model": str(run.final("rs", HIGH_TEMP_STAGE))}, ["train_rs"]),
        "teacher": (config.teacher.model_dump(), []),
    }


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
                config, f"eval_{label}", backend, layout(config).eval(label), producers, teacher=label == "teacher"
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
    run = layout(config)
    # the teacher sees the questions as it did when sampling: with sample's system prompt, or none
    teacher_prompt = config.sample.get("system_prompt") or ""
    settings = {k: v for k, v in config.provenance.items() if k != "model"}
    return [
        Step(
            "provenance",
            "provenance",
            {
                **settings,
                "outputs": str(run.eval(analysed)),
                "output_dir": str(run.provenance),
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
            [run.provenance],
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
            final = final_dir(by_name[trained].config["output_dir"], stage)
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
