"""Ablation arms in `dasd run`: planning, paired statistics over seeds, kill and resume inside an arm,
and a changed arm setting that reruns only that arm — on a reduced demo world."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from dasd.config import format_validation_error, load_config
from dasd.errors import ConfigError, DasdError
from dasd.pipeline.studies import resolve
from dasd.reporting.ablation import claim_results
from dasd.reporting.metrics import paired_difference, satterthwaite_df, t_quantile, verdict
from dasd.stages import demo
from dasd.stages import run as pipeline_run

from .conftest import kill_when, read_jsonl, write_jsonl
from .test_pipeline import _marker, _status

# A reduced world: 6 training questions × 2 samples per temperature, 6 held-out questions × 2 samples.
REDUCED = [
    "ablation=arms",
    "train_questions=6",
    "samples_per_temperature=2",
    "eval_questions=6",
    "eval_n=2",
    "epochs=1",
    "mix_questions=6",
    "off_policy=4",
    "global_batch_size=2",  # every SFT stage makes several optimizer steps, past warmup
    "seeds=[1, 2]",
]
ARMS = ("recipe", "t06_only", "mixed", "off_policy", "stage2_again")
# the recipe's stage 2 trained again from its stage-1 weights, with the boosted filter letting everything through
STAGE2_AGAIN = {"after": "recipe", "stage2_select": {"max_boosted_share": 1.0}}


def _graded(pattern: dict[str, list[bool]]) -> dict[str, dict[str, bool]]:
    return {
        question: {f"{question}:{i}": value for i, value in enumerate(values)} for question, values in pattern.items()
    }


def test_paired_difference_averages_seeds_per_question_before_the_standard_error():
    worse = [_graded({"q1": [True, False], "q2": [False, False], "q3": [True, True]})] * 2
    better = [
        _graded({"q1": [True, True], "q2": [True, False], "q3": [True, True]}),
        _graded({"q1": [True, False], "q2": [True, True], "q3": [True, False]}),
    ]
    result = paired_difference(worse, better)
    # per question: q1 (0.75 - 0.5), q2 (0.75 - 0), q3 (0.75 - 1.0) → mean 0.25
    assert result["questions"] == 3 and result["difference"] == pytest.approx(0.25)
    differences = [0.25, 0.75, -0.25]
    variance = sum((d - 0.25) ** 2 for d in differences) / 2
    assert result["question_standard_error"] == pytest.approx((variance / 3) ** 0.5)
    assert result["per_run"] == [pytest.approx(1 / 3, abs=1e-4), pytest.approx(1 / 6, abs=1e-4)]  # seed by seed
    # two seeds: their spread adds to the spread over questions
    seed_variance = (1 / 3 - 1 / 6) ** 2 / 2
    assert result["standard_error"] == pytest.approx((variance / 3 + seed_variance / 2) ** 0.5, abs=1e-4)
    # a t interval: Welch–Satterthwaite df over the question term (3 - 1 df) and the seed term (2 - 1 df)
    df = satterthwaite_df([(variance / 3, 2), (seed_variance / 2, 1)])
    assert result["degrees_of_freedom"] == pytest.approx(df, abs=0.01) and 1 <= df <= 3
    t = t_quantile(0.975, df)
    assert result["t"] == pytest.approx(t, abs=1e-3) and t > 3.18  # at most 3 df: far from 1.96
    low, high = result["interval"]
    assert low == pytest.approx(0.25 - t * result["standard_error"], abs=1e-3)
    assert high == pytest.approx(0.25 + t * result["standard_error"], abs=1e-3)
    assert verdict(result["interval"]) == "not distinguishable"
    # only the samples every model drew are compared
    partial = [_graded({"q1": [True]})]
    assert paired_difference(partial, better)["samples"] == 1


def test_verdict_reads_the_interval_against_the_report_direction():
    assert verdict([0.002, 0.03]) == "agrees"
    assert verdict([-0.03, -0.002]) == "opposite"
    assert verdict([-0.01, 0.01]) == "not distinguishable"
    assert verdict([-0.03, -0.002], expected=-1) == "agrees"


def test_claims_compare_an_arm_over_seeds_with_a_single_model(tmp_path):
    def write(folder: Path, values: list[bool]) -> Path:
        results = [{"id": f"q{i}:1:0", "question_id": f"q{i}", "correct": value} for i, value in enumerate(values)]
        write_jsonl(folder / "bench" / "results.jsonl", results)
        (folder / "summary.json").write_text("{}")
        return folder

    student = write(tmp_path / "student", [False] * 10)
    arm = [write(tmp_path / f"s{seed}", [True] * 8 + [False] * 2) for seed in (1, 2)]
    rows = claim_results(
        [{"name": "distillation helps", "better": "arm", "worse": "student", "source": ""}],
        {"arm": {"1": arm[0], "2": arm[1]}, "student": {"-": student}},
    )
    assert len(rows) == 1 and rows[0]["benchmark"] == "bench"
    assert rows[0]["difference"] == pytest.approx(0.8) and rows[0]["verdict"] == "agrees"
    assert rows[0]["seeds"] == [["-"], ["1", "2"]]
    # the two seeds agree exactly: no seed term, so df = questions − 1
    assert rows[0]["per_run"] == [0.8, 0.8] and rows[0]["degrees_of_freedom"] == 9.0
    assert rows[0]["t"] == pytest.approx(2.2622, abs=1e-4)


def _spec(tmp_path: Path, **changes) -> dict:
    config = load_config(demo.DemoConfig, None, [f"workdir={tmp_path / 'run'}", "ablation=sweeps"])
    spec = demo.pipeline(config, tmp_path / "world")
    spec.update(changes)
    return spec


@pytest.mark.parametrize(
    "arms, message",
    [
        ({"a": {"after": "nowhere", "mix": {}}}, "arms.a.after"),
        # the arm kinds (`dasd.pipeline.arms`): what a kind needs, and a key of another kind, in the arm's schema
        ({"a": {"mix": {}}}, "'arms.a.after': required but not given .kind mixed needs after, mix"),
        ({"a": {}, "b": {"after": "a"}}, "'arms.b.mix': required but not given .kind mixed needs after, mix"),
        (
            {"a": {}, "b": {"after": "a", "mix": {}, "stage2_select": {}}},
            "'arms.b.mix': unknown key — a key of kind mixed",
        ),
        ({"a": {"stage2_select": {}}}, "'arms.a.after': required but not given .kind stage2_select"),
        ({"a": {"stages": ["high_temp"]}, "b": {"after": "a", "stage2_select": {}}}, "no stage 1 to score with"),
        (
            {"a": {"build_sft": {"low_temperature_max": 1.5}}, "b": {"after": "a", "stage2_select": {}}},
            "no sampled temperature is above low_temperature_max 1.5",
        ),
        ({"a": {}, "b": {"after": "a", "control_of": "a"}}, "arms.b.control_of"),
        ({"a": {"stages": ["warmup"]}}, "arms.a.stages"),
    ],
)
def test_arm_errors_are_one_line_before_anything_runs(tmp_path, arms, message):
    # through `dasd run`'s own entry point, which makes the workdir once the plan holds: nothing may exist after
    spec = _spec(tmp_path, arms=arms, claims=[], threads=None)
    with pytest.raises(ConfigError, match=message) as error:
        try:
            config = pipeline_run.PipelineConfig.model_validate(spec)
        except ValidationError as exc:  # what `dasd run PIPELINE.yaml` reports (load_config)
            raise ConfigError(format_validation_error(exc, "pipeline.yaml", pipeline_run.PipelineConfig)) from None
        pipeline_run.run(config)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "run").exists()


def test_a_claim_about_an_unknown_arm_is_an_error(tmp_path):
    spec = _spec(tmp_path, claims=[{"name": "x", "better": "recipe", "worse": "nope"}])
    with pytest.raises(ConfigError, match="'nope', which is neither an arm nor an evaluated model"):
        pipeline_run.plan(pipeline_run.PipelineConfig.model_validate(spec))


def test_the_sweeps_plan_every_arm_for_every_seed_on_shared_upstream_steps(tmp_path):
    steps = pipeline_run.plan(pipeline_run.PipelineConfig.model_validate(_spec(tmp_path)))
    names = [step.name for step in steps]
    assert names[:3] == ["sample", "score", "filter"] and names.count("sample") == 1
    arms = resolve("sweeps")[0]
    assert len(arms) == 14
    for arm, spec in arms.items():
        for seed in (1, 2, 3):
            assert f"{arm}.s{seed}.train" in names and f"{arm}.s{seed}.eval" in names
        # a random selection is drawn anew for each training seed (issue 37); the other rules select once
        random = spec.get("select", {}).get("strategy") == "random"
        assert (f"{arm}.select" in names) == ("after" not in spec and not random)
        assert all((f"{arm}.s{seed}.select" in names) == random for seed in (1, 2, 3))
    by_name = {step.name: step for step in steps}
    # equal budgets: the single-temperature arms keep 2 per question at their temperature
    assert by_name["t06_only.select"].config["temperatures"] == [0.6] and by_name["t06_only.select"].config["k"] == 2
    assert by_name["das_ratio_2.select"].config["beta"] == pytest.approx(0.693147)
    # the control continues from the same stage-2 weights, sized by the mixed arm's data of the same seed
    control = by_name["off_policy.s2.mix"].config
    assert control["equal_size_as"].endswith("arms/mixed/seed2/mix/mixed.jsonl")
    assert control["student"]["model"] == by_name["mixed.s2.mix"].config["student"]["model"]
    assert control["student"]["model"].endswith("arms/recipe/seed2/high_temp/final")
    assert by_name["cut_20.s1.mix"].config["cut_low"] == 0.1 and by_name["cut_20.s1.mix"].config["cut_high"] == 0.3
    train = by_name["mixed.s3.train"].config
    assert train["seed"] == 3 and train["stages"][0]["init"].endswith("arms/recipe/seed3/high_temp/final")


def test_the_learning_rate_sweep_runs_on_the_dev_split_only(tmp_path):
    """`make tune` chooses the demo's rates: evaluated on dev questions, never on the evaluation split."""
    config = load_config(demo.DemoConfig, None, [f"workdir={tmp_path / 'run'}", "ablation=dev"])
    spec = demo.pipeline(config, tmp_path / "world")
    assert spec["eval_benchmarks"] == [str(tmp_path / "world" / "dev_questions.jsonl")]
    assert spec["seeds"] == [1] and spec["eval"]["n"] == 4
    # the gate's claims: the recipe at each rate against the student it started from
    assert [(claim["better"], claim["worse"]) for claim in spec["claims"]] == [
        (f"lr_{rate:g}", "student") for rate in demo.DEV_LEARNING_RATES
    ]
    steps = {step.name: step for step in pipeline_run.plan(pipeline_run.PipelineConfig.model_validate(spec))}
    for rate in demo.DEV_LEARNING_RATES:
        train = steps[f"lr_{rate:g}.s1.train"].config
        assert {stage["name"] for stage in train["stages"]} == {"low_temp", "high_temp"}
        assert train["learning_rate"] == rate and train["min_learning_rate"] == pytest.approx(rate / 10)
        mixed = steps[f"mixed_lr_{rate:g}.s1.train"].config
        assert mixed["learning_rate"] == rate
        assert mixed["stages"][0]["init"].endswith(f"arms/lr_{rate:g}/seed1/high_temp/final")
    evaluated = [step.config["benchmarks"] for name, step in steps.items() if name.endswith("eval")]
    assert evaluated and all(benchmarks == spec["eval_benchmarks"] for benchmarks in evaluated)


def test_the_research_arms_differ_from_their_control_in_the_loss_weights_only(tmp_path):
    """`make research` (issue 29): each weighting arm against the recipe at k=2 on equal data, on the evaluation
    split, with the preregistered claims; the arms' select steps are the same step."""
    config = load_config(demo.DemoConfig, None, [f"workdir={tmp_path / 'run'}", "ablation=research"])
    spec = demo.pipeline(config, tmp_path / "world")
    assert spec["eval_benchmarks"] == [str(tmp_path / "world" / "eval_questions.jsonl")] and spec["seeds"] == [1, 2, 3]
    assert spec["eval_models"] == ["student"]
    assert [(claim["better"], claim["worse"]) for claim in spec["claims"]] == [
        ("seq_logprob", "equal_k2"),
        ("sentence_classes", "equal_k2"),
    ]
    steps = {step.name: step for step in pipeline_run.plan(pipeline_run.PipelineConfig.model_validate(spec))}
    selects = {arm: steps[f"{arm}.select"].config for arm in ("equal_k2", "seq_logprob", "sentence_classes")}
    assert all(select["k"] == 2 for select in selects.values())
    assert (
        len({json.dumps({k: v for k, v in c.items() if k != "output"}, sort_keys=True) for c in selects.values()}) == 1
    )
    builds = {arm: steps[f"{arm}.build_sft"].config for arm in selects}
    assert builds["seq_logprob"]["weight_by"] == "teacher_seq_logprob"
    preregistered = {"teacher": 2.0, "shared": 1.0, "student": 0.5}
    assert builds["sentence_classes"]["sentence_weights"] == preregistered
    assert "weight_by" not in builds["equal_k2"] and "sentence_weights" not in builds["equal_k2"]
    trains = {arm: steps[f"{arm}.s2.train"].config for arm in selects}
    unrelated = {"output_dir", "stages"}
    assert (
        len({json.dumps({k: v for k, v in c.items() if k not in unrelated}, sort_keys=True) for c in trains.values()})
        == 1
    )


def test_the_transfer_arm_selects_from_another_students_scores_and_trains_this_one(tmp_path):
    """`make research-transfer` (issue 29 item 2): the filtered candidates scored again by SmolLM2, selected from
    those scores (compared with the world student's), and the world's student trained on the selection."""
    config = load_config(demo.DemoConfig, None, [f"workdir={tmp_path / 'run'}", "ablation=transfer"])
    spec = demo.pipeline(config, tmp_path / "world")
    assert [(claim["better"], claim["worse"]) for claim in spec["claims"]] == [
        ("recipe", "das_smollm2"),
        ("das_smollm2", "rs"),
    ]
    steps = {step.name: step for step in pipeline_run.plan(pipeline_run.PipelineConfig.model_validate(spec))}
    rescore = steps["das_smollm2.score"]
    filtered = str(tmp_path / "run" / "filter" / "filtered.parquet")
    assert rescore.config["input"] == filtered and rescore.config["student"]["model"] == "smollm2"
    assert rescore.config["student"]["tokenizer"] is None and rescore.depends == ["filter"]
    chosen = steps["das_smollm2.select"]
    assert chosen.config["input"] == rescore.config["output"] and chosen.config["compare_with"] == filtered
    assert chosen.depends == ["das_smollm2.score"]
    assert "recipe.score" not in steps and steps["recipe.select"].config["input"] == filtered
    assert "compare_with" not in steps["recipe.select"].config
    trained = steps["das_smollm2.s1.train"].config
    assert trained["student"]["model"] == str(tmp_path / "world" / "student")


def test_the_schedule_control_trains_two_stages_at_one_temperature(tmp_path):
    """`make research-schedule`: 0.6 → 1.0 against two stages at 0.6 (or 1.0) on the same records as the one-stage
    arm — best-ranked first, second-best in stage 2."""
    config = load_config(demo.DemoConfig, None, [f"workdir={tmp_path / 'run'}", "ablation=schedule"])
    spec = demo.pipeline(config, tmp_path / "world")
    assert set(spec["arms"]) == {"recipe", "t06_only", "t10_only", "t06_two_stage", "t10_two_stage"}
    steps = {step.name: step for step in pipeline_run.plan(pipeline_run.PipelineConfig.model_validate(spec))}
    for temperature, two, one in ((0.6, "t06_two_stage", "t06_only"), (1.0, "t10_two_stage", "t10_only")):
        assert (
            steps[f"{two}.select"].config["temperatures"]
            == [temperature]
            == steps[f"{one}.select"].config["temperatures"]
        )
        assert steps[f"{two}.select"].config["k"] == steps[f"{one}.select"].config["k"] == 2
        assert steps[f"{two}.build_sft"].config["stage_by"] == "rank"
        stages = [stage["name"] for stage in steps[f"{two}.s1.train"].config["stages"]]
        assert stages == ["low_temp", "high_temp"]
        assert [stage["name"] for stage in steps[f"{one}.s1.train"].config["stages"]] == [
            "low_temp" if temperature == 0.6 else "high_temp"
        ]
    assert {(c["better"], c["worse"]) for c in spec["claims"]} == {
        ("recipe", "t06_two_stage"),
        ("recipe", "t10_two_stage"),
        ("t06_two_stage", "t06_only"),
        ("t10_two_stage", "t10_only"),
    }


def test_the_boosted_filter_scores_with_stage_1_and_trains_only_stage_2_from_it(tmp_path):
    """`make research-boosted` (issue 29 items 3 and 4): per seed, the filtered candidates scored with the recipe's
    stage-1 weights, selected at T = 1.0 with the boosted filter, and stage 2 trained from those weights with the
    recipe's settings; the suggested pair selects at 0.3 and 1.0 from the same (three-temperature) samples."""
    config = load_config(demo.DemoConfig, None, [f"workdir={tmp_path / 'run'}", "ablation=boosted"])
    spec = demo.pipeline(config, tmp_path / "world")
    assert [entry["temperature"] for entry in spec["sample"]["schedule"]] == [0.3, 0.6, 1.0]
    assert [(claim["better"], claim["worse"]) for claim in spec["claims"]] == [
        ("boosted_filter", "recipe"),
        ("suggested_pair", "recipe"),
    ]
    steps = {step.name: step for step in pipeline_run.plan(pipeline_run.PipelineConfig.model_validate(spec))}
    filtered = str(tmp_path / "run" / "filter" / "filtered.parquet")
    assert steps["recipe.select"].config["temperatures"] == [0.6, 1.0]
    assert steps["suggested_pair.select"].config["temperatures"] == [0.3, 1.0]
    for seed in (1, 2, 3):
        stage1 = str(tmp_path / "run" / "arms" / "recipe" / f"seed{seed}" / "low_temp" / "final")
        score = steps[f"boosted_filter.s{seed}.score"]
        assert score.config["input"] == filtered and score.config["student"]["model"] == stage1
        assert score.depends == ["filter", f"recipe.s{seed}.train"]
        chosen = steps[f"boosted_filter.s{seed}.select"].config
        assert chosen["boosted_scores"] == score.config["output"] and chosen["input"] == filtered
        assert chosen["temperatures"] == [1.0] and chosen["max_boosted_share"] == 0.1
        recipe_select = {k: v for k, v in steps["recipe.select"].config.items() if k not in ("output", "temperatures")}
        assert {k: v for k, v in chosen.items() if k in recipe_select} == recipe_select
        built = steps[f"boosted_filter.s{seed}.build_sft"]
        assert built.config["input"] == chosen["output"]
        train = steps[f"boosted_filter.s{seed}.train"].config
        assert [(stage["name"], stage["init"]) for stage in train["stages"]] == [("high_temp", stage1)]
        assert train["stages"][0]["data"].startswith(str(Path(built.config["output"]).parent))
        recipe_train = steps[f"recipe.s{seed}.train"].config
        unrelated = {"output_dir", "stages"}
        assert {k: v for k, v in train.items() if k not in unrelated} == {
            k: v for k, v in recipe_train.items() if k not in unrelated
        }
        assert steps[f"boosted_filter.s{seed}.eval"].config["backend"]["model"] == str(
            tmp_path / "run" / "arms" / "boosted_filter" / f"seed{seed}" / "high_temp" / "final"
        )


def test_the_mixing_arms_share_the_boosted_runs_recipe_and_differ_in_one_mix_setting(tmp_path):
    """`make research-mixing` and `make research-cuts` run in `make research-boosted`'s workdir: the shared steps
    must be the same steps."""

    def planned(ablation: str) -> dict:
        config = load_config(demo.DemoConfig, None, [f"workdir={tmp_path / 'run'}", f"ablation={ablation}"])
        plan = pipeline_run.plan(pipeline_run.PipelineConfig.model_validate(demo.pipeline(config, tmp_path / "w")))
        return {step.name: step for step in plan}

    boosted, mixing, cuts = planned("boosted"), planned("mixing"), planned("cuts")
    shared = [name for name in mixing if name in boosted]
    assert {"sample", "score", "filter", "recipe.select", "recipe.s3.train", "recipe.s3.eval"} <= set(shared)
    assert all(mixing[name].config == boosted[name].config for name in shared)
    # the cut sweep (research-cuts) reuses mixing's recipe and mixed arms
    shared_with_cuts = [name for name in cuts if name in mixing]
    assert {"recipe.s1.train", "mixed.s1.mix", "mixed.s3.train", "mixed.s3.eval"} <= set(shared_with_cuts)
    assert all(cuts[name].config == mixing[name].config for name in shared_with_cuts)
    assert {name for name in cuts if name.endswith(".s1.mix")} == {
        f"{arm}.s1.mix" for arm in ("mixed", "cut_20", "cut_40", "cut_60", "cut_80")
    }
    assert (cuts["cut_20.s1.mix"].config["cut_low"], cuts["cut_20.s1.mix"].config["cut_high"]) == (0.1, 0.3)
    mixes = {
        arm: {k: v for k, v in mixing[f"{arm}.s2.mix"].config.items() if k != "output"}
        for arm in ("mixed", "mixed_early_cut", "mixed_two_continuations")
    }
    assert mixes["mixed_early_cut"].pop("cut_shape") == [1.0, 3.0]
    assert mixes["mixed_two_continuations"].pop("continuations_per_cut") == 2
    assert mixes["mixed"] == mixes["mixed_early_cut"] == mixes["mixed_two_continuations"]
    assert mixes["mixed"]["seed"] == 2 and "cut_shape" not in mixes["mixed"]


@pytest.fixture(scope="module")
def arms_run(tmp_path_factory):
    """The reduced ablation (4 arms × 2 seeds), killed (-9) inside `t06_only.s2.train`, then rerun."""
    work = tmp_path_factory.mktemp("arms") / "run"
    spec = yaml.safe_load(
        yaml.safe_dump(demo.pipeline(load_config(demo.DemoConfig, None, [f"workdir={work}", *REDUCED]), demo_world()))
    )
    spec["arms"] = {arm: spec["arms"].get(arm, STAGE2_AGAIN) for arm in ARMS}
    # 6 records per stage: batches of 2 give each stage 3 optimizer steps — one batch of 8 would be a single step,
    # taken at the warm-up's learning rate 0, and nothing would train
    spec["train"]["global_batch_size"] = 2
    spec["claims"] = [claim for claim in resolve("arms")[1] if {claim["better"], claim["worse"]} <= {*ARMS, "student"}]
    spec_file = work.parent / "pipeline.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    command = [sys.executable, "-m", "dasd", "run", str(spec_file)]
    kill_when(command, lambda: _marker(work, "t06_only.s2.train").get("status") == "running", timeout=900)
    killed = _marker(work, "t06_only.s2.eval")
    finished = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    assert finished.returncode == 0, finished.stderr[-4000:]
    return work, spec_file, killed, finished.stdout


def demo_world() -> Path:
    from dasd.models.demo_world import world_dir

    return world_dir()


@pytest.mark.timeout(1800)  # the fixture's reduced run: about a minute alone on 2 cores
@pytest.mark.slow  # shares the module's kill -9 and resume run (3-4 min): make test-slow
def test_a_killed_arm_resumes_and_the_claims_are_paired_over_seeds(arms_run):
    work, _, killed, stdout = arms_run
    assert killed == {}  # killed before its evaluation started
    status = _status(work)
    before_kill = ["sample", "score", "filter", "recipe.s1.train", "recipe.s2.train", "t06_only.s1.train"]
    assert all(status[step] == "cached" for step in before_kill)
    assert status["t06_only.s2.train"] == "ran" and status["t06_only.s2.eval"] == "ran"
    # one trained model per arm and seed, each evaluated on the same questions with the same sample ids
    ids = None
    for arm in ("recipe", "t06_only"):
        for seed in (1, 2):
            assert (work / "arms" / arm / f"seed{seed}" / "eval" / "summary.json").exists()
            results = read_jsonl(work / "arms" / arm / f"seed{seed}" / "eval" / "eval_questions" / "results.jsonl")
            assert ids is None or {r["id"] for r in results} == ids
            ids = {r["id"] for r in results}
    summary = json.loads((work / "run.summary.json").read_text())
    assert summary["threads"] == 2 and summary["seeds"] == [1, 2]
    assert set(summary["arms"]["recipe"]["benchmarks"]["eval_questions"]["per_seed"]) == {"1", "2"}
    # the distillation claim, recomputed here from the result files: per question, mean over seeds and samples
    claim = next(row for row in summary["claims"] if row["worse"] == "student")
    correct: dict[str, list[float]] = {}
    for folder, sign in [(work / "eval" / "student", -1.0)] + [
        (work / "arms" / "recipe" / f"seed{seed}" / "eval", 0.5) for seed in (1, 2)
    ]:
        for question, rows in _by_question(folder / "eval_questions" / "results.jsonl").items():
            correct.setdefault(question, []).append(sign * sum(rows) / len(rows))
    differences = [sum(values) for values in correct.values()]
    assert claim["questions"] == 6 and claim["difference"] == pytest.approx(sum(differences) / len(differences))
    assert claim["verdict"] in ("agrees", "opposite", "not distinguishable")
    assert claim["name"] in stdout and "95% interval" in stdout and "t(0.975, df)" in stdout
    assert claim["degrees_of_freedom"] is not None and claim["t"] > 1.96


@pytest.mark.slow  # shares the module's kill -9 and resume run (3-4 min): make test-slow
def test_stage_2_trained_again_from_stage_1_with_nothing_left_out_is_the_recipes_own_stage_2(arms_run):
    """The boosted filter's control is the recipe's stage 2 (issue 29 item 3): with a threshold that leaves nothing
    out, the separate steps — scoring with the stage-1 weights, selecting at T = 1.0, building, training one stage
    from those weights — must give the recipe's stage-2 records and, bit for bit, its weights."""
    import torch
    from safetensors.torch import load_file

    from dasd.naming import sft_stage_file

    work = arms_run[0]
    recipe_stage2 = sft_stage_file(work / "arms" / "recipe" / "sft" / "sft.jsonl", "high_temp")
    for seed in (1, 2):
        again = work / "arms" / "stage2_again" / f"seed{seed}"
        assert sft_stage_file(again / "sft" / "sft.jsonl", "high_temp").read_bytes() == recipe_stage2.read_bytes()
        summary = json.loads((again / "select.summary.json").read_text())
        assert summary["boosted"]["excluded"] == 0 and summary["boosted"]["max_share"] == 1.0
        assert summary["boosted"]["unscored"] == 0  # every candidate was scored by the stage-1 weights
        mine = load_file(str(again / "high_temp" / "final" / "model.safetensors"))
        theirs = load_file(str(work / "arms" / "recipe" / f"seed{seed}" / "high_temp" / "final" / "model.safetensors"))
        assert mine.keys() == theirs.keys() and all(torch.equal(mine[name], theirs[name]) for name in mine)
        first_stage = load_file(
            str(work / "arms" / "recipe" / f"seed{seed}" / "low_temp" / "final" / "model.safetensors")
        )
        assert not all(torch.equal(mine[name], first_stage[name]) for name in mine)  # stage 2 did train


def _by_question(path: Path) -> dict[str, list[bool]]:
    grouped: dict[str, list[bool]] = {}
    for record in read_jsonl(path):
        grouped.setdefault(record["question_id"], []).append(bool(record["correct"]))
    return grouped


@pytest.mark.slow  # shares the module's kill -9 and resume run (3-4 min): make test-slow
def test_changing_one_arm_reruns_only_that_arm(arms_run):
    work, spec_file, _, _ = arms_run
    spec = yaml.safe_load(spec_file.read_text())
    spec["arms"]["t06_only"]["train"] = {"learning_rate": 2e-4}
    # the arm's trained models were made with another rate: the run stops, naming the first of them, until told
    with pytest.raises(DasdError, match=r"^t06_only\.s1\.train is stale: learning_rate: 5e-05 -> 0\.0002"):
        pipeline_run.run(pipeline_run.PipelineConfig.model_validate(spec))
    summary = pipeline_run.run(pipeline_run.PipelineConfig.model_validate({**spec, "rerun": "stale"}))
    ran = {step["step"] for step in summary["steps"] if step["status"] == "ran"}
    moved = {step["step"] for step in summary["steps"] if step.get("moved_aside")}
    assert ran == moved == {"t06_only.s1.train", "t06_only.s1.eval", "t06_only.s2.train", "t06_only.s2.eval"}
    config = yaml.safe_load((work / "arms" / "t06_only" / "seed1" / "train.config.yaml").read_text())
    assert config["learning_rate"] == 2e-4 and config["seed"] == 1


@pytest.mark.slow  # shares the module's kill -9 and resume run (3-4 min): make test-slow
def test_the_report_renders_the_claims_and_the_arms(arms_run, tmp_path):
    from dasd.stages import report

    work, _, _, _ = arms_run
    output = tmp_path / "report.html"
    report.run(load_config(report.ReportConfig, None, [f"run_dir={work}", f"output={output}"]))
    page = output.read_text()
    summary = json.loads((work / "run.summary.json").read_text())
    assert "The report&#x27;s claims, checked here" in page or "The report's claims, checked here" in page
    for row in summary["claims"]:
        assert row["name"] in page and row["verdict"] in page
    assert "Ablation arms" in page and "recipe" in page


def test_arms_listed_before_the_arm_they_continue_are_planned_after_it(tmp_path):
    arms = resolve("arms")[0]
    reversed_arms = dict(reversed(list(arms.items())))  # off_policy, mixed, …, recipe
    steps = pipeline_run.plan(pipeline_run.PipelineConfig.model_validate(_spec(tmp_path, arms=reversed_arms)))
    order = [step.name for step in steps]
    for seed in (1, 2, 3):
        assert order.index(f"recipe.s{seed}.train") < order.index(f"mixed.s{seed}.mix")
        assert order.index(f"mixed.s{seed}.mix") < order.index(f"off_policy.s{seed}.mix")

    # and the fingerprints chain: a change to the recipe arm changes what continues from it
    def fingerprints(spec) -> dict[str, str]:
        config = pipeline_run.PipelineConfig.model_validate(spec)
        jobs = pipeline_run.step_jobs(config, pipeline_run.plan(config), tmp_path / ".dasd")
        return {name: job.fingerprint for name, job in jobs.items()}

    before = fingerprints(_spec(tmp_path, arms=reversed_arms))
    changed = {**reversed_arms, "recipe": {"train": {"learning_rate": 1e-4}}}
    after = fingerprints(_spec(tmp_path, arms=changed))
    differ = {name for name in before if before[name] != after[name]}
    assert {"recipe.s1.train", "mixed.s1.mix", "mixed.s1.eval", "off_policy.s3.train"} <= differ
    assert not any(name.startswith(("t06_only", "t10_only", "rs.")) for name in differ)


def test_the_shipped_real_ablation_config_plans_every_arm_and_keeps_the_teacher_on_its_servers():
    """configs/gpt-oss-qwen3-4b-ablation-run.yaml: gpt-oss-120b → Qwen3-4B, AIME24/25 × 64 samples, 3 seeds."""
    config = load_config(
        pipeline_run.PipelineConfig, str(Path(__file__).parents[1] / "configs" / "gpt-oss-qwen3-4b-ablation-run.yaml")
    )
    steps = {step.name: step.config for step in pipeline_run.plan(config)}
    assert config.seeds == [1, 2, 3] and config.eval_benchmarks == ["aime24", "aime25"]
    for arm in ("recipe", "t06_only", "t10_only", "rs", "mixed", "off_policy"):
        for seed in (1, 2, 3):
            evaluation = steps[f"{arm}.s{seed}.eval"]
            assert evaluation["n"] == 64 and evaluation["backend"]["name"] == "vllm"
    teacher = steps["eval_teacher"]["backend"]
    assert teacher["name"] == "openai" and teacher["base_urls"]  # eval.backend is for the student side only
    assert {claim.better for claim in config.claims} >= {"recipe", "mixed"}


def _das_world(tmp_path: Path) -> Path:
    world = tmp_path / "world"
    world.mkdir(exist_ok=True)
    (world / "world.json").write_text(json.dumps({"version": "demo-world-v7", "skill_sentences": ["^Careful: "]}))
    return world


def test_the_das_study_bounds_das_with_its_controls_and_redraws_random_per_seed(tmp_path):
    """`make ablation-das` (issue 37): on world v7 (or its twin) every control selects from the same filtered
    candidates with the same budget; the oracle ranks by the world's own skill labels (world.json); random and
    self-distillation draw anew for each training seed; self-distillation samples the student itself."""
    config = load_config(
        demo.DemoConfig, None, [f"workdir={tmp_path / 'run'}", "world=v7", "ablation=das", "seeds=[1, 2]"]
    )
    spec = demo.pipeline(config, _das_world(tmp_path))
    assert set(spec["arms"]) == {
        "recipe",
        "rs",
        "oracle",
        "anti_das",
        "longest",
        "ratio",
        "self_distill",
        "mixed",
        "mixed_on_policy",
    }
    assert spec["arms"]["oracle"]["select"] == {"strategy": "oracle", "oracle_patterns": ["^Careful: "]}
    assert spec["eval_models"] == ["student", "teacher"] and spec["eval_benchmarks"][0].endswith("eval_questions.jsonl")
    assert {(c["better"], c["worse"]) for c in spec["claims"]} >= {("recipe", "rs"), ("oracle", "rs")}
    steps = {step.name: step for step in pipeline_run.plan(pipeline_run.PipelineConfig.model_validate(spec))}
    strategies = {
        arm: {
            steps[name].config.get("strategy", "count")
            for name in steps
            if name.startswith(f"{arm}.") and "select" in name
        }
        for arm in ("recipe", "rs", "oracle", "anti_das", "longest", "ratio")
    }
    assert strategies == {
        "recipe": {"count"},
        "rs": {"random"},
        "oracle": {"oracle"},
        "anti_das": {"anti_das"},
        "longest": {"longest"},
        "ratio": {"ratio"},
    }
    random_seeds = sorted(steps[name].config["seed"] for name in steps if name.startswith("rs.") and "select" in name)
    assert random_seeds == [1, 2]  # one random draw per training seed, not one shared by all seeds
    assert len([name for name in steps if name.startswith("recipe.") and name.endswith("select")]) == 1
    sampled = [step for name, step in steps.items() if name.startswith("self_distill.") and step.stage == "sample"]
    assert sampled and all(step.config["backend"]["model"] == spec["student"]["model"] for step in sampled)
    assert any(step.config.get("on_policy") for name, step in steps.items() if name.startswith("mixed_on_policy."))


def test_the_das_study_needs_a_world_with_its_premise_and_can_train_a_subset_on_dev(tmp_path):
    world = _das_world(tmp_path)
    config = load_config(demo.DemoConfig, None, [f"workdir={tmp_path / 'run'}", "ablation=das"])
    with pytest.raises(ConfigError, match="needs world=v7 or world=v7-twin"):
        demo.pipeline(config, world)
    config = load_config(
        demo.DemoConfig,
        None,
        [
            f"workdir={tmp_path / 'run'}",
            "world=v7",
            "ablation=das",
            "eval_split=dev",
            "seeds=[1]",
            "only_arms=[rs, oracle]",
        ],
    )
    spec = demo.pipeline(config, world)
    assert set(spec["arms"]) == {"rs", "oracle"} and spec["eval_benchmarks"][0].endswith("dev_questions.jsonl")
    assert [(c["better"], c["worse"]) for c in spec["claims"]] == [("oracle", "rs")]
    config = load_config(
        demo.DemoConfig, None, [f"workdir={tmp_path / 'run'}", "world=v7", "ablation=das", "only_arms=[x]"]
    )
    with pytest.raises(ConfigError, match="only_arms: x not an arm"):
        demo.pipeline(config, world)


def test_the_fresh_schedule_control_trains_every_stage_on_its_own_fresh_draw(tmp_path):
    """`make ablation-das-schedule` (issue 37): 16 sampled per temperature; the recipe selects among the first 8 (as an
    8-sample run would), the two-stage arms at one temperature take the best of draw 0 into stage 1 and the best of
    draw 1 into stage 2, and the one-stage arms train the same records in one stage."""
    config = load_config(demo.DemoConfig, None, [f"workdir={tmp_path / 'run'}", "world=v7", "ablation=fresh-schedule"])
    spec = demo.pipeline(config, _das_world(tmp_path))
    assert [entry["n"] for entry in spec["sample"]["schedule"]] == [16, 16]
    steps = {step.name: step for step in pipeline_run.plan(pipeline_run.PipelineConfig.model_validate(spec))}
    assert (steps["recipe.select"].config["draw_size"], steps["recipe.select"].config["draws"]) == (8, [0])
    for short, temperature, stage in (("t06", 0.6, "low_temp"), ("t10", 1.0, "high_temp")):
        two, one = steps[f"{short}_two_draws.select"].config, steps[f"{short}_one_stage.select"].config
        assert two["temperatures"] == one["temperatures"] == [temperature] and two["draws"] == one["draws"] == [0, 1]
        assert steps[f"{short}_two_draws.build_sft"].config["stage_by"] == "draw"
        assert [s["name"] for s in steps[f"{short}_two_draws.s1.train"].config["stages"]] == ["low_temp", "high_temp"]
        assert [s["name"] for s in steps[f"{short}_one_stage.s1.train"].config["stages"]] == [stage]
    config = load_config(
        demo.DemoConfig, None, [f"workdir={tmp_path / 'run'}", "ablation=fresh-schedule", "samples_per_temperature=8"]
    )
    with pytest.raises(ConfigError, match="needs samples_per_temperature >= 16"):
        demo.pipeline(config, _das_world(tmp_path))
