"""Quality filters for teacher responses. Each returns `True` (keep) or `(False, "snake_case_reason")`.

* `structure` — the response finished (`finish_reason == stop`), has non-empty reasoning and answer,
  no tool call (also none written as text in the answer), no stray think tags;
* `length` — prompt + think-tagged response + end token, in **student** tokens, fits `max_length`;
* `repetition` — repeated long paragraphs, a sentence looping, too many repeated sentences or word
  n-grams, or a text whose tail is one unit repeated over and over. Defaults were set on the
  examples in tests/test_filters.py: a healthy 20K-token chain of thought that restates its formula
  and says "Wait, let me double-check" several times passes; loops of each kind do not;
* `correctness` — graded against the reference with `dasd.grading.answers` (math-verify, bounded);
* `dedupe` — a second identical response to the same question.

`FilterChain.apply` runs them in that order — structure → length → repetition → dedupe →
correctness — each record stopping at the first that rejects it; correctness is graded for a whole
chunk at once (math-verify in parallel workers). `dasd filter` and `dasd mix` both use it.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from typing import Any

from pydantic import Field

from .config import StageConfig
from .data.records import Response
from .text.reasoning import TOOL_CALL_MARKERS
from .text.sentences import split_sentences

_TOOL_CALL_JSON = re.compile(
    r'^\s*\{\s*"(?:name|tool|function)"\s*:\s*"[^"]+"\s*,\s*"(?:arguments|parameters|args)"\s*:', re.MULTILINE
)


class StructureConfig(StageConfig):
    enabled: bool = Field(True, description="run this filter")
    require_stop: bool = Field(True, description="drop responses that did not finish (finish_reason != stop)")


class LengthConfig(StageConfig):
    enabled: bool = Field(True, description="run this filter (needs student_tokenizer)")
    max_length: int = Field(
        65536, ge=16, description="longest training sequence in student tokens (prompt + response + end token)"
    )


class RepetitionConfig(StageConfig):
    enabled: bool = Field(True, description="run this filter")
    min_paragraph_chars: int = Field(
        100, ge=1, description="paragraphs shorter than this are not counted (a restated formula is fine)"
    )
    max_paragraph_repeats: int = Field(3, ge=2, description="drop when one paragraph occurs this many times")
    min_sentence_chars: int = Field(20, ge=1, description="sentences shorter than this are not counted")
    max_consecutive_sentence_repeats: int = Field(
        3, ge=2, description="drop when one sentence occurs this many times in a row"
    )
    max_duplicate_sentence_fraction: float = Field(
        0.3,
        gt=0,
        le=1,
        description="drop when repeated sentences make up more than this share of the counted sentence characters",
    )
    ngram: int = Field(10, ge=2, description="word n-gram size for the n-gram repetition measure")
    max_duplicate_ngram_fraction: float = Field(
        0.4, gt=0, le=1, description="drop when more than this share of word n-grams are repeats of earlier ones"
    )
    tail_chars: int = Field(
        3000, ge=100, description="how much of the end of each part the looping-tail check looks at"
    )
    min_loop_chars: int = Field(300, ge=20, description="a looping tail must cover at least this many characters")
    min_loop_repeats: int = Field(3, ge=2, description="… and repeat its unit at least this many times")


class CorrectnessConfig(StageConfig):
    enabled: bool = Field(True, description="grade answers that have a reference (records without one are kept)")
    workers: int = Field(2, ge=1, description="math-verify worker processes")
    timeout_s: float = Field(
        5.0, gt=0, description="seconds per math-verify check before it counts as wrong (verify_timeout)"
    )


class DedupeConfig(StageConfig):
    enabled: bool = Field(
        True, description="drop a response identical (whitespace aside) to an earlier one for the same question"
    )


def structure_filter(record: Response, config: StructureConfig):
    if record["finish_reason"] == "tool_call":
        return False, "tool_call"
    if config.require_stop and record["finish_reason"] != "stop":
        return False, f"finish_{record['finish_reason']}"
    reasoning, content = record["reasoning"], record["content"]
    if not reasoning.strip():
        return False, "empty_reasoning"
    if not content.strip():
        return False, "empty_content"
    if (
        any(marker in content for marker in TOOL_CALL_MARKERS)
        or _TOOL_CALL_JSON.search(content)
        or "<|call|>" in content
    ):
        return False, "tool_call"
    if any(tag in reasoning or tag in content for tag in ("<think>", "</think>")):
        return False, "stray_think_tag"
    return True


def student_length(
    tokenizer, record: dict[str, Any], *, system_prompt: str | None, chat_template_kwargs: dict | None = None
) -> int:
    from .text.render import render_student

    rendered = render_student(
        tokenizer,
        record["messages"],
        record["reasoning"],
        record["content"],
        system_prompt=system_prompt,
        add_end_token=True,
        chat_template_kwargs=chat_template_kwargs,
    )
    return rendered.length


def length_filter(length: int, config: LengthConfig):
    return True if length <= config.max_length else (False, "too_long")


def _normalized(text: str) -> str:
    return " ".join(text.split())


def looping_tail(text: str, config: RepetitionConfig) -> bool:
    """True when the text ends with one unit repeated: at least min_loop_repeats times and
    min_loop_chars characters (exact repeats, as degenerate decoding produces)."""
    tail = text.rstrip()[-config.tail_chars :]
    key_length = 24
    if len(tail) < max(config.min_loop_chars, 2 * key_length):
        return False
    key = tail[-key_length:]
    position = tail.rfind(key, 0, len(tail) - 1)
    tried = 0
    while position >= 0 and tried < 64:
        period = len(tail) - key_length - position
        if period > 0:
            repeats = max(config.min_loop_repeats, math.ceil(config.min_loop_chars / period))
            if period * repeats <= len(tail) and tail[-period * repeats :] == tail[-period:] * repeats:
                return True
        position = tail.rfind(key, 0, position)
        tried += 1
    return False


def repetition_reason(text: str, config: RepetitionConfig) -> str | None:
    if not text.strip():
        return None
    paragraphs = Counter(
        _normalized(p) for p in re.split(r"\n\s*\n", text) if len(_normalized(p)) >= config.min_paragraph_chars
    )
    if paragraphs and max(paragraphs.values()) >= config.max_paragraph_repeats:
        return "repeated_paragraph"
    sentences = [_normalized(text[s:e]) for s, e in split_sentences(text)]
    counted = [sentence for sentence in sentences if len(sentence) >= config.min_sentence_chars]
    run, longest_run = 1, 1
    for previous, current in zip(counted, counted[1:]):
        run = run + 1 if current == previous else 1
        longest_run = max(longest_run, run)
    if longest_run >= config.max_consecutive_sentence_repeats:
        return "sentence_loop"
    if counted:
        seen, repeated_chars = set(), 0
        for sentence in counted:
            if sentence in seen:
                repeated_chars += len(sentence)
            seen.add(sentence)
        if repeated_chars / sum(len(sentence) for sentence in counted) > config.max_duplicate_sentence_fraction:
            return "repeated_sentences"
    words = text.split()
    if len(words) >= config.ngram * 4:
        seen_ngrams, repeats = set(), 0
        total = len(words) - config.ngram + 1
        for start in range(total):
            gram = hash(tuple(words[start : start + config.ngram]))
            if gram in seen_ngrams:
                repeats += 1
            seen_ngrams.add(gram)
        if repeats / total > config.max_duplicate_ngram_fraction:
            return "ngram_repetition"
    if looping_tail(text, config):
        return "looping_tail"
    return None


def repetition_filter(record: dict[str, Any], config: RepetitionConfig):
    for part in ("reasoning", "content"):
        reason = repetition_reason(record[part], config)
        if reason:
            return False, reason
    return True


def response_fingerprint(record: dict[str, Any]) -> str:
    text = _normalized(record["reasoning"]) + "\u0000" + _normalized(record["content"])
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


class Deduper:
    def __init__(self):
        self.seen: set[tuple[str, str]] = set()

    def add(self, record: dict[str, Any]) -> None:
        self.seen.add((str(record.get("question_id")), response_fingerprint(record)))

    def __call__(self, record: dict[str, Any]):
        key = (str(record.get("question_id")), response_fingerprint(record))
        if key in self.seen:
            return False, "duplicate"
        return True


class FilterChain:
    """The quality filters of one stage, in the fixed order, with the state they need across records
    (the student tokenizer for lengths, the bounded math-verify workers, the duplicates seen so far).

        with FilterChain(structure=StructureConfig(), length=LengthConfig(), repetition=RepetitionConfig(),
                         correctness=CorrectnessConfig(), tokenizer=student_tokenizer) as chain:
            for record, verdict in zip(chunk, chain.apply(chunk)): ...

    A filter whose config is None or has `enabled: false` is skipped; the length filter also needs a
    tokenizer, correctness a reference answer on the record (records without one are kept).
    """

    def __init__(
        self,
        *,
        structure: StructureConfig | None = None,
        length: LengthConfig | None = None,
        repetition: RepetitionConfig | None = None,
        dedupe: DedupeConfig | None = None,
        correctness: CorrectnessConfig | None = None,
        tokenizer=None,
        system_prompt: str | None = None,
        chat_template_kwargs: dict | None = None,
    ):
        from .grading.answers import BoundedVerifier

        def on(settings):
            return settings if settings is not None and settings.enabled else None

        self.structure, self.repetition = on(structure), on(repetition)
        self.length = on(length) if tokenizer is not None else None
        self.deduper = Deduper() if on(dedupe) else None
        self.correctness = on(correctness)
        self.tokenizer = tokenizer
        self.system_prompt = system_prompt
        self.chat_template_kwargs = chat_template_kwargs
        self.verifier = (
            BoundedVerifier(self.correctness.workers, self.correctness.timeout_s) if self.correctness else None
        )
        self.lengths: list[int] = []  # student tokens of every record the length filter measured

    def seen(self, record: dict[str, Any]) -> None:
        """Count a record kept by an earlier run as seen (dedupe on resume)."""
        if self.deduper is not None:
            self.deduper.add(record)

    def _cheap(self, record: dict[str, Any]):
        """structure → length → repetition → dedupe: True, or (False, reason)."""
        if self.structure is not None:
            verdict = structure_filter(record, self.structure)
            if verdict is not True:
                return verdict
        if self.length is not None:
            length = student_length(
                self.tokenizer, record, system_prompt=self.system_prompt, chat_template_kwargs=self.chat_template_kwargs
            )
            self.lengths.append(length)
            verdict = length_filter(length, self.length)
            if verdict is not True:
                return verdict
        if self.repetition is not None:
            verdict = repetition_filter(record, self.repetition)
            if verdict is not True:
                return verdict
        if self.deduper is not None:
            verdict = self.deduper(record)
            if verdict is not True:
                return verdict
            self.deduper.add(record)
        return True

    def apply(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """A `{keep, reason}` verdict (`dasd.data.records.FilterVerdict`) per record, in order."""
        from .grading.answers import grade_records

        verdicts: list[dict[str, Any]] = []
        survivors = []
        for index, record in enumerate(records):
            verdict = self._cheap(record)
            if verdict is True:
                survivors.append(index)
                verdicts.append({"keep": True, "reason": None})
            else:
                verdicts.append({"keep": False, "reason": verdict[1]})
        if self.verifier is not None and survivors:
            grades = grade_records([records[index] for index in survivors], self.verifier)
            for index, grade in zip(survivors, grades):
                if grade is not None and not grade.correct:
                    verdicts[index] = {"keep": False, "reason": grade.reason or "wrong_answer"}
        return verdicts

    @property
    def verify_timeouts(self) -> int:
        return self.verifier.timeouts if self.verifier is not None else 0

    def close(self) -> None:
        if self.verifier is not None:
            self.verifier.close()

    def __enter__(self) -> FilterChain:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
