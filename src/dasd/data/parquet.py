"""Parquet record outputs: the codec, the resumable writer, and the Hugging Face dataset export.

A dasd Parquet output is a folder `<name>.parquet/` of `part-NNNNNN.parquet` files (as `datasets` reads them), each
written whole via a temporary file and a rename. A row holds the record's id, everything but the log-probs as one
JSON string (lossless for records whose fields vary in shape), and each part's teacher log-probs as columns:

* layout v2 (written now): log-probs as float32 — what the servers and `torch` compute them in, so a value that
  came from float32 is stored exactly — and offsets as (gap from the previous token's end, length) pairs of int32,
  which zstd reduces to almost nothing (tokens are contiguous: the gaps are zeros);
* layout v1 (read still): log-probs as float64, offsets as flat (start, end) int32 pairs.

Memory is bounded by tokens, not rows: the writer keeps at most `tokens_per_part` buffered log-prob entries (a
parsed token costs ~200 B in Python, DESIGN §9), and the reader decodes a few rows at a time.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from ..errors import InputError
from .jsonl import dumps_record
from .shards import done_elsewhere, parquet_ids, parquet_parts

PARQUET_LAYOUT = b"dasd-records-v2"
LAYOUT_V1 = b"dasd-records-v1"
PARTS = ("reasoning", "content")
ROWS_PER_READ = 16  # rows decoded into Python at a time: 16 × 40K tokens × ~200 B ≈ 128 MB at the report's longest


def records_to_table(records: list[dict[str, Any]], logprob_field: str = "teacher_logprobs"):
    """Records as an Arrow table (layout v2): the id, everything but the log-probs as one JSON string per row, and
    each part's offsets (gap, length) and log-probs (float32) as list columns.

    >>> table = records_to_table([{"id": "a", "teacher_logprobs": {"reasoning": {"offsets": [[0, 2], [2, 5]],
    ...     "logprobs": [-0.5, -0.25]}, "content": {"offsets": [], "logprobs": []}}, "meta": {"k": 1}}])
    >>> table.column_names[:3], table.column("reasoning_gaps").to_pylist(), table.column("reasoning_lengths")[0]
    (['id', 'record', 'has_logprobs'], [[0, 0]], <pyarrow.ListScalar: [2, 3]>)
    >>> list(table_records(table)) == [{"id": "a", "meta": {"k": 1}, "teacher_logprobs": {"reasoning":
    ...     {"offsets": [[0, 2], [2, 5]], "logprobs": [-0.5, -0.25]}, "content": {"offsets": [], "logprobs": []}}}]
    True
    """
    import pyarrow as pa

    columns: dict[str, list] = {"id": [], "record": [], "has_logprobs": []}
    for part in PARTS:
        for kind in ("gaps", "lengths", "logprobs"):
            columns[f"{part}_{kind}"] = []
    for record in records:
        logprobs = record.get(logprob_field)
        # a record without log-probs keeps its field (null) or its absence in the JSON, as it was
        rest = record if logprobs is None else {key: value for key, value in record.items() if key != logprob_field}
        columns["id"].append(str(record["id"]))
        columns["record"].append(dumps_record(rest))
        columns["has_logprobs"].append(logprobs is not None)
        for part in PARTS:
            values = (logprobs or {}).get(part) or {"offsets": [], "logprobs": []}
            gaps, lengths, previous_end = [], [], 0
            for start, end in values["offsets"]:
                gaps.append(start - previous_end)
                lengths.append(end - start)
                previous_end = end
            columns[f"{part}_gaps"].append(gaps)
            columns[f"{part}_lengths"].append(lengths)
            columns[f"{part}_logprobs"].append(values["logprobs"])
    fields = [("id", pa.string()), ("record", pa.string()), ("has_logprobs", pa.bool_())]
    for part in PARTS:
        fields += [
            (f"{part}_gaps", pa.list_(pa.int32())),
            (f"{part}_lengths", pa.list_(pa.int32())),
            (f"{part}_logprobs", pa.list_(pa.float32())),
        ]
    schema = pa.schema(fields, metadata={b"dasd.layout": PARQUET_LAYOUT, b"dasd.logprob_field": logprob_field.encode()})
    return pa.table({name: columns[name] for name in schema.names}, schema=schema)


def _offsets(data: dict[str, list], part: str, row: int, layout: bytes) -> list[list[int]]:
    if layout == LAYOUT_V1:  # flat start, end, start, end, …
        return [list(pair) for pair in zip(*[iter(data[f"{part}_offsets"][row])] * 2)]
    offsets, end = [], 0
    for gap, length in zip(data[f"{part}_gaps"][row], data[f"{part}_lengths"][row]):
        start = end + gap
        end = start + length
        offsets.append([start, end])
    return offsets


def table_records(table) -> Iterator[dict[str, Any]]:
    """The records `records_to_table` stored (either layout)."""
    metadata = table.schema.metadata or {}
    field = metadata.get(b"dasd.logprob_field", b"teacher_logprobs").decode()
    layout = metadata.get(b"dasd.layout", PARQUET_LAYOUT)
    data = {name: table.column(name).to_pylist() for name in table.column_names}
    for row in range(table.num_rows):
        record = json.loads(data["record"][row])
        if data["has_logprobs"][row]:
            record[field] = {
                part: {"offsets": _offsets(data, part, row, layout), "logprobs": data[f"{part}_logprobs"][row]}
                for part in PARTS
            }
        yield record


def iter_parquet(
    path: Path, keep_id: Callable[[str], bool] | None = None, id_field: str = "id"
) -> Iterator[tuple[int, dict[str, Any]]]:
    """`(row_number, record)` of one Parquet file: a dasd part (decoded by `table_records`) or any other table.
    With `keep_id`, rows are dropped by their id column before anything is decoded into Python."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table_file = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise InputError(str(path), None, None, f"cannot read Parquet: {exc}") from None
    layout = (table_file.schema_arrow.metadata or {}).get(b"dasd.layout")
    ours = layout in (PARQUET_LAYOUT, LAYOUT_V1)
    row_number = 0
    for batch in table_file.iter_batches(batch_size=ROWS_PER_READ if ours else 1024):
        numbers = range(row_number + 1, row_number + 1 + batch.num_rows)
        row_number += batch.num_rows
        if keep_id is not None and id_field in batch.schema.names:
            mask = [keep_id(str(value)) for value in batch.column(id_field).to_pylist()]
            numbers = [number for number, keep in zip(numbers, mask) if keep]
            batch = batch.filter(pa.array(mask, type=pa.bool_()))
            if not batch.num_rows:
                continue
        if ours:
            batch = pa.Table.from_batches([batch]).replace_schema_metadata(table_file.schema_arrow.metadata)
        yield from zip(numbers, table_records(batch) if ours else batch.to_pylist())


def next_part_index(folder: Path) -> int:
    """The index after the highest part in `folder` (parts moved in by a shard merge may leave gaps)."""
    indices = [int(part.name[len("part-") : -len(".parquet")]) for part in parquet_parts(folder)]
    return max(indices, default=-1) + 1


def _tokens(record: dict[str, Any], logprob_field: str) -> int:
    logprobs = record.get(logprob_field)
    if not isinstance(logprobs, dict):
        return 0
    return sum(len((logprobs.get(part) or {}).get("logprobs") or []) for part in PARTS)


class ParquetRecordWriter:
    """A resumable Parquet output (`<name>.parquet/`, a folder of part files, as `datasets` reads them):
    records are kept in memory and written as one part (via a temporary file and a rename) once `rows_per_part`
    rows or `tokens_per_part` log-prob entries are buffered, whichever comes first, so a killed run loses at most
    the records of its unwritten part, which the next run redoes. Same interface as `RecordWriter` (`done`,
    `write`, `finish`, `close`), shards included."""

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        id_field: str = "id",
        rows_per_part: int = 1000,
        tokens_per_part: int = 1_000_000,
        logprob_field: str = "teacher_logprobs",
    ):
        self.path = Path(path)
        self.id_field = id_field
        self.rows_per_part = rows_per_part
        self.tokens_per_part = tokens_per_part
        self.logprob_field = logprob_field
        self.repaired_bytes = 0
        self._buffer: list[dict[str, Any]] = []
        self._buffered_tokens = 0
        self.done: set[str] = set()
        if self.path.is_dir():
            for leftover in self.path.glob("*.tmp"):  # a part whose write was cut
                leftover.unlink()
            self.done = set(parquet_ids(self.path, id_field))
        self._next_part = next_part_index(self.path) if self.path.is_dir() else 0
        elsewhere = done_elsewhere(self.path, id_field) - self.done  # sibling shards, the merged output
        self.elsewhere = len(elsewhere)
        self.done |= elsewhere

    def touch(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict[str, Any]) -> None:
        self._buffer.append(record)
        self._buffered_tokens += _tokens(record, self.logprob_field)
        self.done.add(str(record[self.id_field]))
        if len(self._buffer) >= self.rows_per_part or self._buffered_tokens >= self.tokens_per_part:
            self._flush()

    def _flush(self) -> None:
        import pyarrow.parquet as pq

        if not self._buffer:
            return
        self.touch()
        final = self.path / f"part-{self._next_part:06d}.parquet"
        tmp = final.with_name(final.name + ".tmp")
        pq.write_table(records_to_table(self._buffer, self.logprob_field), tmp, compression="zstd")
        os.replace(tmp, final)
        self._next_part += 1
        self._buffer, self._buffered_tokens = [], 0

    def close(self) -> None:
        self._flush()

    def finish(self) -> None:
        self.touch()
        self._flush()

    def __enter__(self) -> ParquetRecordWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


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


def approximate_size(value: Any) -> int:
    """A cheap estimate of a record's size in bytes as Arrow data (strings by length, numbers 8 bytes): what
    bounds the rows buffered by the dataset export. Lists of numbers are not walked.

    >>> approximate_size({"id": "abc", "logprobs": [-0.1] * 10, "offsets": [[0, 1], [1, 2]]})
    168
    """
    if isinstance(value, str):
        return len(value) + 4
    if isinstance(value, dict):
        return sum(len(key) + approximate_size(item) for key, item in value.items())
    if isinstance(value, list):
        if value and isinstance(value[0], (int, float)) and not isinstance(value[0], bool):
            return 8 * len(value) + 8
        return 8 + sum(approximate_size(item) for item in value)
    return 8


def _batches(records: Iterable[dict[str, Any]], max_rows: int, max_bytes: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    size = 0
    for record in records:
        batch.append(record)
        size += approximate_size(record)
        if len(batch) >= max_rows or size >= max_bytes:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def export_dataset_folder(
    records: Callable[[], Iterable[dict[str, Any]]],
    folder: str | os.PathLike,
    *,
    source: str,
    card: Callable[..., Any],
    rows_per_shard: int = 50_000,
    bytes_per_shard: int = 512 << 20,
    bytes_per_batch: int = 64 << 20,
) -> Path:
    """A Hugging Face dataset folder for the records `records()` yields (called twice: once to unify one schema
    over all records, once to write): `data/train-XXXXX-of-YYYYY.parquet` (one column per field, as `datasets` and
    the Hub's viewer read them) and `README.md`, the card `card(features=…, rows=…)` returns. Memory is bounded by
    `bytes_per_batch` (rows are written as row groups of at most that estimated size); a shard file is closed at
    `rows_per_shard` rows or `bytes_per_shard` estimated bytes (uncompressed; the file is smaller). Built in a
    temporary folder and moved into place, so an interrupted export leaves nothing half-written."""
    import tempfile

    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Features

    folder = Path(folder)
    schema = None
    rows = 0
    for batch in _batches(records(), 2048, bytes_per_batch):  # first pass: one schema for every shard
        rows += len(batch)
        inferred = pa.Table.from_pylist(batch).schema
        schema = inferred if schema is None else pa.unify_schemas([schema, inferred], promote_options="permissive")
    if not rows or schema is None:
        raise InputError(source, None, None, "no records to export")
    inferred_schema = schema
    schema = pa.schema([field.with_type(_writable(field.type)) for field in schema])
    conform = schema != inferred_schema  # some `{}` fields became null: their values must too
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        (staging / "data").mkdir()
        written: list[Path] = []
        writer, shard_rows, shard_bytes = None, 0, 0
        # a shard is closed between batches: a few batches per shard keep shards near their size
        for batch in _batches(records(), rows_per_shard, min(bytes_per_batch, max(1, bytes_per_shard // 4))):
            size = sum(approximate_size(record) for record in batch)
            if writer is not None and (shard_rows + len(batch) > rows_per_shard or shard_bytes >= bytes_per_shard):
                writer.close()
                writer = None
            if writer is None:
                written.append(staging / "data" / f"train-{len(written):05d}.parquet")
                writer, shard_rows, shard_bytes = pq.ParquetWriter(str(written[-1]), schema, compression="zstd"), 0, 0
            if conform:
                batch = [_conform(record, pa.struct(list(schema))) for record in batch]
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))
            shard_rows, shard_bytes = shard_rows + len(batch), shard_bytes + size
        if writer is not None:
            writer.close()
        for index, path in enumerate(written):
            path.rename(path.with_name(f"train-{index:05d}-of-{len(written):05d}.parquet"))
        card(features=Features.from_arrow_schema(schema), rows=rows).save(staging / "README.md")
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder
