"""`dasd select`: per question, keep the responses richest in teacher sentences (DAS) — or the RS baseline.

    dasd select input=runs/x/scored.jsonl output=runs/x/selected.jsonl strategy=count k=1
    dasd select input=runs/x/scored.jsonl output=runs/x/random.jsonl strategy=random k=1   # RS baseline

Candidates are a question's scored responses that passed filtering (a record with
`filter.keep == false` is never selected; without a filter every record is a candidate), grouped per
temperature by default, so that both SFT stages get data for each question. Strategies:

* `count` (default; the companion study found it best): most teacher sentences;
* `ratio`: largest share of teacher sentences;
* `longest`: most teacher tokens (characters when there are no log-probs);
* `random`: random sampling with the same budget (the RS baseline);
* `anti_das`: fewest teacher sentences — count's mirror, a control that bounds it from below (ties as count's);
* `oracle`: most sentences matching one of `oracle_patterns` (regular expressions over each sentence's text) — for a
  demo world whose skill is labelled in its text, an upper bound on what any rule can select; a real run has no
  such labels.

A response sampled with `reasoning_format: none` has no reasoning: `dasd score` counted its answer's sentences (its
chain of thought is its answer), and it is ranked by those like any other.

Ties are broken by a seeded random order, so the result is deterministic for a seed. Budgets then keep the
best of the selected records (a random subset for `random`): at most `max_per_question` per question over all
temperatures, then per temperature (`budget_per_temperature`: a number, or a number per domain — the report kept
105K responses at T=0.6 and 330K at T=1.0, with different domain mixes), then an optional global `budget`.
`k_per_temperature` sets k for each temperature.

    dasd select … 'k_per_temperature={0.6: 1, 1.0: 2}' \\
        'budget_per_temperature={0.6: 105, 1.0: {math: 200, code: 130}}'

`budget_order` says which records a budget keeps. `score` (default, as before it existed): the best scores across
questions — with `count`, raw teacher-sentence counts, which favours questions with long solutions (more sentences,
so more teacher sentences) and can leave other questions with nothing. `rank`: every question's best (rank 0 within
its question and temperature) before any question's second, ties by score — a budget then spreads over questions.

    dasd select … k=2 'budget_per_temperature={1.0: 300}' budget_order=rank max_per_question=3

Given the records the filter rejected (`rejected=`: `dasd filter`'s `<name>.rejected` file beside its output; or
records with `filter.keep: false` in the input), the summary counts the question × temperature groups left without a
candidate, and the records k per group would give if none were (`groups`): a selection from the student's own
rollouts is smaller than one from the teacher's where the student never answered correctly.

    dasd select input=runs/x/self/filtered.jsonl rejected=runs/x/self/filtered.rejected.jsonl strategy=random

Fresh draws (`draw_size` = m): a question × temperature's responses are split by their sample index (`sample_index`,
written by `dasd sample`) into draws of m — draw d holds sample indices [d·m, (d+1)·m) — and k (k_per_temperature)
is kept per question × temperature × draw, from the draws listed in `draws` (default: every draw present): each
draw selects as if only its m responses had been sampled (each sample's seed derives from its id, i.e. its index,
so draw 0 of 16 sampled is exactly what sampling 8 gives). Budgets rank within the draw; each kept record's `select`
entry says its `draw` (`dasd build-sft stage_by=draw` trains draw 0 in stage 1, draw 1 in stage 2). The recipe on
the first 8 of 16 sampled per temperature, and a two-stage control at one temperature where each stage is a fresh
best-of-8 (not the runner-up of the same 8, as `k=2` with `stage_by=rank` gives):

    dasd select … draw_size=8 'draws=[0]'
    dasd select … 'temperatures=[1.0]' draw_size=8 'draws=[0, 1]'   # then: dasd build-sft … stage_by=draw

The output (JSONL, or `*.parquet`) is rewritten whole (atomically) on each run; the summary holds the histogram of
teacher-sentence counts of kept vs dropped responses per temperature. Memory does not grow with the responses'
tokens: a first pass keeps a small key per candidate (`candidate_key`), a second copies the chosen records.
"""

from __future__ import annotations

import functools
import glob
import json
import math
import os
import re
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from ..config import ADDED, RecordOutput, StageConfig, dump_config
from ..data.io import dumps_record, iter_records, write_records_atomic, write_summary
from ..data.records import check_fields, in_shard, stable_seed
from ..data.summaries import SelectSummary
from ..errors import ConfigError, InputError
from ..naming import sidecar
from ..progress import format_summary
from ..scoring.sentence_scores import (
    add_to_confusion,
    classify,
    classify_provenance,
    empty_confusion,
    selection_overlap,
    strategy_score,
)


class SelectConfig(StageConfig):
    input: str = Field(..., description="scored response records (a glob reads several shard files)")
    output: RecordOutput = Field(
        ..., description="selected records: JSONL, or *.parquet (a folder of parts); rewritten whole on each run"
    )
    strategy: Literal["count", "ratio", "longest", "random", "anti_das", "oracle"] = Field(
        "count",
        description="count: most teacher sentences (DAS); ratio: largest teacher share; longest: most "
        "teacher tokens; random: the RS baseline; anti_das: fewest teacher sentences (count's mirror, a control); "
        "oracle: most sentences matching oracle_patterns (demo worlds only: an upper bound)",
    )
    oracle_patterns: list[str] | None = Field(
        None,
        validate_default=True,
        description="with strategy=oracle (required there, non-empty): regular expressions (Python `re.search`) "
        "matched against each sentence's text (`sentences` of dasd score: their part of reasoning/content); a "
        "record's score is how many of its sentences match one. For demo worlds, whose skill is labelled in the "
        "text (e.g. the demo world's comparisons): an upper bound on what a selection rule can find — a real run "
        "has no such labels",
        json_schema_extra=ADDED,
    )
    k: int = Field(1, ge=1, description="responses kept per question (per temperature when per_temperature)")
    per_temperature: bool = Field(True, description="select separately at each temperature (stage 1 / stage 2 data)")
    k_per_temperature: dict[float, int] | None = Field(
        None,
        description="k for each temperature, e.g. {0.6: 1, 1.0: 2} (others keep `k`); needs per_temperature",
    )
    budget_per_temperature: dict[float, int | dict[str, int]] | None = Field(
        None,
        description="cap on the selected records of each temperature — a number, or a number per domain, e.g. "
        "{0.6: 105, 1.0: {math: 200, code: 130}} (the report's stages kept 105K at T=0.6 and 330K at T=1.0, "
        "different domain mixes); the best by the strategy are kept; temperatures not named are not capped",
    )
    budget: int | None = Field(None, ge=1, description="optional cap on the total number of selected records")
    rejected: str | None = Field(
        None,
        description="the records dasd filter rejected from the same responses (its <name>.rejected file): never "
        "selected, read to count the question × temperature groups left without a candidate (summary `groups`)",
        json_schema_extra=ADDED,
    )
    budget_order: Literal["score", "rank"] = Field(
        "score",
        description="which records the caps (max_per_question, budget_per_temperature, budget) keep: score = the "
        "best scores across questions (with count: raw teacher-sentence counts, favouring questions with long "
        "solutions); rank = every question's best (its rank within question and temperature) before any "
        "question's second, ties by score",
        json_schema_extra=ADDED,
    )
    max_per_question: int | None = Field(
        None,
        ge=1,
        description="cap on the records kept per question over all temperatures (applied before the budgets, in "
        "budget_order)",
        json_schema_extra=ADDED,
    )
    seed: int = Field(0, description="seed of the random strategy and of tie-breaking")
    temperatures: list[float] | None = Field(
        None, description="only candidates sampled at these temperatures (e.g. [0.6] for a T=0.6-only arm)"
    )
    beta: float | None = Field(
        None,
        description="re-classify every sentence with this threshold before counting (a DAS threshold sweep "
        "without re-scoring); default: the types `dasd score` wrote",
    )
    space: Literal["prob", "logratio"] | None = Field(
        None,
        description="space of `beta` when re-classifying: prob (p_T - p_S) or logratio (log p_T - log p_S; a "
        "p_T/p_S cut-off c is beta = ln c)",
    )
    compare_with: str | None = Field(
        None,
        description="the same candidates scored by another student (e.g. `dasd score … student.model=smollm2`): "
        "selected there with the same settings, the summary gives the overlap of the two selections (Jaccard of "
        "the kept ids, overall and per temperature) and how often the two scorings give a sentence the same class "
        "— does a DAS selection transfer across students?",
        json_schema_extra=ADDED,
    )
    boosted_scores: str | None = Field(
        None,
        description="the same candidates scored with a distilled model as the student (e.g. the stage-1 checkpoint: "
        "`dasd score … student.model=runs/x/train/das/low_temp/final`): each sentence is classed as `dasd "
        "provenance` does — teacher, student, shared or boosted (the teacher and the original student agree, the "
        "distilled model moved away from both) — and the summary gives the boosted share of kept and dropped "
        "candidates; with max_boosted_share, candidates above it are not selected",
        json_schema_extra=ADDED,
    )
    max_boosted_share: float | None = Field(
        None,
        ge=0,
        le=1,
        description="with boosted_scores: leave out candidates whose share of boosted sentences is above this "
        "(the report's open question 4: find boosted sentences before training, not after)",
        json_schema_extra=ADDED,
    )
    boosted_alpha: float = Field(
        0.1,
        ge=0,
        description="with boosted_scores: provenance's alpha (beta and space are this stage's)",
        json_schema_extra=ADDED,
    )
    draw_size: int | None = Field(
        None,
        ge=1,
        description="split each question × temperature's responses into fresh draws of this many by their sample "
        "index (`sample_index`, written by dasd sample): draw d holds indices [d·draw_size, (d+1)·draw_size), and k "
        "is kept per question × temperature × draw, as if each draw had been sampled alone; the select entry of a "
        "kept record gains `draw`. Default: no draws (every response of a question × temperature competes)",
        json_schema_extra=ADDED,
    )
    draws: list[int] | None = Field(
        None,
        description="with draw_size: only the responses of these draws are candidates, e.g. [0] (the first "
        "draw_size sampled: what a run sampling draw_size gives) or [0, 1] (two fresh draws, for build-sft's "
        "stage_by=draw); default: every draw present",
        json_schema_extra=ADDED,
    )
    histogram_bins: list[int] = Field(
        default_factory=lambda: [0, 1, 2, 5, 10, 20, 50, 100, 200],
        description="lower edges of the teacher-sentence-count histogram bins in the summary",
    )

    @field_validator("oracle_patterns")
    @classmethod
    def _oracle_needs_patterns(cls, patterns: list[str] | None, info: ValidationInfo) -> list[str] | None:
        if info.data.get("strategy") == "oracle" and not patterns:
            raise ValueError(
                "strategy=oracle needs a non-empty list of regular expressions matched against each sentence's text "
                "(the world's labels of skill)"
            )
        for pattern in patterns or []:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a regular expression ({exc})") from None
        return patterns

    @field_validator("draws")
    @classmethod
    def _draws_need_a_size(cls, draws: list[int] | None, info: ValidationInfo) -> list[int] | None:
        if draws is None:
            return None
        if info.data.get("draw_size") is None:
            raise ValueError("draws needs draw_size (how many sample indices make one draw)")
        if not draws or any(draw < 0 for draw in draws) or len(set(draws)) != len(draws):
            raise ValueError(f"must be a non-empty list of distinct draw numbers >= 0, got {draws}")
        return sorted(draws)

    def compiled_patterns(self) -> tuple[re.Pattern[str], ...]:
        """`oracle_patterns` compiled, once per config (select asks for them for every candidate)."""
        return _compiled(tuple(self.oracle_patterns or ()))


@functools.lru_cache(maxsize=8)
def _compiled(patterns: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(pattern) for pattern in patterns)


def reclassified(record: dict[str, Any], beta: float, space: str) -> dict[str, Any]:
    """The record with its sentences' types and `das` counts recomputed at another threshold.

    >>> record = {"sentences": [{"teacher_logprob": -0.1, "student_logprob": -1.0, "type": "shared"}],
    ...           "das": {"teacher": 0, "student": 0, "shared": 1, "n": 1}}
    >>> reclassified(record, beta=0.693, space="logratio")["das"]
    {'teacher': 1, 'student': 0, 'shared': 0, 'n': 1}
    """
    sentences = [
        {**sentence, "type": classify(sentence["teacher_logprob"], sentence["student_logprob"], beta=beta, space=space)}
        for sentence in record["sentences"]
    ]
    counts = Counter(sentence["type"] for sentence in sentences)
    das = {kind: counts.get(kind, 0) for kind in ("teacher", "student", "shared")}
    return {**record, "sentences": sentences, "das": {**das, "n": len(sentences)}}


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


def _bin(value: int, edges: list[int]) -> str:
    lower = max((edge for edge in edges if edge <= value), default=edges[0])
    higher = [edge for edge in edges if edge > lower]
    return f"{lower}-{higher[0] - 1}" if higher else f"{lower}+"


@dataclass
class Candidates:
    records: list[dict[str, Any]]  # one small key per candidate (`candidate_key`), never the whole record
    not_candidates: int = 0  # rejected by dasd filter
    other_temperature: int = 0  # not at one of `temperatures`
    other_draw: int = 0  # with draw_size: in a draw not listed in `draws`
    draws: Counter = field(default_factory=Counter)  # with draw_size: records (candidates or rejected) per draw
    last_index: dict[Any, int] = field(default_factory=dict)  # with draw_size: temperature -> largest sample index
    rejected_groups: set[tuple] = field(default_factory=set)  # (question, temperature) of the rejected ones


def group_of(record: dict[str, Any], config: SelectConfig, draw: int | None = None) -> tuple:
    """The group a record is selected in: (question, temperature), or (question, None) when not per_temperature;
    with draw_size, its draw too (`draw`, else the candidate key's): (question, temperature, draw)."""
    group = (record["question_id"], record.get("temperature") if config.per_temperature else None)
    return group if config.draw_size is None else (*group, record["draw"] if draw is None else draw)


def draw_of(index: int, draw_size: int) -> int:
    """The fresh draw a response belongs to: draw d holds sample indices [d·draw_size, (d+1)·draw_size). Each
    sample's seed derives from its index, so draw 0 is what sampling `draw_size` alone gives, draw 1 a fresh
    draw of as many.

    >>> [draw_of(index, 8) for index in (0, 7, 8, 15, 16)]
    [0, 0, 1, 1, 2]
    """
    return index // draw_size


def sample_index(record: dict[str, Any], *, path: str, line: int | None) -> int:
    """The record's `sample_index` (`dasd sample` writes it); one-line `InputError` when it has none.

    >>> sample_index({"id": "q:t1:3", "sample_index": 3}, path="x.jsonl", line=1)
    3
    >>> sample_index({"id": "q:t1:3"}, path="x.jsonl", line=1)
    Traceback (most recent call last):
    ...
    dasd.errors.InputError: x.jsonl:1: field 'sample_index': missing: draw_size splits responses into draws by ...
    """
    index = record.get("sample_index")
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        problem = "missing" if index is None else f"{index!r} is not a sample index (an integer >= 0)"
        raise InputError(
            path,
            line,
            "sample_index",
            f"{problem}: draw_size splits responses into draws by it (dasd sample writes it)",
        )
    return index


def candidate_key(record: dict[str, Any], config: SelectConfig) -> dict[str, Any]:
    """What select keeps of a candidate between its two passes: id, question, temperature, domain, DAS counts and
    the strategy's score — a few hundred bytes, where the record with its log-probs is ~200 B per token
    (`compare_with` and `boosted_scores` read sentences in join passes of their own).

    >>> config = SelectConfig(input="x", output="y")
    >>> candidate_key({"id": "a", "question_id": "q", "temperature": 0.6, "das": {"teacher": 2, "n": 4},
    ...                "reasoning": "...", "teacher_logprobs": {}}, config)
    {'id': 'a', 'question_id': 'q', 'temperature': 0.6, 'domain': None, 'das': {'teacher': 2, 'n': 4}, 'score': 2.0}
    """
    patterns = config.compiled_patterns() if config.strategy == "oracle" else ()
    key = {
        "id": record["id"],
        "question_id": record["question_id"],
        "temperature": record.get("temperature"),
        "domain": record.get("domain"),
        "das": record.get("das"),
        "score": strategy_score(record, config.strategy, config.seed, patterns),
    }
    if config.draw_size is not None:  # checked by _candidate_records
        key["draw"] = draw_of(record["sample_index"], config.draw_size)
    return key


def _candidate_records(path: str, config: SelectConfig, found: Candidates, keep_id=None):
    """The input's records that select may choose from, checked and (with beta/space) re-classified, counting
    the ones it may not into `found` (one-line `InputError` on a bad record)."""
    needed = ("id", "question_id") + (("reasoning", "content") if config.strategy in ("longest", "oracle") else ())
    for line, record in iter_records(path, keep_id=keep_id):
        check_fields(record, needed, path=path, line=line)
        draw = None
        if config.draw_size is not None:
            draw = _counted_draw(record, config, found, path=path, line=line)
            if draw is None:
                continue
        if isinstance(record.get("filter"), dict) and record["filter"].get("keep") is False:
            found.not_candidates += 1
            if _at_temperatures(record, config):
                found.rejected_groups.add(group_of(record, config, draw))
            continue
        if config.strategy in ("count", "ratio", "anti_das") and not isinstance(record.get("das"), dict):
            raise InputError(
                path, line, "das", f"missing: strategy={config.strategy} needs scored records (run dasd score first)"
            )
        if config.strategy == "oracle" and not isinstance(record.get("sentences"), list):
            raise InputError(
                path, line, "sentences", "missing: strategy=oracle reads the sentences of scored records (dasd score)"
            )
        if config.temperatures is not None:
            temperature = record.get("temperature")
            if not isinstance(temperature, (int, float)):
                raise InputError(path, line, "temperature", "missing: `temperatures` selects by it")
            if not _at_temperatures(record, config):
                found.other_temperature += 1
                continue
        if config.beta is not None or config.space is not None:
            if not isinstance(record.get("sentences"), list):
                raise InputError(path, line, "sentences", "missing: re-classifying needs scored records")
            record = reclassified(record, config.beta if config.beta is not None else 0.1, config.space or "prob")
        yield record


def _counted_draw(record: dict[str, Any], config: SelectConfig, found: Candidates, *, path: str, line: int | None):
    """With draw_size: the record's draw, counted into `found` (records per draw, largest sample index per
    temperature); None, counted as `other_draw`, for a draw not listed in `draws`."""
    assert config.draw_size is not None
    index = sample_index(record, path=path, line=line)
    draw = draw_of(index, config.draw_size)
    if config.draws is not None and draw not in config.draws:
        found.other_draw += 1
        return None
    if _at_temperatures(record, config):
        found.draws[draw] += 1
        temperature = record.get("temperature")
        found.last_index[temperature] = max(found.last_index.get(temperature, -1), index)
    return draw


def partial_draws(last_index: dict[Any, int], draw_size: int, draws: list[int] | None) -> dict[str, int]:
    """The temperatures whose last draw in use looks partial — the largest sample index + 1 (the n sampled, unless
    the last samples failed) is not a multiple of draw_size — and that draw.

    >>> partial_draws({0.6: 15, 1.0: 11}, 8, None), partial_draws({1.0: 11}, 8, [0])
    ({'1.0': 1}, {})
    """
    partial = {}
    for temperature, last in last_index.items():
        if (last + 1) % draw_size and (draws is None or draw_of(last, draw_size) in draws):
            partial[str(temperature)] = draw_of(last, draw_size)
    return partial


def _at_temperatures(record: dict[str, Any], config: SelectConfig) -> bool:
    """Whether the record was sampled at one of `temperatures` (always, without them)."""
    if config.temperatures is None:
        return True
    temperature = record.get("temperature")
    return isinstance(temperature, (int, float)) and any(
        abs(float(temperature) - wanted) < 1e-9 for wanted in config.temperatures
    )


def read_candidates(path: str, config: SelectConfig) -> Candidates:
    """Pass 1: the key of each candidate of `path` (`candidate_key`); memory grows with the candidates, not with
    their tokens."""
    found = Candidates([])
    for record in _candidate_records(path, config, found):
        found.records.append(candidate_key(record, config))
    if config.rejected is not None and path == config.input:
        for line, record in iter_records(config.rejected):
            check_fields(record, ("id", "question_id"), path=config.rejected, line=line)
            draw = None
            if config.draw_size is not None:
                draw = _counted_draw(record, config, found, path=config.rejected, line=line)
                if draw is None:
                    continue
            found.not_candidates += 1
            if _at_temperatures(record, config):
                found.rejected_groups.add(group_of(record, config, draw))
    if not found.records and not found.not_candidates:
        if found.other_temperature:
            reason = f"no records at temperatures {config.temperatures}"
        elif found.other_draw:
            reason = f"no records in draws {config.draws} (draw_size {config.draw_size})"
        else:
            reason = "no records (empty file)"
        raise InputError(path, None, None, reason)
    if not found.records and path == config.input:
        # a selection of nothing trains nothing: say so here, not as build-sft's "empty file" one step later
        raise InputError(
            path,
            None,
            "filter",
            f"no candidate: dasd filter rejected all {found.not_candidates} responses"
            + (f" ({found.other_temperature} kept ones are at other temperatures)" if found.other_temperature else "")
            + " (the filter's summary says why; a self-distillation arm whose student answered nothing right has no "
            "rollout to keep)",
        )
    if config.draws is not None and path == config.input:
        empty = [draw for draw in config.draws if not found.draws[draw]]
        if empty:
            spans = ", ".join(
                f"{d} (sample indices {d * config.draw_size}-{(d + 1) * config.draw_size - 1})" for d in empty
            )
            raise InputError(
                path,
                None,
                "sample_index",
                f"no records in draw {spans}: sample more per temperature, or list fewer draws",
            )
    return found


def write_selected(path: str, selected: list[dict[str, Any]], config: SelectConfig, output: Path) -> int:
    """Pass 2: the chosen records, whole, with their `select` entry, in `selected`'s order. The input is read once
    more keeping only the chosen ids (other lines are skipped before they are parsed); since its order is not the
    selection's, the chosen records go to a temporary JSONL beside the output first, then are copied from there in
    order by their byte offsets: memory is one record plus an offset per chosen id, disk one temporary copy of the
    selection."""
    entries = {key["id"]: key["select"] for key in selected}
    staging = output.with_name(output.name + ".unordered.jsonl")
    offsets: dict[str, tuple[int, int]] = {}
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(staging, "wb") as handle:
            for record in _candidate_records(path, config, Candidates([]), keep_id=entries.__contains__):
                if record["id"] not in entries or record["id"] in offsets:
                    continue
                line = (dumps_record({**record, "select": entries[record["id"]]}) + "\n").encode("utf-8")
                offsets[record["id"]] = (handle.tell(), len(line))
                handle.write(line)
        missing = [key["id"] for key in selected if key["id"] not in offsets]
        if missing:
            raise InputError(path, None, None, f"changed while select read it: {len(missing)} chosen ids are gone")
        with open(staging, "rb") as handle:

            def lines_in_order():
                for key in selected:
                    start, length = offsets[key["id"]]
                    handle.seek(start)
                    yield handle.read(length)

            if str(output).endswith(".parquet"):
                return write_records_atomic(output, (json.loads(line) for line in lines_in_order()))
            partial = output.with_name(output.name + ".tmp")  # JSONL: the lines as they are, nothing parsed again
            with open(partial, "wb") as sink:
                sink.writelines(lines_in_order())
            os.replace(partial, output)
            return len(selected)
    finally:
        staging.unlink(missing_ok=True)


def choose(candidates: list[dict[str, Any]], config: SelectConfig) -> list[dict[str, Any]]:
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


def group_coverage(candidates: list[dict[str, Any]], rejected_groups: set[tuple], config: SelectConfig) -> dict:
    """How many selection groups (question × temperature) have a candidate, how many hold only responses the filter
    rejected, and the records k per group would give over all of them (what a selection with a candidate in every
    group keeps, before budgets).

    >>> config = SelectConfig(input="x", output="y", k_per_temperature={1.0: 2})
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


JOIN_BYTES = 2 << 30  # file bytes a join pass loads at most (one partition of the other file's sentences)


def _bytes(path: str) -> int:
    """The bytes of a record input: a file, a Parquet folder, or the files a glob matches (0 for a Hub dataset)."""
    matches = sorted(glob.glob(path)) if any(char in path for char in "*?[") else [path]
    total = 0
    for match in map(Path, matches):
        if match.is_dir():
            total += sum(part.stat().st_size for part in match.rglob("*") if part.is_file())
        elif match.is_file():
            total += match.stat().st_size
    return total


def join_partitions(path: str) -> list[tuple[int, int] | None]:
    """The passes of a join that loads `path`'s sentences a part at a time: records whose id hashes to part i of n
    (`in_shard`), n growing with the file (JOIN_BYTES each); [None] — one pass, everything — for a small file.

    >>> join_partitions("/nonexistent.jsonl")
    [None]
    """
    parts = max(1, math.ceil(_bytes(path) / JOIN_BYTES))
    return [None] if parts == 1 else [(index, parts) for index in range(parts)]


def boosted_shares(candidate_ids: list[str], config: SelectConfig) -> dict[str, float | None]:
    """Each candidate's share of boosted sentences: its sentences (teacher and original-student log-probs from the
    input) classed with the distilled model's log-prob of the same span from `boosted_scores` (`dasd provenance`'s
    classes); None for a candidate that file lacks. A join of the two files a partition of ids at a time: memory is
    one partition's sentences, never every candidate's."""
    assert config.boosted_scores is not None
    wanted = set(candidate_ids)
    beta = config.beta if config.beta is not None else 0.1
    space = config.space or "prob"
    shares: dict[str, float | None] = {}
    for part in join_partitions(config.boosted_scores):
        mine = (lambda i, part=part: i in wanted and in_shard(i, part)) if part else wanted.__contains__
        distilled: dict[str, dict[tuple, float]] = {}
        for line, record in iter_records(config.boosted_scores, keep_id=(lambda i, part=part: in_shard(i, part))):
            check_fields(record, ("id", "sentences"), path=config.boosted_scores, line=line)
            distilled[str(record["id"])] = {
                (s.get("part"), s.get("start"), s.get("end")): s["student_logprob"] for s in record["sentences"]
            }
        for record in _candidate_records(config.input, config, Candidates([]), keep_id=mine):
            theirs = distilled.get(str(record["id"]))
            sentences = record.get("sentences") or []
            if theirs is None or not sentences:
                shares[record["id"]] = None
                continue
            classes = [
                classify_provenance(
                    s["teacher_logprob"],
                    s["student_logprob"],
                    theirs[key],
                    alpha=config.boosted_alpha,
                    beta=beta,
                    space=space,
                )
                for s in sentences
                if (key := (s.get("part"), s.get("start"), s.get("end"))) in theirs
            ]
            shares[record["id"]] = classes.count("boosted") / len(classes) if classes else None
    return {record_id: shares.get(record_id) for record_id in candidate_ids}  # the candidates' order


def sentence_confusion(common: set[str], config: SelectConfig) -> dict[str, dict[str, int]]:
    """With compare_with: the class of each sentence here against there, over the candidates both files hold — a
    join of the two files a partition of ids at a time (memory: one partition's sentences)."""
    assert config.compare_with is not None
    confusion = empty_confusion()
    for part in join_partitions(config.compare_with):
        both = (lambda i, part=part: i in common and in_shard(i, part)) if part else common.__contains__
        theirs = {
            record["id"]: record.get("sentences")
            for record in _candidate_records(config.compare_with, config, Candidates([]), keep_id=both)
        }
        for record in _candidate_records(config.input, config, Candidates([]), keep_id=both):
            if record["id"] in theirs:
                add_to_confusion(confusion, record.get("sentences"), theirs[record["id"]])
    return confusion


def run(config: SelectConfig) -> dict[str, Any]:
    # 1. The candidates (and, with compare_with, the same candidates as another student scored them).
    if config.k_per_temperature and not config.per_temperature:
        raise ConfigError("k_per_temperature needs per_temperature=true (k is counted per question and temperature)")
    if config.max_boosted_share is not None and config.boosted_scores is None:
        raise ConfigError("max_boosted_share needs boosted_scores (the candidates scored with the distilled model)")
    found = read_candidates(config.input, config)
    candidates, not_candidates, other_temperature = found.records, found.not_candidates, found.other_temperature
    other = read_candidates(config.compare_with, config).records if config.compare_with else None

    # 2. With boosted_scores: each candidate's share of boosted sentences; above max_boosted_share, not a candidate.
    boosted = None
    if config.boosted_scores is not None:
        shares = boosted_shares([record["id"] for record in candidates], config)
        excluded = {
            record_id
            for record_id, share in shares.items()
            if config.max_boosted_share is not None and share is not None and share > config.max_boosted_share
        }
        boosted = {
            "scores": config.boosted_scores,
            "max_share": config.max_boosted_share,
            "alpha": config.boosted_alpha,
            "excluded": len(excluded),
            "unscored": sum(share is None for share in shares.values()),
        }
        before = {record["question_id"] for record in candidates}
        candidates = [record for record in candidates if record["id"] not in excluded]
        # a question whose every candidate was left out gets no record at all: less data, not other data
        boosted["questions_emptied"] = len(before - {record["question_id"] for record in candidates})

    # 3. Select; with compare_with, select there too and compare.
    selected = choose(candidates, config)
    overlap = None
    if other is not None:
        common = {record["id"] for record in candidates} & {record["id"] for record in other}
        confusion = sentence_confusion(common, config)
        overlap = {
            "compare_with": config.compare_with,
            **selection_overlap(candidates, selected, other, choose(other, config), confusion=confusion),
        }
    kept_ids = {record["id"] for record in selected}
    groups = (
        group_coverage(candidates, found.rejected_groups, config)
        if not_candidates or config.rejected is not None
        else None
    )

    output = Path(config.output)
    write_selected(config.input, selected, config, output)
    dump_config(config, sidecar(output, "config", ".yaml"))

    histogram: dict[str, dict[str, Counter]] = defaultdict(lambda: {"kept": Counter(), "dropped": Counter()})
    means: dict[str, dict[str, list[int]]] = defaultdict(lambda: {"kept": [], "dropped": []})
    for record in candidates:
        if not isinstance(record.get("das"), dict):
            continue
        temperature = f"{record.get('temperature')}"
        side = "kept" if record["id"] in kept_ids else "dropped"
        histogram[temperature][side][_bin(record["das"]["teacher"], config.histogram_bins)] += 1
        means[temperature][side].append(record["das"]["teacher"])
    per_temperature = {
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
    summary: SelectSummary = {
        "stage": "select",
        "output": str(output),
        "strategy": config.strategy,
        "k": config.k,
        "questions": len({record["question_id"] for record in candidates}),
        "candidates": len(candidates),
        "excluded_by_filter": not_candidates,
        "excluded_by_temperature": other_temperature,
        "selected": len(selected),
        "per_temperature": per_temperature,
    }
    if config.k_per_temperature:
        summary["k_per_temperature"] = {str(t): k for t, k in config.k_per_temperature.items()}
    if config.budget_per_temperature:
        summary["budget_per_temperature"] = {str(t): cap for t, cap in config.budget_per_temperature.items()}
    if config.budget_order != "score":
        summary["budget_order"] = config.budget_order
    if config.max_per_question is not None:
        summary["max_per_question"] = config.max_per_question
    partial = None
    if config.draw_size is not None:
        summary["draw_size"] = config.draw_size
        summary["draws"] = config.draws if config.draws is not None else sorted(found.draws)
        summary["excluded_by_draw"] = found.other_draw
        partial = partial_draws(found.last_index, config.draw_size, config.draws)
        if partial:
            summary["partial_draws"] = partial
    if groups is not None:
        summary["groups"] = groups
    if overlap is not None:
        summary["overlap"] = overlap
    if boosted is not None:
        kept_shares = [shares[i] for i in kept_ids if shares.get(i) is not None]
        dropped_shares = [v for i, v in shares.items() if i not in kept_ids and v is not None]
        boosted["mean_share"] = {
            "kept": round(sum(kept_shares) / len(kept_shares), 6) if kept_shares else None,
            "not_kept": round(sum(dropped_shares) / len(dropped_shares), 6) if dropped_shares else None,
        }
        summary["boosted"] = boosted
    write_summary(output, summary)
    rows = [
        ("questions", summary["questions"]),
        ("candidates", len(candidates)),
        ("excluded by filter", not_candidates),
        ("selected", len(selected)),
    ]
    if config.draw_size is not None:
        rows.insert(
            3,
            (
                f"draws of {config.draw_size}",
                f"{', '.join(map(str, summary['draws']))} (k per question × temperature × draw; "
                f"{found.other_draw} responses in other draws left out)",
            ),
        )
    if groups is not None:
        rows.append(
            (
                "groups (question × temperature)",
                f"{groups['with_candidates']} with a candidate, {groups['without_candidates']} whose every response "
                f"the filter rejected (no record); k per group everywhere would be {groups['records_at_k']} records",
            )
        )
    for temperature, sides in per_temperature.items():
        label = "records without a temperature" if temperature == "None" else f"T={temperature}"  # e.g. released data
        for side in ("kept", "dropped"):
            info = sides[side]
            bars = ", ".join(
                f"{bin_}:{count}"
                for bin_, count in sorted(
                    info["histogram"].items(), key=lambda item: int(item[0].split("-")[0].rstrip("+"))
                )
            )
            if not info["count"]:  # e.g. nothing dropped: every question had no more than k candidates
                rows.append((f"{label} {side}", "0 responses"))
                continue
            rows.append(
                (
                    f"{label} {side}",
                    f"{info['count']} responses, mean teacher sentences {info['mean_teacher_sentences']}  [{bars}]",
                )
            )
    if boosted is not None:
        mean = {
            side: "n/a (none scored there)" if share is None else share for side, share in boosted["mean_share"].items()
        }
        excluded = (
            f"excluded above {config.max_boosted_share}: {boosted['excluded']}"
            if config.max_boosted_share is not None
            else "none excluded (no max_boosted_share)"
        )
        rows.append(
            (
                "boosted sentences",
                f"mean share kept {mean['kept']}, not kept {mean['not_kept']}; {excluded} "
                f"({boosted['unscored']} unscored there)",
            )
        )
    if overlap is not None:
        rows.append(("overlap with", config.compare_with))
        per_temperature_jaccard = ", ".join(f"T={t} {j:.3f}" for t, j in overlap["jaccard_per_temperature"].items())
        per_temperature_jaccard = f"; {per_temperature_jaccard}" if per_temperature_jaccard else ""
        rows.append(
            (
                "  selections' Jaccard",
                f"{overlap['jaccard']:.3f} ({overlap['selected_both']} kept by both of {overlap['selected_here']} "
                f"here, {overlap['selected_there']} there{per_temperature_jaccard})"
                if overlap["candidates_in_both"]
                else "no candidates in common to compare",
            )
        )
        agreement = overlap["sentences"]
        rows.append(
            (
                "  same sentence class",
                f"{agreement['agreement']:.3f} of {agreement['compared']} sentences; by class here: "
                + ", ".join(f"{kind} {share:.3f}" for kind, share in agreement["same_class_share"].items())
                if agreement["compared"]
                else "no sentence spans in common to compare",
            )
        )
    print(
        format_summary(f"dasd select ({config.strategy}, k={config.k}) -> {output}", rows), file=sys.stdout, flush=True
    )
    for temperature, draw in (partial or {}).items():
        print(
            f"warning: at T={temperature} draw {draw} looks partial: the largest sample index is not the last of a "
            f"draw of {config.draw_size} (sampled n not a multiple of draw_size?); it selects among fewer candidates",
            file=sys.stderr,
        )
    return summary
