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

Its 95% interval is a t interval: mean ± t(0.975, df) · s.e. With one model against one, df = questions − 1; when
training seeds enter (a seed term in the variance), df comes from Welch–Satterthwaite over the question term
(df questions − 1) and the seed term (df runs − 1) — with 3 seeds the seed term alone has 2 degrees of freedom and
t(0.975, 2) = 4.30, not 1.96. `t_quantile` and `satterthwaite_df` are pure Python (no scipy).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from statistics import NormalDist
from typing import Any

# Beyond this many degrees of freedom t(p, df) is the normal quantile to ~1e-7 (t ≈ z + (z³ + z) / 4df).
_NORMAL_DF = 1e7


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


# --- t intervals ----------------------------------------------------------------------------------------------


def _incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b), by its continued fraction (modified Lentz)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1.0) / (a + b + 2.0):  # the fraction converges fast below this point: use the symmetry
        return 1.0 - _incomplete_beta(b, a, 1.0 - x)
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    tiny, epsilon = 1e-300, 1e-15
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    fraction = d
    for m in range(1, 100000):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            fraction *= c * d
        if abs(c * d - 1.0) < epsilon:
            break
    return math.exp(log_front) * fraction / a


def t_upper_tail(t: float, degrees_of_freedom: float) -> float:
    """P(T > t) for Student's t with this many degrees of freedom (non-integer allowed; inf: the normal).

    >>> round(t_upper_tail(0.0, 5), 12), round(t_upper_tail(12.7062047, 1), 6)
    (0.5, 0.025)
    """
    if degrees_of_freedom <= 0:
        raise ValueError(f"degrees of freedom must be positive (got {degrees_of_freedom})")
    if t < 0:
        return 1.0 - t_upper_tail(-t, degrees_of_freedom)
    if degrees_of_freedom >= _NORMAL_DF:
        return NormalDist().cdf(-t)
    return 0.5 * _incomplete_beta(degrees_of_freedom / 2, 0.5, degrees_of_freedom / (degrees_of_freedom + t * t))


def t_quantile(probability: float, degrees_of_freedom: float) -> float:
    """The Student t quantile: t with P(T ≤ t) = probability, for any positive (real) degrees of freedom; an
    infinite (or very large) df gives the normal quantile. The tail of the incomplete beta, inverted by bisection.

    >>> [round(t_quantile(0.975, df), 3) for df in (2, 10, 1e9, 1, math.inf)]
    [4.303, 2.228, 1.96, 12.706, 1.96]
    >>> round(t_quantile(0.025, 2), 3), t_quantile(0.5, 3), round(t_quantile(0.995, 2.5), 3)
    (-4.303, 0.0, 7.164)
    """
    if not 0.0 < probability < 1.0:
        raise ValueError(f"probability must be in (0, 1) (got {probability})")
    if degrees_of_freedom <= 0 or math.isnan(degrees_of_freedom):
        raise ValueError(f"degrees of freedom must be positive (got {degrees_of_freedom})")
    if probability < 0.5:
        return -t_quantile(1.0 - probability, degrees_of_freedom)
    if probability == 0.5:
        return 0.0
    if degrees_of_freedom >= _NORMAL_DF:
        return NormalDist().inv_cdf(probability)
    tail = 1.0 - probability
    low, high = 0.0, max(1.0, NormalDist().inv_cdf(probability))
    while t_upper_tail(high, degrees_of_freedom) > tail:
        low, high = high, 2.0 * high
    for _ in range(200):
        middle = (low + high) / 2
        if t_upper_tail(middle, degrees_of_freedom) > tail:
            low = middle
        else:
            high = middle
        if high - low <= 1e-12 * high:
            break
    return (low + high) / 2


def satterthwaite_df(terms: Iterable[tuple[float, float]]) -> float:
    """Welch–Satterthwaite degrees of freedom of a variance that is a sum of independent terms, each given as
    `(variance, its degrees of freedom)`: (Σ v)² / Σ (v² / df). Terms with no variance drop out; with none left
    (the sum is 0) the smallest df is returned (the interval is then a point whatever t is).

    >>> satterthwaite_df([(1.0, 10)]), satterthwaite_df([(1.0, 2), (1.0, 2)]), satterthwaite_df([(0.0, 3), (4.0, 2)])
    (10.0, 4.0, 2.0)
    >>> round(satterthwaite_df([(0.25, 399), (1.0, 2)]), 2)  # a seed term with 2 df dominates
    3.12
    """
    terms = [(float(variance), float(df)) for variance, df in terms]
    if not terms:
        raise ValueError("no variance terms")
    weighted = [(variance, df) for variance, df in terms if variance > 0]
    if not weighted:
        return min(df for _, df in terms)
    if any(df <= 0 for _, df in weighted):
        raise ValueError("a variance term with no degrees of freedom")
    return sum(variance for variance, _ in weighted) ** 2 / sum(variance**2 / df for variance, df in weighted)


def paired_degrees_of_freedom(questions: int, question_standard_error: float, per_run: Sequence[float]) -> float | None:
    """The df of a paired difference's standard error (`paired_difference`): questions − 1 for one pair of models;
    with several runs (seeds), Welch–Satterthwaite over the question term (df questions − 1) and the seed term
    var(per_run) / runs (df runs − 1). None with fewer than 2 questions.

    >>> paired_degrees_of_freedom(120, 0.034, [0.22])
    119.0
    >>> round(paired_degrees_of_freedom(400, 0.01, [0.01, 0.03, 0.02]), 2)  # 399 df alone; 2 for the seed term
    30.62
    """
    if questions < 2:
        return None
    terms = [(question_standard_error**2, questions - 1)]
    if len(per_run) > 1:
        mean = sum(per_run) / len(per_run)
        run_variance = sum((value - mean) ** 2 for value in per_run) / (len(per_run) - 1)
        terms.append((run_variance / len(per_run), len(per_run) - 1))
    return satterthwaite_df(terms)


def t_interval(
    mean: float, standard_error: float, degrees_of_freedom: float | None, level: float = 0.95
) -> tuple[list[float], float | None]:
    """`([low, high], t)`: mean ± t((1 + level) / 2, df) · s.e., rounded to 4 places; a point (and t None) without
    degrees of freedom.

    >>> interval, t = t_interval(0.5, 0.1, 2)
    >>> interval, round(t, 3), t_interval(0.5, 0.1, None)
    ([0.0697, 0.9303], 4.303, ([0.5, 0.5], None))
    """
    if degrees_of_freedom is None or degrees_of_freedom <= 0:
        return [round(mean, 4), round(mean, 4)], None
    t = t_quantile((1 + level) / 2, degrees_of_freedom)
    return [round(mean - t * standard_error, 4), round(mean + t * standard_error, 4)], t


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
    which is conservative (per_run's variance also holds some question noise).

    95% interval: a t interval, mean ± t(0.975, df) · s.e., with `degrees_of_freedom` = questions − 1 for one
    model against one, or Welch–Satterthwaite over the two terms (df questions − 1 and runs − 1) with several
    runs (`paired_degrees_of_freedom`); `t` is the quantile used.

    >>> paired_difference({"q1": {"s1": True, "s2": False}, "q2": {"s3": False}},
    ...                   {"q1": {"s1": True, "s2": True}, "q2": {"s3": True}, "q3": {"s4": True}})
    {'questions': 2, 'samples': 3, 'a': 0.25, 'b': 1.0, 'difference': 0.75, 'standard_error': 0.25, \
'question_standard_error': 0.25, 'interval': [-2.4266, 3.9266], 'per_run': [0.75], 'degrees_of_freedom': 1.0, \
't': 12.7062}
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
    degrees_of_freedom = paired_degrees_of_freedom(count, error, per_run)
    interval, t = t_interval(mean, total, degrees_of_freedom)
    return {
        "questions": count,
        "samples": sum(len(shared) for shared in shared_by_question.values()),
        "a": sum(accuracies_a) / count if count else 0.0,
        "b": sum(accuracies_b) / count if count else 0.0,
        "difference": mean,
        "standard_error": total,
        "question_standard_error": error,
        "interval": interval,
        "per_run": per_run,
        "degrees_of_freedom": None if degrees_of_freedom is None else round(degrees_of_freedom, 2),
        "t": None if t is None else round(t, 4),
    }


def verdict(interval: Sequence[float], expected: int = 1) -> str:
    """A claim's verdict from the 95% (t) interval of (expected better − expected worse).

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
