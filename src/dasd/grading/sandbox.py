"""Run untrusted, model-written programs so that they can neither escape nor stall the run.

    result = run_program("print(int(input()) * 2)", stdin="21\n", limits=Limits(wall_s=5))
    result.status, result.stdout          # ('ok', '42\n')

Each program runs in a fresh temporary directory, as its own process session, with:

* resource limits (rlimits): CPU seconds, address space, file size, open files, no core dumps — and a
  wall-clock timeout after which the whole process group is killed. Stdin is written in the same loop
  that reads stdout/stderr and keeps that clock (as `subprocess.communicate` does), so a program that
  prints while it reads, or never reads, cannot block the grader;
* a bound on its processes and threads that counts this run's alone (`_process_bound`), whoever runs dasd;
* a minimal environment (PATH, LANG, HOME = TMPDIR = its directory): nothing the parent knows, no
  secrets; Python in isolated mode (`-I`: no PYTHON* variables, no user site, no current directory
  on the path) — the interpreter dasd runs under, or `DASD_SANDBOX_PYTHON` (`isolation()`);
* where the machine allows it (`isolation()`), stronger walls: when dasd runs as root the program
  runs under an unprivileged uid of its own (it cannot write outside its directory or /tmp, read
  root's files, or signal root's processes, and the process limit applies to it alone), and inside
  new user, network and PID
  namespaces (`unshare`): no network at all — not even loopback —, it cannot see or signal any
  process outside, and every process it started dies with it.

Output is read up to `Limits.output_bytes`; a program that writes more is stopped (`output_limit`).
Statuses: `ok`, `runtime_error` (non-zero exit or killed by a signal), `timeout` (wall or CPU),
`memory` (the address-space limit, seen as MemoryError), `output_limit`. Where only rlimits are
available, `isolation()` says so and `dasd eval` prints a warning. A sandbox that cannot start the
program at all (no interpreter it may run, `unshare` or a fork failing) raises `SandboxError`: an
infrastructure failure that stops the run with one line — never an answer graded wrong.
"""

from __future__ import annotations

import functools
import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

from ..errors import DasdError

NOBODY = 65534
# Programs run as root's children under a uid of their own (when dasd runs as root): the process limit
# counts per uid, so a fork bomb in one run must not starve the runs beside it of processes.
SANDBOX_UIDS = range(200_000, 201_000)
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
# A configured interpreter (DASD_SANDBOX_PYTHON) must be at least dasd's own minimum (pyproject's
# requires-python): answers are written for a current Python (`match`, `X | Y`, `itertools.pairwise`).
MIN_PYTHON = (3, 10)
_next_uid = itertools.count()
_uid_lock = threading.Lock()


class SandboxError(DasdError):
    """The sandbox could not start a program: an infrastructure failure that stops the run (no answer is
    graded on it)."""


def _sandbox_uid() -> int:
    with _uid_lock:
        return SANDBOX_UIDS[next(_next_uid) % len(SANDBOX_UIDS)]


@dataclass(frozen=True)
class Limits:
    wall_s: float = 10.0  # wall-clock seconds per run
    cpu_s: int = 10  # CPU seconds per run (RLIMIT_CPU)
    memory_mb: int = 1024  # address space (RLIMIT_AS)
    file_mb: int = 16  # largest file the program may write (RLIMIT_FSIZE)
    processes: int = 32  # processes and threads of one run (RLIMIT_NPROC, counted per run: `_process_bound`)
    open_files: int = 64
    # stdout + stderr kept; more is output_limit (the code grader adds twice each test's expected output)
    output_bytes: int = 1 << 20


DEFAULT_LIMITS = Limits()


@dataclass
class RunResult:
    status: str  # ok | runtime_error | timeout | memory | output_limit
    stdout: str
    stderr: str
    returncode: int | None
    seconds: float


@dataclass(frozen=True)
class Isolation:
    drop_to_nobody: bool  # running as root: the program runs as an unprivileged uid of its own
    namespaces: bool  # unshare --user --net --pid works here
    python: str  # the interpreter the programs run with
    python_version: str = ""  # its major.minor, e.g. "3.11"
    # RLIMIT_NPROC set inside a user namespace counts that namespace's tasks only (Linux >= 5.14, probed)
    processes_per_namespace: bool = False

    def describe(self) -> str:
        walls = ["rlimits", "own session", "fresh directory", "minimal environment"]
        if self.drop_to_nobody:
            walls.append("an unprivileged uid per run")
        if self.namespaces:
            walls.append("no network, own PID namespace (unshare)")
        walls.append(f"Python {self.python_version} ({self.python})")
        return ", ".join(walls)

    @property
    def complete(self) -> bool:
        return self.namespaces and self.drop_to_nobody


def _python_version(python: str, uid: int | None) -> tuple[tuple[int, int] | None, str]:
    """(major, minor) of `python` as `uid` (None: as ourselves) runs it, or (None, why it cannot)."""
    try:
        probe = subprocess.run(
            [python, "-I", "-c", "import sys; print('%d %d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=20,
            cwd="/",
            env={"PATH": SYSTEM_PATH, "LANG": "C.UTF-8"},
            preexec_fn=(lambda: _drop_privileges(uid)) if uid is not None else None,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return None, getattr(exc, "strerror", None) or str(exc)
    words = probe.stdout.split()
    if probe.returncode != 0 or len(words) != 2 or not all(word.isdigit() for word in words):
        lines = probe.stderr.strip().splitlines()
        return None, lines[-1] if lines else f"exit status {probe.returncode}"
    return (int(words[0]), int(words[1])), ""


def _interpreter(uid: int | None) -> tuple[str, tuple[int, int]]:
    """The Python the programs run with, checked by running it as the sandbox's uid: `DASD_SANDBOX_PYTHON`
    when set (>= MIN_PYTHON), else the one dasd runs under — `sys.executable`, or, where the sandbox's uid
    cannot run that (a venv whose base lives under /root), its base interpreter or the system's python of
    the same major.minor. The programs need the standard library only, so any of these grades alike; an
    older system `python3` (3.6 or 3.8 on common cluster images) is never picked."""
    who = f"the sandbox's uid {uid}" if uid is not None else "this user"
    configured = os.environ.get("DASD_SANDBOX_PYTHON")
    if configured:
        version, why = _python_version(configured, uid)
        if version is None:
            raise SandboxError(f"DASD_SANDBOX_PYTHON={configured}: {who} cannot run it ({why})")
        if version < MIN_PYTHON:
            raise SandboxError(
                f"DASD_SANDBOX_PYTHON={configured} is Python {version[0]}.{version[1]}; code answers need "
                f"Python >= {MIN_PYTHON[0]}.{MIN_PYTHON[1]}"
            )
        return configured, version
    running = sys.version_info[:2]
    same = shutil.which(f"python{running[0]}.{running[1]}", path=SYSTEM_PATH)
    tried = []
    for candidate in dict.fromkeys(c for c in (sys.executable, getattr(sys, "_base_executable", None), same) if c):
        version, why = _python_version(candidate, uid)
        if version == running:
            return candidate, version
        tried.append(f"{candidate} ({why or f'Python {version[0]}.{version[1]}'})")
    raise SandboxError(
        f"no Python {running[0]}.{running[1]} that {who} can run: {', '.join(tried)}; make the one dasd runs "
        "under readable by other users, or set DASD_SANDBOX_PYTHON"
    )


# Inside a fresh user namespace, with RLIMIT_NPROC 2, fork once: that succeeds only where the limit counts the
# namespace's tasks (the probe and its child), not every task of the uid (at least dasd, unshare and the probe).
_NPROC_PROBE = (
    "import os, resource\nresource.setrlimit(resource.RLIMIT_NPROC, (2, 2))\npid = os.fork()\n"
    "if pid == 0:\n    os._exit(0)\nos.waitpid(pid, 0)\n"
)
_UNSHARE = ["--user", "--map-root-user", "--net", "--pid", "--fork", "--kill-child"]


@functools.lru_cache(maxsize=1)
def isolation() -> Isolation:
    """What this machine allows (probed once): the interpreter, namespaces via `unshare`, dropping to
    `nobody`, and whether a process limit set inside a namespace counts that namespace alone."""
    root = os.geteuid() == 0
    as_uid = NOBODY if root else None
    python, version = _interpreter(as_uid)
    namespaces = per_namespace = False
    unshare = shutil.which("unshare")
    if unshare:
        drop = (lambda: _drop_privileges(NOBODY)) if root else None
        try:
            probe = subprocess.run(
                [unshare, *_UNSHARE, python, "-I", "-c", "0"], capture_output=True, timeout=20, preexec_fn=drop
            )
            namespaces = probe.returncode == 0
            if namespaces and not root:
                probe = subprocess.run(
                    [unshare, *_UNSHARE, python, "-I", "-c", _NPROC_PROBE], capture_output=True, timeout=20
                )
                per_namespace = probe.returncode == 0
        except (OSError, subprocess.SubprocessError):
            pass
    return Isolation(root, namespaces, python, f"{version[0]}.{version[1]}", per_namespace)


def _drop_privileges(uid: int) -> None:
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)


def _tasks_of(uid: int) -> int:
    """Tasks (processes and threads: what RLIMIT_NPROC counts) of `uid` on this machine, from /proc."""
    count = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/status", encoding="ascii", errors="replace") as handle:
                fields = dict(line.split(":", 1) for line in handle if ":" in line)
            if int(fields["Uid"].split()[0]) == uid:
                count += int(fields["Threads"])
        except (OSError, KeyError, ValueError, IndexError):
            continue  # gone meanwhile
    return count


def _process_bound(walls: Isolation, limits: Limits) -> tuple[int | None, int]:
    """(RLIMIT_NPROC for the sandbox's first process, or None; RLIMIT_NPROC the program sets for itself
    inside its namespace, or 0). RLIMIT_NPROC counts every task of the uid on the machine, not the run's:
    with a uid shared with busy jobs, a plain limit of 32 makes `unshare` (or any thread) fail at once.
    So:

    * as root each run has a uid of its own: its count is the run's, the limit is set as is (any kernel);
    * not root, where the limit counts per user namespace (Linux >= 5.14, probed in `isolation()`): the
      namespace is made under the user's own limit, and the limit is set inside it, where it counts the
      run's tasks alone;
    * else the uid's count now plus the limit: the run may add `processes` tasks, give or take what the
      uid's other processes start or end meanwhile (a pids cgroup would be exact, but needs delegation
      that an unprivileged user rarely has)."""
    if walls.drop_to_nobody:
        return limits.processes, 0
    if walls.namespaces and walls.processes_per_namespace:
        return None, limits.processes
    return _tasks_of(os.getuid()) + limits.processes + 2, 0  # + 2: the sandbox's own process and unshare's child


def _child_setup(limits: Limits, uid: int | None, processes: int | None):
    def setup() -> None:  # runs in the child between fork and exec
        import resource

        os.setsid()
        for name, value in (
            (resource.RLIMIT_CPU, limits.cpu_s),
            (resource.RLIMIT_AS, limits.memory_mb << 20),
            (resource.RLIMIT_FSIZE, limits.file_mb << 20),
            (resource.RLIMIT_NOFILE, limits.open_files),
            (resource.RLIMIT_CORE, 0),
        ):
            resource.setrlimit(name, (value, value))
        if uid is not None:
            _drop_privileges(uid)
        if processes is not None:  # after dropping privileges: as root the limit would not be enforced
            hard = resource.getrlimit(resource.RLIMIT_NPROC)[1]
            value = processes if hard == resource.RLIM_INFINITY else min(processes, hard)
            resource.setrlimit(resource.RLIMIT_NPROC, (value, value))

    return setup


# The sandbox's first Python code, before the program's: set the in-namespace process limit (when
# `_process_bound` says so), then tell the parent, through a pipe of its own, that the program starts —
# whatever fails before that byte is the sandbox's failure, not the answer's. The program then runs as
# `python main.py` would run it: in this `__main__` module, its names removed.
_BOOTSTRAP = """import os, sys
started, processes = int(sys.argv[1]), int(sys.argv[2])
if processes:
    import resource
    hard = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    processes = processes if hard == resource.RLIM_INFINITY else min(processes, hard)
    resource.setrlimit(resource.RLIMIT_NPROC, (processes, processes))
os.write(started, b"1")
os.close(started)
sys.argv = sys.argv[3:]
__file__ = sys.argv[0]
del os, sys, started, processes
exec(compile(open(__file__, "rb").read(), __file__, "exec"))
"""


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as handle:
            return [int(child) for child in handle.read().split()]
    except (OSError, ValueError):
        return []


def _kill_group(process: subprocess.Popen) -> None:
    """Kill everything the run started. Under `unshare`, the namespace's init (unshare's child) goes first:
    its death takes every process of the namespace with it, and unshare, still alive, reaps it — killed
    first, unshare would leave it to be reaped by the machine's init."""
    for child in _children(process.pid):
        try:
            os.kill(child, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.monotonic() + 2.0
    while _children(process.pid) and time.monotonic() < deadline:
        time.sleep(0.005)
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _one_line(text: str, limit: int = 200) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "")[:limit]


def run_program(
    source: str, *, stdin: str = "", limits: Limits = DEFAULT_LIMITS, files: dict[str, str] | None = None
) -> RunResult:
    """Run Python `source` (written to `main.py` in a fresh directory, beside any `files`) with `stdin`.
    Raises SandboxError when the program could not be started."""
    walls = isolation()
    outer_processes, inner_processes = _process_bound(walls, limits)
    with tempfile.TemporaryDirectory(prefix="dasd-sandbox-") as folder:
        for name, text in {"main.py": source, **(files or {})}.items():
            with open(os.path.join(folder, name), "w", encoding="utf-8") as handle:
                handle.write(text)
        uid = _sandbox_uid() if walls.drop_to_nobody else None
        if uid is not None:
            os.chown(folder, uid, uid)
            for name in os.listdir(folder):
                os.chown(os.path.join(folder, name), uid, uid)
        started_read, started_write = os.pipe()
        command = [walls.python, "-I", "-c", _BOOTSTRAP, str(started_write), str(inner_processes), "main.py"]
        if walls.namespaces:
            command = ["unshare", *_UNSHARE, *command]
        environment = {"PATH": SYSTEM_PATH, "LANG": "C.UTF-8", "HOME": folder, "TMPDIR": folder}
        started = time.monotonic()
        try:
            try:
                process = subprocess.Popen(
                    command,
                    cwd=folder,
                    env=environment,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    pass_fds=(started_write,),
                    preexec_fn=_child_setup(limits, uid, outer_processes),
                )
            except (OSError, subprocess.SubprocessError) as exc:
                raise SandboxError(f"the sandbox could not start a program: {exc}") from exc
            finally:
                os.close(started_write)
            try:
                stdout, stderr, status = _communicate(process, stdin.encode("utf-8"), limits)
            finally:
                _kill_group(process)  # whatever it left behind in its session
                cpu_seconds = _reap(process)
            os.set_blocking(started_read, False)
            try:
                program_started = os.read(started_read, 1) == b"1"
            except BlockingIOError:
                program_started = False
        finally:
            os.close(started_read)
        seconds = time.monotonic() - started
    text_out = stdout.decode("utf-8", errors="replace")
    text_err = stderr.decode("utf-8", errors="replace")
    if not program_started:
        why = f"not started within {limits.wall_s:g} s" if status == "timeout" else f"exit status {process.returncode}"
        raise SandboxError(f"the sandbox could not start a program ({why}): {_one_line(text_err) or 'no message'}")
    if status is None:
        if process.returncode == 0:
            status = "ok"
        elif "MemoryError" in text_err:
            status = "memory"
        elif cpu_seconds >= limits.cpu_s * 0.95:
            status = "timeout"  # killed at the CPU limit (SIGXCPU; under unshare it reports that as exit 1)
        else:
            status = "runtime_error"
    return RunResult(status, text_out, text_err, process.returncode, round(seconds, 3))


def _reap(process: subprocess.Popen) -> float:
    """Wait for the (killed) program and return the CPU seconds it and the processes it waited for used."""
    while True:
        try:
            _, wait_status, usage = os.wait4(process.pid, 0)
            break
        except InterruptedError:
            continue
        except ChildProcessError:  # already reaped
            return 0.0
    process.returncode = os.waitstatus_to_exitcode(wait_status)
    return usage.ru_utime + usage.ru_stime


def _communicate(process: subprocess.Popen, data: bytes, limits: Limits) -> tuple[bytes, bytes, str | None]:
    """Feed stdin and collect output until the program exits, its wall time runs out (timeout) or it has
    written more than the output limit (output_limit). Stdin is written in the same select loop as the
    output is read (non-blocking, as CPython's `subprocess.Popen._communicate` does): written first, a
    large input deadlocks against a program that prints while it reads, and blocks past the wall clock
    on one that never reads."""
    import selectors

    selector = selectors.DefaultSelector()
    chunks: dict[int, list[bytes]] = {1: [], 2: []}
    total = 0
    streams = {process.stdout: 1, process.stderr: 2}
    for stream in streams:
        os.set_blocking(stream.fileno(), False)
        selector.register(stream, selectors.EVENT_READ)
    pending = memoryview(data)
    if pending:
        os.set_blocking(process.stdin.fileno(), False)
        selector.register(process.stdin, selectors.EVENT_WRITE)
    else:
        process.stdin.close()
    deadline = time.monotonic() + limits.wall_s
    status = None
    open_streams = len(streams)
    try:
        while open_streams:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                status = "timeout"
                break
            for key, _ in selector.select(timeout=min(remaining, 0.5)):
                if key.fileobj is process.stdin:
                    try:
                        pending = pending[os.write(process.stdin.fileno(), pending[:65536]) :]
                    except BlockingIOError:
                        continue
                    except OSError:  # the program closed its stdin or exited: the rest is not wanted
                        pending = pending[:0]
                    if not pending:
                        selector.unregister(process.stdin)
                        process.stdin.close()
                    continue
                piece = os.read(key.fileobj.fileno(), 65536)
                if not piece:
                    selector.unregister(key.fileobj)
                    open_streams -= 1
                    continue
                chunks[streams[key.fileobj]].append(piece)
                total += len(piece)
                if total > limits.output_bytes:
                    status = "output_limit"
                    break
            if status:
                break
    finally:
        selector.close()
        try:
            process.stdin.close()
        except OSError:
            pass
    while status is None:
        # both streams closed: wait for the exit without reaping (the caller reaps, to read the CPU time)
        if _exited(process.pid):
            break
        if time.monotonic() >= deadline:
            status = "timeout"
            break
        time.sleep(0.01)
    return b"".join(chunks[1]), b"".join(chunks[2]), status


def _exited(pid: int) -> bool:
    """Whether the process has exited (a zombie waiting to be reaped), without reaping it."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None
