"""Compare two `dasd run` workdirs step by step: the same records in the same order, and the same trained weights.

    python scripts/compare_runs.py runs/before runs/after

For checking that a change to how stages read and write (formats, streaming, passes) changes no result: every
record file of the recipe is read with `dasd.data.io.iter_records`, whatever its format (a JSONL file in one run
may be a Parquet folder in the other), and compared record for record; every `model.safetensors` by its sha256.
Log-probs are compared as float32, what Parquet stores (the values samplers produce are float32 already: a run
whose log-probs came from a server or torch compares equal either way). Exit status 1 when anything differs.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np

from dasd.data.io import iter_records

RECORD_FILES = (
    "sample/responses",
    "score/scored",
    "filter/filtered",
    "filter/filtered.rejected",
    "select/das",
    "select/rs",
    "sft/das/sft",
    "sft/das/sft.low_temp",
    "sft/das/sft.high_temp",
    "sft/rs/sft",
    "mix/mixed",
)


def as_float32(record: dict) -> dict:
    """The record with its teacher log-probs rounded to float32.

    >>> as_float32({"teacher_logprobs": {"reasoning": {"offsets": [[0, 1]], "logprobs": [-0.1]}}})
    {'teacher_logprobs': {'reasoning': {'offsets': [[0, 1]], 'logprobs': [-0.10000000149011612]}}}
    """
    logprobs = record.get("teacher_logprobs")
    if isinstance(logprobs, dict):
        for part in logprobs.values():
            if isinstance(part, dict):
                part["logprobs"] = [float(np.float32(value)) for value in part.get("logprobs") or []]
    return record


def find(work: Path, stem: str) -> Path | None:
    for ext in (".jsonl", ".parquet"):
        if (work / (stem + ext)).exists():
            return work / (stem + ext)
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path, help="a finished workdir")
    parser.add_argument("after", type=Path, help="another finished workdir of the same pipeline")
    args = parser.parse_args()
    differ = 0
    for stem in RECORD_FILES:
        before, after = find(args.before, stem), find(args.after, stem)
        if before is None and after is None:
            continue
        if before is None or after is None:
            print(f"{stem:28} only in {'after' if before is None else 'before'}")
            differ += 1
            continue
        a = [as_float32(record) for _, record in iter_records(before)]
        b = [as_float32(record) for _, record in iter_records(after)]
        same = a == b
        differ += not same
        print(f"{stem:28} {len(a):6} vs {len(b):6} records  {'same, in order' if same else 'DIFFERENT'}")
    for model in sorted(args.before.glob("train/**/final/model.safetensors")):
        other = args.after / model.relative_to(args.before)

        def sha(path: Path) -> str:
            return hashlib.sha256(path.read_bytes()).hexdigest()

        same = other.exists() and sha(model) == sha(other)
        differ += not same
        print(f"{str(model.relative_to(args.before).parent.parent):28} weights {'same' if same else 'DIFFERENT'}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
