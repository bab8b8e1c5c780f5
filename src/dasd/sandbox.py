"""Run untrusted, model-written programs so that they can neither escape nor stall the run.

    result = run_program("print(int(input()) * 2)", stdin="21\n", limits=Limits(wall_s=5))
    result.status, result.stdout          # ('ok', '42\n')

Each program runs in a fresh temporary directory, as its own process session, with:

* resource limits (rlimits): CPU seconds, address space, file size, open files, processes, no core
  dumps — and a wall-clock timeout after which the whole process group is killed;
* a minimal environment (PATH, LANG, HOME = TMPDIR = its directory): nothing the parent knows, no
  secrets; Python in isolated mode (`-I`: no PYTHON* variables, no user site, no current directory
  on the path);
* where the machine allows it (`isolation()`), stronger walls: when dasd runs as root the program
  runs under an unprivileged uid of its own (it cannot write outside its directory or /tmp, read
  root's files, or signal root's processes, and the process limit applies to it alone), and inside
  new user, network and PID
  namespaces (`unshare`): no network at all — not even loopback —, it cannot see or signal any
  process outside, and every process it started dies with it.

Output is read up to `Limits.output_bytes`; a program that writes more is stopped (`output_limit`).
Statuses: `ok`, `runtime_error` (non-zero exit or killed by a signal), `timeout` (wall or CPU),
`memory` (the address-space limit, seen as MemoryError), `output_limit`. Where only rlimits are
available, `isolation()` says so and `dasd eval` prints a warning.
"""

from __future__ import annotations

import functools
import itertools
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass

NOBODY = 65534
# Programs run as root's children under a uid of their own (when dasd runs as root): the process limit
# counts per uid, so a fork bomb in one run must not starve the runs beside it of processes.
SANDBOX_UIDS = range(200_000, 201_000)
_next_uid = itertools.count()
_uid_lock = threading.Lock()


def _sandbox_uid() -> int:
    with _uid_lock:
        return SANDBOX_UIDS[next(_next_uid) % len(SANDBOX_UIDS)]


@dataclass(frozen=True)
class Limits:
    wall_s: float = 10.0  # wall-clock seconds per run
    cpu_s: int = 10  # CPU seconds per run (RLIMIT_CPU)
    memory_mb: int = 1024  # address space (RLIMIT_AS)
    file_mb: int = 16  # largest file the program may write (RLIMIT_FSIZE)
    processes: int = 32  # processes of the sandbox user (RLIMIT_NPROC; enforced for non-root users)
    open_files: int = 64
    output_bytes: int = 1 << 20  # stdout + stderr kept; more is output_limit


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

    def describe(self) -> str:
        walls = ["rlimits", "own session", "fresh directory", "minimal environment"]
        if self.drop_to_nobody:
            walls.append("an unprivileged uid per run")
        if self.namespaces:
            walls.append("no network, own PID namespace (unshare)")
        return ", ".join(walls)

    @property
    def complete(self) -> bool:
        return self.namespaces and self.drop_to_nobody


@functools.lru_cache(maxsize=1)
def isolation() -> Isolation:
    """What this machine allows (probed once): namespaces via `unshare`, and dropping to `nobody`."""
    root = os.geteuid() == 0
    # the program must be able to run the interpreter as `nobody`: a system Python, not one under /root
    python = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin") or "python3"
    namespaces = False
    unshare = shutil.which("unshare")
    if unshare:
        try:
            probe = subprocess.run(
                [unshare, "--user", "--map-root-user", "--net", "--pid", "--fork", "--kill-child", python, "-c", "0"],
                capture_output=True,
                timeout=20,
                preexec_fn=(lambda: _drop_privileges(NOBODY)) if root else None,
            )
            namespaces = probe.returncode == 0
        except (OSError, subprocess.SubprocessError):
            namespaces = False
    return Isolation(drop_to_nobody=root, namespaces=namespaces, python=python)


def _drop_privileges(uid: int) -> None:
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)


def _child_setup(limits: Limits, uid: int | None):
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
        # after dropping privileges: as root the limit would not be enforced
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.processes, limits.processes))

    return setup


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


def run_program(
    source: str, *, stdin: str = "", limits: Limits = DEFAULT_LIMITS, files: dict[str, str] | None = None
) -> RunResult:
    """Run Python `source` (written to `main.py` in a fresh directory, beside any `files`) with `stdin`."""
    walls = isolation()
    with tempfile.TemporaryDirectory(prefix="dasd-sandbox-") as folder:
        for name, text in {"main.py": source, **(files or {})}.items():
            with open(os.path.join(folder, name), "w", encoding="utf-8") as handle:
                handle.write(text)
        uid = _sandbox_uid() if walls.drop_to_nobody else None
        if uid is not None:
            os.chown(folder, uid, uid)
            for name in os.listdir(folder):
                os.chown(os.path.join(folder, name), uid, uid)
        command = [walls.python, "-I", "main.py"]
        if walls.namespaces:
            command = ["unshare", "--user", "--map-root-user", "--net", "--pid", "--fork", "--kill-child", *command]
        environment = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": folder, "TMPDIR": folder}
        started = time.monotonic()
        process = subprocess.Popen(
            command,
            cwd=folder,
            env=environment,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=_child_setup(limits, uid),
        )
        try:
            stdout, stderr, status = _communicate(process, stdin.encode("utf-8"), limits)
        finally:
            _kill_group(process)  # whatever it left behind in its session
            cpu_seconds = _reap(process)
        seconds = time.monotonic() - started
    text_out = stdout.decode("utf-8", errors="replace")
    text_err = stderr.decode("utf-8", errors="replace")
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
    written more than the output limit (output_limit)."""
    import selectors

    selector = selectors.DefaultSelector()
    chunks: dict[int, list[bytes]] = {1: [], 2: []}
    total = 0
    streams = {process.stdout: 1, process.stderr: 2}
    for stream in streams:
        os.set_blocking(stream.fileno(), False)
        selector.register(stream, selectors.EVENT_READ)
    try:
        process.stdin.write(data)
        process.stdin.close()
    except (BrokenPipeError, OSError):
        pass
    deadline = time.monotonic() + limits.wall_s
    status = None
    open_streams = len(streams)
    while open_streams:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            status = "timeout"
            break
        for key, _ in selector.select(timeout=min(remaining, 0.5)):
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
    selector.close()
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
