"""Sentence-level teacher vs student probabilities, and the student's token log-probs, fast.

Token -> sentence rule (the same for every tokenizer, so teacher and student sentences line up
although their tokens do not): a token belongs to the sentence that contains its first
non-whitespace character; a token made only of whitespace belongs to the next sentence (the last
one if none follows). Every token of a part thus lands in exactly one sentence.

Sentence log-prob = mean of its tokens' log-probs, so `exp(logprob)` is the geometric-mean token
probability.

`StudentScorer` computes the student's log-prob of every completion token, teacher-forced, with:
* length-sorted batches under a token budget; with `pack=True` several samples share a row
  (first-fit decreasing), `position_ids` restarting per sample and `use_cache=False`: no attention
  across packed samples (checked against one-sample-at-a-time scoring in tests/test_score.py). Under
  SDPA transformers builds that as a dense block-diagonal mask (width² per row, measured slower than
  one sample per forward); under `dasd_packed` (`dasd.attention`: per-sample causal kernels, varlen
  flash on CUDA) or flash_attention_2 nothing between samples is computed — `dasd score`'s
  `batching=auto` picks the path (`dasd.scorers`);
* log-softmax only at the scored positions, in chunks, so a long response never materialises a
  length × vocabulary logits tensor (the prompt's positions never reach the LM head).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .records import PARTS


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
    from .sentences import split_sentences

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


# --- the student's token log-probs ---------------------------------------------------------------


@dataclass
class ScoringItem:
    key: int
    input_ids: list[int]  # prompt + completion
    first_scored: int  # index of the first completion token in input_ids

    @property
    def length(self) -> int:
        return len(self.input_ids)


def plan_batches(
    items: list[ScoringItem], tokens_per_batch: int, *, pack: bool = True
) -> list[list[list[ScoringItem]]]:
    """Batches of rows of items, items sorted longest first; rows × width stays within
    `tokens_per_batch` (a longer single item gets a batch of its own).

    Padded (`pack=False`): one item per row, the batch's width its longest item. Packed: one row as
    wide as the budget, filled first-fit — with mask-free attention a wide row costs no more than its
    samples, and the only padding is the row's unfilled tail.

    >>> items = [ScoringItem(key, [1] * n, 1) for key, n in enumerate([6, 5, 3, 2])]
    >>> [[[item.key for item in row] for row in rows] for rows in plan_batches(items, 12, pack=False)]
    [[[0], [1]], [[2], [3]]]
    >>> [[[item.key for item in row] for row in rows] for rows in plan_batches(items, 12)]
    [[[0, 1]], [[2, 3]]]
    """
    ordered = sorted(items, key=lambda item: -item.length)
    batches: list[list[list[ScoringItem]]] = []
    index = 0
    while index < len(ordered):
        width = max(ordered[index].length, tokens_per_batch) if pack else ordered[index].length
        rows: list[list[ScoringItem]] = []
        room: list[int] = []
        while index < len(ordered):
            item = ordered[index]
            placed = False
            if pack:
                for row_index, free in enumerate(room):
                    if item.length <= free:
                        rows[row_index].append(item)
                        room[row_index] -= item.length
                        placed = True
                        break
            if not placed:
                if rows and (len(rows) + 1) * width > tokens_per_batch:
                    break
                rows.append([item])
                room.append(width - item.length)
            index += 1
        batches.append(rows)
    return batches


def _logits_postprocessed(config) -> bool:
    """Architectures that change logits after the LM head (soft-capping, scaling) need the full forward."""
    return any(
        getattr(config, name, None) not in (None, 1.0, 0.0)
        for name in ("final_logit_softcapping", "logit_scale", "logits_scaling")
    )


class StudentScorer:
    def __init__(
        self, model, *, tokens_per_batch: int = 16384, pack: bool = True, pad_id: int = 0, logit_chunk: int = 2048
    ):
        self.model = model
        self.tokens_per_batch = tokens_per_batch
        self.pack = pack
        self.pad_id = pad_id
        self.logit_chunk = logit_chunk
        self.device = next(model.parameters()).device
        self.full_forward = _logits_postprocessed(model.config)
        self.tokens_scored = 0
        self.padding_tokens = 0
        self.forward_tokens = 0

    def score(self, items: list[ScoringItem]) -> dict[int, list[float]]:
        """key -> log-probs of input_ids[first_scored:] (each predicted from the tokens before it)."""
        out: dict[int, list[float]] = {}
        for rows in plan_batches(items, self.tokens_per_batch, pack=self.pack):
            out.update(self._score_rows(rows))
        return out

    def _score_rows(self, rows: list[list[ScoringItem]]) -> dict[int, list[float]]:
        import torch

        width = max(sum(item.length for item in row) for row in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        position_ids = torch.zeros((len(rows), width), dtype=torch.long)
        targets = []  # (row, position, token, key, k)
        for row_index, row in enumerate(rows):
            cursor = 0
            for item in row:
                length = item.length
                input_ids[row_index, cursor : cursor + length] = torch.tensor(item.input_ids)
                position_ids[row_index, cursor : cursor + length] = torch.arange(length)
                for offset in range(item.first_scored, length):
                    targets.append((row_index, cursor + offset, item.input_ids[offset], item.key))
                cursor += length
            # padding is its own "sequence" (positions restart), so it attends to nothing real
            position_ids[row_index, cursor:] = torch.arange(width - cursor)
        self.forward_tokens += len(rows) * width
        self.padding_tokens += sum(width - sum(item.length for item in row) for row in rows)
        self.tokens_scored += len(targets)
        with torch.inference_mode():
            rows_t = torch.tensor([t[0] for t in targets], device=self.device)
            cols_t = torch.tensor([t[1] for t in targets], device=self.device)
            tokens_t = torch.tensor([t[2] for t in targets], device=self.device)
            if self.full_forward:
                logits = self.model(
                    input_ids=input_ids.to(self.device), position_ids=position_ids.to(self.device), use_cache=False
                ).logits
                picked = torch.log_softmax(logits[rows_t, cols_t - 1].float(), dim=-1).gather(1, tokens_t[:, None])[
                    :, 0
                ]
            else:
                base = getattr(self.model, self.model.base_model_prefix)
                hidden = base(
                    input_ids=input_ids.to(self.device), position_ids=position_ids.to(self.device), use_cache=False
                ).last_hidden_state
                head = self.model.get_output_embeddings()
                picked_chunks = []
                for start in range(0, len(targets), self.logit_chunk):
                    stop = start + self.logit_chunk
                    states = hidden[rows_t[start:stop], cols_t[start:stop] - 1]
                    logprobs = torch.log_softmax(head(states).float(), dim=-1)
                    picked_chunks.append(logprobs.gather(1, tokens_t[start:stop, None])[:, 0])
                picked = torch.cat(picked_chunks) if picked_chunks else torch.zeros(0)
        values = picked.float().cpu().tolist()
        out: dict[int, list[float]] = {}
        for (_, _, _, key), value in zip(targets, values):
            out.setdefault(key, []).append(value)
        for row in rows:
            for item in row:
                out.setdefault(item.key, [])
        return out


# --- scoring a response record ----------------------------------------------------------------------


def check_teacher_logprobs(record: dict[str, Any]) -> str | None:
    """Why a response cannot be scored, or None."""
    teacher = record.get("teacher_logprobs")
    if not isinstance(teacher, dict):
        return "missing_teacher_logprobs"
    if not record["reasoning"].strip():
        return "empty_reasoning"
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
