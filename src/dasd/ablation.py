"""Ablation results: each arm's accuracy over its training seeds, and each claim with paired statistics.

    from dasd.ablation import arm_results, claim_results
    arms = arm_results(seed_runs)                     # {arm: {benchmark: {mean, per_seed, ...}}}
    claims = claim_results(claims, model_runs)        # one row per claim × benchmark, with a verdict

A model's results are an eval folder (`dasd eval`'s output_dir: `<benchmark>/results.jsonl`). A claim
compares two sides (an arm's seeds, or one evaluated model such as the student) on the questions and
sample ids both answered (`dasd.metrics.paired_difference`): difference ± standard error, a 95%
interval, and a verdict against the report's direction (`dasd.metrics.verdict`). `dasd eval --compare`
reads results with the same `graded_samples`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .data.io import iter_records
from .metrics import avg_at_k, paired_difference, verdict
from .naming import EVAL_SUMMARY


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


def claims_table(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The claims as text lines: report's direction, our difference ± s.e. [95% interval], verdict."""
    lines = [
        f"{'claim (report: better > worse)':44} {'benchmark':18} {'difference':>11} {'± s.e.':>7} "
        f"{'95% interval':>17}  verdict",
        "-" * 120,
    ]
    for row in rows:
        if row.get("benchmark") is None:
            lines.append(f"{row['name'][:44]:44} {'-':18} {'':>11} {'':>7} {'':>17}  {row['verdict']}")
            continue
        low, high = row["interval"]
        lines.append(
            f"{row['name'][:44]:44} {row['benchmark'][:18]:18} {100 * row['difference']:+11.2f} "
            f"{100 * row['standard_error']:7.2f} {f'[{100 * low:+.2f}, {100 * high:+.2f}]':>17}  {row['verdict']}"
        )
    lines.append(
        "(accuracy points; per question over the samples and seeds both sides drew; s.e. over questions and "
        "seeds; verdict from the 95% interval)"
    )
    return lines
