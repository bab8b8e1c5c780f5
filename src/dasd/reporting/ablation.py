"""Ablation results: each arm's accuracy over its training seeds, and each claim with paired statistics.

    from dasd.reporting.ablation import arm_results, claim_results
    arms = arm_results(seed_runs)                     # {arm: {benchmark: {mean, per_seed, ...}}}
    claims = claim_results(claims, model_runs)        # one row per claim × benchmark, with a verdict
    rows = interaction_rows(claims_x, claims_y)       # (better − worse in X) − (better − worse in Y)

A model's results are an eval folder (`dasd eval`'s output_dir: `<benchmark>/results.jsonl`). A claim
compares two sides (an arm's seeds, or one evaluated model such as the student) on the questions and
sample ids both answered (`dasd.reporting.metrics.paired_difference`): difference ± standard error, a 95% t
interval (df: questions − 1, or Welch–Satterthwaite when training seeds enter), and a verdict against the
report's direction (`dasd.reporting.metrics.verdict`). `dasd eval --compare` reads results with the same
`graded_samples`.

An interaction compares one claim across two independent runs — e.g. (DAS − RS on a world) − (DAS − RS on its
twin world): the difference of the two differences, s.e. = sqrt(s.e.x² + s.e.y²), Welch–Satterthwaite df from the
two sides' own df, a t interval and a verdict (`interaction`; `dasd report RUN_X --interaction RUN_Y`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..data.io import iter_records
from ..naming import EVAL_SUMMARY
from .metrics import avg_at_k, paired_degrees_of_freedom, paired_difference, satterthwaite_df, t_interval, verdict


def graded_samples(run: Path, benchmark: str) -> dict[str, dict[str, bool]] | None:
    """`{question: {sample id: correct}}` of one benchmark of an eval run, or None without results."""
    path = run / benchmark / "results.jsonl"
    if not path.exists():
        return None
    graded: dict[str, dict[str, bool]] = defaultdict(dict)
    for _, result in iter_records(path):
        graded[str(result["question_id"])][str(result["id"])] = bool(result["correct"])
    return graded


def benchmarks_of(runs: Sequence[Path]) -> list[str]:
    """The benchmarks every one of these eval runs has results for."""
    names = None
    for run in runs:
        found = {path.parent.name for path in run.glob("*/results.jsonl")}
        names = found if names is None else names & found
    return sorted(names or [])


def arm_results(seed_runs: dict[str, dict[int, Path]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per arm and benchmark: avg@k of each seed's model and their mean (the runs that exist)."""
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for arm, runs in seed_runs.items():
        present = {seed: run for seed, run in runs.items() if (run / EVAL_SUMMARY).exists()}
        if not present:
            continue
        results[arm] = {}
        for benchmark in benchmarks_of(list(present.values())):
            per_seed = {}
            for seed, run in present.items():
                graded = graded_samples(run, benchmark) or {}
                per_seed[str(seed)] = avg_at_k([list(samples.values()) for samples in graded.values()])
            results[arm][benchmark] = {
                "mean": sum(per_seed.values()) / len(per_seed),
                "per_seed": per_seed,
                "seeds": len(per_seed),
            }
    return results


def claim_results(claims: Sequence[dict[str, Any]], model_runs: dict[str, dict[str, Path]]) -> list[dict[str, Any]]:
    """One row per claim and benchmark: better − worse, paired, with its interval and verdict.
    `model_runs`: per arm or model, its eval folders by training seed (one entry for a single model);
    two arms are compared on the seeds both have, seed with seed."""
    rows = []
    for claim in claims:
        better, worse = (
            {seed: run for seed, run in model_runs.get(side, {}).items() if (run / EVAL_SUMMARY).exists()}
            for side in (claim["better"], claim["worse"])
        )
        if len(better) > 1 and len(worse) > 1:
            shared = [seed for seed in better if seed in worse]
            better, worse = {seed: better[seed] for seed in shared}, {seed: worse[seed] for seed in shared}
        if not better or not worse:
            rows.append({**claim, "benchmark": None, "verdict": "not run"})
            continue
        for benchmark in benchmarks_of([*better.values(), *worse.values()]):
            paired = paired_difference(
                [graded_samples(run, benchmark) or {} for run in worse.values()],
                [graded_samples(run, benchmark) or {} for run in better.values()],
            )
            rows.append(
                {
                    **claim,
                    "benchmark": benchmark,
                    **paired,
                    "seeds": [list(worse), list(better)],
                    "verdict": verdict(paired["interval"]) if paired["questions"] > 1 else "not run",
                }
            )
    return rows


def with_t_interval(row: Mapping[str, Any]) -> dict[str, Any]:
    """A claim row with its t interval: as it is when it has `degrees_of_freedom`; a row written before t intervals
    (a ± 1.96 s.e. interval) gets its df from `questions`, `question_standard_error` and `per_run`, and its
    interval and verdict recomputed from them. Rows without a benchmark (not run), or without `per_run` (their df
    cannot be told: recompute them from the eval folders), are returned as they are."""
    row = dict(row)
    if row.get("benchmark") is None or "degrees_of_freedom" in row:
        return row
    per_run = row.get("per_run")
    if per_run is None:  # one model per side, or seeds whose spread was not kept: cannot tell
        return row
    question_error = row.get("question_standard_error", row["standard_error"] if len(per_run) < 2 else None)
    if question_error is None:
        return row  # not enough to tell the df: keep what was stored
    degrees_of_freedom = paired_degrees_of_freedom(int(row.get("questions", 0)), question_error, per_run)
    interval, t = t_interval(row["difference"], row["standard_error"], degrees_of_freedom)
    row.update(
        degrees_of_freedom=None if degrees_of_freedom is None else round(degrees_of_freedom, 2),
        t=None if t is None else round(t, 4),
        interval=interval,
        verdict=verdict(interval) if int(row.get("questions", 0)) > 1 else "not run",
    )
    return row


def _df(row: Mapping[str, Any]) -> str:
    value = row.get("degrees_of_freedom")
    return "-" if value is None else f"{value:.1f}"


def claims_table(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The claims as text lines: report's direction, our difference ± s.e. [95% t interval] with its df, verdict."""
    lines = [
        f"{'claim (report: better > worse)':44} {'benchmark':18} {'difference':>11} {'± s.e.':>7} {'df':>6} "
        f"{'95% interval':>17}  verdict",
        "-" * 120,
    ]
    for row in map(with_t_interval, rows):
        if row.get("benchmark") is None:
            lines.append(f"{row['name'][:44]:44} {'-':18} {'':>11} {'':>7} {'':>6} {'':>17}  {row['verdict']}")
            continue
        low, high = row["interval"]
        lines.append(
            f"{row['name'][:44]:44} {row['benchmark'][:18]:18} {100 * row['difference']:+11.2f} "
            f"{100 * row['standard_error']:7.2f} {_df(row):>6} {f'[{100 * low:+.2f}, {100 * high:+.2f}]':>17}  "
            f"{row['verdict']}"
        )
    lines.append(
        "(accuracy points; per question over the samples and seeds both sides drew; s.e. over questions and "
        "seeds; 95% interval: ± t(0.975, df) s.e., df = questions − 1, or Welch–Satterthwaite over the question "
        "and seed terms with several seeds; verdict from that interval)"
    )
    return lines


# --- interactions: one claim in two independent runs ---------------------------------------------------------


def interaction(x: Mapping[str, Any], y: Mapping[str, Any], *, level: float = 0.95) -> dict[str, Any]:
    """(better − worse in run X) − (better − worse in run Y), two independent paired differences — claim rows of
    `claim_results` or results of `dasd.reporting.metrics.paired_difference` (rows written before t intervals get
    their df
    from `with_t_interval`). s.e. = sqrt(s.e.x² + s.e.y²); df = Welch–Satterthwaite over the two sides' own df;
    a t interval and a verdict (`agrees`: X's difference is larger).

    >>> x = {"difference": 0.05, "standard_error": 0.01, "degrees_of_freedom": 30.0}
    >>> y = {"difference": 0.01, "standard_error": 0.01, "degrees_of_freedom": 30.0}
    >>> row = interaction(x, y)
    >>> round(row["difference"], 4), round(row["standard_error"], 4), row["degrees_of_freedom"], row["interval"]
    (0.04, 0.0141, 60.0, [0.0117, 0.0683])
    >>> row["verdict"], interaction(x, {**y, "degrees_of_freedom": 2.0})["verdict"]
    ('agrees', 'agrees')
    >>> interaction(x, {**y, "difference": 0.03, "standard_error": 0.02, "degrees_of_freedom": 2.0})["verdict"]
    'not distinguishable'
    """
    sides = []
    for side in (x, y):
        row = with_t_interval({"benchmark": "-", **side})
        if row.get("degrees_of_freedom") is None:
            raise ValueError("a side without degrees of freedom (fewer than 2 questions, or no question s.e.)")
        sides.append(row)
    difference = sides[0]["difference"] - sides[1]["difference"]
    standard_error = math.sqrt(sides[0]["standard_error"] ** 2 + sides[1]["standard_error"] ** 2)
    degrees_of_freedom = satterthwaite_df([(side["standard_error"] ** 2, side["degrees_of_freedom"]) for side in sides])
    interval, t = t_interval(difference, standard_error, degrees_of_freedom, level)
    return {
        "difference": difference,
        "standard_error": standard_error,
        "degrees_of_freedom": round(degrees_of_freedom, 2),
        "t": None if t is None else round(t, 4),
        "interval": interval,
        "verdict": verdict(interval),
        "x": {key: sides[0][key] for key in ("difference", "standard_error", "degrees_of_freedom")},
        "y": {key: sides[1][key] for key in ("difference", "standard_error", "degrees_of_freedom")},
    }


def claim_matches(row: Mapping[str, Any], claim: str | None) -> bool:
    """A claim row is the one asked for: no `claim` (every claim), its name, or `BETTER>WORSE` (the arm names)."""
    if claim is None:
        return True
    if ">" in claim and claim.strip() != row.get("name"):
        better, worse = (part.strip() for part in claim.split(">", 1))
        return (row.get("better"), row.get("worse")) == (better, worse)
    return claim.strip() == row.get("name")


def interaction_rows(
    rows_x: Sequence[Mapping[str, Any]], rows_y: Sequence[Mapping[str, Any]], claim: str | None = None
) -> list[dict[str, Any]]:
    """The interaction of every claim (or the one named: `claim_matches`) that both runs checked, benchmark by
    benchmark: claims are matched by their better and worse sides, and by benchmark."""

    def key(row: Mapping[str, Any]) -> tuple[Any, Any, Any]:
        return row.get("better"), row.get("worse"), row.get("benchmark")

    checked = {key(row): row for row in rows_y if row.get("benchmark") is not None and row.get("questions", 0) > 1}
    return [
        {name: row_x.get(name) for name in ("name", "better", "worse", "benchmark")}
        | interaction(row_x, checked[key(row_x)])
        for row_x in rows_x
        if row_x.get("benchmark") is not None
        and row_x.get("questions", 0) > 1
        and claim_matches(row_x, claim)
        and key(row_x) in checked
    ]


def interaction_table(rows: Sequence[dict[str, Any]], label_x: str = "X", label_y: str = "Y") -> list[str]:
    """Interactions as text lines: each run's difference ± s.e. (df), their difference, its t interval, verdict."""
    lines = [
        f"{'claim (better > worse)':40} {'benchmark':16} {label_x[:15]:>15} {label_y[:15]:>15} "
        f"{'X − Y':>13} {'df':>6} {'95% interval':>17}  verdict",
        "-" * 140,
    ]
    for row in rows:
        low, high = row["interval"]
        lines.append(
            f"{row['name'][:40]:40} {row['benchmark'][:16]:16} {_plus_minus(row['x']):>15} {_plus_minus(row['y']):>15} "
            f"{_plus_minus(row):>13} {row['degrees_of_freedom']:6.1f} "
            f"{f'[{100 * low:+.2f}, {100 * high:+.2f}]':>17}  {row['verdict']}"
        )
    lines.append(
        "(accuracy points: (better − worse in X) − (better − worse in Y), two independent runs; s.e. = "
        "sqrt(s.e.X² + s.e.Y²); 95% interval ± t(0.975, df) s.e., df Welch–Satterthwaite from each run's df; "
        "agrees: the difference is larger in X)"
    )
    return lines


def _plus_minus(row: Mapping[str, Any]) -> str:
    return f"{100 * row['difference']:+.2f} ± {100 * row['standard_error']:.2f}"
