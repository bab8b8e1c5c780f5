"""Record files, the facade every stage calls: read any input format, open a resumable writer, rewrite whole.

    for line, record in iter_records("runs/x/scored.parquet"): ...      # JSONL(.gz), Parquet, a saved dataset, a glob
    writer = open_writer("runs/x/filtered.parquet")                      # resumes by id: writer.done
    write_records_atomic("runs/x/select/das.parquet", records)          # outputs recomputed whole on each run

The parts behind it: `dasd.data.jsonl` (the append-only JSONL writer, the error log, locked shared files),
`dasd.data.parquet` (the Parquet codec, its writer, the dataset export), `dasd.data.shards` (shard names and ids
read without parsing records), `dasd.data.merge` (shard merges that move bytes). Every reader and writer streams:
memory grows with the ids of a file, never with its records (DESIGN §9).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..files import write_json_atomic, write_text_atomic
from ..naming import summary_file
from .jsonl import (
    AtomicJsonlFiles,
    ErrorLog,
    LineIndex,
    RecordWriter,
    cut_torn_tail,
    dumps_record,
    file_lock,
    iter_jsonl,
    read_shared_records,
    write_jsonl_atomic,
)
from .merge import merge_shards
from .parquet import PARQUET_LAYOUT, ParquetRecordWriter, export_dataset_folder, iter_parquet, records_to_table
from .shards import ids_in, parquet_parts, shard_files, shard_output
from .summaries import StageSummary

__all__ = [
    "PARQUET_LAYOUT",
    "AtomicJsonlFiles",
    "ErrorLog",
    "LineIndex",
    "ParquetRecordWriter",
    "RecordWriter",
    "batched",
    "cut_torn_tail",
    "dumps_record",
    "file_lock",
    "ids_in",
    "iter_records",
    "merge_shards",
    "open_writer",
    "read_records",
    "read_shared_records",
    "read_summary",
    "records_to_table",
    "shard_files",
    "shard_output",
    "write_json_atomic",
    "write_jsonl_atomic",
    "write_parquet_dataset",
    "write_records_atomic",
    "write_summary",
    "write_text_atomic",
]


def _is_hf_dataset_dir(path: Path) -> bool:
    return path.is_dir() and (
        (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists() or (path / "state.json").exists()
    )


def iter_records(
    path: str | os.PathLike, *, keep_id: Callable[[str], bool] | None = None
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield `(line_number, record)` from a JSONL(.gz) file, a Parquet file or output folder, or a saved HF dataset
    (or every file a glob pattern matches, or a Hub dataset `hf://datasets/OWNER/NAME…`: `dasd.data.hub`).

    Line numbers are 1-based lines for JSONL and 1-based row numbers otherwise. Blank lines are
    skipped. Raises `InputError` naming the file and line for a missing file, bad JSON or a
    non-object line. With `keep_id`, records whose id it rejects are skipped before they are parsed (JSONL: the id
    from the line's start; Parquet: the id column), e.g. a shard task's `in_shard`.
    """
    if str(path).startswith("hf://"):  # a Hub dataset: its files from the HF cache (downloaded when online)
        from .hub import hub_data_files

        row_number = 0
        for data_file in hub_data_files(str(path)):
            for _, record in iter_records(data_file, keep_id=keep_id):
                row_number += 1
                yield row_number, record
        return
    if any(char in str(path) for char in "*?["):
        # A glob (e.g. the shards of a multi-process run): the files in name order, one after another.
        matches = sorted(glob.glob(str(path)))
        if not matches:
            raise InputError(str(path), None, None, "no file matches this pattern")
        for match in matches:
            yield from iter_records(match, keep_id=keep_id)
        return
    path = Path(path)
    if not path.exists():
        raise InputError(str(path), None, None, "file not found")
    if _is_hf_dataset_dir(path):
        for row_number, record in _iter_hf_dataset(path):
            if keep_id is None or "id" not in record or keep_id(str(record["id"])):
                yield row_number, record
        return
    if path.is_dir() and parquet_parts(path):  # a Parquet output of dasd (or any folder of part-*.parquet)
        row_number = 0
        for part in parquet_parts(path):
            rows = 0
            for number, record in iter_parquet(part, keep_id):
                rows = number
                yield row_number + number, record
            row_number += rows if keep_id is None else _parquet_rows(part)  # rows skipped by keep_id count too
        return
    if path.is_dir() and path.suffix == ".parquet" and not any(path.glob("[!.]*")):
        return  # a Parquet output with no records (dasd's writer makes the folder, parts come with records)
    if path.is_dir():
        raise InputError(str(path), None, None, "is a folder, not a JSONL/Parquet file or a saved dataset")
    if path.suffix == ".parquet":
        yield from iter_parquet(path, keep_id)
        return
    yield from iter_jsonl(path, keep_id)


def _parquet_rows(part: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(part).metadata.num_rows


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


def open_writer(path: str | os.PathLike, *, id_field: str = "id") -> RecordWriter | ParquetRecordWriter:
    """The resumable writer for an output: Parquet parts for `*.parquet`, else JSONL."""
    if str(path).endswith(".parquet"):
        return ParquetRecordWriter(path, id_field=id_field)
    return RecordWriter(path, id_field=id_field)


def write_records_atomic(path: str | os.PathLike, records: Iterable[dict[str, Any]]) -> int:
    """Rewrite a whole record output atomically (outputs recomputed whole on each run: selections, SFT data): JSONL
    via a temporary file and a rename; `*.parquet` as a folder of parts built beside it and swapped in. Streams:
    memory is one Parquet part at most. Returns the number of records written."""
    path = Path(path)
    if not str(path).endswith(".parquet"):
        return write_jsonl_atomic(path, records)
    staging = path.with_name(path.name + ".tmp")
    if staging.exists():
        shutil.rmtree(staging)
    count = 0
    with ParquetRecordWriter(staging) as writer:
        for record in records:
            writer.write(record)
            count += 1
        writer.touch()
    old = path.with_name(path.name + ".old")
    if path.exists():
        if old.exists():
            shutil.rmtree(old)
        path.rename(old)
    staging.rename(path)
    if old.exists():
        shutil.rmtree(old)
    return count


def write_parquet_dataset(
    path: str | os.PathLike,
    folder: str | os.PathLike,
    *,
    rows_per_shard: int = 50_000,
    bytes_per_shard: int = 512 << 20,
    card: Callable[..., Any],
) -> Path:
    """A Hugging Face dataset folder for a record file (`dasd.data.parquet.export_dataset_folder`): the file is read
    twice, streamed, so memory is one batch of rows, whatever its size."""
    source = Path(path)
    return export_dataset_folder(
        lambda: (record for _, record in iter_records(source)),
        folder,
        source=str(source),
        card=card,
        rows_per_shard=rows_per_shard,
        bytes_per_shard=bytes_per_shard,
    )


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
