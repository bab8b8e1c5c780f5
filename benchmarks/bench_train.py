"""Training throughput: dasd's padding-free packed path vs TRL's padded default, same model and data.

    .venv/bin/python benchmarks/bench_train.py                       # CPU: tiny model
    python benchmarks/bench_train.py --gpu-4b [--liger]   # GPU: random-init Qwen3-4B shape, 16K tokens/sample

CPU part: a random-init Llama (hidden 256, 4 layers, SmolLM2 vocabulary) trained for a fixed number
of optimizer steps by `dasd train` on a realistic length mix (lognormal, clipped), once with
`packing=true` (best-fit-decreasing rows of max_length, padding-free) and once with `packing=false`
and `per_device_batch_size=4` (padded batches, TRL's default collation). Prints trained-on tokens/s,
padding fraction and the ratio, all from this run.

GPU part (`--gpu-4b`): a random-init Qwen3-4B-shaped model (bf16, gradient checkpointing, flash
attention when installed) on samples of 16,384 tokens: tokens/s, MFU (6 × parameters × tokens/s over
the GPU's dense bf16 peak, 989 TFLOP/s for an H100 SXM) and peak memory, with and without Liger.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
os.environ.setdefault("DASD_CACHE", str(REPO / ".cache" / "dasd"))


def synthetic_sft(
    path: Path, count: int, *, low: int, high: int, median: int, vocab_words: int = 3000, seed: int = 0
) -> None:
    """SFT records whose assistant turns have lognormal lengths (in words) clipped to [low, high]."""
    import numpy as np

    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(np.log(median), 0.9, size=count), low, high).astype(int)
    words = [f"w{index}" for index in range(vocab_words)]
    with open(path, "w", encoding="utf-8") as handle:
        for index, length in enumerate(lengths):
            body = " ".join(words[int(k)] for k in rng.integers(0, vocab_words, size=int(length)))
            handle.write(
                json.dumps(
                    {
                        "id": f"s{index}",
                        "messages": [
                            {"role": "system", "content": "You are a helpful assistant."},
                            {"role": "user", "content": f"Task {index}"},
                            {"role": "assistant", "content": f"<think>\n{body}\n</think>\n\nDone."},
                        ],
                    }
                )
                + "\n"
            )


def cpu_benchmark(steps: int, max_length: int) -> None:
    from dasd.assets import _atomic_build, cache_dir
    from dasd.config import load_config
    from dasd.stages import train
    from dasd.tiny import build_tiny_model

    model_dir = _atomic_build(
        cache_dir() / "bench-models" / "llama-smollm2-h256-l4",
        lambda out: build_tiny_model(
            "llama", "smollm2", out, seed=0, hidden_size=256, layers=4, heads=4, kv_heads=2, intermediate_size=768
        ),
    )
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "sft.jsonl"
        synthetic_sft(data, 400, low=60, high=max_length // 4, median=200)  # words; ~2.5 tokens each
        for name, overrides in (
            ("packed (padding-free, BFD rows)", ["packing=true", "per_device_batch_size=1", "global_batch_size=1"]),
            ("padded (TRL default collation)", ["packing=false", "per_device_batch_size=4", "global_batch_size=4"]),
        ):
            config = load_config(
                train.TrainConfig,
                None,
                [
                    f"output_dir={folder}/{len(results)}",
                    f"student.model={model_dir}",
                    f"stages=[{{name: s, data: {data}}}]",
                    f"max_length={max_length}",
                    f"max_steps={steps}",
                    "save_steps=100000",
                    *overrides,
                ],
            )
            metrics = train.run(config)["stages"][0]
            results[name] = metrics
    print(
        f"\ntraining throughput — {steps} optimizer steps each, random-init Llama h256×4 (SmolLM2 vocab), fp32, "
        f"max_length {max_length}, lognormal sample lengths, {os.cpu_count()} CPUs"
    )
    for name, metrics in results.items():
        print(
            f"  {name:34} {metrics['tokens_per_s']:9,.0f} tok/s   padding fraction {metrics['padding_fraction']:.3f}   "
            f"tokens seen {metrics['tokens_seen']:,.0f}   loss {metrics['first_loss']:.3f}->{metrics['final_loss']:.3f}"
        )
    (packed, padded) = results.values()
    print(f"  ratio packed / padded: {packed['tokens_per_s'] / padded['tokens_per_s']:.2f}x")


def gpu_benchmark(steps: int, tokens: int, liger: bool) -> None:
    import torch
    from transformers import AutoModelForCausalLM, Qwen3Config

    from dasd.training import PaddingFreeCollator

    assert torch.cuda.is_available(), "--gpu-4b needs a CUDA GPU"
    config = Qwen3Config(
        vocab_size=151669,
        hidden_size=2560,
        num_hidden_layers=36,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        intermediate_size=9728,
        max_position_embeddings=40960,
        tie_word_embeddings=True,
    )
    try:
        import flash_attn  # noqa: F401

        attention = "flash_attention_2"
    except ImportError:
        attention = "sdpa"
    torch.backends.cuda.enable_cudnn_sdp(False)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16, attn_implementation=attention)
    if liger:
        from liger_kernel.transformers import _apply_liger_kernel_to_instance

        _apply_liger_kernel_to_instance(model=model)
    model.gradient_checkpointing_enable()
    model.config.use_cache = False
    parameters = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, betas=(0.9, 0.95), weight_decay=0.1)
    collator = PaddingFreeCollator(pad_token_id=0)
    generator = torch.Generator().manual_seed(0)
    example = {"input_ids": torch.randint(0, 150000, (tokens,), generator=generator).tolist()}
    example["labels"] = list(example["input_ids"])
    batch = {key: value.cuda() for key, value in collator([example]).items()}
    torch.cuda.reset_peak_memory_stats()
    timings = []
    for step in range(steps + 2):
        torch.cuda.synchronize()
        started = time.perf_counter()
        loss = model(**batch, use_cache=False).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        if step >= 2:  # the first two steps allocate and warm up
            timings.append(time.perf_counter() - started)
    seconds = sorted(timings)[len(timings) // 2]
    rate = tokens / seconds
    mfu = 6 * parameters * rate / 989e12
    print(
        f"Qwen3-4B shape ({parameters / 1e9:.2f}B parameters), {tokens} tokens/sample, attention "
        f"{attention}, liger {liger}: "
        f"{rate:,.0f} tok/s, MFU {mfu:.1%}, peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB "
        f"(median of {steps} steps; gradient checkpointing on; {torch.cuda.get_device_name()})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps per measurement")
    parser.add_argument("--max-length", type=int, default=2048, help="CPU part: packed row length")
    parser.add_argument("--gpu-4b", action="store_true", help="measure a random-init Qwen3-4B shape on the GPU instead")
    parser.add_argument("--tokens", type=int, default=16384, help="GPU part: tokens per sample")
    parser.add_argument("--liger", action="store_true", help="GPU part: also measure with Liger kernels")
    args = parser.parse_args()
    if args.gpu_4b:
        gpu_benchmark(args.steps, args.tokens, liger=False)
        if args.liger:
            gpu_benchmark(args.steps, args.tokens, liger=True)
    else:
        cpu_benchmark(args.steps, args.max_length)


if __name__ == "__main__":
    main()
