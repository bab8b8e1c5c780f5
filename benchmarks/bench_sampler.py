"""The per-step draw of the hf backend's sampler: full-vocabulary float64 cumsum (the previous code) vs the
two-level inverse CDF (`dasd.backends.hf.inverse_cdf`), at the Qwen3 vocabulary, on CPU.

    .venv/bin/python benchmarks/bench_sampler.py [--batch 64] [--repeats 20]

Prints ms per step for each and their ratio, and checks that both draw the same tokens.
"""

from __future__ import annotations

import argparse
import time

import torch

from dasd.backends.hf import inverse_cdf


def full_cumsum(probs, uniforms):
    cumulative = torch.cumsum(probs.double(), dim=-1)
    target = uniforms[:, None] * cumulative[:, -1:]
    return torch.searchsorted(cumulative, target).clamp_(max=probs.shape[-1] - 1)[:, 0]


def timed(function, repeats: int) -> float:
    function()
    started = time.perf_counter()
    for _ in range(repeats):
        function()
    return 1000 * (time.perf_counter() - started) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64, help="rows drawn per step")
    parser.add_argument("--vocab", type=int, default=151936, help="vocabulary size (Qwen3's embedding rows)")
    parser.add_argument("--repeats", type=int, default=20, help="timed steps per method")
    args = parser.parse_args()
    torch.manual_seed(0)
    raw = torch.randn(args.batch, args.vocab) * 4
    uniforms = torch.rand(args.batch, dtype=torch.float64)

    # what one step computes: the raw log-probs (recorded), then the draw from the sampling distribution
    def old(temperature: float):
        torch.log_softmax(raw, -1)
        return full_cumsum(torch.softmax(raw / temperature, -1), uniforms)

    def new(temperature: float):
        logprobs = torch.log_softmax(raw, -1)
        probs = logprobs.exp() if temperature == 1.0 else torch.softmax(raw / temperature, -1)
        return inverse_cdf(probs, uniforms)

    old_t1, new_t1 = timed(lambda: old(1.0), args.repeats), timed(lambda: new(1.0), args.repeats)
    old_t06, new_t06 = timed(lambda: old(0.6), args.repeats), timed(lambda: new(0.6), args.repeats)
    same = all(
        torch.equal(
            full_cumsum(torch.softmax(raw / t, -1), uniforms), inverse_cdf(torch.softmax(raw / t, -1), uniforms)
        )
        for t in (0.6, 1.0)
    )
    print(f"threads {torch.get_num_threads()}, batch {args.batch}, vocabulary {args.vocab}")
    print(f"T=1.0: full cumsum {old_t1:.1f} ms, two-level {new_t1:.1f} ms, ratio {old_t1 / new_t1:.2f}x")
    print(f"T=0.6: full cumsum {old_t06:.1f} ms, two-level {new_t06:.1f} ms, ratio {old_t06 / new_t06:.2f}x")
    print(f"same tokens drawn: {same}")


if __name__ == "__main__":
    main()
