"""`dasd select`'s first pass: the candidates of a scored file, each kept as a small key.

    found = read_candidates(config.input, config)        # Candidates: keys + what was left out, and why
    for record in candidate_records(path, config, Candidates([]), keep_id=wanted.__contains__): …

A candidate is a scored response that passed filtering (a record with `filter.keep == false` is counted, never
chosen), at one of `temperatures`, in one of `draws` (with `draw_size`: by its `sample_index`), re-classified at
another threshold when `beta` / `space` say so (`reclassified`). `candidate_key` keeps what the selection needs of it
(id, question, temperature, domain, DAS counts, the strategy's score): memory grows with the candidates, not with
their tokens. The functions read select's config (`dasd.stages.select.SelectConfig`) through `SelectSettings`.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..data.io import iter_records
from ..data.records import check_fields
from ..errors import InputError
from ..scoring.sentence_scores import classify, strategy_score


class SelectSettings(Protocol):
    """What the selection parts read of `dasd select`'s config (`dasd.stages.select.SelectConfig`, whose fields
    describe each)."""

    input: str
    strategy: str
    k: int
    per_temperature: bool
    k_per_temperature: dict[float, int] | None
    budget_per_temperature: dict[float, int | dict[str, int]] | None
    budget: int | None
    rejected: str | None
    budget_order: str
    max_per_question: int | None
    seed: int
    temperatures: list[float] | None
    beta: float | None
    space: str | None
    compare_with: str | None
    boosted_scores: str | None
    max_boosted_share: float | None
    boosted_alpha: float
    draw_size: int | None
    draws: list[int] | None

    def compiled_patterns(self) -> tuple[re.Pattern[str], ...]: ...


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


@dataclass
class Candidates:
    records: list[dict[str, Any]]  # one small key per candidate (`candidate_key`), never the whole record
    not_candidates: int = 0  # rejected by dasd filter
    other_temperature: int = 0  # not at one of `temperatures`
    other_draw: int = 0  # with draw_size: in a draw not listed in `draws`
    draws: Counter = field(default_factory=Counter)  # with draw_size: records (candidates or rejected) per draw
    last_index: dict[Any, int] = field(default_factory=dict)  # with draw_size: temperature -> largest sample index
    rejected_groups: set[tuple] = field(default_factory=set)  # (question, temperature) of the rejected ones


def group_of(record: dict[str, Any], config: SelectSettings, draw: int | None = None) -> tuple:
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


def candidate_key(record: dict[str, Any], config: SelectSettings) -> dict[str, Any]:
    """What select keeps of a candidate between its two passes: id, question, temperature, domain, DAS counts and
    the strategy's score — a few hundred bytes, where the record with its log-probs is ~200 B per token
    (`compare_with` and `boosted_scores` read sentences in join passes of their own).

    >>> from types import SimpleNamespace
    >>> config = SimpleNamespace(strategy="count", seed=0, draw_size=None)  # select's defaults
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
    if config.draw_size is not None:  # checked by candidate_records
        key["draw"] = draw_of(record["sample_index"], config.draw_size)
    return key


def candidate_records(path: str, config: SelectSettings, found: Candidates, keep_id=None):
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


def _counted_draw(record: dict[str, Any], config: SelectSettings, found: Candidates, *, path: str, line: int | None):
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


def _at_temperatures(record: dict[str, Any], config: SelectSettings) -> bool:
    """Whether the record was sampled at one of `temperatures` (always, without them)."""
    if config.temperatures is None:
        return True
    temperature = record.get("temperature")
    return isinstance(temperature, (int, float)) and any(
        abs(float(temperature) - wanted) < 1e-9 for wanted in config.temperatures
    )


def read_candidates(path: str, config: SelectSettings) -> Candidates:
    """Pass 1: the key of each candidate of `path` (`candidate_key`); memory grows with the candidates, not with
    their tokens."""
    found = Candidates([])
    for record in candidate_records(path, config, found):
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
