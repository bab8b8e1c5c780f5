"""The kinds of ablation arm in `dasd run`'s `arms:` — one pydantic model each, told apart by `kind`.

    arms:
      rs: {select: {strategy: random}}                       # kind: selection (inferred)
      self_distill: {sample_from: student}                   # kind: self_distillation
      mixed: {after: recipe, mix: {}}                        # kind: mixed
      off_policy: {after: recipe, control_of: mixed}         # kind: off_policy_control
      reselect: {after: recipe, stage2_select: {max_boosted_share: 0.1}}   # kind: stage2_select

`kind` may be written; without it the arm's kind is the one its fields name (`arm_kind`), so every arm written before
kinds existed reads as it did (and so does a resolved config an older dasd wrote, whose other kinds' keys hold their
old defaults: `null`, `{}`). Each kind accepts only its own keys: a key of another kind is refused in one line that
names the kind the key belongs to (`arms.x.mix: unknown key …`). How each kind is planned: `dasd.pipeline.arm_steps`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BeforeValidator, Discriminator, Field, Tag

from ..config import ADDED, StageConfig
from ..naming import SFT_STAGES


class ArmBase(StageConfig):
    """What every arm has: its description and its training settings over the pipeline's."""

    description: str = Field("", description="what the arm tests, shown in the tables")
    train: dict[str, Any] = Field(default_factory=dict, description="`dasd train` settings of this arm")


class FromStudentArm(ArmBase):
    """An arm that selects its own SFT data and trains the SFT stages from the pipeline's student."""

    select: dict[str, Any] = Field(
        default_factory=dict,
        description="`dasd select` settings of this arm over the pipeline's `select` (strategy, k, temperatures, "
        "beta/space for a threshold sweep, budget_order, …). An arm whose strategy is random (RS) selects and "
        "builds its SFT data once per training seed, with that seed as select's `seed` (under seed<N>/): each seed "
        "trains on its own draw, so a comparison with RS is not conditional on one; other strategies select once",
    )
    build_sft: dict[str, Any] = Field(default_factory=dict, description="`dasd build-sft` settings of this arm")
    stages: list[str] = Field(
        default_factory=lambda: list(SFT_STAGES),
        description="the SFT stages trained, in order (low_temp, high_temp: the report's schedule)",
    )


class SelectionArm(FromStudentArm):
    kind: Literal["selection"] = Field(
        "selection", description="selection: selects from the pipeline's filtered candidates, trains from the student"
    )
    score_with: dict[str, Any] | None = Field(
        None,
        description="score the pipeline's filtered candidates again with these `dasd score` settings over the "
        "pipeline's (e.g. {student: {model: smollm2}}: another student) and select from those scores; the select "
        "summary compares the selection with the pipeline student's (`compare_with`). The arm still trains the "
        "pipeline's student: does a DAS selection made with another student's probabilities teach this one?",
    )


class SelfDistillationArm(FromStudentArm):
    kind: Literal["self_distillation"] = Field(
        "self_distillation", description="self_distillation: trains on the student's own correct rollouts"
    )
    sample_from: Literal["student"] = Field(
        "student",
        description="student: self-distillation — the arm samples its own candidates from the pipeline's student "
        "with the pipeline's sample settings (same questions, schedule of temperatures and n, max_new_tokens, seed; "
        "the student's system prompt and think format), filters them with the pipeline's filter (correctness "
        "included), selects with its `select` settings (default strategy random, redrawn per training seed; k as "
        "the pipeline's) and trains from the student like any other arm: +x from the student's own correct "
        "rollouts against +y from the teacher's. Its select summary counts the question × temperature groups "
        "where the student had no rollout the filter kept (`groups`): it trains on fewer records there",
        json_schema_extra=ADDED,
    )
    sample: dict[str, Any] = Field(
        default_factory=dict,
        description="`dasd sample` settings over those it takes from the pipeline (e.g. max_new_tokens in student "
        "tokens, system_prompt, chat_template_kwargs, backend: {batch_size: 8})",
        json_schema_extra=ADDED,
    )


class ContinuingArm(ArmBase):
    """An arm that continues another arm's weights (the same training seed) with one more stage."""

    after: str = Field(
        ...,
        description="continue from this arm's final weights (the same training seed) instead of the student: an arm "
        "that trains from the student",
    )


class MixedArm(ContinuingArm):
    kind: Literal["mixed"] = Field("mixed", description="mixed: one more stage on `dasd mix` output")
    mix: dict[str, Any] = Field(
        ..., description="`dasd mix` settings over the pipeline's `mix` (e.g. cut_low, cut_high; {} for the pipeline's)"
    )


class OffPolicyControlArm(ContinuingArm):
    kind: Literal["off_policy_control"] = Field(
        "off_policy_control", description="off_policy_control: the equal-size off-policy control of a mixed arm"
    )
    control_of: str = Field(
        ...,
        description="train instead on as many off-policy records as this (mixed) arm's data holds, from the same "
        "`after` arm — the equal-size control of mixed-policy distillation",
    )


class Stage2SelectArm(ContinuingArm):
    kind: Literal["stage2_select"] = Field(
        "stage2_select", description="stage2_select: the `after` arm's stage 2 again, on a selection of its own"
    )
    stage2_select: dict[str, Any] = Field(
        ...,
        description="train the `after` arm's stage 2 (high_temp) again, from its stage-1 (low_temp) weights of the "
        "same seed, on a selection of its own: the pipeline's filtered candidates are scored with those stage-1 "
        "weights (`dasd score`) and selected with these `dasd select` settings over the `after` arm's, at the "
        "stage-2 temperatures (above build-sft's low_temperature_max unless `temperatures` is given), with "
        "`boosted_scores` set to that scoring — e.g. {max_boosted_share: 0.1}: boosted sentences found before "
        "training, not after (the report's open question 4)",
    )


KINDS: dict[str, type[ArmBase]] = {
    "selection": SelectionArm,
    "self_distillation": SelfDistillationArm,
    "mixed": MixedArm,
    "off_policy_control": OffPolicyControlArm,
    "stage2_select": Stage2SelectArm,
}
# the key that names a continuing arm's kind, in the order they are read
CONTINUING = {"control_of": "off_policy_control", "stage2_select": "stage2_select", "mix": "mixed"}


def arm_kind(arm: Any) -> str:
    """The kind of an arm, written (`kind`) or named by its fields: `sample_from` → self_distillation; `after` with
    `control_of`, `stage2_select` or `mix` → that kind; any of those three alone, or `after` alone, → the kind they
    name, so the error says what is missing; else selection.

    >>> arm_kind({"select": {"strategy": "random"}}), arm_kind({"after": "recipe", "mix": {}}), arm_kind({"mix": {}})
    ('selection', 'mixed', 'mixed')
    >>> arm_kind({"after": "recipe", "control_of": "mixed"}), arm_kind(SelectionArm())
    ('off_policy_control', 'selection')
    """
    if isinstance(arm, ArmBase):
        return arm.kind  # type: ignore[attr-defined]
    if not isinstance(arm, dict):
        return "selection"  # pydantic reports what the value is
    if arm.get("kind") is not None:
        return str(arm["kind"])
    if arm.get("sample_from") is not None:
        return "self_distillation"
    named = [kind for key, kind in CONTINUING.items() if arm.get(key) is not None]
    if named:
        return named[0]
    return "mixed" if arm.get("after") is not None else "selection"


# What the one arm schema before kinds wrote for a key its arm did not use (`pipeline.config.yaml` lists every field).
OLD_DEFAULTS: dict[str, Any] = {
    **dict.fromkeys(("after", "mix", "control_of", "stage2_select", "sample_from", "score_with")),
    **{key: {} for key in ("select", "build_sft", "sample")},
    "stages": list(SFT_STAGES),
}


def without_old_defaults(arm: Any) -> Any:
    """An arm as written, less the keys of other kinds that hold the old schema's defaults (a resolved config written
    before kinds existed lists them all), so that it reads as the kind its keys name.

    >>> without_old_defaults({"after": "r", "mix": {}, "select": {}, "stages": ["low_temp", "high_temp"], "sample": {}})
    {'after': 'r', 'mix': {}}
    >>> without_old_defaults({"select": {"k": 2}, "after": None, "mix": None, "sample_from": None, "selct": {}})
    {'select': {'k': 2}, 'selct': {}}
    """
    if not isinstance(arm, dict):
        return arm
    own = KINDS.get(arm_kind(arm))
    if own is None:
        return arm
    return {
        key: value
        for key, value in arm.items()
        if not (key == "kind" and value is None)
        and (key in own.model_fields or key not in OLD_DEFAULTS or value != OLD_DEFAULTS[key])
    }


ArmConfig = Annotated[
    Union[tuple(Annotated[model, Tag(kind)] for kind, model in KINDS.items())],  # noqa: UP007 (built from KINDS)
    Discriminator(arm_kind, custom_error_type="arm_kind", custom_error_message="unknown kind of arm"),
    BeforeValidator(without_old_defaults),
]
