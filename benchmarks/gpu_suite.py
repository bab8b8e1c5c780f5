"""Every GPU measurement dasd needs, in one run of at most 8 minutes: scoring paths, training with and
without Liger, sampling fidelity in bf16 — one JSON and one Markdown table in --out.

    benchmarks/gpu_suite.sh                  # on the GPU machine: writes $OUT/gpu_suite.{json,md}
    benchmarks/gpu_suite.sh --dry-run        # anywhere, on CPU, tiny shapes, ~1 minute (tested in the suite)
    benchmarks/gpu_suite.sh --prepare        # here, before: the Qwen3 tokenizer and Liger's wheel into .gpu/

Parts, each on random-init models with the real Qwen3 vocabulary (151,669) and real shapes:
1. environment: device, torch, transformers, flash-attn, PyTorch varlen attention, Liger;
2. matmul peak: this card's measured dense bf16 rate (8192³), the denominator of every fraction below;
3. scoring (benchmarks/bench_score.py): the Qwen3-4B shape, bf16, lognormal lengths up to 16K — naive
   loop, one per forward, padded, packed under the SDPA mask, packed mask-free (`batching=packed`);
   tokens/s, ratios, useful forward FLOPs as a fraction of the peak, the profile of the packed path;
4. training (benchmarks/bench_train.py `train_throughput`): Qwen3-4B shape, 16K-token packed rows,
   bf16 over float32 masters, gradient checkpointing — mask-free packed, the same with Liger, and TRL's
   padded default; real tokens/s, MFU, peak memory, packed / padded;
5. sampling fidelity (benchmarks/gpu_sample.py): recorded vs teacher-forced log-probs, fp32 and bf16
   (run third: it is short, and tells at once whether bf16 sampling on this card is sane).

A part that fails is recorded with its error and the rest still run; a part that would not finish
before the deadline is recorded as skipped. Results are written after every part, so even a killed run
leaves what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))
os.environ.setdefault("DASD_CACHE", str(HERE.parent / ".cache" / "dasd"))


def environment(device: str) -> dict:
    import torch
    import transformers

    report = {
        "device": torch.cuda.get_device_name() if device == "cuda" else f"cpu ({os.cpu_count()} cores)",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    for module in ("flash_attn", "liger_kernel"):
        try:
            __import__(module)
            report[module] = True
        except ImportError:
            report[module] = False
    try:
        from torch.nn.attention.varlen import varlen_attn  # noqa: F401

        report["torch_varlen_attn"] = True
    except ImportError:
        report["torch_varlen_attn"] = False
    from dasd.models.attention import packed_attention

    report["packed_attention"] = packed_attention(device)
    return report


def matmul(device: str) -> dict:
    if device != "cuda":
        return {"skipped": "CPU: no bf16 peak to measure against"}
    from bench_score import matmul_peak

    return {"bf16_tflops": matmul_peak("cuda") / 1e12}


def scoring(device: str, dry: bool) -> dict:
    from bench_score import measure, print_report

    if dry:
        report = measure("tiny", "cpu", samples=6, median=300, max_len=800, tokens_per_batch=2048)
    else:
        report = measure("qwen3-4b", "cuda", samples=32, median=2500, max_len=16384, tokens_per_batch=65536)
    print_report(report)
    return report


def training(device: str, dry: bool, liger_available: bool) -> dict:
    from bench_train import train_throughput

    shape, tokens, steps = ("tiny", 256, 1) if dry else ("qwen3-4b", 16384, 6)
    runs = {"packed": dict(packed=True, liger=False)}
    if device == "cuda" and liger_available:
        runs["packed + liger"] = dict(packed=True, liger=True)
    runs["padded (TRL default)"] = dict(packed=False, liger=False)
    results = {}
    for name, run in runs.items():
        try:
            results[name] = train_throughput(device=device, shape=shape, tokens=tokens, steps=steps, **run)
        except Exception as error:  # one failing run (OOM, a kernel missing) leaves the others
            results[name] = {"error": f"{type(error).__name__}: {error}"[:500]}
        finally:
            if device == "cuda":
                import torch

                torch.cuda.empty_cache()
        print(name, json.dumps(results[name]), flush=True)
    if device == "cuda" and not liger_available:
        results["packed + liger"] = {"skipped": "liger-kernel is not installed (benchmarks/gpu_suite.sh --prepare)"}
    packed, padded = results.get("packed", {}), results.get("padded (TRL default)", {})
    if "real_tokens_per_s" in packed and "real_tokens_per_s" in padded:
        results["packed_over_padded"] = packed["real_tokens_per_s"] / padded["real_tokens_per_s"]
    return results


def fidelity(device: str, tokenizer_dir: str) -> dict:
    import gpu_sample
    import torch
    from transformers import AutoTokenizer

    gpu_sample.DEVICE = device
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    return {
        "float32": gpu_sample.fidelity(tokenizer, torch.float32),
        "bfloat16": gpu_sample.fidelity(tokenizer, torch.bfloat16),
    }


def markdown(report: dict) -> str:
    env = report.get("environment", {})
    lines = [
        f"# dasd GPU suite — {env.get('device', '?')}, {report['date']}",
        "",
        f"torch {env.get('torch')}, transformers {env.get('transformers')}, flash-attn {env.get('flash_attn')}, "
        f"torch varlen {env.get('torch_varlen_attn')}, liger {env.get('liger_kernel')}; packed attention "
        f"`{env.get('packed_attention')}`; {'dry run (CPU, tiny shapes)' if report['dry_run'] else 'full run'}; "
        f"{report['seconds']:.0f} s",
        "",
        "| part | status | seconds |",
        "| --- | --- | --- |",
    ]
    for name, part in report["parts"].items():
        lines.append(f"| {name} | {part['status']} | {part.get('seconds', 0):.1f} |")
    peak = report["parts"].get("matmul peak", {}).get("result", {}).get("bf16_tflops")
    if peak:
        lines += ["", f"Measured bf16 matmul peak: **{peak:.0f} TFLOP/s**."]
    score = report["parts"].get("scoring", {}).get("result")
    if score:
        lines += [
            "",
            f"## Scoring — {score['description']}, {score['scored_tokens']:,} scored tokens",
            "",
            "| way | tokens/s | vs naive |",
            "| --- | --- | --- |",
        ]
        for name, way in score["ways"].items():
            lines.append(f"| {name} | {way['tokens_per_s']:,.0f} | {way['vs_naive']:.2f}x |")
        lines.append("")
        lines.append(
            f"packed vs single {score['packed_vs_single']:.2f}x; max |difference| {score['max_abs_difference']:.2e}; "
            "packed profile: " + ", ".join(f"{k} {v:.0%}" for k, v in score["packed_profile"].items())
        )
        if "packed_fraction_of_peak" in score:
            lines.append(
                f"packed: {score['packed_useful_tflops']:.0f} useful TFLOP/s = "
                f"**{score['packed_fraction_of_peak']:.0%} of the measured peak** (goal ≥ 50%)"
            )
    train = report["parts"].get("training", {}).get("result")
    if train:
        lines += [
            "",
            "## Training — Qwen3 shape, packed rows vs padded batches",
            "",
            "| run | real tokens/s | MFU vs measured peak | MFU vs 989 TFLOP/s | peak GiB | padding |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for name, run in train.items():
            if not isinstance(run, dict):
                continue
            if "real_tokens_per_s" not in run:
                lines.append(f"| {name} | {run.get('error') or run.get('skipped')} | | | | |")
                continue
            mfu = f"{run['model_flops_per_s'] / (peak * 1e12):.1%}" if peak else "—"
            lines.append(
                f"| {name} | {run['real_tokens_per_s']:,.0f} | {mfu} | {run.get('mfu_vs_989_tflops', 0):.1%} | "
                f"{run.get('peak_memory_gib', 0):.1f} | {run['padding_fraction']:.3f} |"
            )
        if "packed_over_padded" in train:
            lines.append(f"\npacked / padded: **{train['packed_over_padded']:.2f}x**")
    fid = report["parts"].get("sampling fidelity", {}).get("result")
    if fid:
        lines += [
            "",
            f"Sampling log-prob fidelity (max |recorded − teacher-forced|): float32 {fid['float32']}, "
            f"bfloat16 {fid['bfloat16']}",
        ]
    for name, part in report["parts"].items():
        if part["status"] == "failed":
            lines += ["", f"**{name} failed:** `{part['error']}`"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "."), help="folder for gpu_suite.json / .md")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes: checks the script, measures nothing")
    parser.add_argument("--budget-s", type=float, default=450, help="deadline for starting parts (seconds)")
    parser.add_argument(
        "--tokenizer",
        default=str(HERE.parent / ".gpu" / "qwen3-tokenizer"),
        help="Qwen3 tokenizer folder (sampling fidelity)",
    )
    parser.add_argument("--parts", default="", help="comma-separated subset of the parts (default: all, in order)")
    args = parser.parse_args()
    device = "cpu" if args.dry_run else "cuda"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    report = {"date": time.strftime("%Y-%m-%d"), "dry_run": args.dry_run, "parts": {}, "seconds": 0.0}
    # (name, function, the seconds a part needs at most: started only if that much time is left)
    parts = [
        ("environment", lambda: environment(device), 5),
        ("matmul peak", lambda: matmul(device), 10),
        ("sampling fidelity", lambda: fidelity(device, args.tokenizer), 40),
        ("scoring", lambda: scoring(device, args.dry_run), 150),
        ("training", lambda: training(device, args.dry_run, report["environment"].get("liger_kernel", False)), 200),
    ]
    chosen = [name.strip() for name in args.parts.split(",")] if args.parts else [name for name, _, _ in parts]
    unknown = set(chosen) - {name for name, _, _ in parts}
    if unknown:
        parser.error(f"unknown parts {sorted(unknown)}: choose from {[name for name, _, _ in parts]}")
    report["environment"] = {}
    for name, run, needs in parts:
        if name not in chosen:
            continue
        left = args.budget_s - (time.perf_counter() - started)
        if left < needs and not args.dry_run:
            report["parts"][name] = {"status": "skipped", "error": f"{left:.0f} s left, needs up to {needs} s"}
            continue
        part_started = time.perf_counter()
        try:
            result = run()
            report["parts"][name] = {"status": "ok", "result": result}
            if name == "environment":
                report["environment"] = result
        except Exception as error:
            traceback.print_exc()
            report["parts"][name] = {"status": "failed", "error": f"{type(error).__name__}: {error}"[:500]}
        report["parts"][name]["seconds"] = time.perf_counter() - part_started
        report["seconds"] = time.perf_counter() - started
        (out / "gpu_suite.json").write_text(json.dumps(report, indent=2, default=str))
        (out / "gpu_suite.md").write_text(markdown(report))
        print(
            f"[gpu_suite] {name}: {report['parts'][name]['status']} ({report['parts'][name]['seconds']:.1f} s)",
            flush=True,
        )
    print(markdown(report))


if __name__ == "__main__":
    main()
