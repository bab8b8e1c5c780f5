"""DAS on world v7 and its twin, by stratum and by mechanism: where a selection rule's gain lands, and what it taught.

    python benchmarks/das_strata.py runs/das-v7                         # every claim of the run, per stratum
    python benchmarks/das_strata.py runs/das-v7 runs/das-twin --pair recipe rs   # … and the interaction per stratum

The strata are fixed in benchmarks/PREREGISTERED.md (issue 37) and computed from each question's expression alone:
`no dip` — the left-to-right running total never goes below zero (the student's misconception, |a - b|, never
applies); `dip, answer ≥ 0` — it dips and comes back; `answer < 0`. Per stratum the paired difference of two arms
over their training seeds (`dasd.reporting.metrics.paired_difference`: t interval, Welch–Satterthwaite df), and per
arm what
its students write in their held-out answers (`samples.jsonl`): the share of answers in careful work (the teacher's
"Start with …"), with "Negative totals are allowed.", with a re-check loop, and the accuracy of each; and, on
questions whose running total dips, the accuracy of careful work with and without the sentence (the mechanism the
world is built on). Build 2's comparison counters are at commit aca054c. With two workdirs: the interaction (pair's
difference in the first − in the second) per stratum (`dasd.reporting.ablation.interaction`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from dasd.data.io import iter_records  # noqa: E402
from dasd.naming import seed_dir  # noqa: E402
from dasd.reporting.ablation import benchmarks_of, graded_samples, interaction  # noqa: E402
from dasd.reporting.metrics import paired_difference, verdict  # noqa: E402

STRATA = ("no dip", "dip, answer >= 0", "answer < 0")


def stratum(expression: str) -> str:
    """The stratum of a question from its expression (one-digit terms, + and -).

    >>> stratum("3 + 4 - 5"), stratum("3 - 5 + 4"), stratum("3 - 5")
    ('no dip', 'dip, answer >= 0', 'answer < 0')
    """
    parts = expression.split()
    total, dipped = int(parts[0]), False
    for operator, number in zip(parts[1::2], parts[2::2]):
        total = total + int(number) if operator == "+" else total - int(number)
        dipped = dipped or total < 0
    if total < 0:
        return "answer < 0"
    return "dip, answer >= 0" if dipped else "no dip"


def question_strata(work: Path) -> dict[str, str]:
    pipeline = yaml.safe_load((work / "pipeline.yaml").read_text())
    out = {}
    for benchmark in pipeline["eval_benchmarks"]:
        for _, question in iter_records(Path(benchmark)):
            out[str(question["id"])] = stratum(question["meta"]["expression"])
    return out


def arm_runs(work: Path, arm: str) -> dict[str, Path]:
    pipeline = yaml.safe_load((work / "pipeline.yaml").read_text())
    runs = {str(seed): seed_dir(work, arm, seed) / "eval" for seed in pipeline.get("seeds", [])}
    if not any(run.exists() for run in runs.values()):
        runs = {"-": work / "eval" / arm}  # an evaluated model (the student)
    return {seed: run for seed, run in runs.items() if run.exists()}


def paired_by_stratum(work: Path, better: str, worse: str) -> dict[str, dict]:
    strata = question_strata(work)
    sides = [arm_runs(work, arm) for arm in (better, worse)]
    if len(sides[0]) > 1 and len(sides[1]) > 1:
        shared = [seed for seed in sides[0] if seed in sides[1]]
        sides = [{seed: side[seed] for seed in shared} for side in sides]
    out = {}
    for benchmark in benchmarks_of([*sides[0].values(), *sides[1].values()]):
        graded = [[graded_samples(run, benchmark) or {} for run in side.values()] for side in sides]
        for name in ("all", *STRATA):
            keep = [
                {q: samples for q, samples in run.items() if name == "all" or strata.get(q) == name}
                for run in [*graded[0], *graded[1]]
            ]
            out[name] = paired_difference(keep[len(graded[0]) :], keep[: len(graded[0])])
    return out


CAREFUL, ALLOWED, LOOP = "Start with ", "Negative totals are allowed.", "Wait, let me check again."
HABITS = (("careful", CAREFUL), ("negatives allowed", ALLOWED), ("loop", LOOP))


def mechanism(work: Path, arm: str) -> dict[str, float]:
    """What the arm's students write in their held-out answers, over seeds: share of answers with each habit and the
    accuracy of those answers; on dipping questions, careful work's accuracy with and without the sentence."""
    strata = question_strata(work)
    counts: dict[str, int] = {"answers": 0, "correct": 0}
    for run in arm_runs(work, arm).values():
        for path in run.glob("*/samples.jsonl"):
            graded = {str(r["id"]): bool(r["correct"]) for _, r in iter_records(path.with_name("results.jsonl"))}
            for _, sample in iter_records(path):
                text = f"{sample.get('reasoning') or ''} {sample.get('content') or ''}"
                right = graded.get(str(sample["id"]), False)
                counts["answers"] += 1
                counts["correct"] += right
                for name, marker in HABITS:
                    if marker in text:
                        counts[name] = counts.get(name, 0) + 1
                        counts[f"{name} correct"] = counts.get(f"{name} correct", 0) + right
                if CAREFUL in text and strata.get(str(sample.get("question_id")), "no dip") != "no dip":
                    key = "dip, careful " + ("with the sentence" if ALLOWED in text else "without it")
                    counts[key] = counts.get(key, 0) + 1
                    counts[f"{key} correct"] = counts.get(f"{key} correct", 0) + right
    total = max(counts["answers"], 1)
    out = {"answers": counts["answers"], "accuracy": counts["correct"] / total}
    for name, _ in HABITS:
        present = counts.get(name, 0)
        out[f"{name} share"] = present / total
        out[f"{name} accuracy"] = counts.get(f"{name} correct", 0) / present if present else float("nan")
    for key in ("dip, careful with the sentence", "dip, careful without it"):
        present = counts.get(key, 0)
        out[f"{key}: answers"] = present
        out[f"{key}: accuracy"] = counts.get(f"{key} correct", 0) / present if present else float("nan")
    return out


def credit(work: Path) -> str:
    """DAS read against its bounds (issue 37): its gain over random as a fraction of the oracle's, and credited only
    where it beats `longest` (its interval above 0)."""
    try:
        das, oracle, longest = (
            paired_by_stratum(work, better, worse)["all"]
            for better, worse in (("recipe", "rs"), ("oracle", "rs"), ("recipe", "longest"))
        )
    except (KeyError, ValueError, ZeroDivisionError):
        return "DAS against its bounds: needs the recipe, rs, oracle and longest arms"
    fraction = das["difference"] / oracle["difference"] if oracle["difference"] > 0 else float("nan")
    credited = verdict(longest["interval"]) == "agrees"
    return (
        f"DAS − RS {100 * das['difference']:+.2f}, oracle − RS {100 * oracle['difference']:+.2f}: DAS reaches "
        f"{fraction:.2f} of the oracle's gain (point estimates); DAS − longest {100 * longest['difference']:+.2f} "
        f"[{100 * longest['interval'][0]:+.2f}, {100 * longest['interval'][1]:+.2f}]: "
        f"{'credited' if credited else 'not credited (does not beat longest)'}"
    )


def line(name: str, row: dict) -> str:
    low, high = row["interval"]
    return (
        f"  {name:18} {row['questions']:4d} q  {100 * row['difference']:+7.2f} ± {100 * row['standard_error']:5.2f}  "
        f"[{100 * low:+.2f}, {100 * high:+.2f}] df {row.get('degrees_of_freedom', float('nan')):.1f}  "
        f"{verdict(row['interval']) if row['questions'] > 1 else '-'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("workdirs", nargs="+", type=Path, help="one `dasd demo ablation=das` workdir, or two")
    parser.add_argument("--pair", nargs=2, action="append", metavar=("BETTER", "WORSE"), help="arms to compare")
    args = parser.parse_args()
    first = args.workdirs[0]
    pipeline = yaml.safe_load((first / "pipeline.yaml").read_text())
    pairs = args.pair or [(c["better"], c["worse"]) for c in pipeline.get("claims", [])]
    for work in args.workdirs:
        print(f"== {work}")
        for better, worse in pairs:
            print(f"{better} - {worse} (points, paired over seeds):")
            for name, row in paired_by_stratum(work, better, worse).items():
                print(line(name, row))
        print(credit(work))
        print("what the students write (held-out answers, all seeds):")
        for arm in ["student", *pipeline.get("arms", {})]:
            habits = mechanism(work, arm)
            if habits["answers"]:
                print(f"  {arm:16} " + json.dumps({k: round(v, 3) for k, v in habits.items()}))
    if len(args.workdirs) == 2:
        print(f"== interaction: ({args.workdirs[0]}) - ({args.workdirs[1]})")
        for better, worse in pairs:
            x, y = (paired_by_stratum(work, better, worse) for work in args.workdirs)
            print(f"{better} - {worse}:")
            for name in x:
                if name in y and x[name]["questions"] > 1 and y[name]["questions"] > 1:
                    print(line(name, {**interaction(x[name], y[name]), "questions": x[name]["questions"]}))


if __name__ == "__main__":
    main()
