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


def paired_difference(a: Mapping[str, Mapping[str, bool]], b: Mapping[str, Mapping[str, bool]]) -> dict:
    """B - A over the questions both runs answered, samples paired by id: `{question: {sample id: correct}}`
    in, the mean per-question accuracies and the mean difference with its standard error out.

    >>> paired_difference({"q1": {"s1": True, "s2": False}, "q2": {"s3": False}},
    ...                   {"q1": {"s1": True, "s2": True}, "q2": {"s3": True}, "q3": {"s4": True}})
    {'questions': 2, 'samples': 3, 'a': 0.25, 'b': 1.0, 'difference': 0.75, 'standard_error': 0.25}
    """
    accuracies_a, accuracies_b, samples = [], [], 0
    for question in sorted(set(a) & set(b)):
        shared = sorted(set(a[question]) & set(b[question]))
        if not shared:
            continue
        samples += len(shared)
        accuracies_a.append(sum(a[question][s] for s in shared) / len(shared))
        accuracies_b.append(sum(b[question][s] for s in shared) / len(shared))
    count = len(accuracies_a)
    differences = [y - x for x, y in zip(accuracies_a, accuracies_b)]
    mean = sum(differences) / count if count else 0.0
    variance = sum((d - mean) ** 2 for d in differences) / (count - 1) if count > 1 else 0.0
    return {
        "questions": count,
        "samples": samples,
        "a": sum(accuracies_a) / count if count else 0.0,
        "b": sum(accuracies_b) / count if count else 0.0,
        "difference": mean,
        "standard_error": math.sqrt(variance / count) if count > 1 else 0.0,
    }
