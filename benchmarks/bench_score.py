"""Student scoring throughput: packed rows (masked and mask-free attention) vs one sample per forward.

    .venv/bin/python benchmarks/bench_score.py [--samples 48] [--median 1200] [--tokens-per-batch 16384]
    python benchmarks/bench_score.py --device cuda --shape qwen3-4b --max-len 16384     # on a GPU

A random-init model on this machine's device (`tiny`: Llama hidden 256 × 4 layers with the real SmolLM2
vocabulary, fp32; `qwen3-0.6b` / `qwen3-4b`: the real Qwen3 shapes and vocabulary size, bf16) and a
realistic length mix: lognormal lengths around `--median`, clipped to 200–`--max-len` tokens. Ways to
get the student's log-prob of every completion token:

1. naive: one sample per forward, full `model(...).logits` then log_softmax (what a script does);
2. ours, one sample per forward (`batching=single`): only the scored positions reach the LM head;
3. ours, length-sorted padded rows (`batching=padded`);
4. ours, packed rows under SDPA: transformers' dense block-diagonal mask (width² per row);
5. ours, packed rows under `dasd_packed` (`dasd.models.attention`): each sample's causal kernel on its own
   (varlen flash on CUDA), nothing computed between samples — what `batching=packed` uses.

Prints tokens/s and ratios against (1) measured in this run, checks that all paths agree, and says
where the time of the packed path goes (torch.profiler: matmuls, the LM head's normaliser, attention)
and, on a GPU, the useful forward FLOPs as a fraction of the card's measured bf16 matmul peak.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
os.environ.setdefault("DASD_CACHE", str(REPO / ".cache" / "dasd"))

QWEN3_SHAPES = {  # the real configs' shapes (hidden, layers, heads, kv heads, intermediate); vocabulary 151,669
    "qwen3-0.6b": (1024, 28, 16, 8, 3072),
    "qwen3-4b": (2560, 36, 32, 8, 9728),
}


def build_model(shape: str, device: str, attention: str):
    """(model, description) — random-init, on `device`."""
    import torch
    from transformers import AutoModelForCausalLM

    if shape == "tiny":
        from dasd.models.assets import _atomic_build, cache_dir
        from dasd.models.tiny import build_tiny_model

        model_dir = _atomic_build(
            cache_dir() / "bench-models" / "llama-smollm2-h256-l4",
            lambda out: build_tiny_model(
                "llama", "smollm2", out, seed=0, hidden_size=256, layers=4, heads=4, kv_heads=2, intermediate_size=768
            ),
        )
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32, attn_implementation=attention)
        return model.to(device).eval(), "random-init Llama h256×4, SmolLM2 vocab, float32"
    from transformers import Qwen3Config

    hidden, layers, heads, kv_heads, intermediate = QWEN3_SHAPES[shape]
    torch.manual_seed(0)
    config = Qwen3Config(
        vocab_size=151669,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=128,
        intermediate_size=intermediate,
        max_position_embeddings=40960,
        tie_word_embeddings=shape == "qwen3-0.6b",
    )
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16, attn_implementation=attention).eval()
    return model, f"random-init {shape} shape, bf16"


def length_mix(samples: int, median: int, max_len: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(mean=np.log(median), sigma=0.9, size=samples), 200, max_len).astype(int)
    return lengths, rng


def forward_flops(model, items) -> float:
    """Useful forward FLOPs of scoring `items`: 2 × non-embedding parameters per token, causal attention
    (2 × 2 × layers × heads × head_dim × L²/2 per sample), and the LM head at the scored positions only."""
    config = model.config
    head = model.get_output_embeddings().weight.numel()
    embedding = model.get_input_embeddings().weight.numel()
    body = sum(p.numel() for p in model.parameters()) - embedding - (0 if config.tie_word_embeddings else head)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    flops = 0.0
    for item in items:
        length = item.length
        flops += 2 * body * length
        flops += 2 * config.num_hidden_layers * config.num_attention_heads * head_dim * length * length
        flops += 2 * head * (length - item.first_scored)
    return flops


def matmul_peak(device: str) -> float:
    """This card's measured dense bf16 matmul rate (FLOP/s): 8192³ matmuls, best of 5."""
    import torch

    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(10):
            a @ b
        torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - started) / 10)
    return 2 * 8192**3 / best


def where_time_goes(run) -> dict[str, float]:
    """Shares of self time (CPU; CUDA time on a GPU) by kind of kernel, from torch.profiler."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities) as prof:
        run()
    cuda = torch.cuda.is_available()
    totals: dict[str, float] = {}
    for event in prof.key_averages():
        seconds = (event.self_device_time_total if cuda else event.self_cpu_time_total) / 1e6
        name = event.key.lower()
        if any(k in name for k in ("gemm", "aten::mm", "aten::addmm", "aten::bmm", "matmul", "cutlass", "sm90")):
            kind = "matmuls (projections, MLPs, LM head)"
        elif "attention" in name or "flash" in name or "fmha" in name:
            kind = "attention kernels"
        elif "softmax" in name or "logsumexp" in name:
            kind = "LM head log-softmax"
        else:
            kind = "other (norms, rotary, activations, copies)"
        totals[kind] = totals.get(kind, 0.0) + seconds
    whole = sum(totals.values()) or 1.0
    return {kind: seconds / whole for kind, seconds in sorted(totals.items(), key=lambda kv: -kv[1])}


def measure(shape: str, device: str, samples: int, median: int, max_len: int, tokens_per_batch: int) -> dict:
    """Every way's tokens/s and its ratio to the naive loop, measured in one run; also the agreement
    between ways, the packed path's profile and (CUDA) its fraction of the measured matmul peak."""
    import torch

    from dasd.models.attention import packed_attention
    from dasd.scoring.token_scorers import ModelScorer, ScoringItem

    model, description = build_model(shape, device, "sdpa")
    if device.startswith("cuda"):
        torch.backends.cuda.enable_cudnn_sdp(False)  # as dasd's loader does
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    lengths, rng = length_mix(samples, median, max_len)
    items = [
        ScoringItem(key=i, input_ids=rng.integers(100, 40000, size=int(n)).tolist(), first_scored=60)
        for i, n in enumerate(lengths)
    ]
    scored_tokens = sum(item.length - item.first_scored for item in items)
    packed_name = packed_attention(device)

    def naive() -> dict[int, list[float]]:
        out = {}
        with torch.inference_mode():
            for item in items:
                ids = torch.tensor([item.input_ids], device=device)
                logprobs = torch.log_softmax(model(input_ids=ids).logits.float(), dim=-1)[0]
                targets = ids[0, item.first_scored :]
                out[item.key] = logprobs[item.first_scored - 1 : -1].gather(1, targets[:, None])[:, 0].tolist()
        return out

    def ours(attention: str, budget: int, pack: bool):
        def run():
            model.set_attn_implementation(attention)
            return ModelScorer(model, tokens_per_batch=budget, pack=pack).score(items)

        return run

    ways = {
        "naive: full logits, 1 per forward": naive,
        "ours: 1 per forward (single)": ours("sdpa", 1, False),
        "ours: padded rows (padded)": ours("sdpa", tokens_per_batch, False),
        # rows at most 16K wide here: the dense mask is quadratic in the row (a 64K row's is 4.3 G entries)
        "ours: packed rows, SDPA mask": ours("sdpa", min(tokens_per_batch, 16384), True),
        f"ours: packed rows, {packed_name} (packed)": ours(packed_name, tokens_per_batch, True),
    }
    results, timings = {}, {}
    for name, run in ways.items():
        run()  # warm-up: kernels, allocator and caches see these shapes once
        sync()
        started = time.perf_counter()
        results[name] = run()
        sync()
        timings[name] = time.perf_counter() - started
    names = list(results)
    worst = max(
        abs(a - b)
        for other in names[1:]
        for key in results[names[0]]
        for a, b in zip(results[names[0]][key], results[other][key])
    )
    packed_way = names[-1]
    packed_scorer = ModelScorer(model, tokens_per_batch=tokens_per_batch, pack=True)
    model.set_attn_implementation(packed_name)
    profile = where_time_goes(lambda: packed_scorer.score(items))
    report = {
        "shape": shape,
        "description": description,
        "device": torch.cuda.get_device_name() if device.startswith("cuda") else f"cpu, {os.cpu_count()} cores",
        "samples": samples,
        "lengths": {
            "min": int(lengths.min()),
            "median": int(sorted(lengths)[len(lengths) // 2]),
            "max": int(lengths.max()),
        },
        "scored_tokens": scored_tokens,
        "tokens_per_batch": tokens_per_batch,
        "ways": {
            name: {
                "tokens_per_s": scored_tokens / timings[name],
                "seconds": timings[name],
                "vs_naive": timings[names[0]] / timings[name],
            }
            for name in names
        },
        "packed_vs_single": timings[names[1]] / timings[packed_way],
        "padding_fraction_packed": packed_scorer.padding_tokens / max(packed_scorer.forward_tokens, 1),
        "max_abs_difference": worst,
        "packed_profile": profile,
    }
    head_flops = sum(2 * model.get_output_embeddings().weight.numel() * (i.length - i.first_scored) for i in items)
    report["lm_head_share_of_flops"] = head_flops / forward_flops(model, items)
    if device.startswith("cuda"):
        peak = matmul_peak(device)
        useful = forward_flops(model, items) / timings[packed_way]
        report.update(
            matmul_peak_tflops=peak / 1e12,
            packed_useful_tflops=useful / 1e12,
            packed_fraction_of_peak=useful / peak,
            peak_memory_gib=torch.cuda.max_memory_allocated() / 2**30,
        )
    return report


def print_report(report: dict) -> None:
    lengths = report["lengths"]
    print(
        f"\nstudent scoring — {report['samples']} samples, lognormal lengths (min {lengths['min']}, median "
        f"{lengths['median']}, max {lengths['max']}), {report['scored_tokens']:,} scored tokens, "
        f"{report['description']}, {report['device']}, {report['tokens_per_batch']:,} tokens per batch"
    )
    for name, way in report["ways"].items():
        print(f"  {name:44} {way['tokens_per_s']:10,.0f} tok/s  {way['seconds']:7.2f} s  {way['vs_naive']:.2f}x naive")
    print(f"  packed vs single: {report['packed_vs_single']:.2f}x")
    print(f"  padding fraction, packed rows: {report['padding_fraction_packed']:.3f}")
    print(f"  max |difference| between the ways: {report['max_abs_difference']:.2e}")
    print(
        "  where the packed path's time goes: " + ", ".join(f"{k} {v:.0%}" for k, v in report["packed_profile"].items())
    )
    print(f"  the LM head's share of the useful forward FLOPs: {report['lm_head_share_of_flops']:.0%}")
    if "matmul_peak_tflops" in report:
        print(
            f"  packed: {report['packed_useful_tflops']:.0f} useful TFLOP/s = {report['packed_fraction_of_peak']:.0%} "
            f"of this card's measured bf16 matmul peak ({report['matmul_peak_tflops']:.0f} TFLOP/s); peak memory "
            f"{report['peak_memory_gib']:.1f} GiB"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=48, help="samples to score")
    parser.add_argument("--median", type=int, default=1200, help="median sample length in tokens (lognormal, σ 0.9)")
    parser.add_argument("--max-len", type=int, default=8000, help="longest sample in tokens (lengths are clipped)")
    parser.add_argument("--tokens-per-batch", type=int, default=16384, help="packing budget (rows × width)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--shape", default="tiny", choices=["tiny", *QWEN3_SHAPES], help="model to score with")
    args = parser.parse_args()
    print_report(measure(args.shape, args.device, args.samples, args.median, args.max_len, args.tokens_per_batch))


if __name__ == "__main__":
    main()
