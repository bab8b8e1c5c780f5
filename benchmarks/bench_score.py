"""Student scoring throughput: packed, length-sorted batches vs one sample per forward pass.

    .venv/bin/python benchmarks/bench_score.py [--samples 48] [--tokens-per-batch 16384]

A random-init Llama (hidden 256, 4 layers) with the real SmolLM2 tokenizer on this machine's
device, and a realistic length mix: lognormal lengths clipped to 200–8,000 tokens. Three ways to
get the student's log-probs of every completion token:

1. naive: one sample per forward, full `model(...).logits` then log_softmax (what a script does);
2. ours, one sample per forward: only the scored positions go through the LM head, in chunks;
3. ours, length-sorted batches of whole samples under a token budget (`pack=false`, the default
   without flash-attention);
4. ours, several samples packed per row (`pack=true`, the default with flash-attention's varlen
   kernels; with SDPA the block-diagonal mask is dense, so packed rows cost width² attention).

Prints tokens/s and the ratios against (1), measured in this run, and checks that all agree.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=48, help="samples to score")
    parser.add_argument("--tokens-per-batch", type=int, default=16384, help="packing budget")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--shape", default="tiny", choices=["tiny", "qwen3-0.6b"], help="model to score with")
    args = parser.parse_args()

    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM

    from dasd.assets import _atomic_build, cache_dir
    from dasd.scoring import ScoringItem, StudentScorer
    from dasd.tiny import build_tiny_model

    if args.shape == "tiny":
        model_dir = _atomic_build(
            cache_dir() / "bench-models" / "llama-smollm2-h256-l4",
            lambda out: build_tiny_model(
                "llama", "smollm2", out, seed=0, hidden_size=256, layers=4, heads=4, kv_heads=2, intermediate_size=768
            ),
        )
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).to(args.device).eval()
        description = "random-init Llama h256×4, SmolLM2 vocab, float32"
    else:  # a random-init Qwen3-0.6B shape (real Qwen3 vocabulary size), bf16, built on the device
        from transformers import Qwen3Config

        torch.manual_seed(0)
        config = Qwen3Config(
            vocab_size=151669,
            hidden_size=1024,
            num_hidden_layers=28,
            num_attention_heads=16,
            num_key_value_heads=8,
            head_dim=128,
            intermediate_size=3072,
            max_position_embeddings=40960,
            tie_word_embeddings=True,
        )
        with torch.device(args.device):
            model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16, attn_implementation="sdpa").eval()
        if args.device.startswith("cuda"):
            torch.backends.cuda.enable_cudnn_sdp(False)  # as dasd's loader does
        description = "random-init Qwen3-0.6B shape, bf16, SDPA"
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    rng = np.random.default_rng(0)
    lengths = np.clip(rng.lognormal(mean=np.log(1200), sigma=0.9, size=args.samples), 200, 8000).astype(int)
    items = [
        ScoringItem(key=i, input_ids=rng.integers(100, 40000, size=int(n)).tolist(), first_scored=60)
        for i, n in enumerate(lengths)
    ]
    scored_tokens = sum(item.length - item.first_scored for item in items)

    def naive() -> dict[int, list[float]]:
        out = {}
        with torch.inference_mode():
            for item in items:
                ids = torch.tensor([item.input_ids], device=args.device)
                logprobs = torch.log_softmax(model(input_ids=ids).logits.float(), dim=-1)[0]
                targets = ids[0, item.first_scored :]
                out[item.key] = logprobs[item.first_scored - 1 : -1].gather(1, targets[:, None])[:, 0].tolist()
        return out

    results, timings = {}, {}
    for name, run in (
        ("naive: full logits, 1 per forward", naive),
        ("ours: 1 per forward", lambda: StudentScorer(model, tokens_per_batch=1, pack=False).score(items)),
        (
            "ours: length-sorted batches",
            lambda: StudentScorer(model, tokens_per_batch=args.tokens_per_batch, pack=False).score(items),
        ),
        (
            "ours: packed rows, length-sorted",
            lambda: StudentScorer(model, tokens_per_batch=args.tokens_per_batch, pack=True).score(items),
        ),
    ):
        if args.device.startswith("cuda"):
            run()  # warm-up: kernels and allocator see these shapes once
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
    packed = StudentScorer(model, tokens_per_batch=args.tokens_per_batch, pack=True)
    packed.score(items)

    print(
        f"\nstudent scoring — {args.samples} samples, lengths lognormal clipped 200–8,000 "
        f"(min {lengths.min()}, median {int(np.median(lengths))}, max {lengths.max()}), "
        f"{scored_tokens:,} scored tokens, "
        f"{description}, {args.device}, {os.cpu_count()} CPUs"
    )
    for name in names:
        print(f"  {name:36} {scored_tokens / timings[name]:10,.0f} tok/s  {timings[name]:7.2f} s")
    for name in names[1:]:
        print(f"  {name} vs naive: {timings[names[0]] / timings[name]:.2f}x")
    print(f"  padding fraction, packed rows: {packed.padding_tokens / packed.forward_tokens:.3f}")
    print(f"  max |difference| between them: {worst:.2e}")


if __name__ == "__main__":
    main()
