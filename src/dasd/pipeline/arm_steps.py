"""The ablation arms' steps in `dasd run`: the checks across arms, then each arm's steps — pure, no I/O.

    steps = plan_arms(config)     # select + build-sft per arm (per seed for RS), then per seed train (or mix) + eval

Each kind (`dasd.pipeline.arms`) is planned its own way: a selection arm selects from the pipeline's filtered
candidates (or another student's scores of them) and trains the SFT stages from the student; a self-distillation arm
samples, filters and selects its own rollouts of the student first; a mixed arm, its off-policy control and a
stage-2 reselection continue another arm's weights for the same seed. Sample, score and filter are the pipeline's,
computed once for all arms.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..naming import HIGH_TEMP_STAGE, LOW_TEMP_STAGE, MIXED_POLICY_STAGE, SFT_STAGES, sidecar
from ..text.render import DEFAULT_SYSTEM_PROMPT
from .arms import (
    ArmBase,
    ContinuingArm,
    FromStudentArm,
    MixedArm,
    OffPolicyControlArm,
    SelectionArm,
    SelfDistillationArm,
    Stage2SelectArm,
)
from .config import PipelineConfig
from .steps import (
    Step,
    build_sft_step,
    eval_step,
    layout,
    mix_step_config,
    model_path,
    select_step,
    sft_stages,
    student_tokenizer,
    train_step,
)

UNSCORED_STRATEGIES = ("random", "longest")  # the select strategies that need no `dasd score`
STUDENT_SAMPLE_SETTINGS = ("schedule", "top_p", "top_k", "max_new_tokens", "seed", "limit", "cache")


def check_arms(config: PipelineConfig) -> None:
    """The checks that need the other arms (what `after` and `control_of` name) or the pipeline's settings."""
    for arm, spec in config.arms.items():
        if isinstance(spec, SelfDistillationArm):
            strategy = arm_select_settings(config, spec).get("strategy")
            if strategy not in UNSCORED_STRATEGIES:
                raise ConfigError(
                    f"arms.{arm}.select.strategy: {strategy!r} needs scored candidates, and the student's own "
                    f"rollouts are not scored (choose {' or '.join(UNSCORED_STRATEGIES)})"
                )
        if isinstance(spec, FromStudentArm):
            unknown = [stage for stage in spec.stages if stage not in SFT_STAGES]
            if unknown or not spec.stages:
                raise ConfigError(f"arms.{arm}.stages: choose among {', '.join(SFT_STAGES)} (got {spec.stages})")
            continue
        assert isinstance(spec, ContinuingArm)
        base = config.arms.get(spec.after)
        if not isinstance(base, FromStudentArm):
            raise ConfigError(f"arms.{arm}.after: {spec.after!r} is not an arm that trains from the student")
        if isinstance(spec, Stage2SelectArm):
            if base.stages != list(SFT_STAGES):
                raise ConfigError(
                    f"arms.{arm}.stage2_select: {spec.after!r} trains {base.stages}, not both SFT stages "
                    f"({', '.join(SFT_STAGES)}): there is no stage 1 to score with and continue from"
                )
            _stage2_temperatures(config, arm, spec)  # its one-line error, before anything runs
        if isinstance(spec, OffPolicyControlArm):
            mixed = config.arms.get(spec.control_of)
            if not isinstance(mixed, MixedArm) or mixed.after != spec.after:
                raise ConfigError(f"arms.{arm}.control_of: {spec.control_of!r} is not a mix arm after {spec.after!r}")


def arm_last_stage(spec: ArmBase) -> str:
    if isinstance(spec, FromStudentArm):
        return spec.stages[-1]
    if isinstance(spec, Stage2SelectArm):
        return HIGH_TEMP_STAGE
    return "off_policy" if isinstance(spec, OffPolicyControlArm) else MIXED_POLICY_STAGE


def arm_final(config: PipelineConfig, arm: str, seed: int) -> Path:
    """The weights an arm ends with for one training seed."""
    return layout(config).arm_final(arm, seed, arm_last_stage(config.arms[arm]))


def arm_select_settings(config: PipelineConfig, spec: ArmBase) -> dict[str, Any]:
    """An arm's `dasd select` settings over the pipeline's (strategy random for an arm sampling from the student,
    unless it says otherwise), before its input and output are filled in."""
    defaults = {"strategy": "random"} if isinstance(spec, SelfDistillationArm) else {}
    return {**config.select, **defaults, **spec.select}


def redrawn_per_seed(config: PipelineConfig, spec: ArmBase) -> bool:
    """Whether an arm selects at random (RS): then it selects, and builds its SFT data, once per training seed.

    >>> from types import SimpleNamespace
    >>> pipeline = SimpleNamespace(select={})
    >>> rs = SelectionArm(select={"strategy": "random"})
    >>> redrawn_per_seed(pipeline, rs), redrawn_per_seed(pipeline, SelectionArm())
    (True, False)
    >>> redrawn_per_seed(pipeline, SelfDistillationArm())
    True
    """
    return arm_select_settings(config, spec).get("strategy", "count") == "random"


def arm_sft(config: PipelineConfig, arm: str, seed: int) -> tuple[Path, str]:
    """The SFT file an arm trains on for one training seed, and the step that builds it: one for every seed, or
    (RS) the seed's own."""
    if redrawn_per_seed(config, config.arms[arm]):
        return layout(config).arm_sft(arm, seed), f"{arm}.s{seed}.build_sft"
    return layout(config).arm_sft(arm), f"{arm}.build_sft"


def plan_arms(config: PipelineConfig) -> list[Step]:
    """Each arm's steps: select and build-sft once (once per training seed for a random selection), then per
    training seed train (or mix + train from another arm's weights) and evaluate."""
    check_arms(config)
    run = layout(config)
    steps: list[Step] = []
    for arm, spec in config.arms.items():
        if isinstance(spec, FromStudentArm):
            steps += _arm_data_steps(config, arm, spec)
    # dependencies first: arms from the student, then the arms continuing them, then the mix arms' controls
    rank = {"mixed": 1, "stage2_select": 1, "off_policy_control": 2}
    ordered = sorted(config.arms.items(), key=lambda item: rank.get(item[1].kind, 0))
    for arm, spec in ordered:
        for seed in config.seeds:
            steps += _arm_seed_steps(config, arm, spec, seed)
            backend = {"name": "hf", "model": str(arm_final(config, arm, seed))}
            name = f"{arm}.s{seed}"
            steps.append(
                eval_step(
                    config,
                    f"{name}.eval",
                    backend,
                    run.seed_eval(arm, seed),
                    [f"{name}.train"],
                    model_name=f"{arm}/seed{seed}",
                )
            )
    return steps


def _arm_data_steps(config: PipelineConfig, arm: str, spec: FromStudentArm) -> list[Step]:
    """An arm's selection from the pipeline's filtered records (or another student's scores of them, or its own
    rollouts of the student), and its SFT files: once, or once per training seed for a random selection."""
    run = layout(config)
    filtered = str(run.record("filter"))
    steps, candidates, compare, upstream = [], {"input": filtered}, {}, "filter"
    if isinstance(spec, SelectionArm) and spec.score_with is not None:
        # the same candidates, scored by another student: select from those scores, compare with the pipeline's
        rescored = run.arm_record(arm, "score")
        settings = {key: value for key, value in spec.score_with.items() if key != "student"}
        student = {**config.student.model_dump(), "tokenizer": None, **(spec.score_with.get("student") or {})}
        score_config = {**config.score, **settings, "input": filtered, "output": str(rescored), "student": student}
        steps.append(Step(f"{arm}.score", "score", score_config, [rescored.parent], ["filter"]))
        candidates, compare, upstream = {"input": str(rescored)}, {"compare_with": filtered}, f"{arm}.score"
    if isinstance(spec, SelfDistillationArm):
        steps += _student_sample_steps(config, arm, spec)
        # select's summary counts the groups where the student had no rollout kept, from the filter's rejected file
        filtered_rollouts = run.arm_record(arm, "filter")
        rejected = sidecar(filtered_rollouts, "rejected", f".{config.record_format}")
        candidates = {"input": str(filtered_rollouts), "rejected": str(rejected)}
        upstream = f"{arm}.filter"
    settings = {**arm_select_settings(config, spec), **candidates, **compare}
    for seed in config.seeds if redrawn_per_seed(config, spec) else [None]:
        name = arm if seed is None else f"{arm}.s{seed}"
        selected, sft = run.arm_select(arm, seed), run.arm_sft(arm, seed)
        steps += [
            select_step(
                f"{name}.select", {**settings, **({} if seed is None else {"seed": seed})}, selected, [upstream]
            ),
            build_sft_step(config, f"{name}.build_sft", selected, sft, [f"{name}.select"], spec.build_sft),
        ]
    return steps


def _student_sample_steps(config: PipelineConfig, arm: str, spec: SelfDistillationArm) -> list[Step]:
    """A self-distillation arm's candidates: the pipeline's student answers the pipeline's questions with its sample
    schedule (prompted as it is trained and evaluated: the SFT system prompt, think format), and the pipeline's
    filter (correctness included) keeps its careful, correct rollouts."""
    run = layout(config)
    rollouts, filtered = run.arm_record(arm, "sample"), run.arm_record(arm, "filter")
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
        "student_tokenizer": student_tokenizer(config),
        **config.filter,
        "input": str(rollouts),
        "output": str(filtered),
    }
    inputs = [Path(config.questions)] + ([p] if (p := model_path(student.model)) else [])
    return [
        Step(f"{arm}.sample", "sample", sample_config, [rollouts.parent], inputs=inputs),
        Step(f"{arm}.filter", "filter", filter_config, [filtered.parent], [f"{arm}.sample"]),
    ]


def _arm_seed_steps(config: PipelineConfig, arm: str, spec: ArmBase, seed: int) -> list[Step]:
    """One training seed of an arm: its SFT stages from the student, or (with `after`) mix + one stage from the
    other arm's weights for that seed."""
    run = layout(config)
    steps = []
    if isinstance(spec, Stage2SelectArm):
        steps, stages = _stage2_steps(config, arm, spec, seed)
        settings = {**config.train, **config.arms[spec.after].train, **spec.train}
        depends = [f"{arm}.s{seed}.build_sft"]
    elif isinstance(spec, FromStudentArm):
        sft_out, built = arm_sft(config, arm, seed)
        stages = sft_stages(sft_out, spec.stages)
        settings = {**config.train, **spec.train}
        depends = [built]
    else:
        assert isinstance(spec, (MixedArm, OffPolicyControlArm))
        base_sft, base_built = arm_sft(config, spec.after, seed)
        base_final = arm_final(config, spec.after, seed)
        mix_out = run.arm_mix(arm, seed)
        mixed = spec if isinstance(spec, MixedArm) else config.arms[spec.control_of]
        assert isinstance(mixed, MixedArm)  # check_arms: control_of names a mixed arm
        arm_mix = mixed.mix
        mix_settings = {**config.mix, **(arm_mix or {}), "seed": seed}
        teacher = config.teacher.model_dump()
        mix_config = mix_step_config(config, mix_settings, teacher, base_sft, mix_out, base_final)
        mix_depends = [f"{spec.after}.s{seed}.train", base_built]
        if isinstance(spec, OffPolicyControlArm):
            mix_config["equal_size_as"] = str(run.arm_mix(spec.control_of, seed))
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
        train_step(
            config,
            f"{arm}.s{seed}.train",
            {**settings, "seed": seed},
            run.seed(arm, seed),
            stages,
            depends,
            skip_if=empty_data,
        )
    )
    return steps


def _stage2_temperatures(config: PipelineConfig, arm: str, spec: Stage2SelectArm) -> list[float]:
    """The temperatures of a `stage2_select` arm's candidates: its own `temperatures`, else the sampled ones that
    build-sft puts in stage 2 (above `low_temperature_max`) among those the `after` arm selects from."""
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
    config: PipelineConfig, arm: str, spec: Stage2SelectArm, seed: int
) -> tuple[list[Step], list[dict[str, Any]]]:
    """A `stage2_select` arm's data for one seed: the filtered candidates scored with the `after` arm's stage-1
    weights, selected with the boosted classes those scores give, built into SFT records — and its one stage,
    high_temp from those stage-1 weights (the `after` arm's own stage 2 is the control: the same first stage)."""
    run, base = layout(config), config.arms[spec.after]
    stage1 = run.arm_final(spec.after, seed, LOW_TEMP_STAGE)
    filtered = str(run.record("filter"))
    scored = run.arm_record(arm, "score", seed)
    selected, sft = run.arm_select(arm, seed), run.arm_sft(arm, seed)
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
    }
    name = f"{arm}.s{seed}"
    steps = [
        Step(f"{name}.score", "score", score_config, [scored.parent], ["filter", f"{spec.after}.s{seed}.train"]),
        select_step(f"{name}.select", select_config, selected, [f"{name}.score"]),
        build_sft_step(config, f"{name}.build_sft", selected, sft, [f"{name}.select"], base.build_sft),
    ]
    stage = {**sft_stages(sft, [HIGH_TEMP_STAGE])[0], "init": str(stage1)}
    return steps, [stage]
