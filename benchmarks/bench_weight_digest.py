"""What `dasd train`'s unchanged-weights check costs per stage, at two sizes, against baselines in the same run.

    .venv/bin/python benchmarks/bench_weight_digest.py                 # 256 MiB and 1 GiB of float32 weights
    .venv/bin/python benchmarks/bench_weight_digest.py --mib 512 2048

The check digests every tensor of the loaded start model (`start_weight_digests`, at load) and of the saved
`final/` (`saved_weight_digests`, after the save). Baselines, timed on the same bytes: writing the weights
(`safetensors.torch.save_file`, what every stage does anyway) and one plain sha256 over the saved file. The
ratios say what the check adds to a stage's save; times should grow linearly with the size (the check holds a few
tensors at a time, never a second copy of the model).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from dasd.training.sft import changed_weights, saved_weight_digests, weight_digests

TENSOR_ELEMENTS = 8 * 1024 * 1024  # 32 MiB float32 tensors, a 4B model's MLP matrices are ~50-100 MiB in bf16


def state_dict(mib: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    count = max(1, mib * 1024 * 1024 // (4 * TENSOR_ELEMENTS))
    return {f"layers.{i}.weight": torch.randn(TENSOR_ELEMENTS, generator=generator) for i in range(count)}


def timed(action):
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def plain_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(64 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def measure(mib: int, folder: Path) -> dict[str, float]:
    weights = state_dict(mib)
    path = folder / f"model-{mib}.safetensors"
    save_s, _ = timed(lambda: save_file(weights, str(path)))
    sha_s, _ = timed(lambda: plain_sha256(path))
    start_s, start = timed(lambda: weight_digests(weights.items()))
    saved_folder = folder / f"saved-{mib}"
    saved_folder.mkdir()
    os.replace(path, saved_folder / "model.safetensors")
    saved_s, saved = timed(lambda: saved_weight_digests(saved_folder))
    changed, compared = changed_weights(start, saved)
    assert compared == len(weights) and changed == 0, (changed, compared)  # the same bytes digest the same
    return {"save": save_s, "sha256": sha_s, "start": start_s, "saved": saved_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, nargs=2, default=[256, 1024], help="the two sizes, MiB of float32")
    args = parser.parse_args()
    print(f"torch threads {torch.get_num_threads()}, cores {os.cpu_count()}")
    print(
        f"{'MiB':>6} {'save s':>8} {'sha256 s':>9} {'start s':>8} {'saved s':>8} {'check/save':>11} {'check/sha':>10}"
    )
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        for mib in args.mib:
            result = measure(mib, Path(scratch))
            results[mib] = result
            check = result["start"] + result["saved"]
            print(
                f"{mib:>6} {result['save']:>8.2f} {result['sha256']:>9.2f} {result['start']:>8.2f} "
                f"{result['saved']:>8.2f} {check / result['save']:>11.2f} {check / result['sha256']:>10.2f}"
            )
    small, large = args.mib
    growth = (results[large]["start"] + results[large]["saved"]) / (results[small]["start"] + results[small]["saved"])
    print(f"check time grows {growth:.2f}x for {large / small:.0f}x the weights")


if __name__ == "__main__":
    main()
