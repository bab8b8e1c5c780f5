"""The sandbox for whoever runs dasd: a user who is not root, whose uid runs other busy jobs, gets correct
programs graded correct; a sandbox that cannot start stops the run with one line; the programs run with the
interpreter dasd runs under (or a configured one, version checked). Real processes, a real second uid."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import dasd
from dasd.grading.sandbox import MIN_PYTHON, NOBODY, SANDBOX_UIDS, SandboxError, isolation, run_program

USER = 201_500  # a uid no process runs as: outside SANDBOX_UIDS, unlikely to be a real account
assert USER not in SANDBOX_UIDS

# Runs as USER beside a process of USER with 40 threads: 41 tasks of the uid, more than the sandbox's
# 32-process limit — which, set as a plain RLIMIT_NPROC, counts every task of the uid on the machine.
HARNESS = """
import json, resource, sys
from dasd.grading.code_grading import grade_code
from dasd.grading.sandbox import SandboxError, _tasks_of, isolation, run_program
import os

walls = isolation()
# forks sleeping children until the process limit stops it: how many a run may start, whatever the uid runs
FORKS = "import os, time\\nn = 0\\ntry:\\n    while n < 1000:\\n        if os.fork() == 0:\\n"
FORKS += "            time.sleep(60)\\n            os._exit(0)\\n        n += 1\\n"
FORKS += "except OSError:\\n    pass\\nprint(n)\\n"
add = [{"input": "1 2\\n", "output": "3\\n", "kind": "stdin"}, {"input": "10 -4\\n", "output": "6\\n", "kind": "stdin"}]
total = [{"input": "[1, 2, 3]", "output": "6", "kind": "functional"}]
fence = "```"
adder = fence + "python\\na, b = map(int, input().split())\\nprint(a + b)\\n" + fence
method = fence + "python\\nclass Solution:\\n    def total(self, nums: List[int]) -> int:\\n"
method += "        return sum(nums)\\n" + fence
threads = fence + "python\\nimport threading\\nt = [threading.Thread(target=len, args=([],)) for _ in range(8)]\\n"
threads += "[x.start() for x in t]\\n[x.join() for x in t]\\nprint(3)\\n" + fence
report = {
    "tasks": _tasks_of(os.getuid()),
    "walls": walls.describe(),
    "python": walls.python,
    "executable": sys.executable,
    "forks": run_program(FORKS).stdout.strip(),
    "grades": [grade_code(adder, add).outcome, grade_code(method, total, func_name="total").outcome,
               grade_code(threads, add[:1]).outcome],
}
# The uid may start exactly one more task: the sandbox's first process starts, unshare's fork fails — the
# sandbox could not start the program.
limit = _tasks_of(os.getuid()) + 1
resource.setrlimit(resource.RLIMIT_NPROC, (limit, limit))
try:
    report["infrastructure"] = grade_code(adder, add).outcome
except SandboxError as exc:
    report["infrastructure"] = str(exc)
print(json.dumps(report))
"""

NEIGHBOUR = """
import threading, time
for _ in range(40):
    threading.Thread(target=time.sleep, args=(120,), daemon=True).start()
print("ready", flush=True)
time.sleep(120)
"""


def _as_user(uid: int):
    def drop() -> None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)

    return drop


@pytest.fixture
def fresh_isolation():
    """isolation() is probed once per process; these tests change what it finds."""
    isolation.cache_clear()
    yield
    isolation.cache_clear()


def test_a_user_who_is_not_root_with_a_busy_uid_gets_correct_programs_graded_correct():
    if os.geteuid() != 0:
        pytest.skip("needs root to run the harness under a second, unprivileged uid")
    python = isolation().python  # an interpreter other uids can run (checked by isolation())
    folder = Path(tempfile.mkdtemp(prefix="dasd-user-test-"))
    neighbour = None
    try:
        # the package, readable by USER (the checkout may not be)
        shutil.copytree(
            Path(dasd.__file__).parent,
            folder / "dasd",
            ignore=lambda _, names: [n for n in names if not n.endswith(".py") and "." in n or n == "__pycache__"],
        )
        for path in [folder, *folder.rglob("*")]:
            path.chmod(0o755)
        environment = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(folder), "PYTHONPATH": str(folder)}
        neighbour = subprocess.Popen(
            [python, "-c", NEIGHBOUR], stdout=subprocess.PIPE, text=True, preexec_fn=_as_user(USER), cwd=folder
        )
        assert neighbour.stdout.readline().strip() == "ready"
        run = subprocess.run(
            [python, "-c", HARNESS],
            capture_output=True,
            text=True,
            timeout=240,
            cwd=folder,
            env=environment,
            preexec_fn=_as_user(USER),
        )
        assert run.returncode == 0, run.stderr[-2000:]
        report = json.loads(run.stdout.strip().splitlines()[-1])
    finally:
        if neighbour is not None:
            neighbour.kill()
            neighbour.wait()
        shutil.rmtree(folder, ignore_errors=True)
    assert report["tasks"] > 40
    assert report["grades"] == ["passed", "passed", "passed"], report
    assert 16 <= int(report["forks"]) < 40, report  # the run's own bound (32 tasks), not the uid's 41 others
    # not root: the programs run with the interpreter dasd runs under
    assert report["python"] == report["executable"], report
    if "unshare" in report["walls"]:  # unshare's fork failed: not an answer graded wrong, one line that stops the run
        message = report["infrastructure"]
        assert message.startswith("the sandbox could not start a program") and "\n" not in message, report
        assert "unshare" in message and "fork failed" in message, message


def test_the_programs_run_with_dasds_python_or_a_configured_one_whose_version_is_checked(fresh_isolation, monkeypatch):
    running = sys.version_info[:2]
    walls = isolation()
    assert walls.python_version == f"{running[0]}.{running[1]}"
    if os.geteuid() != 0:
        assert walls.python == sys.executable
    result = run_program("import sys\nprint(*sys.version_info[:2], sys.flags.isolated)")
    assert result.stdout.split() == [str(running[0]), str(running[1]), "1"]

    # a configured interpreter is used when the sandbox's uid can run it and it is recent enough
    monkeypatch.setenv("DASD_SANDBOX_PYTHON", walls.python)
    isolation.cache_clear()
    assert isolation().python == walls.python

    # one that reports an old version is refused, in one line (a stand-in: no Python 3.8 is installed here)
    folder = Path(tempfile.mkdtemp(prefix="dasd-python-test-"))  # reachable by the sandbox's uid
    folder.chmod(0o755)
    old = folder / "python3.8"
    old.write_text("#!/bin/sh\necho 3 8\n")
    old.chmod(0o755)
    monkeypatch.setenv("DASD_SANDBOX_PYTHON", str(old))
    isolation.cache_clear()
    with pytest.raises(SandboxError, match=r"is Python 3\.8; code answers need Python >= 3\.10") as error:
        isolation()
    assert "\n" not in str(error.value) and MIN_PYTHON == (3, 10)

    if os.geteuid() == 0:  # one the sandbox's uid cannot reach (a venv under /root) is refused, not used
        hidden = folder / "hidden"
        hidden.mkdir(mode=0o700)
        (hidden / "python").symlink_to(walls.python)
        monkeypatch.setenv("DASD_SANDBOX_PYTHON", str(hidden / "python"))
        isolation.cache_clear()
        with pytest.raises(SandboxError, match=f"the sandbox's uid {NOBODY} cannot run it"):
            isolation()
    shutil.rmtree(folder)
