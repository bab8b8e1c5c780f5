"""JSONL record files: the append-only resumable writer, the error log, shared (locked) files, whole rewrites.

* one JSON object per line, UTF-8, id first, written with a single `write` and flushed, so a killed process
  leaves at most one partial trailing line — which the next `RecordWriter` on that file cuts off;
* a rerun skips ids already present (`writer.done`), so long jobs resume where they stopped;
* failures never enter the output: they go to an `ErrorLog` beside it, and a rerun retries them;
* a file that several processes append to at once (the evaluation cache, `dasd.sampling.eval_cache`) is written
  with `RecordWriter(path, shared=True)` and read with `read_shared_records`: both hold a lock on
  `<name>.lock` (`file_lock`), so lines never interleave and a torn line is cut only when no one writes.
"""

from __future__ import annotations

import gzip
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import InputError
from .shards import done_elsewhere, jsonl_ids, line_id


def dumps_record(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


def iter_jsonl(
    path: Path, keep_id: Callable[[str], bool] | None = None, id_field: str = "id"
) -> Iterator[tuple[int, dict[str, Any]]]:
    """`(line_number, record)` of a JSONL(.gz) file; blank lines skipped; one-line `InputError` on bad JSON.
    With `keep_id`, a line whose id (read from its start, `line_id`) it rejects is skipped before it is parsed:
    a shard task reads only its own records at the cost of reading bytes, not of parsing JSON."""
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            for line_number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                if keep_id is not None:
                    try:
                        record_id = line_id(line, id_field)
                    except (json.JSONDecodeError, UnicodeDecodeError):
                        record_id = None  # parsed below, for its one-line error
                    if record_id is not None and not keep_id(record_id):
                        continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InputError(
                        str(path), line_number, None, f"invalid JSON ({exc.msg} at column {exc.colno})"
                    ) from None
                if not isinstance(record, dict):
                    raise InputError(
                        str(path), line_number, None, f"expected a JSON object, got {type(record).__name__}"
                    )
                yield line_number, record
    except (UnicodeDecodeError, gzip.BadGzipFile, EOFError) as exc:
        raise InputError(str(path), None, None, f"cannot read file: {exc}") from None


def cut_torn_tail(path: Path) -> int:
    """Cut a file back to its last newline (a write cut short leaves a line without one), seeking back from the end
    in blocks; returns the bytes cut.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "x.jsonl"
    >>> _ = path.write_bytes(b'{"id":"a"}\\n{"id":"b","x":')
    >>> cut_torn_tail(path), path.read_bytes()
    (14, b'{"id":"a"}\\n')
    """
    size = path.stat().st_size
    if size == 0:
        return 0
    with open(path, "r+b") as handle:
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return 0
        end = size
        while end > 0:  # the last newline, read backwards in blocks
            start = max(0, end - (1 << 16))
            handle.seek(start)
            newline = handle.read(end - start).rfind(b"\n")
            if newline >= 0:
                end = start + newline + 1
                break
            end = start
        handle.truncate(end)
    return size - end


@contextmanager
def file_lock(path: str | os.PathLike, *, shared: bool = False) -> Iterator[None]:
    """Hold an advisory lock (flock) on `<path>.lock` for the block: exclusive to append or repair, shared to read.
    Processes that all take it never see each other's half-written lines; the kernel drops the lock of a process
    that dies, so a crash never leaves it held."""
    import fcntl

    lock = Path(path).with_name(Path(path).name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def read_shared_records(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """The records of a file that other processes may be appending to (`RecordWriter(shared=True)`), read under
    the shared lock. A torn line a crashed writer left (no newline, or not JSON) is skipped, not an error: the
    next writer cuts it."""
    path = Path(path)
    if not path.exists():
        return
    with file_lock(path, shared=True):
        data = path.read_bytes()
    for line in data.split(b"\n")[:-1]:  # the part after the last newline is unfinished
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(record, dict):
            yield record


class RecordWriter:
    """Append-only JSONL writer that resumes by `id`.

    Opening repairs a partial last line left by a crash (it is cut off, so its record is redone),
    then loads the ids already written into `done`, reading the file line by line (memory: the ids); a damaged line
    in the middle is a one-line `InputError` naming file and line. `write` appends one complete line and flushes.
    The file and its folder are only created by the first `write` (or `touch`), so a run that fails
    validation leaves nothing behind. A shard file's writer (`x.shard-i-of-n.jsonl`) also counts the
    ids of the merged `x.jsonl` and of every other shard file as done (`elsewhere`): work finished
    under another shard count is not redone.

    `shared=True` is for a file several processes append to at once (a cache): the opening repair and every
    write hold `file_lock`, and a write first cuts a torn line that a writer which died mid-line left after
    this one opened, so every line starts on a line boundary. `done` is what was there at opening.
    """

    def __init__(self, path: str | os.PathLike, *, id_field: str = "id", shared: bool = False):
        self.path = Path(path)
        if self.path.name.endswith(".gz"):
            raise ValueError(f"{self.path}: outputs are plain .jsonl (append-safe); compress afterwards")
        self.id_field = id_field
        self.shared = shared
        self.done: set[str] = set()
        self.repaired_bytes = 0
        self._handle = None
        if self.path.exists():
            if shared:
                with file_lock(self.path):
                    self._repair_and_load()
            else:
                self._repair_and_load()
        elsewhere = done_elsewhere(self.path, id_field) - self.done  # sibling shards, the merged output
        self.elsewhere = len(elsewhere)
        self.done |= elsewhere

    def _repair_and_load(self) -> None:
        # Streamed: the torn tail is found by seeking back from the end, the ids are read line by line (memory: the
        # ids, never the file: resuming a 344 GB output must not need 344 GB of RAM).
        self.repaired_bytes = cut_torn_tail(self.path)
        self.done.update(jsonl_ids(self.path, self.id_field, checked=True))

    def touch(self) -> None:
        """Create the (empty) output file now, e.g. when a run has nothing to write."""
        self._ensure_open()

    def _ensure_open(self):
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.path, "a", encoding="utf-8")
        return self._handle

    def write(self, record: dict[str, Any]) -> None:
        record_id = str(record[self.id_field])
        line = dumps_record(record) + "\n"
        if self.shared:
            with file_lock(self.path):
                handle = self._ensure_open()
                self._cut_torn_tail()
                handle.write(line)
                handle.flush()
        else:
            handle = self._ensure_open()
            handle.write(line)
            handle.flush()
        self.done.add(record_id)

    def _cut_torn_tail(self) -> None:
        """Cut a torn line that a writer which died mid-line left after this one opened (under the lock)."""
        self.repaired_bytes += cut_torn_tail(self.path)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def finish(self) -> None:
        """Close, leaving an (empty) output file even when nothing was written this run."""
        self._ensure_open()
        self.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ErrorLog:
    """This run's failures, one JSON line each (`id`, `error`, `time`, extras), in the file at `path`.

    Opening one deletes the file an earlier run left there: failed records are retried by the next run,
    so its entries would only mislead. The file is created by the first `log` (appending, flushed per line),
    so a run without failures leaves none.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.count = 0
        self._handle = None
        self.path.unlink(missing_ok=True)

    def log(self, record_id: str, error: str, **extra: Any) -> None:
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.path, "a", encoding="utf-8")
        entry = {"id": record_id, "error": error, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **extra}
        self._handle.write(dumps_record(entry) + "\n")
        self._handle.flush()
        self.count += 1

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def write_jsonl_atomic(path: str | os.PathLike, records: Iterable[dict[str, Any]]) -> int:
    """Rewrite a whole JSONL file atomically (for outputs that are recomputed whole on each run, not
    appended to: selections, SFT exports, graded results). Returns the number of records written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    count = 0
    with open(tmp, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(dumps_record(record) + "\n")
            count += 1
    os.replace(tmp, path)
    return count


class LineIndex:
    """Random access to the records of a JSONL file by id: the byte offset and length of each id's line (its last
    one), read once without parsing records; `get(id)` parses just that line. For joining a file written in another
    order (e.g. length-sorted scoring chunks) without holding its records: memory is a few dozen bytes per id.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "parts.jsonl"
    >>> _ = path.write_text('{"id":"b","v":2}\\n{"id":"a","v":1}\\n')
    >>> with LineIndex(path) as index:
    ...     index.get("a"), "b" in index, index.get("zz")
    ({'id': 'a', 'v': 1}, True, None)
    """

    def __init__(self, path: str | os.PathLike, id_field: str = "id"):
        self.path = Path(path)
        self.offsets: dict[str, tuple[int, int]] = {}
        self._handle = None
        if not self.path.exists():
            return
        with open(self.path, "rb") as handle:
            position = 0
            for line in handle:
                if not line.endswith(b"\n"):
                    break  # a torn last line
                if line.strip():
                    record_id = line_id(line, id_field)
                    if record_id is not None:
                        self.offsets[record_id] = (position, len(line))
                position += len(line)

    def __contains__(self, record_id: str) -> bool:
        return record_id in self.offsets

    def get(self, record_id: str) -> dict[str, Any] | None:
        if record_id not in self.offsets:
            return None
        if self._handle is None:
            self._handle = open(self.path, "rb")
        start, length = self.offsets[record_id]
        self._handle.seek(start)
        return json.loads(self._handle.read(length))

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> LineIndex:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AtomicJsonlFiles:
    """Several JSONL files written together, record by record, each into `<name>.tmp` and renamed into place only
    by `commit()` — a stage that streams into several outputs (build-sft: all records, one file per stage, the
    exports) leaves the previous versions whole if it fails half way, and holds no record in memory.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> with AtomicJsonlFiles() as files:
    ...     files.write(folder / "a.jsonl", {"id": 1})
    ...     files.write(folder / "b.jsonl", {"id": 2})
    ...     files.commit()
    >>> (folder / "a.jsonl").read_text(), files.counts[folder / "b.jsonl"]
    ('{"id":1}\\n', 1)
    """

    def __init__(self):
        self._handles: dict[Path, Any] = {}
        self.counts: dict[Path, int] = {}

    def write(self, path: str | os.PathLike, record: dict[str, Any]) -> None:
        path = Path(path)
        handle = self._handles.get(path)
        if handle is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = self._handles[path] = open(path.with_name(path.name + ".tmp"), "w", encoding="utf-8")
            self.counts[path] = 0
        handle.write(dumps_record(record) + "\n")
        self.counts[path] += 1

    def touch(self, path: str | os.PathLike) -> None:
        """Have `path` written (empty) even when no record goes to it."""
        path = Path(path)
        if path not in self._handles:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._handles[path] = open(path.with_name(path.name + ".tmp"), "w", encoding="utf-8")
            self.counts[path] = 0

    def commit(self) -> None:
        for path, handle in self._handles.items():
            handle.close()
            os.replace(path.with_name(path.name + ".tmp"), path)
        self._handles = {}

    def __enter__(self) -> AtomicJsonlFiles:
        return self

    def __exit__(self, *exc) -> None:  # not committed: the temporary files go, the previous versions stay
        for path, handle in self._handles.items():
            handle.close()
            path.with_name(path.name + ".tmp").unlink(missing_ok=True)
        self._handles = {}
