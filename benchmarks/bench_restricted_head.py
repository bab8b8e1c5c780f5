"""The demo world teacher's LM head restricted to its non-zero rows (`restrict_vocab=auto`) vs the full head.

    .venv/bin/python benchmarks/bench_restricted_head.py [--questions 16] [--max-new-tokens 256] [--repeat 2]

The demo world's teacher (`dasd.models.demo_world`: hidden 128, 4 layers, the real Qwen3 vocabulary of 151,669
rows, 81 of them non-zero) samples `--questions` evaluation questions at T=0.6 and 1.0 with the hf backend, as
`dasd demo` does (batch 64, 256 new tokens at most), once with `restrict_vocab=off` and once with `auto` — two
backends loaded in the same run, each warmed up, then timed alternately `--repeat` times (best kept). Then both
score the sampled responses teacher-forced (`ModelScorer`, one sample per forward, as `dasd score` does on CPU).
Prints tokens/s each way, the ratio, and whether the sampled tokens and log-probs are the same.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("DASD_CACHE", str(REPO / ".cache" / "dasd"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

MODES = ("off", "auto")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()

    import torch

    from dasd.backends import BackendConfig, GenerationRequest
    from dasd.backends.hf import HFBackend
    from dasd.models.demo_world import world_dir
    from dasd.scoring.token_scorers import ModelScorer, ScoringItem

    world = world_dir()
    lines = (world / "eval_questions.jsonl").read_text().splitlines()[: args.questions]
    requests = [
        GenerationRequest(
            id=f"{question['id']}-{temperature}",
            messages=question["messages"],
            temperature=temperature,
            max_new_tokens=args.max_new_tokens,
            seed=7919 * index + int(10 * temperature),
        )
        for index, question in enumerate(json.loads(line) for line in lines)
        for temperature in (0.6, 1.0)
    ]
    backends = {
        mode: HFBackend(
            BackendConfig(model=str(world / "teacher"), device="cpu", batch_size=args.batch_size, restrict_vocab=mode),
            chat_template_kwargs={},
        )
        for mode in MODES
    }
    for mode, backend in backends.items():
        print(f"{mode:5} head: {backend.model.get_output_embeddings()}")
        list(backend.generate(requests[:2]))  # warm-up

    generated: dict[str, dict] = {}
    seconds = {mode: float("inf") for mode in MODES}
    for _ in range(args.repeat):  # alternate the two ways, so a change in the machine's load hits both
        for mode in MODES:
            started = time.perf_counter()
            generated[mode] = {result.id: result for result in backends[mode].generate(requests)}
            seconds[mode] = min(seconds[mode], time.perf_counter() - started)
    tokens = sum(result.completion_tokens for result in generated["off"].values())

    prompts = {request.id: backends["off"].render(request)[0] for request in requests}
    items = [
        ScoringItem(key=key, input_ids=prompts[rid] + result.token_ids, first_scored=len(prompts[rid]))
        for key, (rid, result) in enumerate(generated["off"].items())
    ]
    scorers = {mode: ModelScorer(backends[mode].model, tokens_per_batch=1, pack=False) for mode in MODES}
    scores: dict[str, dict] = {}
    score_seconds = {mode: float("inf") for mode in MODES}
    for mode in MODES:
        scorers[mode].score(items[:2])  # warm-up
    for _ in range(args.repeat):
        for mode in MODES:
            started = time.perf_counter()
            scores[mode] = scorers[mode].score(items)
            score_seconds[mode] = min(score_seconds[mode], time.perf_counter() - started)
    scored = sum(item.length - item.first_scored for item in items)

    print(f"{len(requests)} responses ({args.questions} questions x T 0.6, 1.0), batch {args.batch_size}")
    print(f"{tokens} tokens sampled, {scored} scored; {torch.get_num_threads()} threads, best of {args.repeat}")
    print(f"{'head':6} {'sampling tok/s':>15} {'scoring tok/s':>14}")
    for mode in MODES:
        print(f"{mode:6} {tokens / seconds[mode]:15.1f} {scored / score_seconds[mode]:14.0f}")
    print(
        f"ratio auto / off: sampling {seconds['off'] / seconds['auto']:.2f}x, "
        f"scoring {score_seconds['off'] / score_seconds['auto']:.2f}x"
    )
    same_tokens = all(generated["auto"][rid].token_ids == result.token_ids for rid, result in generated["off"].items())
    sample_delta = max(
        (
            abs(a - b)
            for rid, r in generated["off"].items()
            for a, b in zip(r.token_logprobs, generated["auto"][rid].token_logprobs)
        ),
        default=0.0,
    )
    score_delta = max(
        (abs(a - b) for key, values in scores["off"].items() for a, b in zip(values, scores["auto"][key])), default=0.0
    )
    print(f"same sampled tokens: {same_tokens}; max |Δ log-prob|: sampled {sample_delta:.3g}, scored {score_delta:.3g}")


if __name__ == "__main__":
    main()
