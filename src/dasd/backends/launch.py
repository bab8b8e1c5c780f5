"""A model server started by dasd on the task's own node (`backend.launch`), checked, and always stopped.

    backend:
      name: openai
      model: /shared/models/gpt-oss-120b
      launch: "vllm serve {model} --port {port} --tensor-parallel-size 8 --logprobs-mode raw_logprobs
               --generation-config vllm"

The command template gets `{model}` and `{port}` (a free port on this node; `{host}` is 127.0.0.1). The
server's output goes to a log file beside the stage's output; dasd polls its `/health` (then
`/v1/models`) until it answers, and uses it as the backend's only URL. When the stage ends — finished,
failed or interrupted — the server's whole process group is stopped (SIGTERM, then SIGKILL). A server
that exits or never answers within `launch_timeout_s` fails the task with the log's last lines, and
leaves no process behind. A SIGTERM to dasd (`kill`, `scancel` outside submitit) stops the server first;
under Slurm, a job's processes — the server included — also end with the job where the cluster tracks
them by cgroup (`ProctrackType=proctrack/cgroup`, the usual setting).
"""

from __future__ import annotations

import atexit
import os
import shlex
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import DasdError

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def launch_command(template: str, *, model: str, port: int) -> list[str]:
    """The server command from a `backend.launch` template.

    >>> launch_command("vllm serve {model} --port {port} --host {host}", model="/m/Qwen3-4B", port=8001)
    ['vllm', 'serve', '/m/Qwen3-4B', '--port', '8001', '--host', '127.0.0.1']
    """
    try:
        return shlex.split(template.format(model=model, port=port, host=HOST))
    except (KeyError, IndexError, ValueError) as exc:
        raise DasdError(f"backend.launch: cannot fill the template {template!r} ({exc!r})") from None


class LaunchedServer:
    """`start()` → the server's base URL (…/v1); `stop()` ends its process group. A context manager."""

    def __init__(self, template: str, *, model: str, log_path: Path, timeout_s: float = 900.0):
        self.template = template
        self.model = model
        self.log_path = Path(log_path)
        self.timeout_s = timeout_s
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}/v1"
        self.process: subprocess.Popen | None = None

    def start(self) -> str:
        command = launch_command(self.template, model=self.model, port=self.port)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"$ {shlex.join(command)}\n".encode())
            log.flush()
            try:
                # its own session: stop() ends the server and every process it started (engine workers)
                self.process = subprocess.Popen(
                    command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
                )
            except OSError as exc:
                raise DasdError(f"backend.launch: cannot start {command[0]!r}: {exc.strerror}") from None
        atexit.register(self.stop)  # whatever ends this process normally ends the server too
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) in (
            signal.SIG_DFL,
            None,
        ):
            # `kill`/`scancel` send SIGTERM: as an exception it runs the stages' `finally: backend.close()`
            signal.signal(signal.SIGTERM, _terminate)
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self.url

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        base = f"http://{HOST}:{self.port}"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise DasdError(
                    f"backend.launch: the server exited with status {self.process.returncode} before it was "
                    f"healthy; {self.tail()}"
                )
            for path in ("/health", "/v1/models"):
                try:
                    with urllib.request.urlopen(base + path, timeout=5) as response:
                        if response.status == 200:
                            return
                except (urllib.error.URLError, OSError):
                    pass
            time.sleep(1.0)
        raise DasdError(f"backend.launch: the server was not healthy after {self.timeout_s:.0f} s; {self.tail()}")

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace").rstrip().splitlines()
        except OSError:
            return f"no log at {self.log_path}"
        return f"last lines of {self.log_path}:\n" + "\n".join("    " + line for line in text[-lines:])

    def stop(self, grace_s: float = 30.0) -> None:
        if self.process is None or self.process.poll() is not None and not _group_alive(self.process.pid):
            return
        for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and _group_alive(self.process.pid):
                self.process.poll()  # reap the leader, so that it does not count as alive
                time.sleep(0.2)
            if not _group_alive(self.process.pid):
                break
        self.process.poll()

    def __enter__(self) -> LaunchedServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _terminate(signum, frame) -> None:
    raise SystemExit(128 + signum)


def _group_alive(group: int) -> bool:
    """Whether any process of this process group still runs (zombies do not count)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] not in ("Z", "X"):
            return True
    return False
