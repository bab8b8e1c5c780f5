"""Evaluation metrics: avg@k, unbiased pass@k, standard errors, and comparing two runs.

avg@k (the report's metric) = the mean over questions of the share of a question's k samples that are
correct. pass@k uses the unbiased estimator of Chen et al. (2021): for a question with n samples of
which c are correct, 1 - C(n-c, k) / C(n, k). The standard error of avg@k is the standard deviation
of the per-question accuracies over sqrt(number of questions) — it counts both which questions were
drawn and the sampling noise within a question.

Two runs on the same questions are compared **paired** (`paired_difference`): per question, the
difference of accuracies over the samples both runs drew with the same seeds (a sample id is
question × temperature × index, and its seed derives from it), then the mean and standard error of
those differences — the question-to-question spread that both runs share cancels, so the paired
standard error is usually much smaller than the unpaired one (`compare`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one question with n samples, c of them correct (k <= n)."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples (got {n})")
    if n - c < k:
        return 1.0
    # 1 - prod_{i=n-c+1}^{n} (1 - k/i), the numerically stable form of 1 - C(n-c,k)/C(n,k)
    product = 1.0
    for i in range(n - c + 1, n + 1):
        product *= 1.0 - k / i
    return 1.0 - product


def avg_at_k(per_question: Sequence[Sequence[bool]]) -> float:
    accuracies = [sum(samples) / len(samples) for samples in per_question if samples]
    return sum(accuracies) / len(accuracies) if accuracies else 0.0


def standard_error(per_question: Sequence[Sequence[bool]]) -> float:
    accuracies = [sum(samples) / len(samples) for samples in per_question if samples]
    if len(accuracies) < 2:
        return 0.0
    mean = sum(accuracies) / len(accuracies)
    variance = sum((value - mean) ** 2 for value in accuracies) / (len(accuracies) - 1)
    return math.sqrt(variance / len(accuracies))


def mean_pass_at_k(per_question: Sequence[Sequence[bool]], k: int) -> float:
    values = [pass_at_k(len(samples), sum(samples), k) for samples in per_question if len(samples) >= k]
    return sum(values) / len(values) if values else 0.0


def pass_at_ks(n: int) -> list[int]:
    """The k reported for n samples: 1, 2, 4, … up to n (and n itself)."""
    ks, k = [], 1
    while k < n:
        ks.append(k)
        k *= 2
    ks.append(n)
    return ks


def compare(a: dict, b: dict) -> list[dict]:
    """Benchmarks of two eval summaries side by side: difference, its standard error, significance."""
    rows = []
    for name in sorted(set(a) & set(b)):
        difference = b[name]["avg_at_k"] - a[name]["avg_at_k"]
        se = math.sqrt(a[name]["standard_error"] ** 2 + b[name]["standard_error"] ** 2)
        rows.append(
            {
                "benchmark": name,
                "a": a[name]["avg_at_k"],
                "b": b[name]["avg_at_k"],
                "difference": difference,
                "standard_error": se,
                "significant": abs(difference) > 2 * se if se > 0 else difference != 0,
            }
        )
    return rows


Graded = Mapping[str, Mapping[str, bool]]  # {question id: {sample id: correct}} of one evaluated model


def paired_difference(a: Graded | Sequence[Graded], b: Graded | Sequence[Graded]) -> dict:
    """B - A over the questions both sides answered, samples paired by id.

    Each side is one evaluated model (`{question: {sample id: correct}}`) or several — e.g. one per
    training seed of an ablation arm. Per question, a side's accuracy is the mean over its models of
    the accuracy on the sample ids every model of both sides drew (same ids = same per-sample seeds);
    the difference is then averaged over questions. `per_run` gives the difference for each pair of
    models when both sides have as many (seed by seed, in the order given), or for each model of the
    larger side against a single one.

    Its standard error: over questions (`question_standard_error`, all there is for one model against
    one) and, with several training seeds, also over seeds — a seed that shifts every question alike
    does not show in the spread over questions — as s.e.² = s.e.(questions)² + var(per_run) / runs,
    which is conservative (per_run's variance also holds some question noise). 95% interval: ± 1.96 s.e.

    >>> paired_difference({"q1": {"s1": True, "s2": False}, "q2": {"s3": False}},
    ...                   {"q1": {"s1": True, "s2": True}, "q2": {"s3": True}, "q3": {"s4": True}})
    {'questions': 2, 'samples': 3, 'a': 0.25, 'b': 1.0, 'difference': 0.75, 'standard_error': 0.25, \
'question_standard_error': 0.25, 'interval': [0.26, 1.24], 'per_run': [0.75]}
    >>> paired_difference([{"q": {"s": True}}, {"q": {"s": False}}], {"q": {"s": True}})["difference"]
    0.5
    """
    runs_a = [a] if isinstance(a, Mapping) else list(a)
    runs_b = [b] if isinstance(b, Mapping) else list(b)
    runs = runs_a + runs_b
    questions = sorted(set.intersection(*(set(run) for run in runs))) if runs else []
    shared_by_question: dict[str, list[str]] = {}
    for question in questions:
        shared = sorted(set.intersection(*(set(run[question]) for run in runs)))
        if shared:
            shared_by_question[question] = shared

    def accuracy(run: Graded, question: str) -> float:
        shared = shared_by_question[question]
        return sum(run[question][sample] for sample in shared) / len(shared)

    def side(models: list[Graded], question: str) -> float:
        return sum(accuracy(run, question) for run in models) / len(models)

    accuracies_a = [side(runs_a, question) for question in shared_by_question]
    accuracies_b = [side(runs_b, question) for question in shared_by_question]
    count = len(accuracies_a)
    differences = [y - x for x, y in zip(accuracies_a, accuracies_b)]
    mean = sum(differences) / count if count else 0.0
    variance = sum((d - mean) ** 2 for d in differences) / (count - 1) if count > 1 else 0.0
    error = math.sqrt(variance / count) if count > 1 else 0.0
    if len(runs_a) == len(runs_b):
        pairs = list(zip(runs_a, runs_b))
    elif len(runs_a) == 1 or len(runs_b) == 1:
        pairs = [(x, y) for x in runs_a for y in runs_b]
    else:
        pairs = []
    per_run = [
        round(sum(accuracy(y, q) - accuracy(x, q) for q in shared_by_question) / count, 4) if count else 0.0
        for x, y in pairs
    ]
    total = error
    if len(per_run) > 1:
        run_mean = sum(per_run) / len(per_run)
        run_variance = sum((value - run_mean) ** 2 for value in per_run) / (len(per_run) - 1)
        total = math.sqrt(error**2 + run_variance / len(per_run))
    return {
        "questions": count,
        "samples": sum(len(shared) for shared in shared_by_question.values()),
        "a": sum(accuracies_a) / count if count else 0.0,
        "b": sum(accuracies_b) / count if count else 0.0,
        "difference": mean,
        "standard_error": total,
        "question_standard_error": error,
        "interval": [round(mean - 1.96 * total, 4), round(mean + 1.96 * total, 4)],
        "per_run": per_run,
    }


def verdict(interval: Sequence[float], expected: int = 1) -> str:
    """A claim's verdict from the 95% interval of (expected better − expected worse).

    >>> verdict([0.01, 0.05]), verdict([-0.05, -0.01]), verdict([-0.01, 0.03])
    ('agrees', 'opposite', 'not distinguishable')
    """
    low, high = interval
    if expected * low > 0 and expected * high > 0:
        return "agrees"
    if expected * low < 0 and expected * high < 0:
        return "opposite"
    return "not distinguishable"


def cluster_bootstrap(
    clusters: Sequence[Any],
    statistic,
    *,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, list[float] | None]:
    """Percentile intervals of a statistic over resamples of `clusters` drawn with replacement (a cluster
    bootstrap: draw whole questions when the answers to one question are not independent). `statistic` maps a
    list of clusters to `{name: value or None}`; a name whose value is None in more than half of the resamples gets
    None. Seeded: the same call gives the same intervals.

    >>> values = [[1.0], [2.0], [3.0], [4.0]]
    >>> def mean(drawn): return {"mean": sum(v for c in drawn for v in c) / len(drawn)}
    >>> interval = cluster_bootstrap(values, mean, resamples=2000, seed=1)["mean"]
    >>> 1.0 <= interval[0] < 2.5 < interval[1] <= 4.0
    True
    >>> cluster_bootstrap(values, mean, seed=1) == cluster_bootstrap(values, mean, seed=1)
    True
    """
    import random

    rng = random.Random(seed)
    draws: dict[str, list[float]] = {}
    count = len(clusters)
    for _ in range(resamples):
        drawn = [clusters[rng.randrange(count)] for _ in range(count)]
        for name, value in statistic(drawn).items():
            draws.setdefault(name, [])
            if value is not None:
                draws[name].append(value)
    tail = (1 - level) / 2
    out: dict[str, list[float] | None] = {}
    for name, values in draws.items():
        if len(values) * 2 < resamples:
            out[name] = None
            continue
        values.sort()
        low = values[min(len(values) - 1, int(math.floor(tail * len(values))))]
        high = values[min(len(values) - 1, int(math.ceil((1 - tail) * len(values))) - 1)]
        out[name] = [round(low, 6), round(high, 6)]
    return out
