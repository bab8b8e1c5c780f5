"""Sentence-level teacher vs student probabilities: which tokens make a sentence, a sentence's log-prob, its class.

Token -> sentence rule (the same for every tokenizer, so teacher and student sentences line up
although their tokens do not): a token belongs to the sentence that contains its first
non-whitespace character; a token made only of whitespace belongs to the next sentence (the last
one if none follows). Every token of a part thus lands in exactly one sentence.

Sentence log-prob = mean of its tokens' log-probs, so `exp(logprob)` is the geometric-mean token
probability. The token log-probs come from the token scorers (`dasd.scoring.token_scorers`).
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..data.records import PARTS, SENTENCE_TYPES, reasoning_in_answer, stable_seed


def assign_tokens(
    token_spans: Sequence[Sequence[int]], sentence_spans: Sequence[tuple[int, int]], text: str
) -> list[int]:
    """Sentence index of each token (see the module docstring for the rule)."""
    if not sentence_spans:
        return [-1] * len(token_spans)
    starts = [start for start, _ in sentence_spans]
    owners = []
    for start, end in token_spans:
        anchor = start
        while anchor < end and text[anchor].isspace():
            anchor += 1
        if anchor < end:
            index = bisect.bisect_right(starts, anchor) - 1  # sentence starting at or before the char
            owners.append(max(index, 0))
        else:
            # whitespace (or empty) token: the next sentence, else the last
            index = bisect.bisect_left(starts, start)
            owners.append(min(index, len(sentence_spans) - 1))
    return owners


def sentence_means(owners: list[int], logprobs: Sequence[float], count: int) -> list[float | None]:
    totals, counts = [0.0] * count, [0] * count
    for owner, logprob in zip(owners, logprobs):
        if 0 <= owner < count:
            totals[owner] += logprob
            counts[owner] += 1
    return [totals[i] / counts[i] if counts[i] else None for i in range(count)]


def sentence_scores_by_model(
    record: dict, parts_by_model: dict[str, dict]
) -> tuple[list[tuple[str, int, int, dict[str, float]]], str | None]:
    """Split the record's reasoning and content into sentences and give each the mean token log-prob
    under every model: `parts_by_model` maps a name to `{reasoning: {offsets, logprobs}, content: …}`.
    Returns `[(part, start, end, {model: mean})]`, or an error naming the first sentence that a model
    has no token in (`sentence_without_<model>_tokens: part[start:end]`)."""
    from ..text.sentences import split_sentences

    sentences = []
    for part in ("reasoning", "content"):
        text = record.get(part) or ""
        spans = split_sentences(text)
        if not spans:
            continue
        means = {}
        for name, parts in parts_by_model.items():
            entry = parts.get(part) or {"offsets": [], "logprobs": []}
            means[name] = sentence_means(assign_tokens(entry["offsets"], spans, text), entry["logprobs"], len(spans))
        for index, (start, end) in enumerate(spans):
            values = {name: means[name][index] for name in parts_by_model}
            for name, value in values.items():
                if value is None or not math.isfinite(value):
                    return [], f"sentence_without_{name}_tokens: {part}[{start}:{end}]"
            sentences.append((part, start, end, values))
    return sentences, None


def classify(teacher_logprob: float, student_logprob: float, *, beta: float = 0.1, space: str = "prob") -> str:
    """teacher if the teacher is more confident by more than beta, student if less, else shared.

    `space="prob"`: d = p_T - p_S with p = exp(mean log-prob) (the report's definition);
    `space="logratio"`: d = log p_T - log p_S.
    """
    if space == "prob":
        difference = math.exp(teacher_logprob) - math.exp(student_logprob)
    elif space == "logratio":
        difference = teacher_logprob - student_logprob
    else:
        raise ValueError(f"unknown space {space!r} (prob or logratio)")
    if difference > beta:
        return "teacher"
    if difference < -beta:
        return "student"
    return "shared"


@dataclass
class SentenceScore:
    part: str
    start: int
    end: int
    teacher_logprob: float
    student_logprob: float
    type: str

    def as_dict(self) -> dict:
        return {
            "part": self.part,
            "start": self.start,
            "end": self.end,
            "teacher_logprob": self.teacher_logprob,
            "student_logprob": self.student_logprob,
            "type": self.type,
        }


EMPTY_REASONING = (
    "empty_reasoning: the teacher wrote no reasoning (no think block); to score and train on its answer as the "
    "chain of thought, sample with reasoning_format=none"
)


def check_teacher_logprobs(record: dict[str, Any]) -> str | None:
    """Why a response cannot be scored, or None. A response without reasoning is scored on its answer's sentences
    when its chain of thought is its answer (`reasoning_in_answer`: sampled with `reasoning_format: none`); any
    other is `empty_reasoning` (a think-format teacher that wrote no think block)."""
    teacher = record.get("teacher_logprobs")
    if not isinstance(teacher, dict):
        return "missing_teacher_logprobs"
    if not record["reasoning"].strip():
        if not reasoning_in_answer(record):
            return EMPTY_REASONING
        if not record["content"].strip():
            return "empty_response: no reasoning and no answer"
    for part in PARTS:
        text = record[part]
        entry = teacher.get(part) or {"offsets": [], "logprobs": []}
        offsets, logprobs = entry.get("offsets") or [], entry.get("logprobs") or []
        if len(offsets) != len(logprobs):
            return f"teacher_offsets_mismatch: {part} has {len(offsets)} offsets for {len(logprobs)} log-probs"
        previous = 0
        for index, span in enumerate(offsets):
            if not (
                isinstance(span, (list, tuple))
                and len(span) == 2
                and 0 <= span[0] <= span[1] <= len(text)
                and span[0] >= previous
            ):
                return (
                    f"teacher_offsets_mismatch: {part} token {index} span {span} does not fit a text of "
                    f"{len(text)} characters"
                )
            previous = span[0]
        if any(value is None or not math.isfinite(value) or value > 1e-6 for value in logprobs):
            return f"teacher_logprob_invalid: {part} has a log-prob that is not a finite number <= 0"
    return None


def score_sentences(
    record: dict[str, Any], student_parts: dict[str, dict], *, beta: float, space: str
) -> tuple[list[SentenceScore], str | None]:
    scored, error = sentence_scores_by_model(record, {"teacher": record["teacher_logprobs"], "student": student_parts})
    if error:
        return [], error
    return [
        SentenceScore(
            part,
            start,
            end,
            means["teacher"],
            means["student"],
            classify(means["teacher"], means["student"], beta=beta, space=space),
        )
        for part, start, end, means in scored
    ], None


def mean_teacher_logprob(teacher_logprobs: dict[str, Any]) -> float | None:
    """Mean log-prob per teacher token, the reasoning's and the content's tokens together; None without tokens.

    >>> mean_teacher_logprob({"reasoning": {"offsets": [[0, 1], [1, 2]], "logprobs": [-1.0, -2.0]},
    ...                       "content": {"offsets": [[0, 1]], "logprobs": [-3.0]}})
    -2.0
    """
    values = [value for part in PARTS for value in ((teacher_logprobs.get(part) or {}).get("logprobs") or [])]
    return sum(values) / len(values) if values else None


def response_length(record: dict[str, Any]) -> int:
    """Teacher tokens of a scored record (characters when it has no token log-probs)."""
    teacher = record.get("teacher_logprobs")
    if isinstance(teacher, dict):
        return sum(len((teacher.get(part) or {}).get("logprobs") or []) for part in ("reasoning", "content"))
    return len(record["reasoning"]) + len(record["content"])


def sentence_texts(record: dict[str, Any]) -> list[str]:
    """The text of each of a scored record's sentences: its `part` (reasoning or content) between `start` and `end`.

    >>> sentence_texts({"reasoning": "One. Two.", "content": "3", "sentences": [
    ...     {"part": "reasoning", "start": 0, "end": 4}, {"part": "reasoning", "start": 5, "end": 9},
    ...     {"part": "content", "start": 0, "end": 1}]})
    ['One.', 'Two.', '3']
    """
    return [(record.get(s["part"]) or "")[s["start"] : s["end"]] for s in record.get("sentences") or []]


def oracle_count(record: dict[str, Any], patterns: Sequence[re.Pattern[str]]) -> int:
    """How many of a scored record's sentences match one of `patterns` (`re.search`): the `oracle` strategy's score,
    for a world whose skill is labelled in its text (the demo world's) — an upper bound on what a selection rule can
    find, not something a real run has.

    >>> record = {"reasoning": "Careful: 3 - 5 goes below zero. So -2. Careful: again.", "content": "-2",
    ...           "sentences": [{"part": "reasoning", "start": 0, "end": 31}, {"part": "reasoning", "start": 32,
    ...                          "end": 38}, {"part": "reasoning", "start": 39, "end": 54}]}
    >>> oracle_count(record, [re.compile(r"^Careful:")]), oracle_count(record, [re.compile("zero"), re.compile("So")])
    (2, 2)
    """
    return sum(any(pattern.search(text) for pattern in patterns) for text in sentence_texts(record))


def strategy_score(record: dict[str, Any], strategy: str, seed: int, patterns: Sequence[re.Pattern[str]] = ()) -> float:
    """How `dasd select` ranks a scored record (higher first): its teacher-sentence count (DAS), that count negated
    (`anti_das`: fewest first), their share, its length, its sentences matching the `oracle` `patterns`, or a seeded
    random key (RS). Shared by select and build-sft's `weight_by=teacher_sentences`.

    >>> record = {"id": "a", "das": {"teacher": 3, "n": 4}}
    >>> strategy_score(record, "count", 0), strategy_score(record, "anti_das", 0), strategy_score(record, "ratio", 0)
    (3.0, -3.0, 0.75)
    """
    if strategy == "count":
        return float(record["das"]["teacher"])
    if strategy == "anti_das":
        return -float(record["das"]["teacher"])
    if strategy == "oracle":
        return float(oracle_count(record, patterns))
    if strategy == "ratio":
        return record["das"]["teacher"] / record["das"]["n"] if record["das"]["n"] else 0.0
    if strategy == "longest":
        return float(response_length(record))
    return stable_seed(seed, "random", record["id"]) / float(1 << 63)


def _difference(a: float, b: float, space: str) -> float:
    return math.exp(a) - math.exp(b) if space == "prob" else a - b


def classify_provenance(
    teacher: float, student: float, distilled: float, *, alpha: float = 0.1, beta: float = 0.1, space: str = "prob"
) -> str:
    """The class of one sentence from its mean token log-probs under the teacher, the original student and the
    distilled model (`dasd provenance`; with d(a, b) = p_a − p_b, or log p_a − log p_b with space=logratio):
    shared when all three pairwise differences are within alpha; else teacher / student when d(T, S) is above
    beta / below −beta; else boosted (T and S agree, the distilled model moved away from both).

    >>> import math
    >>> classify_provenance(math.log(0.5), math.log(0.5), math.log(0.9))
    'boosted'
    >>> classify_provenance(math.log(0.9), math.log(0.2), math.log(0.9)), classify_provenance(-0.1, -0.1, -0.1)
    ('teacher', 'shared')
    """
    if space not in ("prob", "logratio"):
        raise ValueError(f"unknown space {space!r} (prob or logratio)")
    t_s = _difference(teacher, student, space)
    if (
        abs(_difference(student, distilled, space)) <= alpha
        and abs(_difference(teacher, distilled, space)) <= alpha
        and abs(t_s) <= alpha
    ):
        return "shared"
    if t_s > beta:
        return "teacher"
    if t_s < -beta:
        return "student"
    return "boosted"


def empty_confusion() -> dict[str, dict[str, int]]:
    """Sentence counts by class here -> class there (`add_to_confusion`)."""
    return {kind: dict.fromkeys(SENTENCE_TYPES, 0) for kind in SENTENCE_TYPES}


def add_to_confusion(confusion: dict[str, dict[str, int]], mine: list[dict], theirs: list[dict]) -> None:
    """Count each sentence of one record, as this scoring and another split and classed it: the same span's class
    here and there (sentences only one scoring has are not counted)."""
    classes = {(s.get("part"), s.get("start"), s.get("end")): s.get("type") for s in theirs or []}
    for sentence in mine or []:
        here, there = (
            sentence.get("type"),
            classes.get((sentence.get("part"), sentence.get("start"), sentence.get("end"))),
        )
        if here in confusion and there in confusion[here]:
            confusion[here][there] += 1


def selection_overlap(
    candidates: list[dict[str, Any]],
    selected: list[dict[str, Any]],
    other_candidates: list[dict[str, Any]],
    other_selected: list[dict[str, Any]],
    *,
    confusion: dict[str, dict[str, int]] | None = None,
) -> dict[str, Any]:
    """How two scorings of the same candidates (by two students) agree: the Jaccard index of the ids each one's
    selection kept (overall and per temperature, over the candidates both hold), and how often a sentence — the
    same text span of the same record, as both scorings split it — gets the same class: from the records'
    `sentences`, or from `confusion` when given (`dasd select` counts it in a join pass, holding no sentences).

    >>> def rec(i, t, kinds):
    ...     return {"id": i, "temperature": t, "sentences": [
    ...         {"part": "reasoning", "start": n, "end": n + 1, "type": kind} for n, kind in enumerate(kinds)]}
    >>> here = [rec("a", 0.6, ["teacher", "shared"]), rec("b", 0.6, ["shared"]), rec("c", 1.0, ["student"])]
    >>> there = [rec("a", 0.6, ["teacher", "teacher"]), rec("b", 0.6, ["shared"]), rec("c", 1.0, ["student"])]
    >>> result = selection_overlap(here, here[:1] + here[2:], there, there[1:])
    >>> result["jaccard"], result["jaccard_per_temperature"], result["selected_both"]
    (0.333333, {'0.6': 0.0, '1.0': 1.0}, 1)
    >>> result["sentences"]["agreement"], result["sentences"]["same_class_share"]
    (0.75, {'teacher': 1.0, 'student': 1.0, 'shared': 0.5})
    """
    common = {record["id"] for record in candidates} & {record["id"] for record in other_candidates}
    here = {record["id"] for record in selected if record["id"] in common}
    there = {record["id"] for record in other_selected if record["id"] in common}
    temperature_of = {record["id"]: str(record.get("temperature")) for record in candidates}

    def jaccard(a: set, b: set) -> float:
        return round(len(a & b) / len(a | b), 6) if a | b else 1.0

    per_temperature = {
        t: jaccard({i for i in here if temperature_of[i] == t}, {i for i in there if temperature_of[i] == t})
        for t in sorted({temperature_of[i] for i in here | there})
    }
    if confusion is None:
        other_by_id = {record["id"]: record for record in other_candidates}
        confusion = empty_confusion()
        for record in candidates:
            if record["id"] in common:
                add_to_confusion(confusion, record.get("sentences"), other_by_id[record["id"]].get("sentences"))
    compared = sum(sum(row.values()) for row in confusion.values())
    return {
        "candidates_in_both": len(common),
        "selected_here": len(here),
        "selected_there": len(there),
        "selected_both": len(here & there),
        "jaccard": jaccard(here, there),
        "jaccard_per_temperature": per_temperature,
        "sentences": {
            "compared": compared,
            "agreement": round(sum(confusion[kind][kind] for kind in SENTENCE_TYPES) / compared, 6)
            if compared
            else None,
            "same_class_share": {
                kind: round(confusion[kind][kind] / sum(confusion[kind].values()), 6)
                for kind in SENTENCE_TYPES
                if sum(confusion[kind].values())
            },
            "confusion": confusion,  # class here -> class there -> sentences
        },
    }
