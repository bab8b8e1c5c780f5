"""GPU checks for `dasd sample`'s hf backend, in one short run on a lent GPU machine.

    PYTHONPATH=src python benchmarks/gpu_sample.py --tokenizer .gpu/qwen3-tokenizer --out $OUT

1. log-prob fidelity on the GPU: a tiny Qwen3 in float32 and in bfloat16 — recorded log-probs of
   the sampled tokens vs a teacher-forced forward pass (max abs diff), at temperature 0.6 and 1.0;
2. generation throughput of a random-init Qwen3-0.6B-shaped and Qwen3-4B-shaped model (bf16, real
   Qwen3 vocabulary): batched vs one request at a time, and our per-row sampler vs transformers'
   own `do_sample` on the same batch (the price of per-sample seeds).

Prints a table; writes gpu_sample.json under --out. Random-init models never emit EOS, so every
request generates exactly max_new_tokens.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

DEVICE = "cuda"


def sync() -> None:
    import torch

    if DEVICE == "cuda":
        torch.cuda.synchronize()


def qwen3_config(vocab: int, shape: str):
    from transformers import Qwen3Config

    shapes = {
        "tiny": dict(
            hidden_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=32,
            intermediate_size=256,
        ),
        "0.6B": dict(
            hidden_size=1024,
            num_hidden_layers=28,
            num_attention_heads=16,
            num_key_value_heads=8,
            head_dim=128,
            intermediate_size=3072,
        ),
        "4B": dict(
            hidden_size=2560,
            num_hidden_layers=36,
            num_attention_heads=32,
            num_key_value_heads=8,
            head_dim=128,
            intermediate_size=9728,
        ),
    }
    return Qwen3Config(
        vocab_size=vocab,
        max_position_embeddings=40960,
        tie_word_embeddings=shape != "4B",
        rope_theta=1e6,
        **shapes[shape],
    )


def make_backend(tokenizer, shape: str, dtype, batch_size: int):
    import torch
    from transformers import AutoModelForCausalLM

    from dasd.backends.base import BackendConfig
    from dasd.backends.hf import HFBackend

    torch.manual_seed(0)
    with torch.device(DEVICE):
        model = AutoModelForCausalLM.from_config(
            qwen3_config(len(tokenizer), shape), dtype=dtype, attn_implementation="sdpa"
        )
    model.eval()
    model.generation_config.eos_token_id = [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    return HFBackend(
        BackendConfig(model=f"qwen3-{shape}", batch_size=batch_size),
        chat_template_kwargs={},
        model=model,
        tokenizer=tokenizer,
    )


def requests(count: int, max_new_tokens: int, temperature: float = 1.0):
    from dasd.backends.base import GenerationRequest

    return [
        GenerationRequest(
            id=f"r{i}",
            messages=[{"role": "user", "content": f"Problem {i}: compute {i} * {i + 7} and explain."}],
            temperature=temperature,
            max_new_tokens=max_new_tokens,
            seed=i,
        )
        for i in range(count)
    ]


def fidelity(tokenizer, dtype) -> dict:
    import torch

    backend = make_backend(tokenizer, "tiny", dtype, batch_size=8)
    out = {}
    for temperature in (0.6, 1.0):
        reqs = requests(8, 64, temperature)
        worst = 0.0
        for result, req in zip(sorted(backend.generate(reqs), key=lambda r: int(r.id[1:])), reqs):
            prompt, _ = backend.render(req)
            with torch.no_grad():
                logits = backend.model(
                    input_ids=torch.tensor([prompt + result.token_ids], device=DEVICE), use_cache=False
                ).logits.float()
            lp = torch.log_softmax(logits, -1)[0]
            ref = [lp[len(prompt) - 1 + k, t].item() for k, t in enumerate(result.token_ids)]
            worst = max(worst, max(abs(a - b) for a, b in zip(ref, result.token_logprobs)))
        out[f"T={temperature}"] = worst
    return out


def throughput(backend, count: int, max_new_tokens: int, batch_size: int) -> float:

    backend.config.batch_size = batch_size
    sync()
    started = time.perf_counter()
    results = list(backend.generate(requests(count, max_new_tokens)))
    sync()
    return sum(r.completion_tokens for r in results) / (time.perf_counter() - started)


def native_sampling(backend, count: int, max_new_tokens: int, batch_size: int) -> float:
    """transformers' own sampling (one global RNG), same prompts and batch size, for comparison."""
    import torch

    reqs = requests(count, max_new_tokens)
    tokens, seconds = 0, 0.0
    for start in range(0, count, batch_size):
        chunk = [backend.render(r)[0] for r in reqs[start : start + batch_size]]
        width = max(map(len, chunk))
        ids = torch.tensor([[backend.pad_id] * (width - len(c)) + c for c in chunk], device=DEVICE)
        mask = torch.tensor([[0] * (width - len(c)) + [1] * len(c) for c in chunk], device=DEVICE)
        sync()
        started = time.perf_counter()
        with torch.inference_mode():
            out = backend.model.generate(
                input_ids=ids,
                attention_mask=mask,
                do_sample=True,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                max_new_tokens=max_new_tokens,
                pad_token_id=backend.pad_id,
            )
        sync()
        seconds += time.perf_counter() - started
        tokens += (out.shape[1] - width) * len(chunk)
    return tokens / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", required=True, help="Qwen3 tokenizer folder")
    parser.add_argument("--out", default=".", help="folder for gpu_sample.json")
    parser.add_argument("--shapes", default="0.6B,4B", help="model shapes to time")
    parser.add_argument("--device", default="cuda", help="cuda, or cpu for a smoke test of this script")
    args = parser.parse_args()
    global DEVICE
    DEVICE = args.device

    import torch
    import transformers
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    report = {
        "gpu": torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    try:
        import flash_attn  # noqa: F401

        report["flash_attn"] = True
    except ImportError:
        report["flash_attn"] = False
    report["fidelity_fp32"] = fidelity(tokenizer, torch.float32)
    report["fidelity_bf16"] = fidelity(tokenizer, torch.bfloat16)
    print(json.dumps(report), flush=True)

    rows = []
    for shape in args.shapes.split(","):
        backend = make_backend(tokenizer, shape, torch.bfloat16, batch_size=32)  # cuDNN SDPA off (HFBackend)
        tokens = 128
        row = {"shape": shape, "max_new_tokens": tokens}
        # First pass over new shapes ("cold") vs the same workload again ("warm").
        row["tok_s_b32_cold"] = throughput(backend, 64, tokens, 32)
        row["tok_s_b32_warm"] = throughput(backend, 64, tokens, 32)
        row["tok_s_b32_native_warm"] = native_sampling(backend, 64, tokens, 32)
        if shape == args.shapes.split(",")[0]:
            torch.backends.cuda.enable_cudnn_sdp(True)
            row["tok_s_b32_cudnn_cold"] = throughput(backend, 64, tokens + 16, 32)
            row["tok_s_b32_cudnn_warm"] = throughput(backend, 64, tokens + 16, 32)
            torch.backends.cuda.enable_cudnn_sdp(False)
        throughput(backend, 2, 16, 1)  # warm-up for batch 1
        row["tok_s_b1"] = throughput(backend, 4, 64, 1)
        row["batched_over_single"] = row["tok_s_b32_warm"] / row["tok_s_b1"]
        row["ours_over_native"] = row["tok_s_b32_warm"] / row["tok_s_b32_native_warm"]
        row["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30 if DEVICE == "cuda" else 0.0
        rows.append(row)
        print(json.dumps(row), flush=True)
        del backend
        if DEVICE == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
    report["throughput"] = rows
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "gpu_sample.json").write_text(json.dumps(report, indent=2))

    print(
        f"\nGPU: {report['gpu']}  torch {report['torch']}  transformers {report['transformers']}  "
        f"flash_attn {report['flash_attn']}"
    )
    print(
        f"log-prob fidelity (max |recorded - teacher-forced|): fp32 {report['fidelity_fp32']}  "
        f"bf16 {report['fidelity_bf16']}"
    )
    print(
        f"{'shape':6} {'b1':>7} {'b32 cold':>9} {'b32 warm':>9} {'native warm':>12} {'cudnn cold':>11} "
        f"{'cudnn warm':>11} {'b32/b1':>7} {'ours/native':>12} {'GiB':>6}"
    )
    for row in rows:
        print(
            f"{row['shape']:6} {row['tok_s_b1']:7.1f} {row['tok_s_b32_cold']:9.1f} {row['tok_s_b32_warm']:9.1f} "
            f"{row['tok_s_b32_native_warm']:12.1f} {row.get('tok_s_b32_cudnn_cold', float('nan')):11.1f} "
            f"{row.get('tok_s_b32_cudnn_warm', float('nan')):11.1f} {row['batched_over_single']:7.2f} "
            f"{row['ours_over_native']:12.2f} {row['peak_mem_gib']:6.2f}"
        )
    print("(tokens/s; cold = first pass over new sequence shapes, warm = the same workload again)")


if __name__ == "__main__":
    main()
