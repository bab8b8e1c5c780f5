"""The loss weights `dasd build-sft` writes into SFT records, for `dasd train` to multiply into the loss.

Two schemes, both optional (build-sft's `weight_by` and `sentence_weights`):

* per record (`weight_by`): `teacher_seq_logprob` — the records of one question in one stage share a softmax of
  their mean teacher log-prob per token divided by a temperature (`softmax_weights`); `teacher_sentences` — the
  record's teacher-sentence count as `dasd select` reads it (`weight_score`). Each stage's weights are then scaled to
  mean 1 (`mean_one`) and multiplied by the constant weight (`apply_weights`); `weight_stats` gives a stage's
  min / mean / max for the summary.
* per token (`sentence_weights`): each sentence of the assistant turn weighs its DAS class's weight
  (`sentence_spans` → `weighted_spans`, written as `loss_weight_spans`), each stage's weights scaled so that its
  sentence characters weigh 1 on average (`sentence_weight_scales`; `apply_sentence_weights` does both for records
  in memory).

    scores = [weight_score(record, "teacher_sentences", path=path, line=line) for line, record in …]
    apply_weights(entries, scores, config)               # entries: {question_id, stage, weight}; sets weight

Here in `training/` (above scoring, whose log-prob means and strategy scores it reads; below the stages): the
weights are a training concern, read by build-sft and honoured by `dasd train` (`training.sft`).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import Any, Protocol

from ..data.records import SENTENCE_TYPES, assistant_text
from ..errors import InputError
from ..scoring.sentence_scores import check_teacher_logprobs, mean_teacher_logprob, strategy_score


class WeightSettings(Protocol):
    """What `apply_weights` reads of build-sft's config (`dasd.stages.build_sft.BuildSFTConfig`)."""

    weight: float
    weight_by: str
    weight_temperature: float


def softmax_weights(scores: list[float], temperature: float = 1.0) -> list[float]:
    """The softmax of `scores / temperature`: weights that sum to 1 over one question's candidates, so a lone
    candidate gets 1 and a question's k candidates share what a lone one gets.

    >>> softmax_weights([-0.7])
    [1.0]
    >>> [round(w, 6) for w in softmax_weights([-1.0, -1.0 - math.log(2), -1.0 - math.log(4)])]  # 4/7, 2/7, 1/7
    [0.571429, 0.285714, 0.142857]
    >>> [round(w, 6) for w in softmax_weights([0.0, -math.log(4)], temperature=2.0)]  # 1 : 1/2 -> 2/3, 1/3
    [0.666667, 0.333333]
    """
    top = max(scores)
    exps = [math.exp((score - top) / temperature) for score in scores]
    total = sum(exps)
    return [value / total for value in exps]


def mean_one(values: list[float]) -> list[float]:
    """`values` scaled so that their mean is 1 (one stage's weights); all 1.0 when they sum to 0.

    >>> mean_one([1, 2, 3])
    [0.5, 1.0, 1.5]
    >>> mean_one([0, 0])
    [1.0, 1.0]
    """
    total = sum(values)
    if total <= 0:
        return [1.0] * len(values)
    return [value * len(values) / total for value in values]


def weight_score(record: dict[str, Any], weight_by: str, *, path: str, line: int) -> float:
    """What `weight_by` weighs a record by, from the record as build-sft reads it (`InputError` when it lacks it):
    its mean teacher token log-prob, or its teacher-sentence count as `dasd select` reads it."""
    if weight_by == "teacher_sentences":
        das = record.get("das")
        if not isinstance(das, dict) or not isinstance(das.get("teacher"), (int, float)):
            field = "das" if not isinstance(das, dict) else "das.teacher"
            raise InputError(
                path, line, field, "missing: weight_by=teacher_sentences needs scored records (run dasd score first)"
            )
        return strategy_score(record, "count", seed=0)
    if record.get("question_id") is None:
        raise InputError(path, line, "question_id", "missing: weight_by=teacher_seq_logprob groups by it")
    if not isinstance(record.get("teacher_logprobs"), dict):
        raise InputError(
            path,
            line,
            "teacher_logprobs",
            "missing: weight_by=teacher_seq_logprob needs the teacher's token log-probs (sampled with log-probs on)",
        )
    error = check_teacher_logprobs(record)
    mean = mean_teacher_logprob(record["teacher_logprobs"])
    if error or mean is None:
        raise InputError(path, line, "teacher_logprobs", error or "no token log-probs")
    return mean


def apply_weights(records: list[dict[str, Any]], scores: list[float], config: WeightSettings) -> int | None:
    """Set each SFT record's `weight` from its score (`weight_score`): per question and stage a softmax
    (teacher_seq_logprob) or the score itself (teacher_sentences), then each stage scaled to mean `config.weight`.
    Returns, for teacher_seq_logprob, how many (question, stage) groups have more than one record."""
    raw = list(scores)
    shared = None
    if config.weight_by == "teacher_seq_logprob":
        groups: dict[tuple[str, str], list[int]] = defaultdict(list)
        for index, record in enumerate(records):
            groups[(str(record["question_id"]), record["stage"])].append(index)
        for indices in groups.values():
            for index, value in zip(indices, softmax_weights([scores[i] for i in indices], config.weight_temperature)):
                raw[index] = value
        shared = sum(len(indices) > 1 for indices in groups.values())
    stages: dict[str, list[int]] = defaultdict(list)
    for index, record in enumerate(records):
        stages[record["stage"]].append(index)
    for indices in stages.values():
        for index, value in zip(indices, mean_one([raw[i] for i in indices])):
            records[index]["weight"] = config.weight * value
    return shared


def weight_stats(records: list[dict[str, Any]]) -> dict[str, float]:
    weights = [record["weight"] for record in records]
    return {
        "min": round(min(weights), 6),
        "mean": round(sum(weights) / len(weights), 6),
        "max": round(max(weights), 6),
    }


def sentence_spans(record: dict[str, Any], *, path: str, line: int) -> list[tuple[int, int, str]]:
    """The record's scored sentences as `(start, end, class)` character spans of its assistant turn
    (`assistant_text` of the stripped reasoning and content, as `sft_record` writes it).

    >>> record = {"reasoning": " A b. C d.", "content": "E.", "sentences": [
    ...     {"part": "reasoning", "start": 1, "end": 5, "type": "teacher"},
    ...     {"part": "reasoning", "start": 6, "end": 10, "type": "shared"},
    ...     {"part": "content", "start": 0, "end": 2, "type": "student"}]}
    >>> sentence_spans(record, path="x", line=1)
    [(8, 12, 'teacher'), (13, 17, 'shared'), (28, 30, 'student')]
    """
    sentences = record.get("sentences")
    if not isinstance(sentences, list):
        raise InputError(path, line, "sentences", "missing: sentence_weights needs scored records (run dasd score)")
    _, reasoning_start, content_start = assistant_text(record["reasoning"].strip(), record["content"].strip())
    starts = {"reasoning": reasoning_start, "content": content_start}
    spans = []
    for sentence in sentences:
        part, kind = sentence.get("part"), sentence.get("type")
        if part not in starts or kind not in SENTENCE_TYPES:
            raise InputError(path, line, "sentences", f"a sentence with part {part!r} and type {kind!r}")
        text = record[part]
        lead, kept = len(text) - len(text.lstrip()), len(text.strip())
        start = min(max(int(sentence["start"]) - lead, 0), kept)
        end = min(max(int(sentence["end"]) - lead, 0), kept)
        if end > start:
            spans.append((starts[part] + start, starts[part] + end, kind))
    return sorted(spans)


def apply_sentence_weights(
    records: list[dict[str, Any]], spans: list[list[tuple[int, int, str]]], weights: dict[str, float]
) -> dict[str, dict[str, Any]]:
    """Give each record `loss_weight_spans` from its sentences' classes, each stage's weights scaled so that its
    sentence characters weigh 1 on average; returns per stage the scaled weight and character share per class.

    >>> records = [{"stage": "s"}, {"stage": "s"}]
    >>> stats = apply_sentence_weights(records, [[(0, 3, "teacher")], [(0, 1, "student")]], {"teacher": 3.0})
    >>> records[0]["loss_weight_spans"], records[1]["loss_weight_spans"]  # mean (3·3 + 1·1) / 4 = 2.5
    ([[0, 3, 1.2]], [[0, 1, 0.4]])
    >>> stats["s"]["char_share"]
    {'teacher': 0.75, 'student': 0.25, 'shared': 0.0}
    """
    chars: dict[str, Counter] = defaultdict(Counter)
    for record, items in zip(records, spans):
        count_sentence_chars(chars, record["stage"], items)
    scale, stats = sentence_weight_scales(chars, weights)
    for record, items in zip(records, spans):
        record["loss_weight_spans"] = weighted_spans(items, weights, scale.get(record["stage"], 1.0))
    return stats


def count_sentence_chars(chars: dict[str, Counter], stage: str, spans: list[tuple[int, int, str]]) -> None:
    for start, end, kind in spans:
        chars[stage][kind] += end - start


def sentence_weight_scales(
    chars: dict[str, Counter], weights: dict[str, float]
) -> tuple[dict[str, float], dict[str, dict[str, Any]]]:
    """Per stage, the factor that makes its sentence characters weigh 1 on average, and the scaled weight and
    character share per class (the summary's `sentence_weights`)."""
    scale = {}
    for stage, counts in chars.items():
        total = sum(counts.values())
        weighted = sum(weights.get(kind, 1.0) * count for kind, count in counts.items())
        scale[stage] = total / weighted if weighted > 0 else 1.0
    stats = {
        stage: {
            "weight": {kind: round(weights.get(kind, 1.0) * scale[stage], 6) for kind in SENTENCE_TYPES},
            "char_share": {kind: round(counts[kind] / max(sum(counts.values()), 1), 6) for kind in SENTENCE_TYPES},
        }
        for stage, counts in sorted(chars.items())
    }
    return scale, stats


def weighted_spans(spans: list[tuple[int, int, str]], weights: dict[str, float], factor: float) -> list[list]:
    """A record's `loss_weight_spans`: each sentence span with its class's weight times its stage's factor."""
    return [[start, end, round(weights.get(kind, 1.0) * factor, 6)] for start, end, kind in spans]
