"""Quality filters for teacher responses. Each returns `True` (keep) or `(False, "snake_case_reason")`.

* `structure` — the response finished (`finish_reason == stop`), has non-empty reasoning and answer,
  no tool call (also none written as text in the answer), no stray think tags. A response sampled with
  `reasoning_format: none` needs no reasoning: its chain of thought is its answer (`reasoning_in_answer`,
  the record's own field, not an option here);
* `length` — prompt + think-tagged response (the answer alone for one whose reasoning is its answer:
  `assistant_text`, the text build-sft writes) + end token, in **student** tokens, fits `max_length`;
* `repetition` — repeated long paragraphs, a sentence looping, too many repeated sentences or word
  n-grams, or a text whose tail is one unit repeated over and over. Defaults were set on the
  examples in tests/test_filters.py: a healthy 20K-token chain of thought that restates its formula
  and says "Wait, let me double-check" several times passes; loops of each kind do not;
* `correctness` — graded against the reference with `dasd.grading.answers` (math-verify, bounded);
* `dedupe` — a second identical response to the same question.

`FilterChain.apply` runs them in that order — structure → length → repetition → dedupe →
correctness — each record stopping at the first that rejects it; correctness is graded for a whole
chunk at once (math-verify in parallel workers). `dasd filter` and `dasd mix` both use it. Only dedupe
depends on the records before it: `FilterChain.screen` does the rest for a chunk, anywhere, and
`FilterChain.decide` dedupes in input order — `ScreeningPool` screens in worker processes
(`dasd filter workers=N`) with the same verdicts.
"""

from __future__ import annotations

import hashlib
import math
import re
import sys
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

from pydantic import Field

from ..config import SPEED_ONLY, StageConfig
from ..data.records import Response, assistant_text, reasoning_in_answer
from ..text.reasoning import TOOL_CALL_MARKERS
from ..text.sentences import split_sentences

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
    workers: int = Field(
        2,
        ge=1,
        description="math-verify worker processes (in each of dasd filter's worker processes, if any)",
        json_schema_extra=SPEED_ONLY,
    )
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
    if not reasoning.strip() and not reasoning_in_answer(record):
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
    """Student tokens of the training text: prompt, assistant text (`assistant_text`, as build-sft writes it), end
    token."""
    from ..text.render import render_completion, with_system_prompt

    prompt_ids, completion_ids, _, _ = render_completion(
        tokenizer,
        with_system_prompt(record["messages"], system_prompt),
        assistant_text(record["reasoning"], record["content"])[0],
        add_end_token=True,
        chat_template_kwargs=chat_template_kwargs,
    )
    return len(prompt_ids) + len(completion_ids)


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

    @staticmethod
    def key(record: dict[str, Any]) -> tuple[str, str]:
        return str(record.get("question_id")), response_fingerprint(record)

    def add(self, record: dict[str, Any]) -> None:
        self.seen.add(self.key(record))

    def __call__(self, record: dict[str, Any]):
        if self.key(record) in self.seen:
            return False, "duplicate"
        return True


class Screening(NamedTuple):
    """What the per-record filters found for one record — everything `FilterChain.decide` needs but the
    duplicates seen so far, so records can be screened in worker processes and decided in input order."""

    reason: str | None  # the first of structure → length → repetition to reject it
    key: tuple[str, str] | None  # (question id, response fingerprint): dedupe on and no rejection above
    length: int | None  # student tokens, when the length filter measured them
    grade: tuple[bool, str | None] | None  # (correct, reason) when correctness graded it


# What the filters read of a record: all a worker process gets (a response's log-probs and sentences are most of
# its bytes and no filter reads them).
SCREENED_FIELDS = ("id", "question_id", "messages", "reasoning", "content", "finish_reason", "answer", "domain")
SCREENED_OPTIONAL = ("choices", "meta", "reasoning_format")


def screened_part(record: dict[str, Any]) -> dict[str, Any]:
    """The fields of a record the filters read (what is sent to a worker process)."""
    part = {name: record.get(name) for name in SCREENED_FIELDS}
    part.update({name: record[name] for name in SCREENED_OPTIONAL if name in record})
    return part


class FilterChain:
    """The quality filters of one stage, in the fixed order, with the state they need across records
    (the student tokenizer for lengths, the bounded math-verify workers, the duplicates seen so far).

        with FilterChain(structure=StructureConfig(), length=LengthConfig(), repetition=RepetitionConfig(),
                         correctness=CorrectnessConfig(), tokenizer=student_tokenizer) as chain:
            for record, verdict in zip(chunk, chain.apply(chunk)): ...

    A filter whose config is None or has `enabled: false` is skipped; the length filter also needs a
    tokenizer, correctness a reference answer on the record (records without one are kept).

    `apply` is `screen` (the per-record filters and the grading: any process can do it, chunk by chunk)
    then `decide` (dedupe, which must see every record in input order, and the verdicts): `dasd filter`
    screens in worker processes and decides in its main process, with the same result record for record.
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
        from ..grading.answers import BoundedVerifier

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
        # student tokens of every record the length filter measured (count, sum, max: not one per record)
        self.lengths_measured, self.lengths_total, self.lengths_max = 0, 0, 0
        self.timeouts = 0  # verify_timeout grades among the verdicts

    def seen(self, record: dict[str, Any]) -> None:
        """Count a record kept by an earlier run as seen (dedupe on resume)."""
        if self.deduper is not None:
            self.deduper.add(record)

    def _per_record(self, record: dict[str, Any]) -> tuple[str | None, int | None]:
        """structure → length → repetition: (the reason it is rejected or None, its student tokens if measured)."""
        if self.structure is not None:
            verdict = structure_filter(record, self.structure)
            if verdict is not True:
                return verdict[1], None
        length = None
        if self.length is not None:
            length = student_length(
                self.tokenizer, record, system_prompt=self.system_prompt, chat_template_kwargs=self.chat_template_kwargs
            )
            verdict = length_filter(length, self.length)
            if verdict is not True:
                return verdict[1], length
        if self.repetition is not None:
            verdict = repetition_filter(record, self.repetition)
            if verdict is not True:
                return verdict[1], length
        return None, length

    def screen(self, records: list[dict[str, Any]], known: set | None = None) -> list[Screening]:
        """The per-record filters of a chunk, and the grades of the records that reach correctness. A record
        certain to be a duplicate — its key is in `known` (the keys seen before this chunk, when the caller
        has them) or an earlier record of the chunk passed with the same key — is not graded: `decide`
        rejects it as a duplicate whatever the chunks before it hold. Others are graded even if an earlier
        chunk makes them duplicates (their grade is then unused)."""
        from ..grading.answers import grade_records

        screened: list[Screening] = []
        passed: set[tuple[str, str]] = set()
        to_grade: list[int] = []
        for index, record in enumerate(records):
            reason, length = self._per_record(record)
            key = None
            if reason is None and self.deduper is not None:
                key = self.deduper.key(record)
                certain_duplicate = key in passed or (known is not None and key in known)
                passed.add(key)
            else:
                certain_duplicate = False
            if reason is None and not certain_duplicate and self.verifier is not None:
                to_grade.append(index)
            screened.append(Screening(reason, key, length, None))
        if to_grade:
            grades = grade_records([records[index] for index in to_grade], self.verifier)
            for index, grade in zip(to_grade, grades):
                if grade is not None:
                    screened[index] = screened[index]._replace(grade=(grade.correct, grade.reason))
        return screened

    def decide(self, screened: list[Screening]) -> list[dict[str, Any]]:
        """The verdicts of screened records, in input order: dedupe (the only filter with state across
        records) sees every record that passed structure → length → repetition, then the grade decides."""
        verdicts: list[dict[str, Any]] = []
        for item in screened:
            if item.length is not None:
                self.lengths_measured += 1
                self.lengths_total += item.length
                self.lengths_max = max(self.lengths_max, item.length)
            if item.reason is not None:
                verdicts.append({"keep": False, "reason": item.reason})
                continue
            if self.deduper is not None and item.key is not None:
                if item.key in self.deduper.seen:
                    verdicts.append({"keep": False, "reason": "duplicate"})
                    continue
                self.deduper.seen.add(item.key)
            if item.grade is not None and not item.grade[0]:
                reason = item.grade[1] or "wrong_answer"
                self.timeouts += reason == "verify_timeout"
                verdicts.append({"keep": False, "reason": reason})
            else:
                verdicts.append({"keep": True, "reason": None})
        return verdicts

    def apply(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """A `{keep, reason}` verdict (`dasd.data.records.FilterVerdict`) per record, in order."""
        return self.decide(self.screen(records, self.deduper.seen if self.deduper is not None else None))

    @property
    def student_tokens(self) -> dict[str, float] | None:
        """Max and mean student tokens of the records the length filter measured (None when it measured none)."""
        if not self.lengths_measured:
            return None
        return {"max": self.lengths_max, "mean": round(self.lengths_total / self.lengths_measured, 1)}

    @property
    def verify_timeouts(self) -> int:
        """math-verify checks that ran out of time, among the records decided here."""
        return self.timeouts

    def close(self) -> None:
        if self.verifier is not None:
            self.verifier.close()

    def __enter__(self) -> FilterChain:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --- screening in worker processes (`dasd filter workers=N`) ------------------------------------------------------
# A worker is a plain subprocess running `_serve_worker`, as BoundedVerifier's are: nothing of the parent (threads,
# torch, the caller's __main__, which multiprocessing's spawn would import again) is copied or re-run. It reads
# pickled messages on stdin — its settings, then chunks of records — and writes on stdout whether its FilterChain
# started, then each chunk's screenings (plain tuples), in order.

_WORKER_PROGRAM = """
import os, sys
root = {root!r}  # where the parent imported dasd from (a checkout's src/ is not always on the path)
if not any(os.path.realpath(entry or ".") == root for entry in sys.path):
    sys.path.insert(0, root)
from dasd.selection.filters import _serve_worker
_serve_worker()
sys.stderr.flush()
os._exit(0)  # not a normal shutdown: the stdin reader thread may hold stdin's lock, a fatal error then
"""


def _serve_worker() -> None:  # pragma: no cover - runs in a child process
    import pickle
    import queue
    import signal
    import threading
    import traceback

    from ..errors import DasdError
    from ..models.assets import load_tokenizer

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it closes the workers
    tasks_in, results_out = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing a library prints may corrupt the result stream
    tasks: queue.Queue = queue.Queue()

    def answer(status: str, payload: Any) -> None:
        pickle.dump((status, payload), results_out, protocol=pickle.HIGHEST_PROTOCOL)
        results_out.flush()

    def read() -> None:  # always drain stdin, so the parent never blocks on a full pipe while this one writes
        while True:
            try:
                tasks.put(pickle.load(tasks_in))
            except EOFError:
                tasks.put(None)
                return

    threading.Thread(target=read, daemon=True).start()
    settings, tokenizer_name = tasks.get()
    try:
        chain = FilterChain(**settings, tokenizer=load_tokenizer(tokenizer_name) if tokenizer_name else None)
    except DasdError as exc:  # e.g. a tokenizer that is not there: the parent stops with the same one line
        return answer("dasd_error", str(exc))
    except Exception:
        return answer("error", traceback.format_exc())
    answer("ok", None)
    try:
        while (records := tasks.get()) is not None:
            try:
                answer("ok", [tuple(item) for item in chain.screen(records)])
            except Exception:
                answer("error", traceback.format_exc())
    finally:
        chain.close()


class _Worker:
    def __init__(self, settings: dict[str, Any], tokenizer_name: str | None):
        import os
        import subprocess

        root = os.path.realpath(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir))
        program = _WORKER_PROGRAM.format(root=root)
        self.process = subprocess.Popen([sys.executable, "-c", program], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.send((settings, tokenizer_name))

    def send(self, message: Any) -> None:
        import pickle

        try:
            pickle.dump(message, self.process.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            self.process.stdin.flush()
        except BrokenPipeError:
            code = self.process.wait()
            raise RuntimeError(f"a filter worker process died (exit status {code})") from None

    def _receive(self) -> Any:
        import pickle

        from ..errors import DasdError

        try:
            status, payload = pickle.load(self.process.stdout)
        except EOFError:
            code = self.process.wait()
            raise RuntimeError(f"a filter worker process died (exit status {code})") from None
        if status == "dasd_error":
            raise DasdError(payload)
        if status != "ok":
            raise RuntimeError(f"a filter worker failed:\n{payload}")
        return payload

    def wait_started(self) -> None:
        """Its first answer: whether its FilterChain started (a DasdError, e.g. no such tokenizer, if not)."""
        self._receive()

    def receive(self) -> list[Screening]:
        return [Screening(*item) for item in self._receive()]

    def close(self, *, wait_s: float) -> None:
        import subprocess

        try:
            self.process.stdin.close()
            self.process.wait(timeout=wait_s)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()


class ScreeningPool:
    """`workers` processes that each build `FilterChain(**settings)` once (with the tokenizer `tokenizer_name`
    loads) and screen chunks of records (`FilterChain.screen`); they start loading when the pool is made.

        with ScreeningPool(2, settings, "qwen3") as pool:
            for chunk, screenings in pool.screen(chunks):
                verdicts = chain.decide(screenings)  # in input order

    Making the pool waits until every worker has started (seconds: each imports transformers and loads the
    tokenizer) or raises what stopped one. A worker gets only the fields the filters read (`screened_part`);
    chunk i goes to worker i mod `workers`, each has at most 2 in flight, so memory stays bounded whatever the
    input's size."""

    def __init__(self, workers: int, settings: dict[str, Any], tokenizer_name: str | None):
        self.workers = [_Worker(settings, tokenizer_name) for _ in range(workers)]
        self.finished = False
        try:  # they start side by side; a setting that fails stops the run here, before any record is written
            for worker in self.workers:
                worker.wait_started()
        except BaseException:
            self.close()
            raise

    def screen(self, chunks: Iterable[list[dict[str, Any]]]) -> Iterator[tuple[list[dict[str, Any]], list[Screening]]]:
        """`(chunk, its screenings)` for each chunk, in input order."""
        count = len(self.workers)
        in_flight: deque = deque()
        for index, chunk in enumerate(chunks):
            worker = self.workers[index % count]
            worker.send([screened_part(record) for record in chunk])
            in_flight.append((chunk, worker))
            if len(in_flight) >= 2 * count:
                chunk, worker = in_flight.popleft()
                yield chunk, worker.receive()
        while in_flight:
            chunk, worker = in_flight.popleft()
            yield chunk, worker.receive()
        self.finished = True

    def close(self) -> None:
        for worker in self.workers:  # idle when all was read; else what they do is not needed any more
            worker.close(wait_s=10.0 if self.finished else 1.0)

    def __enter__(self) -> ScreeningPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
