"""Code grading throughput: dasd's sandboxed grader against a naive sequential `subprocess.run` loop.

    .venv/bin/python benchmarks/bench_code.py [--answers 120] [--workers 2]

The same answers (a mix of right, wrong and crashing stdin programs, 3 tests each) are graded twice: by
`dasd.grading.code_grading.grade_code_many` (sandbox: rlimits, own uid, namespaces where available; `workers`
answers at a time) and by a plain loop that runs `python -c program` with `subprocess.run(timeout=…)`
for each test — no isolation at all, one at a time. Prints answers/s, tests/s and the ratio measured in
this run (results: benchmarks/RESULTS.md).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

PROGRAMS = [
    "a, b = map(int, input().split())\nprint(a + b)",  # right
    "a, b = map(int, input().split())\nprint(a - b)",  # wrong at the first test
    "import sys\nnums = list(map(int, sys.stdin.read().split()))\nprint(sum(nums))",  # right
    "raise ValueError('no')",  # crashes
]
TESTS = [{"input": f"{a} {b}\n", "output": f"{a + b}\n", "kind": "stdin"} for a, b in ((1, 2), (40, 2), (-5, 5))]


def naive(items, python: str) -> tuple[int, int]:
    passed = tests_run = 0
    for code, tests in items:
        for test in tests:
            tests_run += 1
            run = subprocess.run([python, "-c", code], input=test["input"], capture_output=True, text=True, timeout=10)
            if run.returncode != 0 or run.stdout.strip() != test["output"].strip():
                break
        else:
            passed += 1
    return passed, tests_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--answers", type=int, default=120)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    from dasd.grading.code_grading import grade_code_many
    from dasd.grading.sandbox import Limits, isolation

    walls = isolation()
    items = [(PROGRAMS[index % len(PROGRAMS)], TESTS) for index in range(args.answers)]
    started = time.perf_counter()
    passed, tests_run = naive(items, walls.python)
    naive_seconds = time.perf_counter() - started
    started = time.perf_counter()
    grades = grade_code_many(
        [(f"```python\n{code}\n```", tests, None) for code, tests in items],
        workers=args.workers,
        limits=Limits(wall_s=10, cpu_s=10, memory_mb=512),
    )
    ours_seconds = time.perf_counter() - started
    ours_tests = sum(min(g.tests_passed + (0 if g.correct else 1), g.tests_total) for g in grades)
    assert sum(g.correct for g in grades) == passed, "the two graders disagree"
    setting = f"{args.answers} answers × {len(TESTS)} tests, {os.cpu_count()} CPUs"
    print(f"code grading — {setting}, walls: {walls.describe()}")
    for name, seconds, run in (
        ("naive sequential subprocess.run", naive_seconds, tests_run),
        (f"dasd sandbox, {args.workers} workers", ours_seconds, ours_tests),
    ):
        print(f"  {name:34} {args.answers / seconds:7.1f} answers/s  {run / seconds:7.1f} tests/s  ({seconds:.1f} s)")
    print(f"  ratio (dasd / naive, answers/s): {naive_seconds / ours_seconds:.2f}x")


if __name__ == "__main__":
    main()
