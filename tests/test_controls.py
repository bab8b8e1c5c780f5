"""Controls that bound a selection rule (issue 37 items 1b and 2): RS redrawn per training seed, the anti-DAS and oracle
rules as arms, and a self-distillation arm trained on the student's own correct rollouts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from dasd.config import format_validation_error, load_config
from dasd.errors import ConfigError
from dasd.pipeline.config import PipelineConfig
from dasd.pipeline.plan import plan
from dasd.stages import demo
from dasd.stages import run as pipeline_run
from dasd.stages.run import step_jobs

ARMS_ONLY = {name: False for name in ("select", "build_sft", "train", "mix", "train_mixed")}


def _spec(tmp_path: Path, arms: dict, **extra) -> dict:
    return {
        "workdir": str(tmp_path / "work"),
        "questions": str(tmp_path / "q.jsonl"),
        "teacher": {"name": "hf", "model": "teacher"},
        "student": {"model": "student"},
        "stages": ARMS_ONLY,
        "seeds": [1, 2],
        "arms": arms,
        **extra,
    }


def _steps(tmp_path: Path, arms: dict, **extra) -> dict:
    config = PipelineConfig.model_validate(_spec(tmp_path, arms, **extra))
    steps = plan(config)
    step_jobs(config, steps, tmp_path / "state")  # every step's config validates as its stage's
    return {step.name: step for step in steps}


def test_an_rs_arm_selects_once_per_training_seed_and_a_count_arm_once(tmp_path):
    steps = _steps(
        tmp_path,
        {
            "recipe": {},
            "rs": {"select": {"strategy": "random", "seed": 7}},
            "rs_mixed": {"after": "rs", "mix": {}},
            "rs_stage2": {"after": "rs", "stage2_select": {}},
        },
        sample={"schedule": [{"temperature": 0.6, "n": 2}, {"temperature": 1.0, "n": 2}]},
    )
    work = tmp_path / "work" / "arms"
    # count: one selection every seed trains on
    assert [name for name in steps if name.startswith("recipe.") and name.endswith("select")] == ["recipe.select"]
    assert "seed" not in steps["recipe.select"].config
    for seed in (1, 2):
        assert steps[f"recipe.s{seed}.train"].depends == ["recipe.build_sft"]
    # random: a draw per training seed (the seed overrides the arm's own), under the seed's folder
    assert "rs.select" not in steps and "rs.build_sft" not in steps
    assert [steps[f"rs.s{seed}.select"].config["seed"] for seed in (1, 2)] == [1, 2]
    for seed in (1, 2):
        chosen, built = steps[f"rs.s{seed}.select"], steps[f"rs.s{seed}.build_sft"]
        assert chosen.config["output"] == str(work / "rs" / f"seed{seed}" / "select.parquet")
        assert chosen.config["strategy"] == "random" and chosen.depends == ["filter"]
        assert built.config["input"] == chosen.config["output"] and built.depends == [f"rs.s{seed}.select"]
        train = steps[f"rs.s{seed}.train"]
        assert train.depends == [f"rs.s{seed}.build_sft"]
        assert train.config["stages"][0]["data"] == str(work / "rs" / f"seed{seed}" / "sft" / "sft.low_temp.jsonl")
        # an arm continuing the rs arm reads that seed's data
        mix = steps[f"rs_mixed.s{seed}.mix"]
        assert mix.config["input"] == str(work / "rs" / f"seed{seed}" / "sft" / "sft.jsonl")
        assert mix.depends == [f"rs.s{seed}.train", f"rs.s{seed}.build_sft"]
        assert steps[f"rs_stage2.s{seed}.select"].config["seed"] == seed
    names = list(steps)
    assert names.index("rs.s2.build_sft") < names.index("rs.s1.train")


@pytest.mark.parametrize(
    "select, expected",
    [
        ({"strategy": "ratio"}, "ratio"),
        ({"strategy": "longest"}, "longest"),
        ({"strategy": "anti_das"}, "anti_das"),
        ({"strategy": "oracle", "oracle_patterns": ["^Careful:"]}, "oracle"),
        ({"strategy": "count", "k": 2, "budget_order": "rank", "max_per_question": 3}, "count"),
    ],
)
def test_every_deterministic_rule_is_an_arm_with_one_selection(tmp_path, select, expected):
    steps = _steps(tmp_path, {"rule": {"select": select}})
    chosen = steps["rule.select"].config
    assert chosen["strategy"] == expected and {**chosen, **select} == chosen
    assert "rule.s1.select" not in steps and steps["rule.s2.train"].depends == ["rule.build_sft"]


def test_an_oracle_arm_without_patterns_stops_the_plan_in_one_line(tmp_path):
    spec = _spec(tmp_path, {"oracle": {"select": {"strategy": "oracle"}}})
    with pytest.raises(ConfigError, match="pipeline step oracle.select: field 'oracle_patterns'") as error:
        pipeline_run.run(PipelineConfig.model_validate(spec))
    assert "\n" not in str(error.value) and not (tmp_path / "work").exists()


def test_a_self_distillation_arm_samples_filters_and_selects_the_students_own_rollouts(tmp_path):
    schedule = [{"temperature": 0.6, "n": 3}, {"temperature": 1.0, "n": 5}]
    steps = _steps(
        tmp_path,
        {"recipe": {}, "self": {"sample_from": "student"}},
        sample={"schedule": schedule, "max_new_tokens": 300, "limit": 10, "model_name": "gpt-oss", "seed": 4},
        filter={"length": {"max_length": 1024}},
        select={"k": 2},
        eval={"backend": {"batch_size": 16}},
        student={"model": "student", "device": "cpu"},
    )
    work = tmp_path / "work" / "arms" / "self"
    sample = steps["self.sample"].config
    # the pipeline's questions and schedule, from the pipeline's student, prompted as it is trained and evaluated
    assert sample["input"] == str(tmp_path / "q.jsonl") and sample["schedule"] == schedule
    assert (sample["max_new_tokens"], sample["limit"], sample["seed"]) == (300, 10, 4)
    assert sample["backend"] == {
        "name": "hf",
        "model": "student",
        "tokenizer": None,
        "device": "cpu",
        "dtype": "auto",
        "batch_size": 16,
    }
    assert "model_name" not in sample and sample["system_prompt"] == "You are a helpful assistant."
    assert sample["reasoning_format"] == "think"
    # the pipeline's filter (correctness on by default), on the rollouts
    filtered = steps["self.filter"].config
    assert filtered["input"] == sample["output"] and filtered["length"] == {"max_length": 1024}
    assert filtered["student_tokenizer"] == "student" and steps["self.filter"].depends == ["self.sample"]
    # random, k as the pipeline's, a draw per training seed, reading the rejected rollouts to count what is missing
    for seed in (1, 2):
        chosen = steps[f"self.s{seed}.select"].config
        assert (chosen["strategy"], chosen["k"], chosen["seed"]) == ("random", 2, seed)
        assert chosen["input"] == str(work / "filter" / "filtered.parquet")
        assert chosen["rejected"] == str(work / "filter" / "filtered.rejected.parquet")
        train = steps[f"self.s{seed}.train"].config
        assert train["student"]["model"] == "student" and "init" not in train["stages"][0]
        assert train == {
            **steps[f"recipe.s{seed}.train"].config,
            "output_dir": train["output_dir"],
            "stages": train["stages"],
        }
    assert "self.score" not in steps and "self.select" not in steps
    # longest needs no scores either; a count arm over unscored rollouts is refused
    longest = _steps(tmp_path, {"self": {"sample_from": "student", "select": {"strategy": "longest"}}})
    assert "self.select" in longest and longest["self.select"].config["strategy"] == "longest"


@pytest.mark.parametrize(
    "arms, message",
    [
        ({"self": {"sample_from": "student", "select": {"strategy": "count"}}}, "'count' needs scored candidates"),
        # a key of another kind of arm is refused by the arm's kind (`dasd.pipeline.arms`), naming its keys
        ({"a": {}, "self": {"sample_from": "student", "after": "a", "mix": {}}}, "'arms.self.after': unknown key"),
        ({"self": {"sample_from": "student", "score_with": {}}}, "'arms.self.score_with': unknown key"),
        ({"self": {"sample": {"max_new_tokens": 8}}}, "'arms.self.sample': unknown key .*kind selection"),
        ({"self": {"after": "a"}}, "'arms.self.mix': required"),
    ],
)
def test_self_distillation_arm_errors_are_one_line(tmp_path, arms, message):
    with pytest.raises(ConfigError, match=message) as error:
        try:
            config = PipelineConfig.model_validate(_spec(tmp_path, arms))
        except ValidationError as exc:  # what `dasd run PIPELINE.yaml` reports (load_config)
            raise ConfigError(format_validation_error(exc, "pipeline.yaml", PipelineConfig)) from None
        pipeline_run.run(config)
    assert "\n" not in str(error.value) and not (tmp_path / "work").exists()


@pytest.mark.integration
def test_a_self_distillation_arm_trains_on_the_students_correct_rollouts(tmp_path):
    """The demo world, reduced: the student answers 4 questions × 2 per temperature, the filter keeps the correct
    ones, a seed's random draw of them trains the student; the select summary says how many groups had none."""
    from dasd.models.demo_world import world_dir

    reduced = ["train_questions=4", "samples_per_temperature=2", "eval_questions=2", "eval_n=1", "epochs=1"]
    spec = demo.pipeline(
        load_config(demo.DemoConfig, None, [f"workdir={tmp_path / 'run'}", "global_batch_size=2", *reduced]),
        world_dir(),
    )
    spec["train"].update(global_batch_size=1, warmup_ratio=0)  # a stage may hold one record: one step, at the rate
    spec.update(
        stages={step: False for step in ("sample", "score", "filter", "eval", "provenance", *ARMS_ONLY)},
        eval_models=[],
        claims=[],
        seeds=[1],
        arms={"self": {"sample_from": "student"}},
    )
    pipeline_run.run(PipelineConfig.model_validate(spec))
    summary = json.loads((tmp_path / "run" / "run.summary.json").read_text())
    status = {row["step"]: row["status"] for row in summary["steps"]}
    assert list(status) == [
        "self.sample",
        "self.filter",
        "self.s1.select",
        "self.s1.build_sft",
        "self.s1.train",
        "self.s1.eval",
    ]
    arm = tmp_path / "run" / "arms" / "self"
    filtered = json.loads((arm / "filter" / "filtered.summary.json").read_text())
    assert filtered["records"] == 16 and filtered["kept"] >= 1
    selected = json.loads((arm / "seed1" / "select.summary.json").read_text())
    groups = selected["groups"]
    assert groups["with_candidates"] + groups["without_candidates"] == 8 and groups["records_at_k"] == 8
    assert selected["selected"] == groups["with_candidates"] <= filtered["kept"]
    built = json.loads((arm / "seed1" / "sft" / "sft.summary.json").read_text())
    assert built["records"] == selected["selected"]
    assert (arm / "seed1" / "eval" / "summary.json").exists() or status["self.s1.train"] != "ran"


def test_an_arms_kind_is_named_by_its_keys_and_a_config_resolved_before_kinds_still_loads(tmp_path):
    """`pipeline.config.yaml` written before arm kinds lists every field of the one old arm schema, other kinds'
    keys at their defaults: it reads as the kinds its keys name. A kind that does not exist is one line."""
    old_fields = {
        "description": "",
        "after": None,
        "select": {},
        "sample_from": None,
        "sample": {},
        "score_with": None,
        "build_sft": {},
        "stages": ["low_temp", "high_temp"],
        "train": {},
        "mix": None,
        "control_of": None,
        "stage2_select": None,
    }
    arms = {
        "recipe": old_fields,
        "rs": {**old_fields, "select": {"strategy": "random"}},
        "mixed": {**old_fields, "after": "recipe", "mix": {}},
        "off_policy": {**old_fields, "after": "recipe", "control_of": "mixed"},
    }
    config = PipelineConfig.model_validate(_spec(tmp_path, arms))
    assert {name: arm.kind for name, arm in config.arms.items()} == {
        "recipe": "selection",
        "rs": "selection",
        "mixed": "mixed",
        "off_policy": "off_policy_control",
    }
    with pytest.raises(ValidationError) as error:
        PipelineConfig.model_validate(_spec(tmp_path, {"a": {"kind": "mix", "after": "b", "mix": {}}}))
    message = format_validation_error(error.value, "pipeline.yaml", PipelineConfig)
    assert "field 'arms.a': unknown kind 'mix'; did you mean 'mixed'?" in message, message
