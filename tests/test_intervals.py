"""t intervals with Welch–Satterthwaite degrees of freedom (issue 37 item 1): the quantile itself, the paired
difference of one model and of several seeds, the claims of `dasd run`, `dasd eval --compare`, the report's claims
section, and the interaction of one claim across two independent runs (`dasd report RUN_X --interaction RUN_Y`)."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from dasd.cli import main
from dasd.naming import RUN_SUMMARY, eval_dir, seed_dir
from dasd.reporting.ablation import arm_results, claim_results, interaction, interaction_rows, with_t_interval
from dasd.reporting.metrics import paired_difference, satterthwaite_df, t_quantile, t_upper_tail

from .conftest import write_jsonl


@pytest.mark.parametrize(
    ("df", "expected"), [(1, 12.7062), (2, 4.3027), (3, 3.1824), (10, 2.2281), (30, 2.0423), (120, 1.9799)]
)
def test_t_quantile_matches_the_tables(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=1e-4)


def test_t_quantile_matches_closed_forms_symmetry_and_the_normal_limit():
    for p in (0.55, 0.8, 0.95, 0.975, 0.995, 0.9999):
        assert t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-10)
        assert t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-10)
        assert t_quantile(1 - p, 3.5) == pytest.approx(-t_quantile(p, 3.5), rel=1e-12)
        assert t_upper_tail(t_quantile(p, 7.3), 7.3) == pytest.approx(1 - p, rel=1e-9)  # non-integer df
    assert t_quantile(0.975, math.inf) == pytest.approx(1.959964, abs=1e-6)
    assert t_quantile(0.975, 1e9) == pytest.approx(1.959964, abs=1e-6)
    assert t_quantile(0.975, 1e6) == pytest.approx(1.959966, abs=1e-6)  # by the fraction, not the normal
    for bad in ((0.0, 3), (1.0, 3), (0.975, 0), (0.975, -1)):
        with pytest.raises(ValueError):
            t_quantile(*bad)


def test_satterthwaite_df():
    assert satterthwaite_df([(2.0, 7)]) == 7.0
    assert satterthwaite_df([(1.0, 5), (1.0, 5)]) == pytest.approx(10.0)
    # a small seed term with 2 df pulls 399 question df down a lot
    assert satterthwaite_df([(1.0, 399), (1.0, 2)]) == pytest.approx(4 / (1 / 399 + 1 / 2))
    assert satterthwaite_df([(0.0, 399), (1.0, 2)]) == 2.0
    assert satterthwaite_df([(0.0, 399), (0.0, 2)]) == 2.0  # nothing varies: the interval is a point anyway
    with pytest.raises(ValueError):
        satterthwaite_df([])


def _graded(values: list[list[bool]]) -> dict[str, dict[str, bool]]:
    return {f"q{q}": {f"q{q}:{k}": value for k, value in enumerate(row)} for q, row in enumerate(values)}


def test_one_model_against_one_has_questions_minus_one_df():
    a = _graded([[True, False], [False, False], [True, True], [False, False]])
    b = _graded([[True, True], [True, False], [True, True], [False, True]])
    result = paired_difference(a, b)  # differences .5, .5, 0, .5: mean .375, s.e. .125
    assert result["degrees_of_freedom"] == 3.0 and result["t"] == pytest.approx(3.1824, abs=1e-4)
    assert result["interval"] == [pytest.approx(0.375 - 3.18245 * 0.125, abs=1e-4), pytest.approx(0.7728, abs=1e-4)]
    assert result["interval"][0] < 0  # ± 1.96 s.e. would have excluded 0


def test_several_seeds_take_satterthwaite_df_over_the_question_and_seed_terms():
    rng = random.Random(3)
    questions = 200
    worse = [_graded([[rng.random() < 0.5 for _ in range(2)] for _ in range(questions)]) for _ in range(3)]
    better = [
        _graded([[rng.random() < 0.5 + 0.04 * seed for _ in range(2)] for _ in range(questions)]) for seed in (1, 2, 3)
    ]
    result = paired_difference(worse, better)
    runs = result["per_run"]
    run_mean = sum(runs) / 3
    seed_term = sum((value - run_mean) ** 2 for value in runs) / 2 / 3
    df = satterthwaite_df([(result["question_standard_error"] ** 2, questions - 1), (seed_term, 2)])
    assert result["degrees_of_freedom"] == pytest.approx(df, abs=0.01) and 2 <= df <= questions - 1
    t = t_quantile(0.975, result["degrees_of_freedom"])
    assert result["interval"][1] == pytest.approx(result["difference"] + t * result["standard_error"], abs=2e-4)


# --- two synthetic `dasd run` workdirs: eval folders laid out as `dasd run` writes them ------------------------

CLAIMS = [
    {"name": "DAS beats random selection (RS)", "better": "das", "worse": "rs", "source": "Table 3"},
    {"name": "distillation moves the student up", "better": "das", "worse": "student", "source": ""},
]
SEEDS = [1, 2, 3]


def _write_eval(folder: Path, accuracy: list[float], rng: random.Random, samples: int = 4) -> None:
    results = [
        {"id": f"q{q}:1:{k}", "question_id": f"q{q}", "correct": rng.random() < p}
        for q, p in enumerate(accuracy)
        for k in range(samples)
    ]
    write_jsonl(folder / "bench" / "results.jsonl", results)
    (folder / "summary.json").write_text(json.dumps({"model": folder.name, "benchmarks": {}}))


def _workdir(root: Path, gain: float, seed: int) -> Path:
    """A run whose `das` arm is `gain` above `rs` on every question (plus sampling noise), three training seeds."""
    rng = random.Random(seed)
    base = [rng.uniform(0.2, 0.7) for _ in range(60)]
    for arm, shift in (("rs", 0.0), ("das", gain)):
        for training_seed in SEEDS:
            jitter = rng.uniform(-0.03, 0.03)
            _write_eval(seed_dir(root, arm, training_seed) / "eval", [p + shift + jitter for p in base], rng)
    _write_eval(eval_dir(root, "student"), [p - 0.2 for p in base], rng)
    seed_runs = {arm: {s: seed_dir(root, arm, s) / "eval" for s in SEEDS} for arm in ("das", "rs")}
    model_runs = {arm: {str(s): run for s, run in runs.items()} for arm, runs in seed_runs.items()}
    model_runs["student"] = {"-": eval_dir(root, "student")}
    arms = {arm: {"description": arm, "benchmarks": values} for arm, values in arm_results(seed_runs).items()}
    summary = {"workdir": str(root), "seconds": 1.0, "steps": [], "seeds": SEEDS, "arms": arms}
    summary["claims"] = claim_results(CLAIMS, model_runs)
    (root / RUN_SUMMARY).write_text(json.dumps(summary))
    return root


@pytest.fixture(scope="module")
def twin_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("twins")
    return _workdir(root / "x", 0.15, 1), _workdir(root / "y", 0.0, 2)


def _claims(run: Path) -> list[dict]:
    return json.loads((run / RUN_SUMMARY).read_text())["claims"]


def test_the_claims_carry_their_df_and_a_t_interval(twin_runs):
    for row in _claims(twin_runs[0]):
        assert row["per_run"] and len(row["per_run"]) == 3
        assert 2 <= row["degrees_of_freedom"] <= 59
        t = t_quantile(0.975, row["degrees_of_freedom"])
        assert row["interval"][0] == pytest.approx(row["difference"] - t * row["standard_error"], abs=2e-4)


def test_an_interaction_is_the_difference_of_two_independent_differences(twin_runs):
    x, y = (next(row for row in _claims(run) if row["worse"] == "rs") for run in twin_runs)
    (row,) = interaction_rows(_claims(twin_runs[0]), _claims(twin_runs[1]), "das>rs")
    assert row["name"] == CLAIMS[0]["name"] and row["benchmark"] == "bench"
    assert row["difference"] == pytest.approx(x["difference"] - y["difference"])
    assert row["standard_error"] == pytest.approx(math.hypot(x["standard_error"], y["standard_error"]))
    df = satterthwaite_df(
        [(x["standard_error"] ** 2, x["degrees_of_freedom"]), (y["standard_error"] ** 2, y["degrees_of_freedom"])]
    )
    assert row["degrees_of_freedom"] == pytest.approx(df, abs=0.01)
    t = t_quantile(0.975, df)
    assert row["interval"] == [
        pytest.approx(row["difference"] - t * row["standard_error"], abs=1e-4),
        pytest.approx(row["difference"] + t * row["standard_error"], abs=1e-4),
    ]
    assert row["verdict"] == "agrees"  # +0.15 in X, 0 in Y
    assert interaction(y, x)["verdict"] == "opposite"
    # without --claim: every claim both runs checked; by its name: that one
    assert len(interaction_rows(_claims(twin_runs[0]), _claims(twin_runs[1]))) == 2
    assert [r["worse"] for r in interaction_rows(_claims(twin_runs[0]), _claims(twin_runs[1]), CLAIMS[0]["name"])] == [
        "rs"
    ]


def test_dasd_report_prints_the_interaction(twin_runs, capsys):
    x, y = twin_runs
    assert main(["report", str(x), "--interaction", str(y), "--claim", "das>rs"]) == 0
    out = capsys.readouterr().out
    (line,) = [line for line in out.splitlines() if line.startswith("DAS beats random")]
    (row,) = interaction_rows(_claims(x), _claims(y), "das>rs")
    assert f"{100 * row['difference']:+.2f} ± {100 * row['standard_error']:.2f}" in line
    assert line.rstrip().endswith("agrees") and f"{row['degrees_of_freedom']:6.1f}" in line
    assert "Welch–Satterthwaite" in out and not (x / "report").exists()  # printed, no page written
    # the run folder as run_dir=… works too, and a claim neither run checked is a one-line error
    assert main(["report", f"run_dir={x}", "--interaction", str(y), "--claim", CLAIMS[1]["name"]]) == 0
    assert main(["report", str(x), "--interaction", str(y), "--claim", "rs>das"]) == 2
    error = capsys.readouterr().err.strip()
    assert "no claim 'rs>das'" in error and len(error.splitlines()) == 1
    assert main(["report", str(x), "--claim", "das>rs"]) == 2  # --claim alone is a mistake


def test_a_summary_written_before_t_intervals_is_recomputed_from_the_eval_folders(twin_runs, capsys):
    from dasd.stages.report import run_claims

    x, y = twin_runs
    summary = json.loads((x / RUN_SUMMARY).read_text())
    stripped = [
        {
            key: value
            for key, value in row.items()
            if key not in ("degrees_of_freedom", "t", "per_run", "question_standard_error")
        }
        for row in summary["claims"]
    ]
    (x / RUN_SUMMARY).write_text(json.dumps({**summary, "claims": stripped}))
    try:
        recomputed = run_claims(x)
        assert main(["report", str(x), "--interaction", str(y), "--claim", "das>rs"]) == 0
    finally:
        (x / RUN_SUMMARY).write_text(json.dumps(summary))
    for new, stored in zip(recomputed, summary["claims"]):
        assert new["degrees_of_freedom"] == stored["degrees_of_freedom"] and new["interval"] == stored["interval"]
    assert "DAS beats random" in capsys.readouterr().out


def test_an_old_row_with_its_seed_differences_gets_a_t_interval_and_maybe_another_verdict():
    # `make ablation`'s mixed > off_policy: −2.04 ± 0.94, "opposite" under ± 1.96 s.e.; 3 seeds, 400 questions
    row = {
        "name": "n",
        "better": "mixed",
        "worse": "off_policy",
        "benchmark": "bench",
        "questions": 400,
        "difference": -0.0204,
        "standard_error": 0.0094,
        "question_standard_error": 0.00566,
        "per_run": [-0.01, -0.035, -0.0163],
        "interval": [-0.0388, -0.0020],
        "verdict": "opposite",
    }
    new = with_t_interval(row)
    assert 3 < new["degrees_of_freedom"] < 7 and new["t"] > 2.4
    assert new["interval"][0] < 0 < new["interval"][1] and new["verdict"] == "not distinguishable"
    assert with_t_interval(new) == new  # a row with its df is kept as it is
    assert with_t_interval({**row, "benchmark": None}) == {**row, "benchmark": None}


def test_the_report_page_prints_t_intervals_with_their_df(twin_runs, tmp_path):
    from dasd.config import load_config
    from dasd.stages import report

    output = tmp_path / "page" / "index.html"
    report.run(load_config(report.ReportConfig, None, [f"run_dir={twin_runs[0]}", f"output={output}"]))
    page = output.read_text()
    assert "95% t interval" in page and "Welch–Satterthwaite" in page and "<th>df</th>" in page
    for row in _claims(twin_runs[0]):
        assert f"{row['degrees_of_freedom']:.1f}" in page


def test_eval_compare_prints_the_t_interval_and_its_df(tmp_path, capsys):
    """The hand-computed case of test_eval: differences 0, .5, .5, .5 → +37.5 ± 12.5 over 4 questions, which
    exceeds 2 s.e. but not t(0.975, 3) = 3.18 s.e."""
    outcomes = {"a": [[1, 1], [0, 0], [1, 0], [0, 0]], "b": [[1, 1], [1, 0], [1, 1], [0, 1]]}
    for run, per_question in outcomes.items():
        results = [
            {"id": f"q{q}:t1:{k}", "question_id": f"q{q}", "correct": bool(c)}
            for q, samples in enumerate(per_question)
            for k, c in enumerate(samples)
        ]
        write_jsonl(tmp_path / run / "aime24" / "results.jsonl", results)
        (tmp_path / run / "summary.json").write_text(
            json.dumps({"model": run, "benchmarks": {"aime24": {"avg_at_k": 0.5, "standard_error": 0.2}}})
        )
    from dasd.stages import eval as eval_stage

    (row,) = eval_stage.compare_runs(tmp_path / "a", tmp_path / "b")[0]
    assert row["degrees_of_freedom"] == 3.0 and row["verdict"] == "not distinguishable"
    assert row["interval"] == [pytest.approx(-0.0228, abs=1e-4), pytest.approx(0.7728, abs=1e-4)]
    assert main(["eval", "--compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "[-2.28, +77.28] (df 3) not distinguishable" in out and "t(0.975, df)" in out
