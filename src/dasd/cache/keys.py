"""Content keys: what makes a file, a model or a set of settings the same as before.

    digest({"temperature": 0.6})              # a short key of a JSON-able value
    file_sha256(Path("model.safetensors"))    # read once; then from the memo while size, mtime and inode hold

A model's identity built on these keys is `dasd.models.identity.model_identity`. Hashing runs at ~0.64 GiB/s per
core, in 64 MiB pieces on several threads, and is memoised under `$DASD_HASH_CACHE` (else `$DASD_CACHE/hashes`), so
a 65 GB teacher is read once per machine, not once per `dasd run`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..files import write_json_atomic

HASH_PIECE = 64 << 20
# A file hashed within this many seconds of its last write is not memoised: a write in the same mtime tick could
# follow unseen (filesystems with coarse timestamps).
MEMO_SETTLE_S = 2.0


def digest(payload: Any) -> str:
    """A short content key of a JSON-able value.

    >>> digest({"b": 1, "a": [2]}) == digest({"a": [2], "b": 1})
    True
    """
    blob = json.dumps(payload, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]


def cache_dir() -> Path:
    """`$DASD_CACHE` (else `~/.cache/dasd`), made if missing: the root of every cache and built asset."""
    root = Path(os.environ.get("DASD_CACHE", Path.home() / ".cache" / "dasd"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def hash_memo_root() -> Path:
    """`$DASD_HASH_CACHE`, else `$DASD_CACHE/hashes`."""
    return Path(os.environ.get("DASD_HASH_CACHE") or cache_dir() / "hashes")


def _sha256_pieces(path: Path, size: int, threads: int) -> str:
    """sha256 over the sha256 of each 64 MiB piece: the same bytes give the same value; pieces hash in parallel."""

    def piece(offset: int) -> bytes:
        hasher = hashlib.sha256()
        end = min(offset + HASH_PIECE, size)
        with open(path, "rb", buffering=0) as handle:
            handle.seek(offset)
            while offset < end:
                block = handle.read(min(8 << 20, end - offset))
                if not block:
                    raise InputError(str(path), None, None, "the file shrank while it was being hashed")
                hasher.update(block)
                offset += len(block)
        return hasher.digest()

    offsets = range(0, max(size, 1), HASH_PIECE)
    with ThreadPoolExecutor(max(1, min(threads, len(offsets)))) as pool:
        pieces = list(pool.map(piece, offsets))
    return hashlib.sha256(b"".join(pieces)).hexdigest()


def file_sha256(path: Path, memo_dir: Path | None = None, *, threads: int = 8) -> str:
    """The content hash of a file (`_sha256_pieces`), read back from the memo (`memo_dir`, default
    `hash_memo_root()`) while its size, mtime and inode are unchanged."""
    memo_dir = hash_memo_root() if memo_dir is None else memo_dir
    stat = path.stat()
    signature = [stat.st_size, stat.st_mtime_ns, stat.st_ino]
    memo = memo_dir / f"{digest(os.path.realpath(path))}.json"
    if memo.exists():
        with contextlib.suppress(ValueError, OSError):
            saved = json.loads(memo.read_text())
            if saved.get("signature") == signature:
                return saved["sha256"]
    started = time.time()
    value = _sha256_pieces(path, stat.st_size, threads)
    after = path.stat()
    settled = stat.st_mtime_ns / 1e9 < started - MEMO_SETTLE_S  # a later write gets a later mtime
    if settled and [after.st_size, after.st_mtime_ns, after.st_ino] == signature:
        with contextlib.suppress(OSError):  # a read-only cache only costs the memo
            memo_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(memo, {"path": os.path.realpath(path), "signature": signature, "sha256": value})
    return value
