"""Model-written programs in the sandbox (real processes, no mocks): graded right, and hostile ones
contained, counted, and leaving no process behind."""

from __future__ import annotations

import os
import socket
import threading
import time

import psutil
import pytest

from dasd.grading.code_grading import grade_code, grade_code_many
from dasd.grading.sandbox import SANDBOX_UIDS, Limits, isolation, run_program

LIMITS = Limits(wall_s=5, cpu_s=3, memory_mb=256, file_mb=8)
ADD = [{"input": "1 2\n", "output": "3\n", "kind": "stdin"}, {"input": "10 -4\n", "output": "6\n", "kind": "stdin"}]
TWO_SUM = [
    {"input": "[2, 7, 11, 15]\n9", "output": "[0, 1]", "kind": "functional"},
    {"input": "[3, 3]\n6", "output": "[0, 1]", "kind": "functional"},
]


def _answer(code: str) -> str:
    return f"Here is my solution.\n\n```python\n{code}\n```\n"


def _leftovers() -> list:
    """Processes a sandboxed program may have left: children of this test process, or (when programs run under
    the sandbox's own uids) any process of those uids."""
    found = [child for child in psutil.Process().children(recursive=True) if child.is_running()]
    if isolation().drop_to_nobody:
        found += [p for p in psutil.process_iter(["uids"]) if p.info["uids"] and p.info["uids"].real in SANDBOX_UIDS]
    return found


def test_stdin_and_functional_solutions_are_graded():
    add = "a, b = map(int, input().split())\nprint(a + b)"
    assert grade_code(_answer(add), ADD, limits=LIMITS).outcome == "passed"
    wrong = grade_code(_answer(add.replace("+", "-")), ADD, limits=LIMITS)
    assert (wrong.outcome, wrong.tests_passed) == ("wrong_answer", 0) and "expected" in wrong.detail
    starter = (
        "class Solution:\n    def twoSum(self, nums: list[int], target: int) -> list[int]:\n"
        "        seen = {}\n        for i, x in enumerate(nums):\n            if target - x in seen:\n"
        "                return [seen[target - x], i]\n            seen[x] = i\n"
    )
    assert grade_code(_answer(starter), TWO_SUM, func_name="twoSum", limits=LIMITS).outcome == "passed"
    third = {"input": "[1, 5, 2]\n3", "output": "[0, 2]", "kind": "functional"}
    half = grade_code(
        _answer("def twoSum(nums, target):\n    return [0, 1]"), [*TWO_SUM, third], func_name="twoSum", limits=LIMITS
    )
    assert (half.outcome, half.tests_passed, half.tests_total) == ("wrong_answer", 2, 3)
    floats = [{"input": "3\n", "output": "0.333333\n", "kind": "stdin"}]  # exact, as LCB: tests/test_lcb_grading.py
    assert grade_code(_answer("print(f'{1 / int(input()):.6f}')"), floats, limits=LIMITS).correct
    assert grade_code("I think the answer is 3.", ADD, limits=LIMITS).outcome == "no_code"
    assert grade_code(_answer("def broken(:\n    pass"), ADD, limits=LIMITS).outcome == "compile_error"
    assert grade_code(_answer("raise RuntimeError(3)"), ADD, limits=LIMITS).outcome == "runtime_error"


@pytest.mark.integration  # a dozen hostile programs run for real (5-9 s): make test, not test-unit
def test_hostile_programs_are_contained_counted_and_leave_nothing_behind(tmp_path, monkeypatch):
    monkeypatch.setenv("DASD_TEST_SECRET", "hunter2")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    connections = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                connections.append(listener.accept())
            except OSError:
                pass

    threading.Thread(target=accept, daemon=True).start()
    outside = tmp_path / "written-from-the-sandbox"
    parent = os.getpid()
    write_10gb = "with open('big', 'wb') as f:\n    for _ in range(10240):\n        f.write(bytes(1 << 20))"
    hostile = {
        "infinite loop": ("while True:\n    pass", {"timeout"}),
        "sleep forever": ("import time\ntime.sleep(3600)", {"timeout"}),
        "fork bomb": (
            "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
            {"timeout"},
        ),
        "memory hog": ("hog = []\nwhile True:\n    hog.append(bytearray(50 << 20))", {"memory"}),
        "10 GB write": (write_10gb, {"runtime_error"}),
        "network": (
            f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\nprint(3)",
            {"runtime_error"},
        ),
        "secret": ("import os\nprint(os.environ.get('DASD_TEST_SECRET', 'nothing'))", {"wrong_answer"}),
        "write outside": (f"open({str(outside)!r}, 'w').write('x')\nprint(3)", {"runtime_error"}),
        "kill the parent": (f"import os, signal\nos.kill({parent}, signal.SIGKILL)\nprint(3)", {"runtime_error"}),
        "output flood": ("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)", {"output_limit"}),
    }
    expect_secret = [{"input": "", "output": "hunter2\n", "kind": "stdin"}]
    started = time.monotonic()
    grades = grade_code_many(
        [(_answer(code), expect_secret if name == "secret" else ADD, None) for name, (code, _) in hostile.items()],
        workers=2,
        limits=LIMITS,
    )
    seconds = time.monotonic() - started
    stop.set()
    for (name, (_, allowed)), grade in zip(hostile.items(), grades):
        assert grade.outcome in allowed, f"{name}: {grade.outcome} ({grade.detail})"
    assert not connections, "a sandboxed program reached a local listener"
    assert not outside.exists(), "a sandboxed program wrote outside its directory"
    assert seconds < 60  # three timeouts of at most 5 s, two answers at a time, and the rest
    time.sleep(0.5)
    assert not _leftovers(), f"processes left behind: {_leftovers()}"
    listener.close()


def test_the_machine_gives_the_full_walls_when_run_as_root():
    """CI runs as root with unprivileged namespaces: programs run under their own uid, without network, in their own
    PID namespace. (A developer machine may allow less; dasd eval then warns.)"""
    walls = isolation()
    if os.geteuid() == 0:
        assert walls.complete, walls.describe()
    result = run_program("import os\nprint(os.getppid(), os.environ.get('HOME') == os.getcwd())", limits=LIMITS)
    assert result.status == "ok" and result.stdout.split()[1] == "True"


@pytest.mark.integration
def test_two_hundred_answers_finish_within_their_bound():
    """A grading run over 200 answers, a mix of right, wrong, crashing, flooding and looping ones."""
    programs = [
        "a, b = map(int, input().split())\nprint(a + b)",
        "a, b = map(int, input().split())\nprint(a * b)",
        "raise RuntimeError('boom')",
        "import sys\nwhile True:\n    sys.stdout.write('y' * 65536)",
    ]
    items = [(_answer(programs[index % 4]), ADD, None) for index in range(196)]
    items += [(_answer("while True:\n    pass"), ADD, None) for _ in range(4)]
    limits = Limits(wall_s=3, cpu_s=2, memory_mb=256)
    started = time.monotonic()
    grades = grade_code_many(items, workers=2, limits=limits)
    seconds = time.monotonic() - started
    counts = {outcome: sum(g.outcome == outcome for g in grades) for outcome in {g.outcome for g in grades}}
    assert counts == {"passed": 49, "wrong_answer": 49, "runtime_error": 49, "output_limit": 49, "timeout": 4}
    assert seconds < 120, seconds  # measured ~30 s on 2 cores; the 4 CPU-limit timeouts cost 2 s each
    assert not _leftovers()


@pytest.mark.timeout(120)
def test_a_megabyte_of_input_never_blocks_the_grader():
    """1.5 MB of stdin: echoed line by line (the program prints while it reads: written before reading, the
    pipes fill both ways and deadlock), or never read at all — by a program that prints 1.5 MB and exits,
    and one that sleeps. Each ends within its wall limit with its own outcome, and nothing is left."""
    lines = "".join(f"{number}\n" for number in range(240_000))
    assert len(lines) > 1_500_000
    limits = Limits(wall_s=5, cpu_s=5, memory_mb=512, output_bytes=4 << 20)
    started = time.monotonic()
    echo = grade_code(
        _answer("import sys\nfor line in sys.stdin:\n    sys.stdout.write(line)"),
        [{"input": lines, "output": lines, "kind": "stdin"}],
        limits=limits,
    )
    assert echo.outcome == "passed" and time.monotonic() - started < limits.wall_s, echo
    flood = run_program("import sys\nsys.stdout.write('x' * 1_500_000)", stdin=lines, limits=limits)
    assert (flood.status, len(flood.stdout)) == ("ok", 1_500_000) and flood.seconds < limits.wall_s
    sleeper = run_program("import time\ntime.sleep(60)", stdin=lines, limits=limits)
    assert sleeper.status == "timeout" and sleeper.seconds < limits.wall_s + 3, sleeper.seconds
    time.sleep(0.5)
    assert not _leftovers(), f"processes left behind: {_leftovers()}"
