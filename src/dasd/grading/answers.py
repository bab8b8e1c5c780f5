"""Find the final answer in a response and grade it against a reference (math, multiple choice, short).

Used by `dasd filter` (correctness), `dasd mix`, `dasd eval` and `dasd provenance`, all through
`grade_records`. Answers are looked for in the response's `content` (the reasoning is never graded):
the last `\\boxed{…}`/`\\fbox{…}`, else the last bold span of the last paragraph, else "the answer is
…" / "Answer: …", else the last non-empty line.

Math is checked with `math-verify`, gold first. Its own timeouts use signals, which only work in a
main thread, and sympy can hang on inputs such as `9^{9^{9^9}}`; `BoundedVerifier` runs it in
worker processes and kills a worker that overruns its deadline, so a pathological answer is counted
wrong (`verify_timeout`) and can neither hang nor crash the run.
"""

from __future__ import annotations

import json
import re
import select
import string
import subprocess
import sys
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

CHOICE_LETTERS = "ABCDEFGHIJ"  # the options of a multiple-choice question (GPQA: A-D), as graded and as listed
_ANSWER_IS = re.compile(r"(?:final answer|answer)\s*(?:is|:|=)?\s*[:\-]?\s*(.+)", re.IGNORECASE)
_BOLD = re.compile(r"\*\*(.+?)\*\*|__(.+?)__", re.DOTALL)
_IS = re.compile(r"\b(?:is|are|equals|was|=)\s+([^=]+?)[.!]?$", re.IGNORECASE)


def _balanced(text: str, open_at: int) -> str | None:
    """Content of the brace group that opens at `open_at` (which must be '{')."""
    depth = 0
    for index in range(open_at, len(text)):
        if text[index] == "{":
            depth += 1
        elif text[index] == "}":
            depth -= 1
            if depth == 0:
                return text[open_at + 1 : index]
    return None


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{…}` or `\\fbox{…}` (nested braces handled)."""
    best = None
    for match in re.finditer(r"\\(?:boxed|fbox)\s*\{", text):
        content = _balanced(text, match.end() - 1)
        if content is not None:
            best = content
    return best


def extract_final_answer_with_source(text: str) -> tuple[str | None, str | None]:
    """(answer, where it came from: boxed | bold | answer_is | is | last_line), or (None, None)."""
    if not text or not text.strip():
        return None, None
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed.strip(), "boxed"
    paragraphs = [p for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]
    last_paragraph = paragraphs[-1] if paragraphs else text
    bold = [m.group(1) or m.group(2) for m in _BOLD.finditer(last_paragraph)]
    if bold:
        return bold[-1].strip(), "bold"
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    for line in reversed(lines):
        match = _ANSWER_IS.search(line)
        if match and match.group(1).strip():
            return match.group(1).strip().rstrip(".").strip(), "answer_is"
    if not lines:
        return None, None
    statement = _IS.search(lines[-1])
    if statement:
        return statement.group(1).strip(), "is"
    return lines[-1], "last_line"


def extract_final_answer(text: str) -> str | None:
    """The response's final answer text (see the module docstring for where it is looked for)."""
    return extract_final_answer_with_source(text)[0]


def extract_choice(text: str, letters: str = CHOICE_LETTERS) -> str | None:
    """The chosen letter: `\\boxed{C}`, "Answer: C", "**C**", "(C)", "the answer is C", or a lone final "C"."""
    if not text:
        return None
    pattern = f"[{letters}]"
    candidates = []
    boxed = last_boxed(text)
    if boxed is not None:
        candidates.append(boxed)
    candidates += [
        m.group(1)
        for m in re.finditer(
            r"(?:answer|choice|option)\s*(?:is|:)?\s*[:\-]?\s*\**\(?\s*(" + pattern + r")\b", text, re.IGNORECASE
        )
    ][-1:]
    candidates += [m.group(1) or m.group(2) for m in _BOLD.finditer(text)][-1:]
    candidates += [m.group(0) for m in re.finditer(r"\((" + pattern + r")\)", text)][-1:]
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if lines:
        candidates.append(lines[-1])
    for candidate in candidates:
        cleaned = re.sub(r"\\text\{([^}]*)\}", r"\1", candidate).strip().strip("*().:$ ")
        match = re.fullmatch(
            r"(?:option\s+|choice\s+)?\(?(" + pattern + r")\)?(?:[.):]\s*.*)?", cleaned, re.IGNORECASE | re.DOTALL
        )
        if match and (len(cleaned) == 1 or not cleaned[1:2].isalpha()):
            return match.group(1).upper()
    return None


def normalize_short(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces (SQuAD-style)."""
    text = re.sub(r"\\text\{([^}]*)\}", r"\1", text.lower())
    text = "".join(char for char in text if char not in string.punctuation or char in ".-")
    text = text.strip(".")
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


# --- bounded math-verify ----------------------------------------------------------------------


def verify_pair(gold: str, prediction: str) -> tuple[bool, str | None]:
    """math-verify on one pair, without its signal-based timeouts (the caller bounds the time)."""
    from math_verify import parse, verify

    try:
        parsed_gold = parse(gold, parsing_timeout=None)
        if not parsed_gold:
            parsed_gold = parse(f"${gold}$", parsing_timeout=None)
        parsed_prediction = parse(prediction, parsing_timeout=None)
        if not parsed_gold:
            return False, "unparsable_reference"
        if not parsed_prediction:
            return False, "unparsable_answer"
        return bool(verify(parsed_gold, parsed_prediction, timeout_seconds=None)), None
    except Exception as exc:  # sympy and latex2sympy raise many types
        return False, f"verify_error: {type(exc).__name__}"


def _worker_main() -> None:  # pragma: no cover - runs in a child process
    """`python -m dasd.grading.answers`: one JSON [gold, prediction] per stdin line -> one [correct, reason] line."""
    import logging
    import sys

    logging.disable(logging.WARNING)  # math-verify warns on every call made without its signal timeouts
    verify_pair("1", "1")  # import math-verify and sympy now, so no check's time limit pays for it
    sys.stdout.write(READY + "\n")
    sys.stdout.flush()
    for line in sys.stdin:
        gold, prediction = json.loads(line)
        sys.stdout.write(json.dumps(verify_pair(gold, prediction)) + "\n")
        sys.stdout.flush()


READY = "ready"  # the worker's first line: its imports are done and it takes checks
# How long a worker may take to start (the interpreter, dasd, math-verify and sympy: ~2 s idle, far more on a loaded
# machine). Not part of any check's time limit: a first check that paid for the imports timed out under load, and
# each replacement worker then paid again (9 of 16 right answers graded `verify_timeout` with 2 cores saturated).
STARTUP_TIMEOUT_S = 300.0


@dataclass
class _Slot:
    process: subprocess.Popen
    started: float = 0.0
    ready: bool = False


class BoundedVerifier:
    """math-verify in `workers` child processes; each check has `timeout_s` before its worker is killed.

    Workers are plain subprocesses (`python -m dasd.grading.answers`) speaking JSON lines, not
    multiprocessing children: nothing of the parent (threads, torch, the CLI's __main__) is copied or
    re-imported, and a killed worker is simply replaced.
    """

    def __init__(self, workers: int = 2, timeout_s: float = 5.0):
        self.timeout_s = timeout_s
        self.slots = [self._spawn() for _ in range(max(1, workers))]
        self.timeouts = 0

    @staticmethod
    def _spawn() -> _Slot:
        process = subprocess.Popen(
            [sys.executable, "-m", "dasd.grading.answers"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )
        return _Slot(process, started=time.monotonic())

    def _await_ready(self, wait: bool) -> None:
        """Mark the workers whose READY line has come; with `wait`, block until one is ready (a worker that dies or
        takes longer than STARTUP_TIMEOUT_S to start is an error: nothing could be checked)."""
        while True:
            starting = {slot.process.stdout: slot for slot in self.slots if not slot.ready}
            if not starting:
                return
            deadline = min(slot.started for slot in starting.values()) + STARTUP_TIMEOUT_S
            ready, _, _ = select.select(list(starting), [], [], max(0.0, deadline - time.monotonic()) if wait else 0)
            for stream in ready:
                line = stream.readline()
                if line.strip() != READY:
                    raise RuntimeError(f"the math-verify worker failed to start (it said {line.strip()!r})")
                starting[stream].ready = True
            if not ready and wait:
                raise RuntimeError(f"no math-verify worker started within {STARTUP_TIMEOUT_S:g} s")
            if not wait or any(slot.ready for slot in self.slots):
                return

    def verify_many(self, pairs: list[tuple[str, str]]) -> list[tuple[bool, str | None]]:
        """(gold, prediction) pairs -> (correct, reason when not correct because of a failure). A check's time limit
        starts when a started worker takes it (workers start in parallel, before any check)."""
        results: list[tuple[bool, str | None] | None] = [None] * len(pairs)
        pending = deque(enumerate(pairs))
        busy: dict[int, tuple[int, float]] = {}
        while pending or busy:
            self._await_ready(wait=not busy and bool(pending))
            for index, slot in enumerate(self.slots):
                if index not in busy and pending and slot.ready:
                    job, pair = pending.popleft()
                    try:
                        slot.process.stdin.write(json.dumps(list(pair)) + "\n")
                        slot.process.stdin.flush()
                    except (BrokenPipeError, OSError):
                        self._replace(index)
                        pending.appendleft((job, pair))
                        continue
                    # the deadline counts from when the worker got the job, not from the batch start
                    busy[index] = (job, time.monotonic() + self.timeout_s)
            if not busy:
                continue
            nearest = min(deadline for _, deadline in busy.values())
            streams = {self.slots[index].process.stdout: index for index in busy}
            ready, _, _ = select.select(list(streams), [], [], max(0.0, nearest - time.monotonic()))
            for stream in ready:
                index = streams[stream]
                job, _ = busy.pop(index)
                line = stream.readline()
                if line:
                    correct, reason = json.loads(line)
                    results[job] = (bool(correct), reason)
                else:  # the worker died (e.g. out of memory): count it wrong, start a fresh one
                    results[job] = (False, "verify_crashed")
                    self._replace(index)
            now = time.monotonic()
            for index, (job, deadline) in list(busy.items()):
                if now >= deadline:
                    results[job] = (False, "verify_timeout")
                    self.timeouts += 1
                    self._replace(index)
                    del busy[index]
        return [result if result is not None else (False, "verify_error") for result in results]

    def _replace(self, index: int) -> None:
        process = self.slots[index].process
        process.kill()
        process.wait(timeout=5)
        for stream in (process.stdin, process.stdout):
            try:
                stream.close()
            except OSError:
                pass
        self.slots[index] = self._spawn()

    def close(self) -> None:
        for slot in self.slots:
            try:
                slot.process.stdin.close()
                slot.process.wait(timeout=2)
            except (OSError, subprocess.TimeoutExpired):
                slot.process.kill()
            if slot.process.stdout:
                slot.process.stdout.close()

    def __enter__(self) -> BoundedVerifier:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --- grading ---------------------------------------------------------------------------------


@dataclass
class Grade:
    correct: bool
    kind: str  # math | choice | exact | code
    predicted: str | None
    reason: str | None = None  # why it is wrong when that is not simply a different answer (code: the outcome)
    tests_passed: int | None = None  # code: test cases passed before the first failure
    tests_total: int | None = None


def answer_kind(reference: str, domain: str | None, choices=None) -> str:
    if choices or re.fullmatch(rf"\(?[{CHOICE_LETTERS}]\)?", reference.strip()):
        return "choice"
    if domain in ("math", "science") or re.search(r"\d", reference):
        return "math"
    return "exact"


def grade_many(items: list[tuple[str, str, str | None, object]], verifier: BoundedVerifier | None) -> list[Grade]:
    """Grade `(content, reference, domain, choices)` items; math ones go to the verifier together."""
    grades: list[Grade | None] = [None] * len(items)
    math_jobs, math_index = [], []
    for index, (content, reference, domain, choices) in enumerate(items):
        kind = answer_kind(reference, domain, choices)
        if kind == "choice":
            predicted = extract_choice(content)
            expected = reference.strip().strip("()").upper()
            grades[index] = Grade(predicted == expected, kind, predicted, None if predicted else "no_answer")
            continue
        predicted, source = extract_final_answer_with_source(content)
        if predicted is None:
            grades[index] = Grade(False, kind, None, "no_answer")
        elif kind == "exact" or verifier is None:
            grades[index] = Grade(normalize_short(predicted) == normalize_short(reference), "exact", predicted)
        else:
            math_jobs.append((reference, f"\\boxed{{{predicted}}}" if source == "boxed" else predicted))
            math_index.append((index, predicted))
    if math_jobs:
        for (index, predicted), (correct, reason) in zip(math_index, verifier.verify_many(math_jobs)):
            if not correct and reason is None:
                # math-verify found no match; a plain-text answer may still equal a text reference
                correct = normalize_short(predicted) == normalize_short(items[index][1])
            grades[index] = Grade(correct, "math", predicted, None if correct else reason)
    return [grade for grade in grades if grade is not None]


def grade_records(
    records: Sequence[Mapping[str, Any]], verifier: BoundedVerifier | None, *, code_workers: int = 2
) -> list[Grade | None]:
    """Grade each record's final answer (`content`) against its reference (`answer`, with `domain` and
    optional `choices`) — or, for a code record that carries test cases (`meta.tests`), by running its
    program on them in the sandbox (`dasd.grading.code_grading`). None for a record with neither. The one way
    filter, mix, eval and provenance grade."""
    grades: list[Grade | None] = [None] * len(records)
    code = [i for i, record in enumerate(records) if (record.get("meta") or {}).get("tests")]
    if code:
        from .code_grading import grade_code_many

        items = [
            (records[i]["content"], records[i]["meta"]["tests"], records[i]["meta"].get("func_name")) for i in code
        ]
        for index, result in zip(code, grade_code_many(items, workers=code_workers)):
            grades[index] = Grade(
                result.correct,
                "code",
                None,
                None if result.correct else result.outcome,
                result.tests_passed,
                result.tests_total,
            )
    run = set(code)
    graded = [i for i, record in enumerate(records) if i not in run and record.get("answer") not in (None, "")]
    items = [
        (records[i]["content"], str(records[i]["answer"]), records[i].get("domain"), records[i].get("choices"))
        for i in graded
    ]
    for index, grade in zip(graded, grade_many(items, verifier) if items else []):
        grades[index] = grade
    return grades


if __name__ == "__main__":
    _worker_main()
