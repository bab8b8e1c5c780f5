"""Parts of `dasd train`: a stage's SFT records tokenized once, into a memory-mapped Arrow dataset cached by content.

    require_records(stage.data)                                   # the input's own errors, before anything loads
    data = prepare_stage_data(stage.data, tokenizer, max_length=65536, mask_student_prefix=False, packing=True)
    data.dataset, data.samples, data.rows, data.tokens, data.dropped, data.weighting   # every rank calls it

What a sample is (`tokenize_record`, also behind `dasd.training.sft.prepare_examples`): the prompt rendered with the
student's chat template, the assistant text and its end-of-turn token tokenized on their own, labels -100 on the
prompt (and on the student-written prefix with `mask_student_prefix`), per-token loss weights from `weight` and
`loss_weight_spans`; a sample longer than `max_length` is dropped and counted, or is an error.

Once. The records are streamed (`dasd.data.io.iter_records`) in chunks of about a million tokens to worker
processes (`workers`, default one per CPU core) that tokenize them; the parent writes their results in input
order into one Arrow file — input ids and labels as int32, weights as float32, which read back as exactly the
values the list path gave the collator — then packs it with TRL's `pack_dataset` (best-fit-decreasing in
batches of 1,000 samples, as on an in-memory dataset) into another, and the trainer memory-maps the result.
No process holds the examples: the parent holds at most two chunks per worker while tokenizing and one batch of
1,000 samples while packing (~1 GiB at 20K tokens a sample, whatever the number of samples), the ranks map the file
(pages of the page cache, shared between the ranks of a node, that the kernel can drop), and the counts the stage
reports (samples, dropped, tokens, trained tokens, the loss weighting) are summed over the chunks.

Cached by content. A folder `<cache>/<key>/` (`$DASD_TRAIN_DATA_CACHE`, else `$DASD_CACHE/train-data`) holds the
dataset and `prepared.json` (the counts and what the key covers); the key is a hash of the data's bytes (every
file the input names), the tokenizer (its saved files), the settings that change a sample (`max_length`,
`too_long`, `mask_student_prefix`, `chat_template_kwargs`, `packing`), the code that tokenizes and the versions
of transformers, tokenizers, TRL, datasets and pyarrow. A file's hash (`dasd.cache.keys`) is read back from a memo
while its size, mtime and inode are unchanged (a file written less than 2 s before it is hashed is not memoised), so a
rerun, or the next rank, does not read the data again; a cold hash reads the file with several threads in 64 MiB pieces.
`rm -rf <cache>` clears it; nothing else deletes it.

One builder. Every rank of an `accelerate launch` calls `prepare_stage_data`; an exclusive file lock (flock) on
the key lets the first one build while the others wait (no collective, so no NCCL/gloo timeout however long
tokenizing takes), and then they map the same folder. A build goes to `<key>.partial/` and is renamed into place
when whole: a killed build is never taken for a finished one, and the next run starts it again. On a cache that
each node has on its own disk, the first rank of each node builds its node's copy.
"""

from __future__ import annotations

import bisect
import contextlib
import glob
import hashlib
import itertools
import json
import math
import os
import shutil
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..cache.keys import digest, file_sha256
from ..errors import DasdError, InputError
from ..text.render import render_completion

# Bump when the meaning of a cached dataset changes in a way the code digest does not see.
TRAIN_DATA_VERSION = 1
# The code between a record and its tokens: an edit to any of these files gives a new key.
TOKENIZING_CODE = ("training/data.py", "text/render.py", "text/prompts.py")
# A chunk sent to a worker: about this many characters of message text (~1M tokens), or this many records.
CHUNK_CHARS = 4_000_000
CHUNK_RECORDS = 1024
# The fields of an SFT record that tokenizing reads (the rest stays in the parent).
RECORD_FIELDS = ("messages", "weight", "loss_mask_prefix_chars", "loss_weight_spans")


# ---- one record -> one sample ----


def tokenize_record(
    line: int | None,
    record: dict[str, Any],
    tokenizer,
    *,
    max_length: int,
    mask_student_prefix: bool,
    too_long: str = "drop",
    path: str = "<input>",
    chat_template_kwargs: dict | None = None,
) -> tuple[dict[str, Any], int] | None:
    """An SFT record -> (`{input_ids, labels, token_weights}`, prompt length), or None when it is longer than
    `max_length` and `too_long` is drop. Labels are -100 outside the trained part; a bad record is an `InputError`."""
    messages = record.get("messages")
    if (
        not isinstance(messages, list)
        or not messages
        or not isinstance(messages[-1], dict)
        or messages[-1].get("role") != "assistant"
    ):
        raise InputError(path, line, "messages", "must end with the assistant turn to train on")
    completion_text = messages[-1].get("content") or ""
    if not completion_text.strip():
        raise InputError(path, line, "messages", "the assistant turn is empty")
    prompt_ids, completion_ids, spans, rendered = render_completion(
        tokenizer, messages[:-1], completion_text, add_end_token=True, chat_template_kwargs=chat_template_kwargs
    )
    length = len(prompt_ids) + len(completion_ids)
    if length > max_length:
        if too_long == "error":
            raise InputError(
                path,
                line,
                "messages",
                f"{length} tokens > max_length {max_length} (set too_long=drop to skip such samples)",
            )
        return None
    labels = [-100] * len(prompt_ids) + list(completion_ids)
    prefix_chars = record.get("loss_mask_prefix_chars")
    if mask_student_prefix and prefix_chars:
        shift = len(completion_text) - len(rendered)  # characters the template's own <think> took
        for index, (start, _) in enumerate(spans):
            if start + shift < prefix_chars:
                labels[len(prompt_ids) + index] = -100
    weight = 1.0 if record.get("weight") is None else float(record["weight"])
    if weight < 0 or not math.isfinite(weight):
        raise InputError(path, line, "weight", f"must be a finite number >= 0 (got {record['weight']!r})")
    token_weights = [weight] * len(labels)
    if record.get("loss_weight_spans"):
        shift = len(completion_text) - len(rendered)
        positions = [start + shift for start, _ in spans]
        factors = span_weights(positions, checked_weight_spans(record["loss_weight_spans"], path=path, line=line))
        for index, factor in enumerate(factors):
            token_weights[len(prompt_ids) + index] = weight * factor
    return {"input_ids": prompt_ids + completion_ids, "labels": labels, "token_weights": token_weights}, len(prompt_ids)


def checked_weight_spans(value: Any, *, path: str, line: int | None) -> list[tuple[int, int, float]]:
    """A record's `loss_weight_spans` (build-sft's `sentence_weights`), sorted, or a one-line `InputError`."""
    spans = []
    for item in value if isinstance(value, list) else [None]:
        ok = isinstance(item, (list, tuple)) and len(item) == 3 and all(isinstance(x, (int, float)) for x in item)
        if not ok or not (0 <= item[0] <= item[1]) or item[2] < 0 or not math.isfinite(item[2]):
            raise InputError(
                path,
                line,
                "loss_weight_spans",
                f"must be [start, end, weight] spans, 0 <= start <= end, weight >= 0 (got {item!r})",
            )
        spans.append((int(item[0]), int(item[1]), float(item[2])))
    return sorted(spans)


def span_weights(positions: list[int], spans: list[tuple[int, int, float]]) -> list[float]:
    """The weight of the span holding each character position (sorted spans; 1.0 outside every span).

    >>> span_weights([0, 3, 5, 9], [(2, 6, 0.5), (6, 9, 2.0)])
    [1.0, 0.5, 0.5, 1.0]
    """
    starts = [start for start, _, _ in spans]
    out = []
    for position in positions:
        index = bisect.bisect_right(starts, position) - 1
        inside = index >= 0 and spans[index][0] <= position < spans[index][1]
        out.append(spans[index][2] if inside else 1.0)
    return out


# ---- the content key ----


def cache_root() -> Path:
    """`$DASD_TRAIN_DATA_CACHE`, else `$DASD_CACHE/train-data`."""
    from ..models.assets import cache_dir

    return Path(os.environ.get("DASD_TRAIN_DATA_CACHE") or cache_dir() / "train-data")


def data_files(path: str) -> list[Path]:
    """The files an input names, in reading order: a file; every file of a folder (a saved dataset, Parquet
    parts); a glob's matches in name order; a Hub dataset's files in the local HF cache."""
    if path.startswith("hf://"):
        from ..data.hub import hub_data_files

        return [Path(item) for item in hub_data_files(path)]
    matches = sorted(glob.glob(path)) if any(char in path for char in "*?[") else [path]
    files: list[Path] = []
    for match in map(Path, matches):
        if match.is_dir():
            files.extend(
                sorted(
                    child
                    for child in match.rglob("*")
                    if child.is_file() and not any(part.startswith(".") for part in child.relative_to(match).parts)
                )
            )
        else:
            files.append(match)
    return files


def tokenizer_identity(tokenizer) -> str:
    """The content of a tokenizer as it tokenizes: its saved files (vocabulary, merges, normalizer, special tokens,
    chat template), less the fields that only say where it was loaded from."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="dasd-tokenizer-") as folder:
        tokenizer.save_pretrained(folder)
        files = {}
        for child in sorted(Path(folder).iterdir()):
            if child.name == "tokenizer_config.json":
                config = json.loads(child.read_text())
                for name in ("name_or_path", "is_local", "local_files_only"):
                    config.pop(name, None)
                files[child.name] = digest(config)
            else:
                files[child.name] = hashlib.sha256(child.read_bytes()).hexdigest()
    return digest({"class": type(tokenizer).__name__, "files": files})


def _versions() -> dict[str, str]:
    import datasets
    import pyarrow
    import tokenizers
    import transformers
    import trl

    return {
        "datasets": datasets.__version__,
        "pyarrow": pyarrow.__version__,
        "tokenizers": tokenizers.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
    }


def _code_digest() -> str:
    package = Path(__file__).resolve().parents[1]
    return digest({name: hashlib.sha256((package / name).read_bytes()).hexdigest() for name in TOKENIZING_CODE})


# ---- building: workers tokenize chunks, the parent writes them in order ----

_WORKER: dict[str, Any] = {}


def _start_worker(tokenizer, options: dict[str, Any]) -> None:
    import signal

    # A forked worker inherits the parent's Python-level SIGTERM handler (a stage with a launched server installs
    # one); it runs only when the worker's main thread gets back to the interpreter, so `Pool.terminate` could wait
    # on a worker forever (seen once in the suite). The kernel's default ends it whatever it is doing.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _WORKER["tokenizer"], _WORKER["options"] = tokenizer, options


@dataclass
class _Chunk:
    batch: Any = None  # pyarrow.RecordBatch of the chunk's samples
    samples: int = 0
    dropped: int = 0
    tokens: int = 0
    trained_tokens: int = 0
    weighted: bool = False  # a trained token's weight is not 1.0
    spans: bool = False  # a record has loss_weight_spans
    error: tuple | None = None  # (path, line, field, message) of the chunk's first bad record


def _schema():
    import pyarrow as pa

    return pa.schema(
        [
            ("input_ids", pa.list_(pa.int32())),
            ("labels", pa.list_(pa.int32())),
            ("token_weights", pa.list_(pa.float32())),
        ]
    )


def _tokenize_chunk(chunk: list[tuple[int, dict[str, Any]]]) -> _Chunk:
    import pyarrow as pa

    tokenizer, options = _WORKER["tokenizer"], _WORKER["options"]
    result = _Chunk()
    columns: dict[str, list] = {"input_ids": [], "labels": [], "token_weights": []}
    for line, record in chunk:
        result.spans = result.spans or bool(record.get("loss_weight_spans"))
        try:
            made = tokenize_record(line, record, tokenizer, **options)
        except InputError as exc:
            result.error = (exc.path, exc.line, exc.field, exc.message)
            break
        if made is None:
            result.dropped += 1
            continue
        example, prompt_length = made
        for name, values in columns.items():
            values.append(example[name])
        result.samples += 1
        result.tokens += len(example["input_ids"])
        result.trained_tokens += sum(1 for label in example["labels"] if label != -100)
        result.weighted = result.weighted or any(weight != 1.0 for weight in example["token_weights"][prompt_length:])
    schema = _schema()
    result.batch = pa.RecordBatch.from_arrays(
        [pa.array(columns[name], type=schema.field(name).type) for name in schema.names], schema=schema
    )
    return result


def _record_chars(record: dict[str, Any]) -> int:
    messages = record.get("messages")
    if not isinstance(messages, list):
        return 0
    return sum(
        len(message["content"])
        for message in messages
        if isinstance(message, dict) and isinstance(message.get("content"), str)
    )


def _chunks(records: Iterable[tuple[int, dict[str, Any]]]) -> Iterator[list[tuple[int, dict[str, Any]]]]:
    chunk: list[tuple[int, dict[str, Any]]] = []
    chars = 0
    for line, record in records:
        chunk.append((line, {name: record[name] for name in RECORD_FIELDS if name in record}))
        chars += _record_chars(record)
        if chars >= CHUNK_CHARS or len(chunk) >= CHUNK_RECORDS:
            yield chunk
            chunk, chars = [], 0
    if chunk:
        yield chunk


def default_workers() -> int:
    """The CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _tokenized_chunks(
    path: str, tokenizer, options: dict[str, Any], workers: int, used: dict[str, int]
) -> Iterator[_Chunk]:
    """Every chunk's result in input order (`used["workers"]`: the processes that tokenize). A read error of the
    input (bad JSON, …) anywhere wins over a bad record, as when the whole file was read before tokenizing: after a
    bad record the rest is read, not tokenized."""
    from ..data.io import iter_records

    chunks = _chunks(iter_records(path))
    first = list(itertools.islice(chunks, 2))
    chunks = itertools.chain(first, chunks)
    failed = False
    if len(first) < 2 or workers <= 1:  # one chunk (the demo's files) or one worker: no processes to start
        used["workers"] = 1
        _start_worker(tokenizer, options)
        try:
            for chunk in chunks:
                if failed:
                    continue
                result = _tokenize_chunk(chunk)
                failed = result.error is not None
                yield result
        finally:
            _WORKER.clear()
        return
    import multiprocessing

    used["workers"] = workers
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    with context.Pool(workers, initializer=_start_worker, initargs=(tokenizer, options)) as pool:
        pending: deque = deque()
        for chunk in chunks:
            if failed:
                continue
            pending.append(pool.apply_async(_tokenize_chunk, (chunk,)))
            while len(pending) >= 2 * workers or (pending and pending[0].ready()):
                result = pending.popleft().get()
                failed = failed or result.error is not None
                yield result
                if failed:
                    break
        while pending and not failed:
            result = pending.popleft().get()
            failed = result.error is not None
            yield result


def _build(
    folder: Path, path: str, tokenizer, options: dict[str, Any], *, packing: bool, workers: int, settings: dict
) -> dict[str, Any]:
    """Tokenize `path` into `folder` (a fresh one) and return its `prepared.json`."""
    import pyarrow as pa

    from ..progress import Progress

    folder.mkdir(parents=True)
    started = time.perf_counter()
    tokenized = folder / "tokenized.arrow"
    counts = {"samples": 0, "dropped": 0, "tokens": 0, "trained_tokens": 0}
    weighted = spans = False
    records = 0
    error = None
    used = {"workers": workers}
    progress = Progress(None, f"tokenize {Path(path).name}", unit="sample")
    with pa.OSFile(str(tokenized), "wb") as sink, pa.ipc.new_stream(sink, _schema()) as writer:
        for chunk in _tokenized_chunks(path, tokenizer, options, workers, used):
            if error is not None:
                continue
            if chunk.error is not None:
                error = chunk.error
                continue
            writer.write_batch(chunk.batch)
            for name in counts:
                counts[name] += getattr(chunk, name)
            weighted, spans = weighted or chunk.weighted, spans or chunk.spans
            records += chunk.samples + chunk.dropped
            progress.update(chunk.samples + chunk.dropped, chunk.tokens)
    progress.close()
    if error is not None:
        raise InputError(*error)
    if records == 0:
        raise InputError(path, None, None, "no records (empty file)")
    columns = ["input_ids", "labels"] + (["token_weights"] if weighted else [])
    rows, file = counts["samples"], tokenized.name
    if packing and counts["samples"]:
        from datasets import Dataset
        from trl.data_utils import pack_dataset

        dataset = Dataset.from_file(str(tokenized)).select_columns(columns)
        packed = pack_dataset(dataset, options["max_length"], "bfd", {"cache_file_name": str(folder / "packed.arrow")})
        rows, file, columns = len(packed), "packed.arrow", packed.column_names
        del dataset, packed
        tokenized.unlink()
        # packing copies a batch of 1,000 samples a few times (~1 GiB at 20K tokens a sample): give it back to the
        # system before this process goes on to train
        pa.default_memory_pool().release_unused()
    manifest = {
        "samples": counts["samples"],
        "dropped": {"too_long": counts["dropped"]} if counts["dropped"] else {},
        "tokens": counts["tokens"],
        "trained_tokens": counts["trained_tokens"],
        "weighted": weighted,
        "weighting": ("per-token" if spans else "per-sample") if weighted else "none",
        "rows": rows,
        "packing": packing,
        "file": file,
        "columns": columns,
        "built_by": {"pid": os.getpid(), "host": os.uname().nodename, "workers": used["workers"]},
        "seconds": round(time.perf_counter() - started, 2),
        "settings": settings,
    }
    _write_json(folder / "prepared.json", manifest)
    return manifest


# ---- the stage's data ----


@dataclass
class StageData:
    """A stage's training data: the memory-mapped dataset (None when no sample is trainable) and its counts."""

    dataset: Any
    samples: int
    dropped: dict[str, int]
    tokens: int
    trained_tokens: int
    weighted: bool
    weighting: str  # none | per-sample | per-token (loss_weight_spans): what the loss is weighted by
    rows: int
    folder: Path
    built: bool  # this process tokenized it (False: read from the cache)
    info: dict[str, Any] = field(default_factory=dict)


def require_records(path: str) -> None:
    """The input's own errors (not found, no match, unreadable first record, empty) before anything else loads."""
    from ..data.io import iter_records

    for _ in iter_records(path):
        return
    raise InputError(str(path), None, None, "no records (empty file)")


@contextlib.contextmanager
def _exclusive(lock: Path) -> Iterator[None]:
    """An exclusive flock on `lock` for the block; the kernel drops it when a process dies."""
    import fcntl

    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError as exc:  # e.g. Lustre mounted without -o flock
            raise DasdError(
                f"cannot lock {lock} ({exc.strerror}): set DASD_TRAIN_DATA_CACHE to a folder on a filesystem with "
                "file locks (the ranks of a launch use them to tokenize a stage's data once)"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write_json(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n")
    os.replace(partial, path)


def stage_data_key(
    path: str,
    tokenizer,
    *,
    max_length: int,
    mask_student_prefix: bool,
    too_long: str,
    chat_template_kwargs: dict | None,
    packing: bool,
    root: Path,
) -> tuple[str, dict[str, Any]]:
    """(key, what it covers) of a stage's data."""
    files = data_files(str(path))
    with _exclusive(root / "locks" / f"hash-{digest(os.path.realpath(str(path)))}.lock"):  # one rank reads the data
        data = [[file.stat().st_size, file_sha256(file)] for file in files]
    settings = {
        "version": TRAIN_DATA_VERSION,
        "data": digest(data),
        "tokenizer": tokenizer_identity(tokenizer),
        "max_length": max_length,
        "too_long": too_long,
        "mask_student_prefix": mask_student_prefix,
        "chat_template_kwargs": chat_template_kwargs or {},
        "packing": packing,
        "code": _code_digest(),
        "versions": _versions(),
    }
    return digest(settings), settings


def prepare_stage_data(
    path: str,
    tokenizer,
    *,
    max_length: int,
    mask_student_prefix: bool,
    too_long: str = "drop",
    chat_template_kwargs: dict | None = None,
    packing: bool = True,
    workers: int = 0,
    root: str | os.PathLike | None = None,
) -> StageData:
    """The stage's tokenized (and packed) data from the cache, tokenized first by this process when no one has."""
    root = Path(root) if root is not None else cache_root()
    options = {
        "max_length": max_length,
        "mask_student_prefix": mask_student_prefix,
        "too_long": too_long,
        "path": str(path),
        "chat_template_kwargs": chat_template_kwargs,
    }
    key, settings = stage_data_key(
        path,
        tokenizer,
        max_length=max_length,
        mask_student_prefix=mask_student_prefix,
        too_long=too_long,
        chat_template_kwargs=chat_template_kwargs,
        packing=packing,
        root=root,
    )
    folder = root / key
    built = False
    with _exclusive(root / "locks" / f"{key}.lock"):
        if not (folder / "prepared.json").exists():
            partial = root / f"{key}.partial"
            shutil.rmtree(partial, ignore_errors=True)  # a build that was killed
            print(f"dasd train: tokenizing {path} once, into {folder}", file=sys.stderr)
            try:
                _build(
                    partial,
                    str(path),
                    tokenizer,
                    options,
                    packing=packing,
                    workers=workers or default_workers(),
                    settings=settings,
                )
            except BaseException:
                shutil.rmtree(partial, ignore_errors=True)
                raise
            os.replace(partial, folder)
            built = True
    return load_stage_data(folder, built=built)


def load_stage_data(folder: Path, *, built: bool = False) -> StageData:
    """A prepared folder, memory-mapped."""
    info = json.loads((folder / "prepared.json").read_text())
    dataset = None
    if info["samples"]:
        from datasets import Dataset

        dataset = Dataset.from_file(str(folder / info["file"]))
        if dataset.column_names != info["columns"]:
            dataset = dataset.select_columns(info["columns"])
    return StageData(
        dataset=dataset,
        samples=info["samples"],
        dropped=dict(info["dropped"]),
        tokens=info["tokens"],
        trained_tokens=info["trained_tokens"],
        weighted=info["weighted"],
        weighting=info["weighting"],
        rows=info["rows"],
        folder=folder,
        built=built,
        info=info,
    )
