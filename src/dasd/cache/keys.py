"""Content keys: what makes a file, a model or a set of settings the same as before.

    digest({"temperature": 0.6})              # a short key of a JSON-able value
    file_sha256(Path("model.safetensors"))    # read once; then from the memo while size, mtime and inode hold
    model_identity("runs/x/final", None)      # a model folder, .gguf file, asset or Hub snapshot, by content

A model is its files' names, sizes and contents (less the files training writes beside the weights that do not
change what it computes): a copied or re-synced folder with the same weights is the same model, a `touch` changes
nothing, and a changed weight file makes another model. Hashing runs at ~0.64 GiB/s per core, in 64 MiB pieces on
several threads, and is memoised under `$DASD_HASH_CACHE` (else `$DASD_CACHE/hashes`), so a 65 GB teacher is read
once per machine, not once per `dasd run`.
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

from ..errors import DasdError, InputError

HASH_PIECE = 64 << 20
# A file hashed within this many seconds of its last write is not memoised: a write in the same mtime tick could
# follow unseen (filesystems with coarse timestamps).
MEMO_SETTLE_S = 2.0

# Files of a model folder that do not change what the model computes: written by training beside the weights
# (the card, dasd's stage record, the pickled training arguments: these name the workdir and the time).
# a trained model's card and its records (`dasd.cards`: README.md, dasd_evals.json) change without the model changing
NOT_MODEL_FILES = ("README.md", "dasd_stage.json", "dasd_evals.json", "training_args.bin", "trainer_state.json")


def digest(payload: Any) -> str:
    """A short content key of a JSON-able value.

    >>> digest({"b": 1, "a": [2]}) == digest({"a": [2], "b": 1})
    True
    """
    blob = json.dumps(payload, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]


def hash_memo_root() -> Path:
    """`$DASD_HASH_CACHE`, else `$DASD_CACHE/hashes`."""
    from ..models.assets import cache_dir

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
        from ..data.io import write_json_atomic

        with contextlib.suppress(OSError):  # a read-only cache only costs the memo
            memo_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(memo, {"path": os.path.realpath(path), "signature": signature, "sha256": value})
    return value


def model_files(path: Path) -> list[Path]:
    """The files of a model folder that make the model (transformers loads only the top level), name-sorted."""
    return sorted(
        child
        for child in path.iterdir()
        if child.is_file() and not child.name.startswith(".") and child.name not in NOT_MODEL_FILES
    )


def folder_identity(path: Path) -> str:
    """A model folder by its files' names, sizes and contents.

    >>> import tempfile; folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "config.json").write_text("{}")
    >>> before = folder_identity(folder); os.utime(folder / "config.json"); before == folder_identity(folder)
    True
    """
    return digest({child.name: [child.stat().st_size, file_sha256(child)] for child in model_files(path)})


def path_identity(path: Path) -> str:
    """What a step's input is: a file by its content, a folder (a model) by `folder_identity`, a missing path by
    name (it exists once an earlier step made it, and that step's fingerprint covers it)."""
    if path.is_dir():
        return folder_identity(path)
    if not path.exists():
        return f"{path}:missing"
    return file_sha256(path)


def model_identity(model: str, revision: str | None) -> str:
    """The content of a model, whatever names it: a folder (`folder_identity`), a `.gguf` file, the `smollm2`
    asset, or a Hub id (its snapshot in the local Hugging Face cache). Raises `DasdError` when there is nothing
    local to read."""
    from ..models.assets import QUICKTOK_ENCODINGS, smollm2_gguf_path

    path = Path(model)
    if model == "smollm2":
        path = smollm2_gguf_path()
    elif not path.exists() and model not in QUICKTOK_ENCODINGS:
        try:
            from huggingface_hub import snapshot_download

            path = Path(snapshot_download(model, revision=revision or "main", local_files_only=True))
        except Exception as exc:  # huggingface_hub raises several types for a model that is not cached
            raise DasdError(f"{model} is not a local model folder or file, nor in the Hugging Face cache") from exc
    if path.is_file():
        return file_sha256(path)
    if path.is_dir():
        return folder_identity(path)
    return f"asset:{model}"  # a tokenizer asset used as a model: dasd builds it the same way everywhere
