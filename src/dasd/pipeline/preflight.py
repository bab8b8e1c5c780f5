"""Before `dasd run` does any work: the first records of each question and benchmark file its steps will read.

    checked, problems = input_problems(steps, jobs)
    # problems: ["data/q.jsonl:3: field 'messages[0].role': must be one of system, … (got 'human')",
    #            "data/bench.jsonl: file not found (nor a shipped benchmark: aime24, aime25, code, rg:<task>, …)"]

`dasd sample` and `dasd eval` read their files whole and check every record before they start — but their steps
come hours apart, and eval's after training. Here the first `HEAD` records of each file are read (streamed: a file of
millions of questions costs what a small one does) and put through the checks those stages make on every record
(`normalize_question`, or `released_row_to_records` for rows of the released data; a benchmark question's choices
and its reference answer), so a misnamed file or a malformed record is one line per problem before anything is
written: `dry_run=true` lists them, a run stops on them. A bad record further into a file is still found by its
stage, before that stage writes anything. Only the steps that will run are looked at: a finished step reads nothing.
"""

from __future__ import annotations

import glob
import itertools
from pathlib import Path
from typing import Any

from ..data.benchmarks import SHIPPED, _file_and_window, _with_choices
from ..data.io import iter_records
from ..data.records import is_released_row, normalize_question, released_row_to_records
from ..errors import InputError
from .step import StepJob, is_done
from .steps import Step

HEAD = 20  # records read from the start of each file
GENERATED = ("rg:", "reasoning_gym:")  # benchmarks made by reasoning-gym: no file to read
KNOWN_BENCHMARKS = f"{', '.join(SHIPPED)}, code, rg:<task>, lcb:<file>, gpqa:<file>"


def input_problems(steps: list[Step], jobs: dict[str, StepJob], head: int = HEAD) -> tuple[list[str], list[str]]:
    """(the files read, one line per problem) for the question files of the sample steps and the benchmarks of the
    eval steps that will run (not done with their current fingerprint), each file once."""
    checked: list[str] = []
    problems: list[str] = []
    seen: set[str] = set()
    for step in steps:
        job = jobs[step.name]
        if step.stage not in ("sample", "eval") or is_done(job):
            continue
        named = [job.config["input"]] if step.stage == "sample" else list(job.config["benchmarks"])
        for name in named:
            if name in seen:
                continue
            seen.add(name)
            found, read = benchmark_problems(name, head) if step.stage == "eval" else question_problems(name, head)
            problems += found
            if read:
                checked.append(name)
    return checked, problems


def question_problems(path: str, head: int = HEAD, *, benchmark: bool = False) -> tuple[list[str], bool]:
    """(one line per problem, whether the file was read) for the first `head` records of a question file, checked
    as `load_questions` checks every record (and, for a `benchmark`, as `load_benchmark` checks its questions).
    A Hub dataset (`hf://…`) is left to its stage, which downloads it."""
    if path.startswith("hf://"):
        return [], False
    problems: list[str] = []
    seen: dict[str, int] = {}
    records = iter_records(path)
    read = 0
    try:
        for line, record in itertools.islice(records, head):
            read += 1
            try:
                question = _question(record, path, line, seen)
                if benchmark and question is not None:
                    _check_benchmark_question(question, path, line)
            except InputError as exc:
                problems.append(str(exc))
    except InputError as exc:  # the file itself: not found, unreadable, a line that is not JSON
        problems.append(str(exc))
    finally:
        records.close()
    if not read and not problems:
        problems.append(str(InputError(path, None, None, "no records (empty file)")))
    return problems, read > 0


def benchmark_problems(spec: str, head: int = HEAD) -> tuple[list[str], bool]:
    """(one line per problem, whether a file was read) for one of `dasd eval`'s benchmarks: a question file's first
    records; a LiveCodeBench or GPQA file's presence (their rows are checked by their loaders); nothing for the
    benchmarks that ship with dasd or that reasoning-gym generates."""
    if spec in SHIPPED or spec == "code" or spec.startswith(GENERATED):
        return [], False
    for prefix in ("lcb:", "gpqa:"):
        if spec.startswith(prefix):
            file = _file_and_window(spec[len(prefix) :])[0] if prefix == "lcb:" else spec[len(prefix) :]
            missing = not (glob.glob(file) if any(char in file for char in "*?[") else Path(file).exists())
            return ([str(InputError(file, None, None, f"file not found (benchmark {spec})"))] if missing else []), False
    if not Path(spec).exists() and not any(char in spec for char in "*?["):
        return [
            str(InputError(spec, None, None, f"file not found (nor a shipped benchmark: {KNOWN_BENCHMARKS})"))
        ], False
    return question_problems(spec, head, benchmark=True)


def _question(record: dict[str, Any], path: str, line: int, seen: dict[str, int]) -> dict[str, Any] | None:
    """The question of one record as `load_questions` reads it (None for another response to a released question
    already read); a duplicate id is an error, as there."""
    released = is_released_row(record)
    if released:
        question, _ = released_row_to_records(record, path=path, line=line)
    else:
        question = normalize_question(record, path=path, line=line)
    if question["id"] in seen:
        if released:
            return None
        raise InputError(path, line, "id", f"duplicate id {question['id']!r} (first on line {seen[question['id']]})")
    seen[question["id"]] = line
    return question


def _check_benchmark_question(question: dict[str, Any], path: str, line: int) -> None:
    """`load_benchmark`'s checks of a question from a file: its choices, and a reference answer to grade against."""
    try:
        question = _with_choices(question, path)
    except InputError as exc:  # it names the question; here the line is known
        raise InputError(path, line, exc.field, exc.message) from None
    if question.get("answer") in (None, ""):
        raise InputError(path, line, "answer", "a benchmark question needs a reference answer")


def render_inputs(checked: list[str], problems: list[str], head: int = HEAD) -> str:
    """`dry_run`'s lines about the inputs: one per problem, or what was read."""
    if problems:
        header = (
            f"inputs: {len(problems)} problem(s) in the first {head} records of each file — a run stops on them "
            "before any work:"
        )
        return "\n".join([header, *(f"  {problem}" for problem in problems)])
    if not checked:
        return (
            "inputs: no question or benchmark file to read (the steps that read them are done, or read data that "
            "ships with dasd)"
        )
    return f"inputs: the first {head} records of {', '.join(checked)}: no problem"


def problems_error(problems: list[str], shown: int = 3) -> str:
    """The one-line error of a run that stops on its inputs."""
    more = f" (+{len(problems) - shown} more: dry_run=true lists them)" if len(problems) > shown else ""
    return f"{len(problems)} input problem(s), nothing ran: {'; '.join(problems[:shown])}{more}"
