"""Which candidates `dasd select` keeps: the best k of each group by the strategy's score, ties in a seeded random
order, then the caps and budgets (`choose`); and what the summary says of them (`group_coverage`,
`kept_and_dropped`).

    selected = choose(candidates, config)                # candidate keys (`dasd.selection.candidates`), each with
                                                          # its `select` entry: strategy, rank, score (, draw)

Budgets keep the best of the selected records, in `budget_order` (`budget_key`): at most `max_per_question` per
question over all temperatures (`per_question_capped`), then per temperature — a number, or a number per domain
(`capped`) — then a global `budget`. Settings per temperature are read with `for_temperature`.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from ..data.records import stable_seed
from .candidates import SelectSettings, group_of


def for_temperature(mapping: dict[float, Any] | None, temperature: Any, default: Any = None) -> Any:
    """The entry of a per-temperature setting for `temperature` (floats compared within 1e-9), else `default`.

    >>> for_temperature({0.6: 1, 1.0: 3}, 1.0), for_temperature({0.6: 1}, 0.7, default=2)
    (3, 2)
    """
    if mapping is None or not isinstance(temperature, (int, float)):
        return default
    for key, value in mapping.items():
        if abs(float(key) - float(temperature)) < 1e-9:
            return value
    return default


def capped(records: list[dict[str, Any]], caps: dict[float, int | dict[str, int]], rank_key) -> list[dict[str, Any]]:
    """`records` with at most the cap of each temperature (or of each domain at that temperature), the best by
    `rank_key` kept; order preserved.

    >>> rows = [{"id": str(i), "temperature": 1.0, "domain": "math" if i % 2 else "code"} for i in range(6)]
    >>> [r["id"] for r in capped(rows, {1.0: {"math": 1, "code": 2}}, rank_key=lambda r: int(r["id"]))]
    ['0', '1', '2']
    >>> [r["id"] for r in capped(rows, {1.0: 4}, rank_key=lambda r: int(r["id"]))]
    ['0', '1', '2', '3']
    """
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    limits: dict[tuple, int] = {}
    for record in records:
        cap = for_temperature(caps, record.get("temperature"))
        if cap is None:
            continue
        if isinstance(cap, dict):
            domain = record.get("domain") or "other"
            key = (record.get("temperature"), domain)
            limits[key] = cap.get(domain, 0)
        else:
            key = (record.get("temperature"), None)
            limits[key] = cap
        groups[key].append(record)
    dropped = {record["id"] for key, group in groups.items() for record in sorted(group, key=rank_key)[limits[key] :]}
    return [record for record in records if record["id"] not in dropped]


def per_question_capped(records: list[dict[str, Any]], cap: int, rank_key) -> list[dict[str, Any]]:
    """`records` with at most `cap` per question (over all temperatures), the best by `rank_key` kept; order
    preserved.

    >>> rows = [{"id": f"{q}{i}", "question_id": q, "score": i} for q in "ab" for i in range(3)]
    >>> [r["id"] for r in per_question_capped(rows, 2, rank_key=lambda r: -r["score"])]
    ['a1', 'a2', 'b1', 'b2']
    """
    groups: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        groups[record["question_id"]].append(record)
    dropped = {record["id"] for group in groups.values() for record in sorted(group, key=rank_key)[cap:]}
    return [record for record in records if record["id"] not in dropped]


def budget_key(order: str, rank_key):
    """The order in which the caps keep selected records: `score` — `rank_key` (best score first, across
    questions); `rank` — each record's rank within its question and temperature first (every question's best
    before any question's second), then `rank_key`.

    >>> rows = [{"id": "a", "score": 9, "select": {"rank": 0}}, {"id": "b", "score": 8, "select": {"rank": 1}},
    ...         {"id": "c", "score": 2, "select": {"rank": 0}}]
    >>> by_score = lambda r: -r["score"]
    >>> [r["id"] for r in sorted(rows, key=budget_key("score", by_score))]
    ['a', 'b', 'c']
    >>> [r["id"] for r in sorted(rows, key=budget_key("rank", by_score))]
    ['a', 'c', 'b']
    """
    if order == "rank":
        return lambda record: (record["select"]["rank"], rank_key(record))
    return rank_key


def choose(candidates: list[dict[str, Any]], config: SelectSettings) -> list[dict[str, Any]]:
    """The best `k` of each question (and temperature) by the strategy (candidate keys, `candidate_key`), within the
    budgets, in output order, each with its `select` entry (strategy, rank, score)."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for record in candidates:
        groups[group_of(record, config)].append(record)

    def rank_key(record: dict[str, Any]) -> tuple[float, float]:
        # higher score first; ties in a seeded random order
        return (-record["score"], stable_seed(config.seed, "tie", record["id"]) / float(1 << 63))

    selected: list[dict[str, Any]] = []
    for key in sorted(groups, key=lambda key: (str(key[0]), str(key[1]), *key[2:])):
        ranked = sorted(groups[key], key=rank_key)
        k = for_temperature(config.k_per_temperature, key[1], default=config.k)
        for rank, record in enumerate(ranked[:k]):
            entry = {"strategy": config.strategy, "rank": rank, "score": record["score"]}
            if config.draw_size is not None:
                entry["draw"] = record["draw"]
            selected.append({**record, "select": entry})
    fill = budget_key(config.budget_order, rank_key)
    if config.max_per_question is not None:
        selected = per_question_capped(selected, config.max_per_question, fill)
    if config.budget_per_temperature:
        selected = capped(selected, config.budget_per_temperature, fill)
    if config.budget is not None and len(selected) > config.budget:
        selected = sorted(selected, key=fill)[: config.budget]
        selected.sort(
            key=lambda record: (
                str(record["question_id"]),
                str(record.get("temperature")),
                record.get("draw", 0),
                record["select"]["rank"],
            )
        )
    return selected


def group_coverage(candidates: list[dict[str, Any]], rejected_groups: set[tuple], config: SelectSettings) -> dict:
    """How many selection groups (question × temperature) have a candidate, how many hold only responses the filter
    rejected, and the records k per group would give over all of them (what a selection with a candidate in every
    group keeps, before budgets).

    >>> from types import SimpleNamespace
    >>> config = SimpleNamespace(k=1, k_per_temperature={1.0: 2}, per_temperature=True, draw_size=None)
    >>> keys = [{"question_id": "a", "temperature": 0.6}, {"question_id": "a", "temperature": 1.0}]
    >>> group_coverage(keys, {("a", 1.0), ("b", 1.0)}, config)
    {'with_candidates': 2, 'without_candidates': 1, 'records_at_k': 5}
    """
    with_candidates = {group_of(record, config) for record in candidates}
    every = with_candidates | rejected_groups
    return {
        "with_candidates": len(with_candidates),
        "without_candidates": len(every - with_candidates),
        "records_at_k": sum(for_temperature(config.k_per_temperature, key[1], default=config.k) for key in every),
    }


def _bin(value: int, edges: list[int]) -> str:
    lower = max((edge for edge in edges if edge <= value), default=edges[0])
    higher = [edge for edge in edges if edge > lower]
    return f"{lower}-{higher[0] - 1}" if higher else f"{lower}+"


def kept_and_dropped(candidates: list[dict[str, Any]], kept_ids: set[str], bins: list[int]) -> dict[str, Any]:
    """Per temperature, the kept and the dropped candidates: how many, their mean teacher-sentence count and its
    histogram over `bins` (lower edges) — the summary's `per_temperature`.

    >>> keys = [{"id": "a", "temperature": 0.6, "das": {"teacher": 3}}, {"id": "b", "temperature": 0.6,
    ...         "das": {"teacher": 0}}]
    >>> kept_and_dropped(keys, {"a"}, [0, 1, 5])["0.6"]["kept"]
    {'count': 1, 'mean_teacher_sentences': 3.0, 'histogram': {'1-4': 1}}
    """
    histogram: dict[str, dict[str, Counter]] = defaultdict(lambda: {"kept": Counter(), "dropped": Counter()})
    means: dict[str, dict[str, list[int]]] = defaultdict(lambda: {"kept": [], "dropped": []})
    for record in candidates:
        if not isinstance(record.get("das"), dict):
            continue
        temperature = f"{record.get('temperature')}"
        side = "kept" if record["id"] in kept_ids else "dropped"
        histogram[temperature][side][_bin(record["das"]["teacher"], bins)] += 1
        means[temperature][side].append(record["das"]["teacher"])
    return {
        temperature: {
            side: {
                "count": len(means[temperature][side]),
                "mean_teacher_sentences": round(sum(means[temperature][side]) / len(means[temperature][side]), 3)
                if means[temperature][side]
                else None,
                "histogram": dict(histogram[temperature][side]),
            }
            for side in ("kept", "dropped")
        }
        for temperature in sorted(histogram)
    }
