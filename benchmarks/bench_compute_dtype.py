"""bfloat16 autocast vs float32 on CPU for the student's forward passes (`compute_dtype=bfloat16`).

    .venv/bin/python benchmarks/bench_compute_dtype.py [--model smollm2] [--samples 8] [--tokens 600] [--repeat 3]

The real SmolLM2-135M-Instruct (its real weights, float32) scores `--samples` responses of about `--tokens` tokens
each (`ModelScorer`, one sample per forward, only the scored positions through the LM head — what `dasd score`
does on CPU) and generates 64 tokens for 8 prompts (`dasd sample`/`dasd eval`'s hf backend), first in float32,
then under torch.autocast in bfloat16 — the same model object, the context toggled. Each way is warmed up once,
then timed `--repeat` times (best kept). Prints tokens/s and the ratio bf16 / fp32 measured in this run, and how far
the scores moved (mean and max |Δ log-prob|). Whether bfloat16 pays depends on the CPU (avx512_bf16 / AMX).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=600)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    import torch

    from dasd.backends import BackendConfig, GenerationRequest
    from dasd.backends.hf import HFBackend
    from dasd.scoring.token_scorers import ModelScorer, ScoringItem

    backend = HFBackend(BackendConfig(name="hf", model=args.model, device="cpu", batch_size=8), chat_template_kwargs={})
    model, tokenizer = backend.model, backend.tokenizer
    generator = torch.Generator().manual_seed(0)
    vocab = len(tokenizer)
    items = [
        ScoringItem(
            key=i, input_ids=torch.randint(100, vocab, (args.tokens,), generator=generator).tolist(), first_scored=40
        )
        for i in range(args.samples)
    ]
    scorer = ModelScorer(model, tokens_per_batch=args.tokens, pack=False)
    requests = [
        GenerationRequest(
            id=f"r{i}",
            messages=[{"role": "user", "content": f"What is {i + 12} times {i + 7}? Think step by step."}],
            temperature=1.0,
            top_p=1.0,
            top_k=0,
            max_new_tokens=64,
            seed=i,
        )
        for i in range(8)
    ]

    def timed(work):
        work()  # warm-up
        best = float("inf")
        for _ in range(args.repeat):
            started = time.perf_counter()
            result = work()
            best = min(best, time.perf_counter() - started)
        return best, result

    rows = {}
    scores = {}
    for label, dtype in (("float32", None), ("bfloat16 autocast", torch.bfloat16)):
        if dtype is None:
            model.__dict__.pop("dasd_compute_dtype", None)
        else:
            model.dasd_compute_dtype = dtype
        seconds, scores[label] = timed(lambda: scorer.score(items))
        scored_tokens = sum(item.length - item.first_scored for item in items)
        gen_seconds, generated = timed(lambda: list(backend.generate(requests)))
        gen_tokens = sum(len(result.token_spans) for result in generated)
        rows[label] = (scored_tokens / seconds, gen_tokens / gen_seconds)
    print(f"model {args.model}, {torch.get_num_threads()} threads")
    print(f"{'way':20} {'scoring tok/s':>14} {'generation tok/s':>17}")
    for label, (score_rate, gen_rate) in rows.items():
        print(f"{label:20} {score_rate:14.0f} {gen_rate:17.1f}")
    (s32, g32), (s16, g16) = rows["float32"], rows["bfloat16 autocast"]
    print(f"ratio bf16 / fp32: scoring {s16 / s32:.2f}x, generation {g16 / g32:.2f}x")
    deltas = torch.cat(
        [torch.tensor(scores["bfloat16 autocast"][k]) - torch.tensor(scores["float32"][k]) for k in scores["float32"]]
    ).abs()
    print(f"|Δ log-prob| bf16 vs fp32: mean {deltas.mean():.4f}, max {deltas.max():.4f}")


if __name__ == "__main__":
    main()
