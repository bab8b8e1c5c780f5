"""Code benchmark data: LiveCodeBench problems and the shipped code problems (GPQA-Diamond: `dasd.data.gpqa`).

Everything here turns a benchmark's released file into `dasd.data.records.Question` records; running the code
a model writes is not done here.

**LiveCodeBench** (`livecodebench/code_generation_lite`, one problem per JSONL row — users bring the file):

    question_title, question_content, platform, question_id, contest_id,
    contest_date        ISO datetime, e.g. "2024-08-03T00:00:00" (the release date the windows filter on)
    starter_code        "" for stdin problems; "class Solution:\\n    def f(self, ...) -> ...:\\n        " otherwise
    difficulty          easy | medium | hard
    public_test_cases   a JSON string: [{"input": str, "output": str, "testtype": "stdin" | "functional"}, ...]
    private_test_cases  the same JSON string, or base64 of zlib-compressed pickle of it
    metadata            a JSON string, e.g. {"func_name": "maxScore"} for functional (LeetCode) problems

A stdin test feeds `input` to the program and compares what it prints with `output`. A functional test
calls `Solution().<func_name>(*args)` where `args` are the lines of `input`, one JSON value per
argument, and compares the return value with the JSON value `output`. The private tests are unpickled
with `loads_plain_pickle`, which refuses every class and function, so a crafted file cannot run code
when it is read: it stops with a one-line `InputError` instead.

A release-date window keeps the problems whose `contest_date` falls in [start, end) — `"v5"`, `"v6"`
(`LCB_WINDOWS`) or explicit dates; `lcb_window_dates` gives the dates used, and every question carries
them in `meta["window"]` so each result says which problems it covers.

**Shipped code problems** (`dasd/data/code_problems.jsonl`): eight small problems written for this project,
in the LiveCodeBench format (four stdin, four functional; some private tests encoded), so the demo and
the tests run offline. Their contest dates are made up, spread over the v5 and v6 windows.

Usage:

    from dasd.data.code_data import load_code_problems, load_livecodebench, lcb_window_dates

    problems = load_livecodebench("test6.jsonl", window="v6")   # or ("2024-08-01", "2025-02-01")
    problems[0]["meta"]["tests"]      # [{"input": ..., "output": ..., "kind": "stdin" | "functional"}, ...]
    lcb_window_dates("v6")            # {'name': 'v6', 'start': '2025-02-01', 'end': '2025-05-01', ...}
    demo = load_code_problems()       # the shipped problems, offline
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import os
import pickle
import zlib
from datetime import date, datetime, timezone
from importlib import resources
from typing import Any

from ..errors import ConfigError, InputError
from .io import read_records
from .records import Question

# Release-date windows, [start, end) on `contest_date`.
# - v6: LiveCodeBench's README (LiveCodeBench/LiveCodeBench README.md, "Dataset Versions") says release_v5
#   holds problems up to Jan 2025 and release_v6 up to Apr 2025, so the problems v6 adds are those of
#   2025-02-01 .. 2025-05-01 — the window papers report as "LiveCodeBench v6".
# - v5: papers differ. LiveCodeBench's own release_v5 covers May 2023 .. Jan 2025 (880 problems); the window
#   most reasoning-model reports call "v5" is Aug 2024 .. Jan 2025 inclusive (279 problems of release_v5),
#   i.e. 2024-08-01 .. 2025-02-01, which is what is used here. Pass explicit dates for another reading
#   (e.g. ("2023-05-01", "2025-02-01") for all of release_v5).
LCB_WINDOWS: dict[str, tuple[str, str]] = {
    "v5": ("2024-08-01", "2025-02-01"),
    "v6": ("2025-02-01", "2025-05-01"),
}
TEST_KINDS = ("stdin", "functional")
LCB_REQUIRED_FIELDS = ("question_id", "question_content", "contest_date", "public_test_cases", "private_test_cases")
SHIPPED_CODE_PROBLEMS = "code_problems.jsonl"


STARTER_CODE_INSTRUCTION = (
    "Complete the following starter code, keeping its class, method name and signature, "
    "and give the complete solution in a single ```python code block."
)
STDIN_INSTRUCTION = (
    "Write a Python program that reads the input from standard input and writes the answer to standard "
    "output (do not hard-code the examples), and give the complete program in a single ```python code block."
)


# --- decoding the test cases ------------------------------------------------------------------------


class _PlainDataUnpickler(pickle.Unpickler):
    """An unpickler for plain data only: every class or function lookup is refused.

    Strings, bytes, numbers, booleans, None, lists, tuples, dicts and sets are built by pickle opcodes
    of their own; anything that could run code (an object's `__reduce__`, `os.system`, ...) has to be
    looked up by name through `find_class` first, and that fails here.
    """

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(
            f"refused to load {module}.{name}: only plain strings, numbers, lists and dicts may be unpickled"
        )


def loads_plain_pickle(data: bytes) -> Any:
    """Unpickle `data` when it holds only plain values; raise `pickle.UnpicklingError` for anything else.

    >>> loads_plain_pickle(pickle.dumps(["a", {"b": 1, "c": None}]))
    ['a', {'b': 1, 'c': None}]
    >>> loads_plain_pickle(pickle.dumps(date(2024, 1, 1)))
    Traceback (most recent call last):
    ...
    _pickle.UnpicklingError: refused to load datetime.date: only plain strings, numbers, lists and dicts ...
    """
    return _PlainDataUnpickler(io.BytesIO(data)).load()


def encode_test_cases(cases: list[dict[str, Any]]) -> str:
    """The compressed form of a test-case list, as LiveCodeBench ships large private test sets: base64 of
    zlib-compressed pickle of the JSON string.

    >>> cases = [{"input": "2 3", "output": "5", "testtype": "stdin"}]
    >>> decode_test_cases(encode_test_cases(cases)) == cases
    True
    """
    return base64.b64encode(zlib.compress(pickle.dumps(json.dumps(cases)))).decode("ascii")


def decode_test_cases(value: Any) -> list[Any]:
    """The test cases of a `public_test_cases` / `private_test_cases` field, as LiveCodeBench decodes them
    (LiveCodeBench/LiveCodeBench `lcb_runner/benchmarks/code_generation.py`, `CodeGenerationProblem.
    __post_init__`: `json.loads(field)`, falling back to `json.loads(pickle.loads(zlib.decompress(
    base64.b64decode(field))))`) — except that the pickle is read by `loads_plain_pickle`. Raises
    `ValueError` with the reason.

    >>> decode_test_cases('[{"input": "1", "output": "2", "testtype": "stdin"}]')
    [{'input': '1', 'output': '2', 'testtype': 'stdin'}]
    >>> decode_test_cases("not a test list")
    Traceback (most recent call last):
    ...
    ValueError: neither a JSON list nor base64 of zlib-compressed pickle
    """
    if isinstance(value, list):  # already decoded (a dataset that stores the list itself)
        return value
    if not isinstance(value, str):
        raise ValueError(f"must be a string (got {type(value).__name__})")
    try:
        decoded = json.loads(value)
    except json.JSONDecodeError:
        decoded = _decode_compressed(value)
    if isinstance(decoded, str):
        try:
            decoded = json.loads(decoded)
        except json.JSONDecodeError as exc:
            raise ValueError(f"the unpickled text is not JSON ({exc.msg})") from None
    if not isinstance(decoded, list):
        raise ValueError(f"must hold a list of test cases (got {type(decoded).__name__})")
    return decoded


def _decode_compressed(value: str) -> Any:
    try:
        compressed = base64.b64decode(value.encode("utf-8"))
        pickled = zlib.decompress(compressed)
    except (binascii.Error, zlib.error, ValueError):
        raise ValueError("neither a JSON list nor base64 of zlib-compressed pickle") from None
    try:
        return loads_plain_pickle(pickled)
    except pickle.UnpicklingError as exc:
        raise ValueError(f"unsafe or broken pickle: {exc}") from None
    except Exception as exc:  # a damaged pickle raises EOFError, IndexError, KeyError, ...
        raise ValueError(f"broken pickle ({type(exc).__name__}: {exc})") from None


def _checked_tests(cases: list[Any], *, func_name: str | None, path: str, line: int, field: str) -> list[dict]:
    """LiveCodeBench test cases -> `{"input", "output", "kind"}`. A functional test's input must be one JSON
    value per line (the arguments) and its output one JSON value, as LiveCodeBench's grader reads them
    (`lcb_runner/evaluation/testing_util.py`, `grade_call_based`: `json.loads` of each line of the input and
    of the output)."""
    tests = []
    for position, case in enumerate(cases):
        where = f"{field}[{position}]"
        if not isinstance(case, dict):
            raise InputError(path, line, where, "must be an object with input, output and testtype")
        for key in ("input", "output"):
            if not isinstance(case.get(key), str):
                raise InputError(path, line, f"{where}.{key}", "must be a string")
        kind = case.get("testtype")
        if kind not in TEST_KINDS:
            raise InputError(path, line, f"{where}.testtype", f"must be one of {', '.join(TEST_KINDS)} (got {kind!r})")
        if kind == "functional":
            if func_name is None:
                raise InputError(path, line, "metadata", "functional tests need metadata.func_name")
            for part, text in [("input", piece) for piece in case["input"].split("\n")] + [("output", case["output"])]:
                try:
                    json.loads(text)
                except json.JSONDecodeError:
                    raise InputError(
                        path,
                        line,
                        f"{where}.{part}",
                        f"a functional test needs JSON values, one a line (got {text!r:.60})",
                    ) from None
        tests.append({"input": case["input"], "output": case["output"], "kind": kind})
    return tests


# --- release-date windows ---------------------------------------------------------------------------


def lcb_window_dates(window: str | tuple[str, str] | list[str] | None) -> dict[str, Any] | None:
    """The release-date window a setting names, as stated in results: `{"name", "start", "end",
    "end_exclusive"}` with ISO dates; None for no window. A window is a preset of `LCB_WINDOWS`, a
    (start, end) pair, or the text "START..END".

    >>> lcb_window_dates("v6")
    {'name': 'v6', 'start': '2025-02-01', 'end': '2025-05-01', 'end_exclusive': True}
    >>> lcb_window_dates("2024-01-01..2024-07-01")["name"]
    'custom'
    >>> lcb_window_dates(None) is None
    True
    """
    if window is None or window == "":
        return None
    name = "custom"
    if isinstance(window, str):
        if window in LCB_WINDOWS:
            name, window = window, LCB_WINDOWS[window]
        elif ".." in window:
            window = tuple(window.split("..", 1))
        else:
            raise ConfigError(
                f"LiveCodeBench window {window!r}: expected one of {', '.join(LCB_WINDOWS)}, START..END or [start, end]"
            )
    if not isinstance(window, (tuple, list)) or len(window) != 2:
        raise ConfigError(f"LiveCodeBench window {window!r}: expected [start, end] dates (YYYY-MM-DD, end exclusive)")
    try:
        start, end = (date.fromisoformat(str(bound).strip()) for bound in window)
    except ValueError:
        raise ConfigError(f"LiveCodeBench window {list(window)}: dates must be YYYY-MM-DD") from None
    if start >= end:
        raise ConfigError(f"LiveCodeBench window {start}..{end}: the start must come before the end (end exclusive)")
    return {"name": name, "start": start.isoformat(), "end": end.isoformat(), "end_exclusive": True}


def parse_contest_date(value: Any) -> datetime:
    """A `contest_date` (ISO text or a datetime) as a naive UTC datetime; `ValueError` when it is neither.

    >>> parse_contest_date("2024-08-03T00:00:00")
    datetime.datetime(2024, 8, 3, 0, 0)
    >>> parse_contest_date("2025-01-31T23:30:00Z")
    datetime.datetime(2025, 1, 31, 23, 30)
    """
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    else:
        raise ValueError(f"expected an ISO date (got {value!r})")
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return moment


# --- LiveCodeBench -> questions ---------------------------------------------------------------------


def code_prompt(question_content: str, starter_code: str) -> str:
    """The user turn of a code problem: the statement, then either the starter code to complete or the
    stdin/stdout instruction (the two cases of LiveCodeBench's prompt, `lcb_runner/prompts/code_generation.py`).

    >>> print(code_prompt("Print the sum of two integers.", ""))  # doctest: +NORMALIZE_WHITESPACE
    Print the sum of two integers.
    <BLANKLINE>
    Write a Python program that reads the input from standard input and writes the answer to standard output
    (do not hard-code the examples), and give the complete program in a single ```python code block.
    >>> "```python\\nclass Solution:" in code_prompt("Add.", "class Solution:\\n    def add(self, a: int) -> int:\\n")
    True
    """
    statement = question_content.strip()
    if starter_code.strip():
        return f"{statement}\n\n{STARTER_CODE_INSTRUCTION}\n\n```python\n{starter_code.rstrip()}\n```"
    return f"{statement}\n\n{STDIN_INSTRUCTION}"


def _text_field(row: dict[str, Any], field: str, *, path: str, line: int, required: bool = False) -> str:
    value = row.get(field)
    if value is None:
        if required:
            raise InputError(path, line, field, "missing")
        return ""
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise InputError(path, line, field, f"must be a string (got {type(value).__name__})")
    return str(value)


def _metadata(row: dict[str, Any], *, path: str, line: int) -> dict[str, Any]:
    metadata = row.get("metadata") or {}
    if isinstance(metadata, str):
        try:
            metadata = json.loads(metadata) if metadata.strip() else {}
        except json.JSONDecodeError as exc:
            raise InputError(path, line, "metadata", f"invalid JSON ({exc.msg})") from None
    if not isinstance(metadata, dict):
        raise InputError(path, line, "metadata", "must be a JSON object")
    func_name = metadata.get("func_name")
    if func_name is not None and (not isinstance(func_name, str) or not func_name.isidentifier()):
        raise InputError(path, line, "metadata.func_name", f"must be a Python name (got {func_name!r})")
    return metadata


def _lcb_question(
    row: dict[str, Any], contest_date: datetime, *, path: str, line: int, window: dict | None, source: str
) -> Question:
    question_id = _text_field(row, "question_id", path=path, line=line, required=True)
    content = _text_field(row, "question_content", path=path, line=line, required=True)
    if not question_id.strip():
        raise InputError(path, line, "question_id", "must be a non-empty string")
    if not content.strip():
        raise InputError(path, line, "question_content", "must be a non-empty string")
    starter_code = _text_field(row, "starter_code", path=path, line=line)
    func_name = _metadata(row, path=path, line=line).get("func_name")
    tests, public_count = [], 0
    for field in ("public_test_cases", "private_test_cases"):
        try:
            cases = decode_test_cases(row[field])
        except ValueError as exc:
            raise InputError(path, line, field, str(exc)) from None
        tests += _checked_tests(cases, func_name=func_name, path=path, line=line, field=field)
        if field == "public_test_cases":
            public_count = len(tests)
    if not tests:
        raise InputError(path, line, "private_test_cases", "the problem has no test case")
    if starter_code.strip() and func_name is None:
        raise InputError(path, line, "metadata", "a problem with starter code needs metadata.func_name")
    return {
        "id": question_id,
        "messages": [{"role": "user", "content": code_prompt(content, starter_code)}],
        "answer": None,
        "domain": "code",
        "meta": {
            "source": source,
            "title": _text_field(row, "question_title", path=path, line=line),
            "platform": _text_field(row, "platform", path=path, line=line),
            "contest_id": _text_field(row, "contest_id", path=path, line=line),
            "contest_date": contest_date.isoformat(),
            "difficulty": _text_field(row, "difficulty", path=path, line=line),
            "starter_code": starter_code,
            "func_name": func_name,
            "tests": tests,  # public first, then private
            "public_tests": public_count,
            "window": window,
        },
    }


def load_livecodebench(
    path: str | os.PathLike,
    *,
    window: str | tuple[str, str] | list[str] | None = None,
    source: str = "livecodebench",
) -> list[Question]:
    """Read a LiveCodeBench code-generation file (JSONL, Parquet or a saved dataset) into questions, keeping
    the problems released in `window` (see `lcb_window_dates`; None keeps all). Problems outside the window
    are skipped before their tests are decoded. A bad row stops with one line naming the file, line and
    field; so does a window that keeps nothing (the message gives the file's date range)."""
    path = str(path)
    dates = lcb_window_dates(window)
    start = datetime.fromisoformat(dates["start"]) if dates else None
    end = datetime.fromisoformat(dates["end"]) if dates else None
    questions, seen, released = [], {}, []
    for line, row in read_records(path):
        for field in LCB_REQUIRED_FIELDS:
            if field not in row:
                raise InputError(path, line, field, "missing (is this LiveCodeBench's code_generation format?)")
        try:
            contest_date = parse_contest_date(row["contest_date"])
        except ValueError as exc:
            raise InputError(path, line, "contest_date", str(exc)) from None
        released.append(contest_date)
        if dates and not start <= contest_date < end:
            continue
        question = _lcb_question(row, contest_date, path=path, line=line, window=dates, source=source)
        if question["id"] in seen:
            raise InputError(
                path, line, "question_id", f"duplicate id {question['id']!r} (first on line {seen[question['id']]})"
            )
        seen[question["id"]] = line
        questions.append(question)
    if not questions:
        span = f"{min(released).date()}..{max(released).date()}"
        raise InputError(
            path,
            None,
            "contest_date",
            f"no problem in the window {dates['start']}..{dates['end']} (the file spans {span})",
        )
    return questions


def load_code_problems(*, window: str | tuple[str, str] | list[str] | None = None) -> list[Question]:
    """The code problems shipped with dasd (`dasd/data/code_problems.jsonl`, written for this project), read
    by the LiveCodeBench loader; `meta["source"]` is "dasd"."""
    data = resources.files("dasd").joinpath("data", SHIPPED_CODE_PROBLEMS)
    with resources.as_file(data) as path:
        return load_livecodebench(path, window=window, source="dasd")
