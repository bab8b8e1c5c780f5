"""The temperature pair from measured densities (`dasd sample suggest_temperatures=true`).

The report picks 0.6 for stage 1 and 1.0 for stage 2 by hand, from Figure 3a: samples at the low temperature
sit in the teacher's high-probability mode, samples at the high one spread into the rest of its distribution.
From a small probe sample at several temperatures this part measures the same thing — per temperature, the
distribution (a density over common bins) of each response's mean raw teacher log-prob per token — and how
much two temperatures' densities overlap (the overlap coefficient: the sum over bins of the smaller of the two
densities; 1 = the same distribution, 0 = disjoint). It also counts what makes a temperature usable: the share
of responses that stopped on their own (not cut at `max_new_tokens`), the share of distinct responses per
question (selection needs candidates that differ), and, where the questions have answers, accuracy.

The suggestion, with its reasons:
* a temperature is **eligible** when at least `min_stop_share` (0.9) of its responses stopped and, with answers,
  its accuracy is not clearly below `min_relative_accuracy` (0.9) × the best temperature's (clearly: by more than
  two standard errors of its own accuracy — a probe is small);
* **low** is the lowest eligible temperature whose responses are at least `min_distinct_share` (0.5) distinct per
  question — the mode, but with candidates to choose from;
* **high** is the eligible temperature above `low` whose density overlaps `low`'s least — the part of the
  distribution stage 1 does not see (within `overlap_tolerance`, 0.02, of the least: the lowest such
  temperature, the safer one).

`temperature_report(output)` measures a response file (graded where its questions have answers) and
`format_temperature_report` is the table `dasd sample --suggest-temperatures` prints.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from ..data.io import iter_records
from ..scoring.sentence_scores import mean_teacher_logprob


def densities(values_by_temperature: dict[float, list[float]], bins: int = 20) -> tuple[list[float], dict]:
    """Histogram densities (each sums to 1) of every temperature's values over common bins of equal pooled mass
    (the pooled values' quantiles: one temperature's long tail cannot squeeze the others into one bin).

    >>> edges, dens = densities({0.6: [-0.1, -0.1, -0.2, -0.15], 1.0: [-0.5, -0.2, -3.0, -0.3]}, bins=4)
    >>> edges
    [-3.0, -0.3, -0.2, -0.15, -0.1]
    >>> dens[0.6], dens[1.0]
    ([0.0, 0.25, 0.25, 0.5], [0.75, 0.25, 0.0, 0.0])
    """
    pooled = sorted(value for values in values_by_temperature.values() for value in values)
    edges = [pooled[min(len(pooled) - 1, round(i * (len(pooled) - 1) / bins))] for i in range(bins + 1)]
    out = {}
    for temperature, values in values_by_temperature.items():
        counts = [0] * bins
        for value in values:
            # the first bin whose upper edge holds the value (ties with repeated edges go to the lowest such bin)
            index = next((i for i in range(bins) if value <= edges[i + 1]), bins - 1)
            counts[index] += 1
        out[temperature] = [round(count / len(values), 6) for count in counts] if values else [0.0] * bins
    return edges, out


def overlap(p: list[float], q: list[float]) -> float:
    """The overlap coefficient of two densities on the same bins: 1 for the same, 0 for disjoint.

    >>> overlap([0.5, 0.5, 0.0], [0.0, 0.5, 0.5]), overlap([1.0, 0.0], [1.0, 0.0])
    (0.5, 1.0)
    """
    return round(sum(min(a, b) for a, b in zip(p, q)), 6)


def _clearly_below(stats: dict[str, Any], bar: float) -> bool:
    """Accuracy below `bar` by more than two standard errors of itself (binomial, over its graded responses)."""
    accuracy, count = stats["accuracy"], max(stats.get("graded", stats.get("responses", 1)), 1)
    return accuracy + 2 * math.sqrt(max(accuracy * (1 - accuracy), 1e-12) / count) < bar


def suggest_pair(
    stats: dict[float, dict[str, Any]],
    overlaps: dict[float, dict[float, float]],
    *,
    min_stop_share: float = 0.9,
    min_relative_accuracy: float = 0.9,
    min_distinct_share: float = 0.5,
    overlap_tolerance: float = 0.02,
) -> dict[str, Any]:
    """The suggested (low, high) pair and the reasons, by the rules in the module docstring.

    >>> stats = {t: {"stop_share": 1.0, "distinct_share": d, "accuracy": a, "graded": 100}
    ...          for t, d, a in [(0.3, 0.2, 0.9), (0.6, 0.8, 0.9), (1.0, 1.0, 0.85), (1.3, 1.0, 0.5)]}
    >>> overlaps = {0.6: {1.0: 0.4, 1.3: 0.1}}
    >>> pair = suggest_pair(stats, overlaps)
    >>> pair["low"], pair["high"]
    (0.6, 1.0)
    """
    reasons = []
    best = max((s["accuracy"] for s in stats.values() if s.get("accuracy") is not None), default=None)
    eligible = []
    for temperature in sorted(stats):
        s = stats[temperature]
        if s["stop_share"] < min_stop_share:
            reasons.append(f"T={temperature:g}: not eligible, {s['stop_share']:.0%} of responses stopped")
        elif best is not None and s.get("accuracy") is not None and _clearly_below(s, min_relative_accuracy * best):
            reasons.append(
                f"T={temperature:g}: not eligible, accuracy {s['accuracy']:.0%} clearly below {min_relative_accuracy:g}"
                f" × the best {best:.0%}"
            )
        else:
            eligible.append(temperature)
    low = next((t for t in eligible if stats[t]["distinct_share"] >= min_distinct_share), None)
    if low is None:
        reasons.append(f"no eligible temperature has {min_distinct_share:.0%} distinct responses per question")
        return {"low": None, "high": None, "reasons": reasons}
    for temperature in eligible:
        if temperature < low:
            reasons.append(
                f"T={temperature:g}: eligible but only {stats[temperature]['distinct_share']:.0%} distinct responses"
            )
    reasons.append(f"low T={low:g}: the lowest eligible temperature with distinct candidates")
    above = [t for t in eligible if t > low]
    if not above:
        reasons.append(f"no eligible temperature above {low:g}")
        return {"low": low, "high": None, "reasons": reasons}
    least = min(overlaps[low][t] for t in above)
    high = min(t for t in above if overlaps[low][t] <= least + overlap_tolerance)
    reasons.append(
        f"high T={high:g}: its density overlaps T={low:g}'s least ({overlaps[low][high]:.2f}; "
        + ", ".join(f"T={t:g} {overlaps[low][t]:.2f}" for t in above)
        + ")"
    )
    return {"low": low, "high": high, "reasons": reasons}


def probe_report(records: list[dict[str, Any]], correct: list[bool | None] | None = None, bins: int = 20) -> dict:
    """Per temperature: responses, the mean raw teacher log-prob per token (mean and 10/50/90th percentiles),
    its density, stop and distinct shares, accuracy; the pairwise overlaps; the suggested pair."""
    values: dict[float, list[float]] = defaultdict(list)
    stopped: dict[float, list[bool]] = defaultdict(list)
    texts: dict[float, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    graded: dict[float, list[bool]] = defaultdict(list)
    for index, record in enumerate(records):
        temperature = record.get("temperature")
        if not isinstance(temperature, (int, float)):
            continue
        temperature = float(temperature)
        mean = mean_teacher_logprob(record.get("teacher_logprobs") or {})
        if mean is not None and math.isfinite(mean):
            values[temperature].append(mean)
        stopped[temperature].append(record.get("finish_reason") == "stop")
        texts[temperature][str(record.get("question_id"))].append(
            f"{record.get('reasoning')}\x00{record.get('content')}"
        )
        if correct is not None and correct[index] is not None:
            graded[temperature].append(bool(correct[index]))
    if not values:
        return {"temperatures": {}, "overlap": {}, "suggestion": {"low": None, "high": None, "reasons": ["no data"]}}
    edges, dens = densities(values, bins)
    stats = {}
    for temperature in sorted(stopped):
        ordered = sorted(values[temperature])

        def quantile(q: float, ordered=ordered) -> float | None:
            return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 4) if ordered else None

        per_question = texts[temperature].values()
        stats[temperature] = {
            "responses": len(stopped[temperature]),
            "mean_logprob": round(sum(ordered) / len(ordered), 4) if ordered else None,
            "p10": quantile(0.1),
            "p50": quantile(0.5),
            "p90": quantile(0.9),
            "stop_share": round(sum(stopped[temperature]) / len(stopped[temperature]), 4),
            "distinct_share": round(sum(len(set(t)) / len(t) for t in per_question) / len(per_question), 4),
            "accuracy": round(sum(graded[temperature]) / len(graded[temperature]), 4) if graded[temperature] else None,
            "graded": len(graded[temperature]),
            "density": dens.get(temperature, [0.0] * bins),
        }
    temperatures = sorted(stats)
    overlaps = {a: {b: overlap(stats[a]["density"], stats[b]["density"]) for b in temperatures} for a in temperatures}
    return {
        "bins": [round(edge, 4) for edge in edges],
        "temperatures": {str(t): s for t, s in stats.items()},
        "overlap": {str(a): {str(b): v for b, v in row.items()} for a, row in overlaps.items()},
        "suggestion": suggest_pair(stats, overlaps),
    }


def temperature_report(output: str) -> dict[str, Any]:
    """`temperature_probe.probe_report` over every response in `output`, graded where they have answers."""
    from ..grading.answers import BoundedVerifier, grade_records

    records = [record for _, record in iter_records(output)]
    correct = None
    if any(record.get("answer") not in (None, "") for record in records):
        with BoundedVerifier() as verifier:
            grades = grade_records(records, verifier)
        correct = [None if grade is None else grade.correct for grade in grades]
    return probe_report(records, correct)


def format_temperature_report(report: dict[str, Any], path) -> str:
    lines = [f"temperatures -> {path}", "-" * 100]
    lines.append(
        f"{'T':>5} {'responses':>9} {'mean lp':>8} {'p10':>8} {'p50':>8} {'p90':>8} {'stop':>6} "
        f"{'distinct':>8} {'correct':>8}  overlap with the others"
    )
    for temperature, stats in report["temperatures"].items():
        others = ", ".join(
            f"{other}: {value:.2f}" for other, value in report["overlap"][temperature].items() if other != temperature
        )
        accuracy = "-" if stats["accuracy"] is None else f"{stats['accuracy']:.0%}"
        lines.append(
            f"{float(temperature):>5g} {stats['responses']:>9} {stats['mean_logprob']!s:>8} {stats['p10']!s:>8} "
            f"{stats['p50']!s:>8} {stats['p90']!s:>8} {stats['stop_share']:>6.0%} {stats['distinct_share']:>8.0%} "
            f"{accuracy:>8}  {others}"
        )
    suggestion = report["suggestion"]
    pair = f"low {suggestion['low']}, high {suggestion['high']}" if suggestion["low"] is not None else "none"
    lines.append(f"suggested pair: {pair}")
    lines.extend(f"  {reason}" for reason in suggestion["reasons"])
    return "\n".join(lines)
