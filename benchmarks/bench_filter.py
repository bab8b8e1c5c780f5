"""Filter throughput on long responses (~20,000 tokens each), all filters on, with the cost of each.

    .venv/bin/python benchmarks/bench_filter.py [--records 40]

Records: healthy synthetic chains of thought of ~20K Qwen3 tokens with a boxed answer and a
reference. Times each filter on its own (records/s) and the whole `dasd filter` stage; the length
filter tokenizes with the real Qwen3 tokenizer.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("DASD_CACHE", str(REPO / ".cache" / "dasd"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=40, help="records to filter")
    args = parser.parse_args()

    from dasd.config import load_config
    from dasd.grading.answers import BoundedVerifier, grade_many
    from dasd.models.assets import load_tokenizer
    from dasd.selection.filters import (
        Deduper,
        LengthConfig,
        RepetitionConfig,
        StructureConfig,
        length_filter,
        repetition_filter,
        structure_filter,
        student_length,
    )
    from dasd.stages import filter as filter_stage
    from tests.conftest import write_jsonl
    from tests.test_filters import healthy_cot

    tokenizer = load_tokenizer("qwen3")
    records = []
    for index in range(args.records):
        reasoning = healthy_cot(600 + index)
        records.append(
            {
                "id": f"r{index}",
                "question_id": f"q{index}",
                "messages": [{"role": "user", "content": f"Question {index}"}],
                "reasoning": reasoning,
                "content": f"The answer is $\\boxed{{{index * 7}}}$.",
                "answer": str(index * 7),
                "domain": "math",
                "finish_reason": "stop",
            }
        )
    tokens = sum(len(tokenizer(r["reasoning"])["input_ids"]) for r in records) / len(records)

    timings = {}

    def timed(name, function):
        started = time.perf_counter()
        function()
        timings[name] = time.perf_counter() - started

    timed("structure", lambda: [structure_filter(r, StructureConfig()) for r in records])
    timed(
        "length (Qwen3 tokenizer)",
        lambda: [
            length_filter(student_length(tokenizer, r, system_prompt="You are a helpful assistant."), LengthConfig())
            for r in records
        ],
    )
    timed("repetition", lambda: [repetition_filter(r, RepetitionConfig()) for r in records])
    dedupe = Deduper()
    timed("dedupe", lambda: [(dedupe(r), dedupe.add(r)) for r in records])
    with BoundedVerifier(workers=2, timeout_s=5.0) as verifier:
        grade_many([("\\boxed{1}", "1", "math", None)], verifier)  # workers started and warm
        timed(
            "correctness (math-verify, 2 workers)",
            lambda: grade_many([(r["content"], r["answer"], "math", None) for r in records], verifier),
        )
    with tempfile.TemporaryDirectory() as folder:
        path = write_jsonl(Path(folder) / "responses.jsonl", records)
        config = load_config(
            filter_stage.FilterConfig, None, [f"input={path}", f"output={folder}/kept.jsonl", "student_tokenizer=qwen3"]
        )
        timed("whole stage (all filters, I/O, worker start)", lambda: filter_stage.run(config))

    print(f"\nfilter throughput — {len(records)} records of ~{tokens:,.0f} Qwen3 tokens each, {os.cpu_count()} CPUs")
    for name, seconds in timings.items():
        print(
            f"  {name:46} {len(records) / seconds:10,.1f} records/s  ({seconds * 1000 / len(records):8.2f} ms/record)"
        )


if __name__ == "__main__":
    main()
