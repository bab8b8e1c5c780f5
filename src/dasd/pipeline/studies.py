"""The demo's studies as data: one YAML file per study in `dasd/data/studies/`, run by `dasd demo ablation=<name>`.

A study file holds what varies between studies: its description (`dasd demo --help`), its arms (`dasd run`'s
`arms:`) and claims, the models evaluated beside the arms, the temperatures and samples it needs, the world it
needs, on which split and with which seeds it runs. Its arms come from three places, in this order:

* `include: {<study>: [arm, …]}` — those arms of another study, as that study resolves them;
* `arms:` — written out;
* `generate: {<generator>: [values]}` — a named generator of `GENERATORS` makes one arm (or a pair) per value, for
  the sweeps: the learning rates of `make tune`, the DAS thresholds and the cut positions of `ablation=sweeps`.

A value `$name` anywhere in `arms:` or `generate:` is filled in when the study runs (`resolve(…, inputs)`): the
demo supplies `$dev_learning_rates` (its setting) and `$skill_sentences` (the world's own labels of the skill).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, TypeAdapter, ValidationError, field_validator

from ..config import StageConfig, did_you_mean, format_validation_error
from ..errors import ConfigError
from .arms import ArmConfig
from .config import ClaimConfig

ARM = TypeAdapter(ArmConfig)  # an arm of any kind, validated as `dasd run` validates `arms.<name>`
STUDIES = Path(__file__).resolve().parents[1] / "data" / "studies"
Arms = dict[str, dict[str, Any]]
Claims = list[dict[str, str]]


def _learning_rates(rates: list[float]) -> tuple[Arms, Claims]:
    """The recipe and its mixed-policy stage at each rate (floor: a tenth of it), and the gate's claim per rate: the
    recipe at that rate against the student it started from.

    >>> arms, claims = _learning_rates([1e-4])
    >>> list(arms), arms["mixed_lr_0.0001"]["after"], (claims[0]["better"], claims[0]["worse"])
    (['lr_0.0001', 'mixed_lr_0.0001'], 'lr_0.0001', ('lr_0.0001', 'student'))
    """
    arms: Arms = {}
    for rate in rates:
        train = {"learning_rate": rate, "min_learning_rate": rate / 10}
        arms[f"lr_{rate:g}"] = {"description": f"the recipe at lr {rate:g}", "train": train}
        arms[f"mixed_lr_{rate:g}"] = {
            "description": f"… + mixed-policy stage at lr {rate:g}",
            "after": f"lr_{rate:g}",
            "mix": {},
            "train": dict(train),
        }
    claims = [
        {"name": f"the recipe at lr {rate:g} moves the student up", "better": f"lr_{rate:g}", "worse": "student"}
        for rate in rates
    ]
    return arms, [{**claim, "source": "gate"} for claim in claims]


def _ratio_cutoffs(cutoffs: list[float]) -> tuple[Arms, Claims]:
    """DAS with teacher sentences re-classified at p_T/p_S > cutoff (beta = ln cutoff, no re-scoring).

    >>> _ratio_cutoffs([2.0])[0]["das_ratio_2"]["select"]
    {'space': 'logratio', 'beta': 0.693147}
    """
    return {
        f"das_ratio_{cutoff:g}": {
            "description": f"DAS with teacher sentences at p_T/p_S > {cutoff:g}",
            "select": {"space": "logratio", "beta": round(math.log(cutoff), 6)},
        }
        for cutoff in cutoffs
    }, []


def _cut_positions(positions: list[float]) -> tuple[Arms, Claims]:
    """The recipe + a mixed-policy stage whose cut is drawn within ±0.1 of each position of the student's rollout.

    >>> _cut_positions([0.2])[0]["cut_20"]["mix"]
    {'cut_low': 0.1, 'cut_high': 0.3}
    """
    return {
        f"cut_{round(100 * position)}": {
            "description": f"mixed-policy cut near {round(100 * position)}% of the rollout",
            "after": "recipe",
            "mix": {"cut_low": round(position - 0.1, 2), "cut_high": round(position + 0.1, 2)},
        }
        for position in positions
    }, []


GENERATORS: dict[str, Callable[[list[float]], tuple[Arms, Claims]]] = {
    "learning_rates": _learning_rates,
    "ratio_cutoffs": _ratio_cutoffs,
    "cut_positions": _cut_positions,
}


class Sampling(StageConfig):
    temperatures: list[float] = Field(
        default_factory=lambda: [0.6, 1.0], description="the temperatures sampled, in order"
    )
    per_temperature: int | None = Field(
        None, ge=1, description="samples per question and temperature (default: the demo's, 8 with arms)"
    )


class Needs(StageConfig):
    worlds: list[str] | None = Field(None, description="the demo worlds the study can run on")
    samples_per_temperature: int | None = Field(None, ge=1, description="the fewest samples per temperature")
    why: str = Field(..., description="the reason, shown in the error")


class Study(StageConfig):
    description: str = Field(..., description="one line for `dasd demo --help`")
    include: dict[str, list[str]] = Field(default_factory=dict, description="arms of other studies, by name")
    arms: dict[str, dict[str, Any]] = Field(default_factory=dict, description="`dasd run` arms, written out")
    generate: dict[Literal["learning_rates", "ratio_cutoffs", "cut_positions"], list[float] | str] = Field(
        default_factory=dict, description="generated arms (GENERATORS): the values, or `$name` of an input"
    )
    claims: list[ClaimConfig] = Field(default_factory=list, description="comparisons of arms or evaluated models")
    eval_models: list[str] = Field(
        default_factory=lambda: ["student", "teacher"],
        description="models evaluated beside the arms (on the dev split: the student only)",
    )
    eval_split: Literal["dev"] | None = Field(None, description="dev: always evaluated on the dev split")
    seeds: Literal["all", "first"] = Field("all", description="the training seeds used: all, or the first only")
    sample: Sampling = Field(default_factory=Sampling, description="what is sampled")
    select: dict[str, Any] = Field(default_factory=dict, description="`dasd select` settings over the demo's")
    needs: Needs | None = Field(None, description="what the study cannot run without")

    @field_validator("arms")
    @classmethod
    def _arms_validate(cls, arms: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name, arm in arms.items():
            try:
                ARM.validate_python(arm)
            except ValidationError as exc:
                raise ValueError(format_validation_error(exc, f"arm {name}", ArmConfig)) from None
        return arms

    @property
    def has_arms(self) -> bool:
        """Whether the study trains arms (replacing the recipe's own branches)."""
        return bool(self.include or self.arms or self.generate)


def study_names() -> list[str]:
    """The studies present, `none` (the recipe alone) first."""
    names = sorted(path.stem for path in STUDIES.glob("*.yaml"))
    return sorted(names, key=lambda name: name != "none")


def unknown(name: str) -> str | None:
    """What is wrong with `name` when no study file has it (the closest name, every study's), else None.

    >>> unknown("arms"), unknown("armz").split("?")[0]
    (None, "not a study; did you mean 'arms'")
    """
    names = study_names()
    return None if name in names else f"not a study{did_you_mean(name, names)} (the studies: {', '.join(names)})"


@functools.cache
def load_study(name: str) -> Study:
    if problem := unknown(name):
        raise ConfigError(f"{name!r}: {problem}")
    path = STUDIES / f"{name}.yaml"
    try:
        return Study.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, str(path), Study)) from None


Inputs = Mapping[str, Callable[[], Any]]


def resolve(name: str, inputs: Inputs | None = None, *, _chain: tuple[str, ...] = ()) -> tuple[Arms, Claims]:
    """A study's arms (included, written, generated: in that order) and claims (written, then generated), every
    `$name` value filled in from `inputs` (name -> a function giving the value, called only where it is used)."""
    if name in _chain:
        raise ConfigError(f"study {name}: includes itself ({' -> '.join((*_chain, name))})")
    study, inputs = load_study(name), inputs or {}
    arms: Arms = {}
    for other, wanted in study.include.items():
        theirs = resolve(other, inputs, _chain=(*_chain, name))[0]
        missing = [arm for arm in wanted if arm not in theirs]
        if missing:
            raise ConfigError(f"study {name}: include: {other} has no arm {', '.join(missing)}")
        arms.update({arm: theirs[arm] for arm in wanted})
    arms.update(_filled(study.arms, inputs, name))
    claims = [claim.model_dump() for claim in study.claims]
    for generator, values in study.generate.items():
        more_arms, more_claims = GENERATORS[generator](_filled(values, inputs, name))
        arms.update(more_arms)
        claims += more_claims
    return arms, claims


def _filled(value: Any, inputs: Inputs, study: str) -> Any:
    """`value` with each `$name` replaced by its input (and every mapping and list copied)."""
    if isinstance(value, str) and value.startswith("$"):
        if value[1:] not in inputs:
            raise ConfigError(f"study {study}: {value} is not an input here (there are: {', '.join(inputs)})")
        return inputs[value[1:]]()
    if isinstance(value, dict):
        return {key: _filled(item, inputs, study) for key, item in value.items()}
    if isinstance(value, list):
        return [_filled(item, inputs, study) for item in value]
    return value
