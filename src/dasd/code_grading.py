"""Grade code answers by running them against test cases, in the sandbox (`dasd.sandbox`).

    grade = grade_code(content, tests=[{"input": "1 2\\n", "output": "3\\n", "kind": "stdin"}])
    grade.outcome, grade.tests_passed          # ('passed', 1)

The program is the last fenced code block of the answer's final content (a ```python / ```py block
when there is one, else the last block of any language; none → `no_code`); it must compile
(`compile_error`). Test kinds, as in LiveCodeBench:

* `stdin` — the program reads the input and its output is compared with the expected output line by
  line, trailing whitespace ignored, numbers equal within 1e-6 (absolute or relative);
* `functional` — the input holds one JSON value per line, the arguments of `func_name`, called on
  `Solution()` when the program defines that class (LeetCode starter code), else as a function; the
  result must equal the expected JSON value (floats within 1e-6).

Tests run one process each, stopping at the first failure, whose kind is the answer's outcome:
`wrong_answer`, `runtime_error`, `timeout`, `memory` (or `output_limit`); else `passed`.
`grade_code_many` grades answers in parallel worker threads (each test is its own sandboxed process,
so a killed program never takes a worker with it).
"""

from __future__ import annotations

import json
import math
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .sandbox import DEFAULT_LIMITS, Limits, run_program

OUTCOMES = ("passed", "wrong_answer", "runtime_error", "timeout", "memory", "output_limit", "no_code", "compile_error")
_FENCE = re.compile(r"```([A-Za-z0-9_+-]*)[^\n]*\n(.*?)```", re.DOTALL)

# Runs a `functional` test: the program is solution.py, the arguments are JSON lines on stdin.
_FUNCTIONAL_DRIVER = """
import json, sys
sys.setrecursionlimit(100000)
namespace = {"__name__": "solution"}
exec(compile(open("solution.py", encoding="utf-8").read(), "solution.py", "exec"), namespace)
arguments = [json.loads(line) for line in sys.stdin.read().splitlines() if line.strip()]
target = namespace["Solution"]() if "Solution" in namespace else None
function = getattr(target, FUNC_NAME) if target is not None else namespace[FUNC_NAME]
print("\\n@@dasd-result@@" + json.dumps(function(*arguments)))
"""


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


def _number(token: str) -> float | None:
    try:
        return float(token)
    except ValueError:
        return None


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6)


def outputs_match(expected: str, actual: str) -> bool:
    """stdin/stdout comparison: lines with trailing whitespace stripped, trailing blank lines ignored,
    tokens equal or numbers within 1e-6.

    >>> outputs_match("3\\n0.333333\\n", "3  \\n0.3333333333\\n\\n")
    True
    >>> outputs_match("3\\n", "4\\n")
    False
    """
    want = [line.rstrip() for line in expected.rstrip().splitlines()]
    got = [line.rstrip() for line in actual.rstrip().splitlines()]
    if want == got:
        return True
    if len(want) != len(got):
        return False
    for line_want, line_got in zip(want, got):
        tokens_want, tokens_got = line_want.split(), line_got.split()
        if len(tokens_want) != len(tokens_got):
            return False
        for a, b in zip(tokens_want, tokens_got):
            if a == b:
                continue
            x, y = _number(a), _number(b)
            if x is None or y is None or not _close(x, y):
                return False
    return True


def values_match(expected, actual) -> bool:
    """Functional results: equal as JSON values, floats within 1e-6.

    >>> values_match([1, 0.5], [1, 0.5000000001]), values_match({"a": 1}, {"a": 2})
    (True, False)
    """
    if isinstance(expected, float) or isinstance(actual, float):
        return isinstance(expected, (int, float)) and isinstance(actual, (int, float)) and _close(expected, actual)
    if isinstance(expected, list) and isinstance(actual, list):
        return len(expected) == len(actual) and all(values_match(a, b) for a, b in zip(expected, actual))
    if isinstance(expected, dict) and isinstance(actual, dict):
        return expected.keys() == actual.keys() and all(values_match(expected[k], actual[k]) for k in expected)
    return expected == actual


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _run_test(program: str, test: dict, func_name: str | None, limits: Limits) -> tuple[str, str | None]:
    """(outcome, detail) of one test: passed, or the failure kind."""
    if test.get("kind", "stdin") == "functional":
        if not func_name:
            return "runtime_error", "a functional test needs func_name"
        driver = _FUNCTIONAL_DRIVER.replace("FUNC_NAME", json.dumps(func_name))
        result = run_program(driver, stdin=test["input"], limits=limits, files={"solution.py": program})
        if result.status != "ok":
            return result.status, _short(result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "")
        marker = result.stdout.rfind("@@dasd-result@@")
        if marker < 0:
            return "runtime_error", "no result"
        actual = json.loads(result.stdout[marker + len("@@dasd-result@@") :])
        expected = json.loads(test["output"])
        if values_match(expected, actual):
            return "passed", None
        return "wrong_answer", _short(f"expected {test['output']!r}, got {json.dumps(actual)!r}")
    result = run_program(program, stdin=test["input"], limits=limits)
    if result.status != "ok":
        return result.status, _short(result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "")
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
    """Grade `(content, tests, func_name)` items, `workers` answers at a time; results in input order."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(lambda item: grade_code(item[0], item[1], func_name=item[2], limits=limits), items))
