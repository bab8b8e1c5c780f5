"""What knowing a model folder costs `dasd run` and the caches, at two sizes (issue 35 item 3).

    .venv/bin/python benchmarks/bench_model_identity.py                  # 0.5 and 2 GiB of weights
    .venv/bin/python benchmarks/bench_model_identity.py --gib 1 4        # other sizes

Writes a synthetic model folder (config.json, tokenizer.json, weights as safetensors-sized shards of random
bytes) and times, in this process:

* `before (caches)` — how the sample and eval caches knew a model before: sha256 of every file, one thread, on
  every run (`hashlib` over 1 MiB reads);
* `cold` — `dasd.models.identity.folder_identity` the first time: sha256 of 64 MiB pieces on several threads, then the
  memo written;
* `warm` — the same call again: size, mtime and inode read back from the memo, no byte of the weights read;
* `touched` — after `touch` of every file (a re-sync): each file read again once (new mtime), same identity.

The runner itself used the `config.json` modification time before (free, but a `touch` re-ran every step and a
changed weight file did not): that is the behaviour fixed, not a cost baseline. Ratios are against `before
(caches)` measured in the same run. The file cache is dropped where permitted (`/proc/sys/vm/drop_caches`), else
the reads come from the page cache and the figures say so.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))

from dasd.models.identity import folder_identity, model_files  # noqa: E402

SHARD = 1 << 30  # the largest weight file written (real checkpoints shard at 2-10 GB)


def make_model(folder: Path, gib: float) -> int:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"hidden_size": 4096, "num_hidden_layers": 36}))
    (folder / "tokenizer.json").write_bytes(os.urandom(11 << 20))
    left, index = int(gib * (1 << 30)), 0
    while left > 0:
        size = min(SHARD, left)
        with open(folder / f"model-{index:05d}.safetensors", "wb") as handle:
            for _ in range(size // (64 << 20)):
                handle.write(os.urandom(64 << 20))
            handle.write(os.urandom(size % (64 << 20)))
        left, index = left - size, index + 1
    old = time.time() - 60  # settled, as a downloaded model is: the memo keeps it
    for path in folder.iterdir():
        os.utime(path, (old, old))
    return sum(path.stat().st_size for path in folder.iterdir())


def drop_page_cache() -> bool:
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def before_caches(folder: Path) -> str:
    """The caches' key before: sha256 of every file, one thread, every run."""
    values = {}
    for path in model_files(folder):
        hasher = hashlib.sha256()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                hasher.update(chunk)
        values[path.name] = hasher.hexdigest()
    return json.dumps(values)


def timed(call, folder: Path) -> tuple[float, str]:
    started = time.perf_counter()
    value = call(folder)
    return time.perf_counter() - started, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, nargs="+", default=[0.5, 2.0])
    args = parser.parse_args()
    print(f"cpus: {os.cpu_count()}; page cache dropped: ", end="")
    rows = []
    with tempfile.TemporaryDirectory(prefix="dasd-bench-identity-") as work:
        os.environ["DASD_HASH_CACHE"] = str(Path(work) / "memo")
        dropped = None
        for gib in args.gib:
            folder = Path(work) / f"model-{gib}"
            size = make_model(folder, gib)
            dropped = drop_page_cache()
            before, _ = timed(before_caches, folder)
            dropped = drop_page_cache()
            cold, identity = timed(folder_identity, folder)
            warm, again = timed(folder_identity, folder)
            for path in folder.iterdir():
                os.utime(path, (time.time() - 60, time.time() - 60))
            drop_page_cache()
            touched, after_touch = timed(folder_identity, folder)
            assert identity == again == after_touch
            rows.append((gib, size, before, cold, warm, touched))
        print(dropped)
    print(f"{'weights':>8} {'before (caches)':>16} {'cold':>8} {'warm':>9} {'touched':>8}  cold/before  warm/before")
    for gib, size, before, cold, warm, touched in rows:
        print(
            f"{gib:6.1f}Gi {before:14.2f} s {cold:6.2f} s {warm * 1000:7.2f} ms {touched:6.2f} s"
            f"  {cold / before:11.2f}  {warm / before:11.5f}"
        )
        print(f"{'':8} ({size / before / (1 << 30):.2f} GiB/s before, {size / cold / (1 << 30):.2f} GiB/s cold)")


if __name__ == "__main__":
    main()
