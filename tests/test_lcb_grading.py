"""Code answers graded as LiveCodeBench grades them: original small problems and answers whose grades were
worked out by hand from `lcb_runner/evaluation/testing_util.py` (LiveCodeBench/LiveCodeBench@28fef95), the
rule beside each case. Real sandboxed processes, the real drivers."""

from __future__ import annotations

import sys

import pytest

from dasd.grading.code_grading import grade_code_many, outputs_match
from dasd.grading.sandbox import Limits

LIMITS = Limits(wall_s=8, cpu_s=5, memory_mb=512)


def _stdin(given: str, expected: str) -> list[dict]:
    return [{"input": given, "output": expected, "kind": "stdin"}]


def _call(*cases: tuple[str, str]) -> list[dict]:
    return [{"input": given, "output": expected, "kind": "functional"} for given, expected in cases]


def _big() -> str:
    limit = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        return str(7**6000)  # 5,071 digits: over Python's default 4,300 for int -> str
    finally:
        sys.set_int_max_str_digits(limit)


SUM_OF = "class Solution:\n    def sumOf(self, nums: List[int]) -> int:\n        return sum(nums)"

# (name, program, tests, func_name, LCB's outcome, the rule that gives it)
CASES = [
    (
        "typing names without an import (stdin)",
        "def total(xs: List[int]) -> int:\n    return sum(xs)\nprint(total(list(map(int, input().split()))))",
        _stdin("1 2 3\n", "6\n"),
        None,
        "passed",
        "import_string has `from typing import *`, prepended by make_function (grade_stdio)",
    ),
    (
        "typing names on a Solution method",
        SUM_OF,
        _call(("[1, 2, 3]", "6"), ("[]", "0")),
        "sumOf",
        "passed",
        "grade_call_based: code = import_string + code; compile_code: `class Solution` in code -> Solution()",
    ),
    (
        "stdlib names without imports",
        "q = deque([3, 1, 2])\nh = list(q)\nheapify(h)\nprint(heappop(h), gcd(12, 18), list(accumulate([1, 2])),"
        " bisect_left([1, 3], 2), Counter('aab')['a'])",
        _stdin("", "1 6 [1, 3] 1 2\n"),
        None,
        "passed",
        "import_string: from collections/heapq/math/itertools/bisect import *",
    ),
    (
        "a float printed with other digits",
        "print(1 / int(input()))",
        _stdin("3\n", "0.333333\n"),
        None,
        "wrong_answer",
        "grade_stdio CASE 2: convert_line_to_decimals, Decimal lists equal — exact, no tolerance",
    ),
    (
        "a float printed with the same value",
        "print(5 / 2, 100)",
        _stdin("", "2.50 1e2\n"),
        None,
        "passed",
        "grade_stdio CASE 2: Decimal('2.5') == Decimal('2.50'), Decimal('100') == Decimal('1e2')",
    ),
    (
        "leading and trailing spaces, CRLF, trailing blank lines",
        "import sys\nsys.stdout.write('  1 2 3  \\r\\n   done \\n\\n\\n')",
        _stdin("", "1 2 3\ndone"),
        None,
        "passed",
        "get_stripped_lines: strip the whole, split on newlines, strip each line",
    ),
    (
        "two spaces between words",
        "print('Yes  No')",
        _stdin("", "Yes No\n"),
        None,
        "wrong_answer",
        "grade_stdio: lines differ as text (CASE 1) and are not numbers (CASE 2 fails)",
    ),
    (
        "two spaces between numbers",
        "print('1  2')",
        _stdin("", "1 2\n"),
        None,
        "passed",
        "grade_stdio CASE 2: the line's tokens as Decimals are equal",
    ),
    (
        "a blank line inside the output",
        "print(1)\nprint()\nprint(2)",
        _stdin("", "1\n2\n"),
        None,
        "wrong_answer",
        "grade_stdio: `len(stripped_prediction_lines) != len(stripped_gt_out_lines)`",
    ),
    (
        "sys.exit(1) after the right output",
        "import sys\nprint(3)\nsys.exit(1)",
        _stdin("", "3\n"),
        None,
        "passed",
        "call_method: `except SystemExit: pass` — the output so far is graded",
    ),
    (
        "an int of 5,071 digits",
        "print(7 ** 6000)",
        _stdin("", _big() + "\n"),
        None,
        "passed",
        "compute_code_generation_metrics.py: sys.set_int_max_str_digits(50000)",
    ),
    (
        "recursion 10,000 deep",
        "def depth(n):\n    return 0 if n == 0 else 1 + depth(n - 1)\nprint(depth(int(input())))",
        _stdin("10000\n", "10000\n"),
        None,
        "passed",
        "import_string ends with sys.setrecursionlimit(50000)",
    ),
    (
        "a tuple returned for a list",
        "class Solution:\n    def pair(self, a: int) -> list[int]:\n        return (a, a + 1)",
        _call(("4", "[4, 5]")),
        "pair",
        "passed",
        "grade_call_based: `if isinstance(prediction, tuple): prediction = list(prediction)`",
    ),
    (
        "tuples inside the list returned",
        "class Solution:\n    def pairs(self, a: int) -> list[list[int]]:\n        return [(a, a + 1)]",
        _call(("4", "[[4, 5]]")),
        "pairs",
        "wrong_answer",
        "grade_call_based: only the outer tuple is made a list; [(4, 5)] == [[4, 5]] is False",
    ),
    (
        "a float result off in the 17th digit",
        "class Solution:\n    def third(self, a: float, b: float) -> float:\n        return a + b",
        _call(("0.1\n0.2", "0.3")),
        "third",
        "wrong_answer",
        "grade_call_based: `prediction == gt_out` — 0.30000000000000004 != 0.3, no tolerance",
    ),
    (
        "an int result for a float answer",
        "class Solution:\n    def half(self, n: int) -> float:\n        return n // 2",
        _call(("8", "4.0")),
        "half",
        "passed",
        "grade_call_based: `prediction == gt_out` — 4 == 4.0",
    ),
    (
        "a plain function, no Solution class",
        "def twice(nums):\n    return [2 * x for x in nums]",
        _call(("[1, 2]", "[2, 4]")),
        "twice",
        "passed",
        "compile_code: no `class Solution` -> the module; get_function: getattr(module, fn_name)",
    ),
    (
        "the method asked for is missing",
        SUM_OF,
        _call(("[1]", "1")),
        "productOf",
        "runtime_error",
        "get_function returns None -> run_test's except: [-4] (runtime error)",
    ),
    (
        "arguments one JSON value a line",
        "class Solution:\n    def join(self, words: List[str], sep: str, times: int) -> str:\n"
        "        return sep.join(words) * times",
        _call(('["a", "b"]\n"-"\n2', '"a-ba-b"')),
        "join",
        "passed",
        "grade_call_based: `[json.loads(line) for line in inputs.split('\\n')]`, then method(*gt_inp)",
    ),
    (
        "1.6 MB of expected output (200,000 lines)",
        "n = int(input())\nprint('\\n'.join(['1234567'] * n))",
        _stdin("200000\n", "\n".join(["1234567"] * 200_000) + "\n"),
        None,
        "passed",
        "run_test keeps the whole output (no limit): dasd's grows with the expected output, past the 1 MiB default",
    ),
    (
        "a flood far past the expected output",
        "import sys\nwhile True:\n    sys.stdout.write('1234567\\n' * 8192)",
        _stdin("", "\n".join(["1234567"] * 200_000) + "\n"),
        None,
        "output_limit",
        "LCB would time out (or run out of memory) here; dasd stops it at its limit, 1 MiB + twice the expected",
    ),
]


def _answer(code: str) -> str:
    return f"I will solve it.\n\n```python\n{code}\n```\n"


def test_answers_are_graded_as_livecodebench_grades_them():
    grades = grade_code_many(
        [(_answer(program), tests, func) for _, program, tests, func, _, _ in CASES], workers=2, limits=LIMITS
    )
    wrong = [
        f"{name}: {grade.outcome} ({grade.detail}), LCB {outcome} by {rule}"
        for (name, _, _, _, outcome, rule), grade in zip(CASES, grades)
        if grade.outcome != outcome
    ]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize(
    ("expected", "actual", "same"),
    [
        ("3\n", "3", True),  # get_stripped_lines strips the whole output
        ("", "\n\n", True),  # both are one empty line
        ("0.5\n", "0.50000", True),  # Decimal equality
        ("0.5\n", "0.5000001", False),  # no 1e-6 tolerance
        ("nan\n", "NaN", False),  # Decimal('NaN') != Decimal('NaN'), and the texts differ
        ("inf\n", "Infinity", True),  # Decimal('inf') == Decimal('Infinity')
        ("1 2\n", "1 2 3", False),  # the Decimal lists differ in length
        ("a\n", "A", False),
    ],
)
def test_output_lines_compare_as_grade_stdio_compares_them(expected, actual, same):
    assert outputs_match(expected, actual) is same
