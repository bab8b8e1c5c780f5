"""Training throughput: dasd's padding-free packed path vs TRL's padded default, same model and data.

    .venv/bin/python benchmarks/bench_train.py                       # CPU: tiny model
    python benchmarks/bench_train.py --gpu-4b [--liger]   # GPU: random-init Qwen3-4B shape, 16K-token rows

CPU part: a random-init Llama (hidden 256, 4 layers, SmolLM2 vocabulary) trained for a fixed number
of optimizer steps by `dasd train` on a realistic length mix (lognormal, clipped): `packing=true`
(best-fit-decreasing rows of max_length, padding-free) under `dasd_packed` attention (the default) and
under SDPA's block-diagonal mask, and `packing=false` with `per_device_batch_size=4` (padded batches,
TRL's default collation). Prints trained-on tokens/s, padding fraction and the ratios, all from this run.

GPU part (`--gpu-4b`, also run by benchmarks/gpu_suite.sh): a random-init Qwen3-4B shape (real
vocabulary; bf16 autocast over float32 masters, gradient checkpointing) on 16,384-token packed rows
(mask-free attention) vs padded batches of 4: real tokens/s, MFU and peak memory, with and without Liger
(`train_throughput`).
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
    from dasd.config import load_config
    from dasd.models.assets import _atomic_build, cache_dir
    from dasd.models.tiny import build_tiny_model
    from dasd.stages import train

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
            ("packed, dasd_packed attention", ["packing=true", "per_device_batch_size=1", "global_batch_size=1"]),
            (
                "packed, SDPA block-diagonal mask",
                ["packing=true", "per_device_batch_size=1", "global_batch_size=1", "student.attn_implementation=sdpa"],
            ),
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
    (packed, masked, padded) = results.values()
    print(f"  ratio packed (dasd_packed) / padded: {packed['tokens_per_s'] / padded['tokens_per_s']:.2f}x")
    print(f"  ratio packed (SDPA mask) / padded: {masked['tokens_per_s'] / padded['tokens_per_s']:.2f}x")


QWEN3_TINY = (128, 2, 4, 2, 256)  # hidden, layers, heads, kv heads, intermediate (bench_score.QWEN3_SHAPES' order)


def lognormal_lengths(count: int, *, median: int, high: int, seed: int = 0) -> list[int]:
    import numpy as np

    rng = np.random.default_rng(seed)
    return [int(n) for n in np.clip(rng.lognormal(np.log(median), 0.9, size=count), 64, high)]


def pack_first_fit(lengths: list[int], width: int) -> list[list[int]]:
    """Indices of samples per row, longest first, first fit (what TRL's `bfd` packing produces, near enough).

    >>> pack_first_fit([5, 9, 3, 4], 10)
    [[1], [0, 3], [2]]
    """
    rows: list[list[int]] = []
    room: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for row, free in enumerate(room):
            if lengths[index] <= free:
                rows[row].append(index)
                room[row] -= lengths[index]
                break
        else:
            rows.append([index])
            room.append(width - lengths[index])
    return rows


def train_throughput(
    *, device: str, shape: str, tokens: int, steps: int, packed: bool, liger: bool, padded_batch: int = 4
) -> dict:
    """Training tokens/s, MFU and peak memory of a random-init Qwen3 shape (real vocabulary) on one device.

    bf16 autocast over float32 master weights, gradient checkpointing, loss on every token. `packed`:
    rows of `tokens` tokens, padding-free (position_ids restart per sample, mask-free attention:
    flash_attention_2 or dasd_packed); else TRL's default: up to `padded_batch` samples per step (fewer when
    padding them to the longest would exceed `tokens`), padded, with an attention mask, SDPA. The optimizer
    is plain SGD on the float32 masters: AdamW's two float32 states of a 4B model (32 GiB) do not fit one
    GPU beside 16K-token activations, and on the released setup ZeRO-3 shards them across 16 GPUs; the
    optimizer step's time is included either way.
    MFU = 6 × parameters × real tokens/s over the card's measured bf16 matmul peak (and over 989 TFLOP/s,
    an H100 SXM's dense bf16 datasheet figure).
    """
    import torch
    from bench_score import QWEN3_SHAPES  # the real Qwen3 shapes, one table for both benchmarks
    from transformers import AutoModelForCausalLM, Qwen3Config

    from dasd.models.attention import packed_attention
    from dasd.training.sft import PaddingFreeCollator

    cuda = device.startswith("cuda")
    config = Qwen3Config(
        vocab_size=151669,
        head_dim=128,
        max_position_embeddings=40960,
        tie_word_embeddings=False,
        **dict(
            zip(
                ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size"),
                QWEN3_SHAPES[shape] if shape in QWEN3_SHAPES else QWEN3_TINY,
            )
        ),
    )
    attention = packed_attention(device) if packed else "sdpa"
    if cuda:
        torch.backends.cuda.enable_cudnn_sdp(False)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation=attention)
    if liger:
        from liger_kernel.transformers import _apply_liger_kernel_to_instance

        _apply_liger_kernel_to_instance(model=model)
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x; older: gradient_checkpointing_*
        model.activation_checkpointing_enable({"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    model.train()
    parameters = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-5)
    collator = PaddingFreeCollator(pad_token_id=0, padding_free=packed)
    lengths = lognormal_lengths(400, median=max(tokens // 8, 64), high=tokens)
    generator = torch.Generator().manual_seed(0)
    samples = [torch.randint(0, 150000, (n,), generator=generator).tolist() for n in lengths]
    if packed:
        batches = [
            [
                {
                    "input_ids": sum((samples[i] for i in row), []),
                    "labels": sum((samples[i] for i in row), []),
                    "seq_lengths": [lengths[i] for i in row],
                }
            ]
            for row in pack_first_fit(lengths, tokens)
        ]
    else:  # in data order, up to `padded_batch` samples while the padded batch stays within `tokens`
        batches, current = [], []
        for sample in samples:
            if current and (
                len(current) >= padded_batch or (len(current) + 1) * max(len(sample), *map(len, current)) > tokens
            ):
                batches.append([{"input_ids": s, "labels": s} for s in current])
                current = []
            current.append(sample)
        if current:
            batches.append([{"input_ids": s, "labels": s} for s in current])
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    timings, real, padded_total = [], 0, 0
    for step in range(steps + 2):
        batch = collator(batches[step % len(batches)])
        batch = {key: value.to(device) for key, value in batch.items()}
        sync()
        started = time.perf_counter()
        with torch.autocast(device_type="cuda" if cuda else "cpu", dtype=torch.bfloat16):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync()
        if step >= 2:  # the first two steps allocate and warm up
            timings.append(time.perf_counter() - started)
            mask = batch.get("attention_mask")
            real += int(mask.sum()) if mask is not None else batch["input_ids"].numel()
            padded_total += batch["input_ids"].numel()
    seconds = sum(timings)
    rate = real / seconds
    result = {
        "shape": shape,
        "parameters": parameters,
        "packed": packed,
        "liger": liger,
        "attention": attention,
        "tokens_per_row": tokens,
        "steps": steps,
        "real_tokens_per_s": rate,
        "padding_fraction": 1 - real / padded_total,
        "model_flops_per_s": 6 * parameters * rate,
    }
    if cuda:
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        result["mfu_vs_989_tflops"] = 6 * parameters * rate / 989e12
    del model, optimizer
    return result


def gpu_benchmark(steps: int, tokens: int, liger: bool) -> None:
    import torch

    assert torch.cuda.is_available(), "--gpu-4b needs a CUDA GPU"
    runs = [dict(packed=True, liger=False), dict(packed=False, liger=False)]
    if liger:
        runs.insert(1, dict(packed=True, liger=True))
    for run in runs:
        result = train_throughput(device="cuda", shape="qwen3-4b", tokens=tokens, steps=steps, **run)
        print(json.dumps(result), flush=True)


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
