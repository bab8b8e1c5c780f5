"""Record files: read JSONL / JSONL.gz / Parquet / saved HF datasets; append-only resumable writing.

Every stage reads records with `read_records` and writes them with `RecordWriter`:

* one JSON object per line, UTF-8, written with a single `write` and flushed, so a killed process
  leaves at most one partial trailing line — which the next `RecordWriter` on that file cuts off;
* a rerun skips ids already present (`writer.done`), so long jobs resume where they stopped;
* failures never enter the output: they go to an `ErrorLog` beside it, and a rerun retries them;
* the shards of a stage run as n tasks (`shard=i/n`) write `<name>.shard-i-of-n.jsonl` beside the
  output; a shard's writer counts the ids in every other shard file and in the merged output as done,
  so rerunning with another n redoes nothing, and `merge_shards` makes them one file, each id once;
* a file that several processes append to at once (the evaluation cache, `dasd.eval_cache`) is written
  with `RecordWriter(path, shared=True)` and read with `read_shared_records`: both hold a lock on
  `<name>.lock` (`file_lock`), so lines never interleave and a torn line is cut only when no one writes.
"""

from __future__ import annotations

import glob
import gzip
import json
import math
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..naming import summary_file
from .summaries import StageSummary


def _open_text(path: Path):
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def _is_hf_dataset_dir(path: Path) -> bool:
    return path.is_dir() and (
        (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists() or (path / "state.json").exists()
    )


def iter_records(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield `(line_number, record)` from a JSONL(.gz) file, a Parquet file or a saved HF dataset
    (or every file a glob pattern matches, or a Hub dataset `hf://datasets/OWNER/NAME…`: `dasd.data.hub`).

    Line numbers are 1-based lines for JSONL and 1-based row numbers otherwise. Blank lines are
    skipped. Raises `InputError` naming the file and line for a missing file, bad JSON or a
    non-object line.
    """
    if str(path).startswith("hf://"):  # a Hub dataset: its files from the HF cache (downloaded when online)
        from .hub import hub_data_files

        row_number = 0
        for data_file in hub_data_files(str(path)):
            for _, record in iter_records(data_file):
                row_number += 1
                yield row_number, record
        return
    if any(char in str(path) for char in "*?["):
        # A glob (e.g. the shards of a multi-process run): the files in name order, one after another.
        matches = sorted(glob.glob(str(path)))
        if not matches:
            raise InputError(str(path), None, None, "no file matches this pattern")
        for match in matches:
            yield from iter_records(match)
        return
    path = Path(path)
    if not path.exists():
        raise InputError(str(path), None, None, "file not found")
    if _is_hf_dataset_dir(path):
        yield from _iter_hf_dataset(path)
        return
    if path.is_dir() and _parquet_parts(path):  # a Parquet output of dasd (or any folder of part-*.parquet)
        row_number = 0
        for part in _parquet_parts(path):
            for _, record in _iter_parquet(part):
                row_number += 1
                yield row_number, record
        return
    if path.is_dir():
        raise InputError(str(path), None, None, "is a folder, not a JSONL/Parquet file or a saved dataset")
    if path.suffix == ".parquet":
        yield from _iter_parquet(path)
        return
    try:
        with _open_text(path) as handle:
            for line_number, line in enumerate(handle, start=1):
                if not line.strip():
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


def _iter_parquet(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    import pyarrow.parquet as pq

    try:
        table_file = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise InputError(str(path), None, None, f"cannot read Parquet: {exc}") from None
    ours = (table_file.schema_arrow.metadata or {}).get(b"dasd.layout") == PARQUET_LAYOUT
    row_number = 0
    for batch in table_file.iter_batches(batch_size=256 if ours else 1024):
        for record in _table_records(batch) if ours else batch.to_pylist():
            row_number += 1
            yield row_number, record


def _iter_hf_dataset(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    import datasets

    try:
        dataset = datasets.load_from_disk(str(path))
    except Exception as exc:
        raise InputError(str(path), None, None, f"cannot load saved dataset: {exc}") from None
    if isinstance(dataset, datasets.DatasetDict):
        if "train" not in dataset:
            raise InputError(str(path), None, None, f"dataset has splits {list(dataset)}; expected 'train'")
        dataset = dataset["train"]
    for row_number, record in enumerate(dataset, start=1):
        yield row_number, dict(record)


def read_records(path: str | os.PathLike, *, allow_empty: bool = False) -> list[tuple[int, dict[str, Any]]]:
    """All records of a file as `(line_number, record)`; an empty input is an error unless allowed."""
    records = list(iter_records(path))
    if not records and not allow_empty:
        raise InputError(str(path), None, None, "no records (empty file)")
    return records


def batched(items, size: int):
    """Lists of up to `size` consecutive items (itertools.batched, which Python 3.11 lacks)."""
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def dumps_record(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


_SHARD_NAME = re.compile(r"^(?P<stem>.+)\.shard-(?P<index>\d+)-of-(?P<count>\d+)\.(?P<ext>jsonl|parquet)$")


def _split_name(path: Path) -> tuple[str, str]:
    """`scored.jsonl` -> ("scored", "jsonl"); `scored.parquet` -> ("scored", "parquet")."""
    for ext in ("jsonl", "parquet"):
        if path.name.endswith("." + ext):
            return path.name[: -len(ext) - 1], ext
    return path.stem, "jsonl"


def shard_output(output: str | os.PathLike, shard: tuple[int, int] | None) -> str:
    """The file shard (i, n) of a stage writes instead of `output`.

    >>> shard_output("runs/x/scored.jsonl", (1, 4))
    'runs/x/scored.shard-1-of-4.jsonl'
    >>> shard_output("runs/x/scored.parquet", (0, 2))
    'runs/x/scored.shard-0-of-2.parquet'
    >>> shard_output("runs/x/scored.jsonl", None)
    'runs/x/scored.jsonl'
    """
    if shard is None:
        return str(output)
    path = Path(output)
    stem, ext = _split_name(path)
    return str(path.with_name(f"{stem}.shard-{shard[0]}-of-{shard[1]}.{ext}"))


def shard_files(output: str | os.PathLike) -> list[Path]:
    """The shard files of `output` that exist, of any shard count, in name order (sidecars excluded)."""
    path = Path(output)
    stem, ext = _split_name(path)
    if not path.parent.is_dir():
        return []
    return sorted(
        candidate
        for candidate in path.parent.iterdir()
        if (match := _SHARD_NAME.match(candidate.name)) and match["stem"] == stem and match["ext"] == ext
    )


def _shard_siblings(path: Path) -> list[Path]:
    """For a shard file, the merged output and every other shard file of any count; else nothing."""
    match = _SHARD_NAME.match(path.name)
    if not match:
        return []
    merged = path.with_name(f"{match['stem']}.{match['ext']}")
    return [candidate for candidate in [merged, *shard_files(merged)] if candidate != path and candidate.exists()]


def _done_elsewhere(path: Path, id_field: str) -> set[str]:
    """For a shard file: the ids in the merged output and in every other shard file of any count."""
    return {record_id for sibling in _shard_siblings(path) for record_id in _ids_in(sibling, id_field)}


def _ids_in(path: Path, id_field: str) -> set[str]:
    if path.is_dir():  # a Parquet output: only its id column is read
        import pyarrow.parquet as pq

        return {str(value) for part in _parquet_parts(path) for value in pq.read_table(part, columns=[id_field])[0]}
    ids = set()
    with open(path, "rb") as handle:
        for line in handle:
            if not line.endswith(b"\n"):
                break  # a torn last line: its record was not finished
            try:
                record_id = _line_id(line, id_field)
            except json.JSONDecodeError:
                continue
            if record_id is not None:
                ids.add(record_id)
    return ids


_ID_DECODER = json.JSONDecoder()


def _line_id(line: bytes, id_field: str) -> str | None:
    """The id of one JSONL record line. Every writer here puts the id first, so it is decoded from the
    line's start instead of parsing the whole record (a 10K-token response is ~370 KB of JSON: resuming
    or re-sharding loads every id of every shard); any other line is parsed whole.

    >>> _line_id(b'{"id":"q1:t0.6:0","reasoning":"..."}\\n', "id"), _line_id(b'{"x":1,"id":7}\\n', "id")
    ('q1:t0.6:0', '7')
    """
    prefix = b'{"' + id_field.encode() + b'":'
    if line.startswith(prefix):
        try:
            value, _ = _ID_DECODER.raw_decode(line[len(prefix) : len(prefix) + 4096].decode("utf-8", "replace"))
            if isinstance(value, (str, int)):
                return str(value)
        except json.JSONDecodeError:
            pass
    record = json.loads(line)
    value = record.get(id_field) if isinstance(record, dict) else None
    return None if value is None else str(value)


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
    then loads the ids already written into `done`. `write` appends one complete line and flushes.
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
        elsewhere = _done_elsewhere(self.path, id_field) - self.done  # sibling shards, the merged output
        self.elsewhere = len(elsewhere)
        self.done |= elsewhere

    def _repair_and_load(self) -> None:
        good_end = 0
        with open(self.path, "rb") as handle:
            data = handle.read()
        position = 0
        while position < len(data):
            newline = data.find(b"\n", position)
            if newline < 0:
                break  # partial last line: no newline, so the write did not finish
            line = data[position:newline]
            if line.strip():
                try:
                    record_id = _line_id(line, self.id_field)
                except json.JSONDecodeError:
                    break  # a torn write followed by later appends cannot happen; stop at the damage
                if record_id is not None:
                    self.done.add(record_id)
            position = newline + 1
            good_end = position
        if good_end < len(data):
            self.repaired_bytes = len(data) - good_end
            with open(self.path, "r+b") as handle:
                handle.truncate(good_end)

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
        """Cut the file back to its last newline (under the lock: only a writer that died mid-line leaves one)."""
        size = self.path.stat().st_size
        if size == 0:
            return
        with open(self.path, "r+b") as handle:
            handle.seek(size - 1)
            if handle.read(1) == b"\n":
                return
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
        self.repaired_bytes += size - end

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


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write a text file (YAML, HTML, Markdown, …) via a temporary file and a rename, so that readers
    never see half of it and a crash leaves the previous version."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_json_atomic(path: str | os.PathLike, payload: Any) -> None:
    """Write `payload` as indented JSON, atomically (summaries, markers, metrics)."""
    write_text_atomic(path, json.dumps(payload, ensure_ascii=False, indent=2))


def write_summary(output: str | os.PathLike, summary: StageSummary) -> Path:
    """Write a stage's summary where `dasd.naming.summary_file` puts it for its `stage` (beside a record output,
    inside an output folder); returns that path. The cards, the run table and the report read it (`read_summary`)."""
    path = summary_file(output, summary["stage"])
    write_json_atomic(path, summary)
    return path


def read_summary(path: str | os.PathLike) -> StageSummary | None:
    """The summary a stage wrote (`write_summary`); the stage's `TypedDict` in `dasd.data.summaries` is chosen by its
    `stage` key. None when there is none: no such file, or JSON without a `stage` (another tool's summary.json).

    >>> read_summary("/nonexistent/scored.summary.json") is None
    True
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(str(path), None, None, f"cannot read summary: {exc}") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("stage"), str):
        return None
    return payload


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


def merge_shards(output: str | os.PathLike, *, id_field: str = "id") -> dict[str, Any]:
    """Append the records of `output`'s shard files (`shard_files`) to `output`, each id once, then remove
    the shard files (not their sidecars: each task's summary stays). Safe to rerun after a crash: ids
    already in `output` are skipped, and the shards are removed only once everything is in (fsynced).

    Returns counts: `merged` records appended, `already_merged`, `duplicates` (an id written by two
    shards: kept once; a correct run has none) and the shard files read.
    """
    output = Path(output)
    shards = shard_files(output)
    counts = {"shards": len(shards), "merged": 0, "already_merged": 0, "duplicates": 0}
    if not shards:
        return counts
    writer = open_writer(output, id_field=id_field)
    merged_before = set(writer.done)
    for shard in shards:
        for _, record in iter_records(shard):
            record_id = str(record[id_field])
            if record_id in writer.done:
                counts["already_merged" if record_id in merged_before else "duplicates"] += 1
                continue
            writer.write(record)
            counts["merged"] += 1
    writer.finish()
    if output.is_file():
        with open(output, "rb") as handle:
            os.fsync(handle.fileno())
    for shard in shards:  # its summary, config and errors stay, for the record of what each task did
        shutil.rmtree(shard) if shard.is_dir() else shard.unlink()
    return counts


# --- Parquet outputs -------------------------------------------------------------------------------------

PARQUET_LAYOUT = b"dasd-records-v1"
PARTS = ("reasoning", "content")


def _parquet_parts(folder: Path) -> list[Path]:
    return sorted(folder.glob("part-*.parquet"))


def records_to_table(records: list[dict[str, Any]], logprob_field: str = "teacher_logprobs"):
    """Records as an Arrow table: the id, the log-prob offsets and values of each part as list columns, and
    everything else as one JSON string per row — lossless for records whose other fields vary in shape.

    >>> table = records_to_table([{"id": "a", "teacher_logprobs": {"reasoning": {"offsets": [[0, 2]],
    ...     "logprobs": [-0.5]}, "content": {"offsets": [], "logprobs": []}}, "meta": {"k": 1}}])
    >>> table.column_names[:3], table.column_names[3:5]
    (['id', 'record', 'has_logprobs'], ['reasoning_offsets', 'content_offsets'])
    >>> list(_table_records(table)) == [{"id": "a", "meta": {"k": 1}, "teacher_logprobs": {"reasoning":
    ...     {"offsets": [[0, 2]], "logprobs": [-0.5]}, "content": {"offsets": [], "logprobs": []}}}]
    True
    """
    import pyarrow as pa

    columns: dict[str, list] = {
        "id": [],
        "record": [],
        "has_logprobs": [],
        **{f"{part}_{kind}": [] for part in PARTS for kind in ("offsets", "logprobs")},
    }
    for record in records:
        logprobs = record.get(logprob_field)
        # a record without log-probs keeps its field (null) or its absence in the JSON, as it was
        rest = record if logprobs is None else {key: value for key, value in record.items() if key != logprob_field}
        columns["id"].append(str(record["id"]))
        columns["record"].append(dumps_record(rest))
        columns["has_logprobs"].append(logprobs is not None)
        for part in PARTS:
            values = (logprobs or {}).get(part) or {"offsets": [], "logprobs": []}
            columns[f"{part}_offsets"].append([value for pair in values["offsets"] for value in pair])
            columns[f"{part}_logprobs"].append(values["logprobs"])
    schema = pa.schema(
        [
            ("id", pa.string()),
            ("record", pa.string()),
            ("has_logprobs", pa.bool_()),
            *((f"{part}_offsets", pa.list_(pa.int32())) for part in PARTS),
            *((f"{part}_logprobs", pa.list_(pa.float64())) for part in PARTS),
        ],
        metadata={b"dasd.layout": PARQUET_LAYOUT, b"dasd.logprob_field": logprob_field.encode()},
    )
    return pa.table({name: columns[name] for name in schema.names}, schema=schema)


def _table_records(table) -> Iterator[dict[str, Any]]:
    """The records `records_to_table` stored (offsets flattened as start, end, start, end, …)."""
    field = (table.schema.metadata or {}).get(b"dasd.logprob_field", b"teacher_logprobs").decode()
    data = {name: table.column(name).to_pylist() for name in table.column_names}
    for row in range(table.num_rows):
        record = json.loads(data["record"][row])
        if data["has_logprobs"][row]:
            record[field] = {
                part: {
                    "offsets": [list(pair) for pair in zip(*[iter(data[f"{part}_offsets"][row])] * 2)],
                    "logprobs": data[f"{part}_logprobs"][row],
                }
                for part in PARTS
            }
        yield record


class ParquetRecordWriter:
    """A resumable Parquet output (`<name>.parquet/`, a folder of part files, as `datasets` reads them):
    records are kept in memory and written `rows_per_part` at a time as one part (via a temporary file
    and a rename), so a killed run loses at most the records of its unwritten part, which the next run
    redoes. Same interface as `RecordWriter` (`done`, `write`, `finish`, `close`), shards included."""

    def __init__(self, path: str | os.PathLike, *, id_field: str = "id", rows_per_part: int = 1000):
        self.path = Path(path)
        self.id_field = id_field
        self.rows_per_part = rows_per_part
        self.repaired_bytes = 0
        self._buffer: list[dict[str, Any]] = []
        self.done: set[str] = set()
        if self.path.is_dir():
            for leftover in self.path.glob("*.tmp"):  # a part whose write was cut
                leftover.unlink()
            self.done = _ids_in(self.path, id_field)
        self._next_part = len(_parquet_parts(self.path)) if self.path.is_dir() else 0
        elsewhere = _done_elsewhere(self.path, id_field) - self.done  # sibling shards, the merged output
        self.elsewhere = len(elsewhere)
        self.done |= elsewhere

    def touch(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict[str, Any]) -> None:
        self._buffer.append(record)
        self.done.add(str(record[self.id_field]))
        if len(self._buffer) >= self.rows_per_part:
            self._flush()

    def _flush(self) -> None:
        import pyarrow.parquet as pq

        if not self._buffer:
            return
        self.touch()
        final = self.path / f"part-{self._next_part:06d}.parquet"
        tmp = final.with_name(final.name + ".tmp")
        pq.write_table(records_to_table(self._buffer), tmp, compression="zstd")
        os.replace(tmp, final)
        self._next_part += 1
        self._buffer = []

    def close(self) -> None:
        self._flush()

    def finish(self) -> None:
        self.touch()
        self._flush()

    def __enter__(self) -> ParquetRecordWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_writer(path: str | os.PathLike, *, id_field: str = "id") -> RecordWriter | ParquetRecordWriter:
    """The resumable writer for an output: Parquet parts for `*.parquet`, else JSONL."""
    if str(path).endswith(".parquet"):
        return ParquetRecordWriter(path, id_field=id_field)
    return RecordWriter(path, id_field=id_field)


# --- a record file as a Hugging Face dataset folder (Parquet shards + card) ---------------------------------


def _writable(data_type):
    """Parquet cannot hold a struct without fields (a field that is `{}` in every record): such a type is
    written as null. Nested types are rebuilt around the fixed children.

    >>> import pyarrow as pa
    >>> _writable(pa.struct([])), _writable(pa.list_(pa.struct([("a", pa.int64())])))
    (DataType(null), ListType(list<item: struct<a: int64>>))
    """
    import pyarrow as pa

    if pa.types.is_struct(data_type):
        if data_type.num_fields == 0:
            return pa.null()
        return pa.struct(
            [data_type.field(i).with_type(_writable(data_type.field(i).type)) for i in range(data_type.num_fields)]
        )
    if pa.types.is_list(data_type) or pa.types.is_large_list(data_type):
        return pa.list_(_writable(data_type.value_type))
    return data_type


def _conform(value, data_type):
    """A value reshaped to a `_writable` type (`{}` where the type became null -> None).

    >>> import pyarrow as pa
    >>> _conform({"a": {}, "b": [1]}, pa.struct([("a", pa.null()), ("b", pa.list_(pa.int64()))]))
    {'a': None, 'b': [1]}
    """
    import pyarrow as pa

    if pa.types.is_null(data_type):
        return None
    if value is None:
        return None
    if pa.types.is_struct(data_type) and isinstance(value, dict):
        children = {data_type.field(i).name: data_type.field(i).type for i in range(data_type.num_fields)}
        return {key: _conform(value.get(key), child) for key, child in children.items()}
    if pa.types.is_list(data_type) and isinstance(value, list):
        return [_conform(item, data_type.value_type) for item in value]
    return value


def write_parquet_dataset(
    path: str | os.PathLike, folder: str | os.PathLike, *, rows_per_shard: int = 50_000, card: Callable[..., Any]
) -> Path:
    """A Hugging Face dataset folder for a record file: `data/train-XXXXX-of-YYYYY.parquet` (one column per field,
    one schema unified over all records, as `datasets` and the Hub's viewer read them) and `README.md`, the card
    `card(features=…, rows=…)` returns (`dasd.cards.export_dataset` passes the one of its lineage). Written into a
    temporary folder and moved into place, so an interrupted export leaves nothing half-written."""
    import tempfile

    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Features

    source = Path(path)
    folder = Path(folder)
    schema = None
    rows = 0
    batch: list[dict] = []
    for _, record in iter_records(source):  # first pass: one schema for every shard
        batch.append(record)
        rows += 1
        if len(batch) >= 2048:
            inferred = pa.Table.from_pylist(batch).schema
            schema = inferred if schema is None else pa.unify_schemas([schema, inferred], promote_options="permissive")
            batch = []
    if batch:
        inferred = pa.Table.from_pylist(batch).schema
        schema = inferred if schema is None else pa.unify_schemas([schema, inferred], promote_options="permissive")
    if not rows or schema is None:
        raise InputError(str(source), None, None, "no records to export")
    inferred_schema = schema
    schema = pa.schema([field.with_type(_writable(field.type)) for field in schema])
    conform = schema != inferred_schema  # some `{}` fields became null: their values must too
    shards = max(1, math.ceil(rows / rows_per_shard))
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        (staging / "data").mkdir()
        shard, batch = 0, []

        def flush(records: list[dict], index: int) -> None:
            if conform:
                records = [_conform(record, pa.struct(list(schema))) for record in records]
            table = pa.Table.from_pylist(records, schema=schema)
            pq.write_table(table, staging / "data" / f"train-{index:05d}-of-{shards:05d}.parquet", compression="zstd")

        for _, record in iter_records(source):
            batch.append(record)
            if len(batch) >= rows_per_shard:
                flush(batch, shard)
                shard, batch = shard + 1, []
        if batch:
            flush(batch, shard)
        card(features=Features.from_arrow_schema(schema), rows=rows).save(staging / "README.md")
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder
