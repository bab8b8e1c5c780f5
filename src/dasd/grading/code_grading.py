"""Grade code answers by running them against test cases, in the sandbox (`dasd.grading.sandbox`).

    grade = grade_code(content, tests=[{"input": "1 2\\n", "output": "3\\n", "kind": "stdin"}])
    grade.outcome, grade.tests_passed          # ('passed', 1)

The program is the last fenced code block of the answer's final content (a ```python / ```py block
when there is one, else the last block of any language; none → `no_code`); it must compile
(`compile_error`). Tests are graded as LiveCodeBench's `lcb_runner/evaluation/testing_util.py` grades
them (read at LiveCodeBench/LiveCodeBench@28fef95; each rule below names the function it follows):

* every program runs after LCB's import header (`from typing import *`, `collections`, `heapq`, `math`,
  `itertools`, `bisect`, …, `sys.setrecursionlimit(50000)`), with ints of up to 50,000 digits printable;
* `stdin` — the program reads the input; its output and the expected one are stripped, split on
  newlines and each line stripped; the line counts must agree and each line must be equal, or else be
  whitespace-separated numbers equal as `Decimal`s (exactly: `2.50` = `2.5`, `0.333333` ≠ `1/3`). A
  `SystemExit` ends the program and its output so far is graded;
* `functional` — the input holds one JSON value per line, the arguments of `func_name`, called on
  `Solution()` when the program contains `class Solution` (LeetCode starter code), else as a function;
  the result (a tuple made a list) must `==` the expected JSON value: exactly, no float tolerance.

Deliberate differences: each test runs in its own sandboxed process with a 10 s wall clock (LCB: one process per
answer, 6 s per test by `signal.alarm`); output is kept up to the sandbox's limit plus twice the test's expected
output (`output_limit_for`: LCB keeps all of it, and a correct answer to a test whose expected output is megabytes
must never be `output_limit`; a program that floods past that is stopped); a functional result of a type JSON and
Python's containers cannot express compares unequal (LCB would call its own `__eq__`). The harness artefacts of
LCB's in-process capture (`sys.stdout.buffer` missing, `quit` disabled, the program wrapped in a function) are not
reproduced.

Tests run one process each, stopping at the first failure, whose kind is the answer's outcome:
`wrong_answer`, `runtime_error`, `timeout`, `memory` (or `output_limit`); else `passed`.
`grade_code_many` grades answers in parallel worker threads (each test is its own sandboxed process,
so a killed program never takes a worker with it). A sandbox that cannot start a program raises
`dasd.grading.sandbox.SandboxError`, which stops the grading: no answer is graded on a broken sandbox.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from decimal import Decimal

from .sandbox import DEFAULT_LIMITS, Limits, run_program

OUTCOMES = ("passed", "wrong_answer", "runtime_error", "timeout", "memory", "output_limit", "no_code", "compile_error")
_FENCE = re.compile(r"```([A-Za-z0-9_+-]*)[^\n]*\n(.*?)```", re.DOTALL)

# testing_util.py `import_string`, verbatim: prepended to every program, stdin (`make_function`) and
# functional (`grade_call_based`) alike.
LCB_IMPORT_HEADER = (
    "from string import *\nfrom re import *\nfrom datetime import *\nfrom collections import *\n"
    "from heapq import *\nfrom bisect import *\nfrom copy import *\nfrom math import *\nfrom random import *\n"
    "from statistics import *\nfrom itertools import *\nfrom functools import *\nfrom operator import *\n"
    "from io import *\nfrom sys import *\nfrom json import *\nfrom builtins import *\nfrom typing import *\n"
    "import string\nimport re\nimport datetime\nimport collections\nimport heapq\nimport bisect\nimport copy\n"
    "import math\nimport random\nimport statistics\nimport itertools\nimport functools\nimport operator\n"
    "import io\nimport sys\nimport json\nsys.setrecursionlimit(50000)\n"
)

# What both drivers do first: compute_code_generation_metrics.py sets sys.set_int_max_str_digits(50000) in
# the process the tests run in; then the header, then the program (solution.py), in one namespace.
_PRELUDE = """import json, os, sys
if hasattr(sys, "set_int_max_str_digits"):
    sys.set_int_max_str_digits(50000)
HEADER = @HEADER@
source = open("solution.py", encoding="utf-8").read()
namespace = {"__name__": @NAME@}
exec(compile(HEADER, "lcb_header.py", "exec"), namespace)
""".replace("@HEADER@", repr(LCB_IMPORT_HEADER))

# Runs a `stdin` test. testing_util.call_method: `except SystemExit: pass` — the output so far is graded.
_STDIN_DRIVER = (
    _PRELUDE.replace("@NAME@", '"__main__"')
    + """try:
    exec(compile(source, "solution.py", "exec"), namespace)
except SystemExit:
    pass
"""
)

# Runs a `functional` test: the arguments are JSON lines on stdin. The result goes back as JSON that keeps
# Python's container types (tagged lists), so that the parent can compare it as LCB does — `prediction ==
# gt_out` on the Python value — without trusting the program's objects (`_decode`).
_FUNCTIONAL_DRIVER = (
    _PRELUDE.replace("@NAME@", '"solution"')
    + """exec(compile(source, "solution.py", "exec"), namespace)
# testing_util.compile_code: `if "class Solution" in code: compiled_sol = tmp_sol.Solution()`
target = namespace["Solution"]() if "class Solution" in source else None
function = getattr(target, FUNC_NAME, None) if target is not None else namespace.get(FUNC_NAME)
if function is None:  # testing_util.get_function returns None: graded a runtime error
    sys.exit("no function " + FUNC_NAME)
# testing_util.grade_call_based: `[json.loads(line) for line in inputs.split("\\n")]` (blank lines skipped)
arguments = [json.loads(line) for line in sys.stdin.read().split("\\n") if line.strip()]
result = function(*arguments)
if isinstance(result, tuple):  # grade_call_based: "don't penalize model if it produces tuples instead of lists"
    result = list(result)


def encode(value):
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        value = int(value)
        return value if value.bit_length() < 10000 else ["H", hex(value)]
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str.__str__(value)
    for tag, kind in (("L", list), ("T", tuple), ("S", set), ("F", frozenset)):
        if isinstance(value, kind):
            return [tag, [encode(item) for item in value]]
    if isinstance(value, dict):
        return ["D", [[encode(key), encode(item)] for key, item in value.items()]]
    return ["O", type(value).__name__ + ": " + object.__repr__(value)]


sys.stdout.flush()
report = memoryview(("\\n@@dasd-result@@" + json.dumps(encode(result)) + "\\n").encode())
while report:  # past the program's sys.stdout, which it may have replaced
    report = report[os.write(1, report) :]
"""
)


@dataclass
class CodeGrade:
    correct: bool
    outcome: str  # one of OUTCOMES
    tests_passed: int
    tests_total: int
    detail: str | None = None  # the first failure: what was expected and what came out (shortened)


def extract_code(content: str) -> str | None:
    """The program of an answer: the last ```python (or ```py) block, else the last fenced block.

    >>> extract_code("Idea.\\n```python\\nprint(1)\\n```\\nAnd:\\n```\\nprint(2)\\n```")
    'print(1)\\n'
    >>> extract_code("no code") is None
    True
    """
    blocks = _FENCE.findall(content or "")
    if not blocks:
        return None
    python = [code for language, code in blocks if language.lower() in ("python", "py", "python3")]
    return (python or [code for _, code in blocks])[-1]


def _decimals(line: str) -> list[Decimal] | None:
    """testing_util.convert_line_to_decimals: the line's whitespace-separated tokens as Decimals, or None."""
    try:
        return [Decimal(token) for token in line.split()]
    except ArithmeticError:  # decimal.InvalidOperation: not a number
        return None


def _stripped_lines(text: str) -> list[str]:
    """testing_util.get_stripped_lines: strip the whole, split on newlines, strip each line."""
    return [line.strip() for line in text.strip().split("\n")]


def outputs_match(expected: str, actual: str) -> bool:
    """stdin/stdout comparison as testing_util.grade_stdio: stripped lines, as many, each equal as text or
    (CASE 2) as a list of Decimals — exact, so a float printed with other digits is wrong.

    >>> outputs_match("3\\n2.50\\n", "  3 \\r\\n2.5\\n\\n"), outputs_match("0.333333\\n", "0.3333333333\\n")
    (True, False)
    >>> outputs_match("Yes No\\n", "Yes  No\\n"), outputs_match("1 2\\n", "1  2.0\\n")
    (False, True)
    """
    want, got = _stripped_lines(expected), _stripped_lines(actual)
    if len(want) != len(got):
        return False
    for line_want, line_got in zip(want, got):
        if line_want == line_got:
            continue
        numbers_want, numbers_got = _decimals(line_want), _decimals(line_got)
        try:
            if numbers_want is None or numbers_got is None or numbers_want != numbers_got:
                return False
        except ArithmeticError:  # a signalling NaN does not compare (LCB: an error, a failed test)
            return False
    return True


class _Opaque:
    """A functional result of a type the driver does not carry back: equal to nothing."""

    def __init__(self, description: str):
        self.description = description

    def __eq__(self, other) -> bool:
        return False

    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return f"<{self.description}>"


def _decode(value):
    """The functional driver's result JSON back to the Python value: tagged ["L"|"T"|"S"|"F"|"D"|"H"|"O", …]
    for list, tuple, set, frozenset, dict, a big int and any other object; JSON scalars as they are.

    >>> _decode(["L", [1, ["T", [2.5, "a"]], ["D", [[3, None]]]]])
    [1, (2.5, 'a'), {3: None}]
    """
    if not isinstance(value, list):
        return value
    tag, body = value
    if tag == "H":
        return int(body, 16)
    if tag == "O":
        return _Opaque(body)
    if tag == "D":
        return {_decode(key): _decode(item) for key, item in body}
    kind = {"L": list, "T": tuple, "S": set, "F": frozenset}[tag]
    return kind(_decode(item) for item in body)


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _last_line(text: str) -> str:
    return _short(text.strip().splitlines()[-1] if text.strip() else "")


def output_limit_for(expected: str, limits: Limits) -> Limits:
    """The limits for one test: the output kept grows with the test's expected output, so a correct answer is never
    stopped for its size (LiveCodeBench's tests often expect 10^5 lines or more).

    >>> output_limit_for("x" * 3_000_000, Limits(output_bytes=1 << 20)).output_bytes
    7048576
    >>> output_limit_for("3\\n", Limits(output_bytes=1 << 20)).output_bytes
    1048580
    """
    return replace(limits, output_bytes=limits.output_bytes + 2 * len(expected.encode("utf-8")))


def _run_test(program: str, test: dict, func_name: str | None, limits: Limits) -> tuple[str, str | None]:
    """(outcome, detail) of one test: passed, or the failure kind."""
    files = {"solution.py": program}
    limits = output_limit_for(str(test.get("output", "")), limits)
    if test.get("kind", "stdin") == "functional":
        if not func_name:
            return "runtime_error", "a functional test needs func_name"
        driver = _FUNCTIONAL_DRIVER.replace("FUNC_NAME", json.dumps(func_name))
        result = run_program(driver, stdin=test["input"], limits=limits, files=files)
        if result.status != "ok":
            return result.status, _last_line(result.stderr)
        marker = result.stdout.rfind("@@dasd-result@@")
        if marker < 0:
            return "runtime_error", "no result"
        actual = _decode(json.loads(result.stdout[marker + len("@@dasd-result@@") :]))
        # testing_util.grade_call_based: `tmp_result = prediction == gt_out`, gt_out = json.loads(output)
        if actual == json.loads(test["output"]):
            return "passed", None
        return "wrong_answer", _short(f"expected {test['output']!r}, got {actual!r}")
    result = run_program(_STDIN_DRIVER, stdin=test["input"], limits=limits, files=files)
    if result.status != "ok":
        return result.status, _last_line(result.stderr)
    if outputs_match(test["output"], result.stdout):
        return "passed", None
    return "wrong_answer", _short(f"expected {test['output']!r}, got {result.stdout!r}")


def grade_code(
    content: str, tests: list[dict], *, func_name: str | None = None, limits: Limits = DEFAULT_LIMITS
) -> CodeGrade:
    """Run the answer's program on `tests` ({input, output, kind}) until the first failure."""
    program = extract_code(content)
    if program is None:
        return CodeGrade(False, "no_code", 0, len(tests))
    try:
        compile(program, "main.py", "exec")
    except (SyntaxError, ValueError) as exc:
        return CodeGrade(False, "compile_error", 0, len(tests), _short(str(exc)))
    for index, test in enumerate(tests):
        outcome, detail = _run_test(program, test, func_name, limits)
        if outcome != "passed":
            return CodeGrade(False, outcome, index, len(tests), detail)
    return CodeGrade(True, "passed", len(tests), len(tests))


def grade_code_many(
    items: list[tuple[str, list[dict], str | None]], *, workers: int = 2, limits: Limits = DEFAULT_LIMITS
) -> list[CodeGrade]:
    """Grade `(content, tests, func_name)` items, `workers` answers at a time; results in input order. A
    SandboxError stops the grading at once: the answers not yet started are not run."""
    pool = ThreadPoolExecutor(max_workers=max(1, workers))
    try:
        futures = [
            pool.submit(grade_code, content, tests, func_name=func, limits=limits) for content, tests, func in items
        ]
        return [future.result() for future in futures]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
