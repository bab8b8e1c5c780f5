"""Record files at scale: JSONL vs Parquet for responses of ~10,000 teacher tokens with their log-probs.

    .venv/bin/python benchmarks/bench_records.py [--records 200] [--tokens 10000]

Synthetic `Response` records shaped like the teacher's output (reasoning text, a token's character span
and raw log-prob for every token, as `dasd sample` writes them). For each format: bytes per record, the
time to write them through the stages' resumable writer (`RecordWriter` / `ParquetRecordWriter`), to
read them all back (`iter_records`), and to load the ids a resuming run skips (`done`). Ratios are JSONL
over Parquet, measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def synthetic_response(index: int, tokens: int, rng: random.Random) -> dict:
    words, offsets, logprobs, position = [], [], [], 0
    for _ in range(tokens):
        word = rng.choice(["So", " the", " next", " term", " is", " 7", ".", " Then", " 12", " -", " 5", " ="])
        words.append(word)
        offsets.append([position, position + len(word)])
        logprobs.append(-abs(rng.gauss(0.0, 0.4)))
        position += len(word)
    return {
        "id": f"q{index}:t1:0",
        "question_id": f"q{index}",
        "messages": [{"role": "user", "content": f"What is question {index}? Think step by step."}],
        "answer": "42",
        "domain": "math",
        "temperature": 1.0,
        "top_p": 1.0,
        "model": "teacher",
        "seed": index,
        "reasoning": "".join(words),
        "content": "The answer is \\boxed{42}.",
        "finish_reason": "stop",
        "teacher_logprobs": {
            "reasoning": {"offsets": offsets, "logprobs": logprobs},
            "content": {"offsets": [[0, 25]], "logprobs": [-0.01]},
        },
        "logprob_mode": "raw",
        "usage": {"prompt_tokens": 20, "completion_tokens": tokens + 1},
    }


def size_of(path: Path) -> int:
    if path.is_dir():
        return sum(part.stat().st_size for part in path.iterdir())
    return path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200, help="records written and read per format")
    parser.add_argument("--tokens", type=int, default=10000, help="teacher tokens per response")
    args = parser.parse_args()

    from dasd.data.io import ParquetRecordWriter, RecordWriter, iter_records

    rng = random.Random(0)
    records = [synthetic_response(index, args.tokens, rng) for index in range(args.records)]
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        for kind, make in (
            ("jsonl", lambda path: RecordWriter(path)),
            ("parquet", lambda path: ParquetRecordWriter(path, rows_per_part=100)),
        ):
            path = Path(scratch) / f"responses.{kind}"
            started = time.perf_counter()
            writer = make(path)
            for record in records:
                writer.write(record)
            writer.finish()
            written = time.perf_counter() - started
            started = time.perf_counter()
            count = sum(1 for _ in iter_records(path))
            read = time.perf_counter() - started
            assert count == len(records)
            started = time.perf_counter()
            done = len(make(path).done)
            resume = time.perf_counter() - started
            assert done == len(records)
            results[kind] = {"bytes": size_of(path) / len(records), "write": written, "read": read, "resume": resume}

    print(f"{args.records} responses of {args.tokens:,} teacher tokens each (cpu count {os.cpu_count()})\n")
    print(f"{'format':10} {'bytes/record':>14} {'write rec/s':>12} {'read rec/s':>12} {'resume (load ids) s':>20}")
    for kind, values in results.items():
        print(
            f"{kind:10} {values['bytes']:14,.0f} {args.records / values['write']:12.1f} "
            f"{args.records / values['read']:12.1f} {values['resume']:20.3f}"
        )
    jsonl, parquet = results["jsonl"], results["parquet"]
    print(
        f"{'JSONL/Parquet':10} {jsonl['bytes'] / parquet['bytes']:13.2f}x "
        f"{jsonl['write'] / parquet['write']:11.2f}x {jsonl['read'] / parquet['read']:11.2f}x "
        f"{jsonl['resume'] / parquet['resume']:19.2f}x"
    )
    print("(size ratio: JSONL bytes over Parquet bytes; time ratios: JSONL seconds over Parquet seconds)")


if __name__ == "__main__":
    main()
