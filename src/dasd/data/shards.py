"""Shard files and record ids, read without parsing records: the lowest layer of record I/O.

The shards of a stage run as n tasks (`shard=i/n`) are `<name>.shard-i-of-n.jsonl` (or `.parquet` folders) beside
the output. A shard's writer counts the ids of every other shard file, of any count, and of the merged output as
done (`done_elsewhere`), so rerunning with another n redoes nothing; `dasd.data.merge.merge_shards` makes them one.

Ids are read the cheap way everywhere here: from the start of a JSONL line (every writer puts the id first) or from
a Parquet output's id column — a 20K-token response is ~0.8 MB of JSON, and resuming or re-sharding 435K of them
must not parse them (DESIGN §9).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

from ..errors import InputError

SHARD_NAME = re.compile(r"^(?P<stem>.+)\.shard-(?P<index>\d+)-of-(?P<count>\d+)\.(?P<ext>jsonl|parquet)$")


def split_name(path: Path) -> tuple[str, str]:
    """`scored.jsonl` -> ("scored", "jsonl"); `scored.parquet` -> ("scored", "parquet").

    >>> split_name(Path("runs/x/scored.parquet")), split_name(Path("a.jsonl"))
    (('scored', 'parquet'), ('a', 'jsonl'))
    """
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
    stem, ext = split_name(path)
    return str(path.with_name(f"{stem}.shard-{shard[0]}-of-{shard[1]}.{ext}"))


def shard_files(output: str | os.PathLike) -> list[Path]:
    """The shard files of `output` that exist, of any shard count, in name order (sidecars excluded)."""
    path = Path(output)
    stem, ext = split_name(path)
    if not path.parent.is_dir():
        return []
    return sorted(
        candidate
        for candidate in path.parent.iterdir()
        if (match := SHARD_NAME.match(candidate.name)) and match["stem"] == stem and match["ext"] == ext
    )


def shard_siblings(path: Path) -> list[Path]:
    """For a shard file, the merged output and every other shard file of any count; else nothing."""
    match = SHARD_NAME.match(path.name)
    if not match:
        return []
    merged = path.with_name(f"{match['stem']}.{match['ext']}")
    return [candidate for candidate in [merged, *shard_files(merged)] if candidate != path and candidate.exists()]


def done_elsewhere(path: Path, id_field: str) -> set[str]:
    """For a shard file: the ids in the merged output and in every other shard file of any count."""
    return {record_id for sibling in shard_siblings(path) for record_id in ids_in(sibling, id_field)}


# --- ids ----------------------------------------------------------------------------------------------------------

_ID_DECODER = json.JSONDecoder()


def line_id(line: bytes, id_field: str = "id") -> str | None:
    """The id of one JSONL record line. Every writer here puts the id first, so it is decoded from the
    line's start instead of parsing the whole record; any other line is parsed whole.

    >>> line_id(b'{"id":"q1:t0.6:0","reasoning":"..."}\\n'), line_id(b'{"x":1,"id":7}\\n')
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


def checked_line_id(line: bytes, id_field: str, path: str | os.PathLike, number: int) -> str | None:
    """`line_id` of a line in the middle of an output file, with the cheap check that it is whole (starts with `{`,
    ends with `}`): a torn write followed by later appends — which no dasd writer leaves, but a disk-full, a copy
    cut short or two writers can — is a one-line `InputError` naming the file and line, never silently dropped
    (dropping it would also drop whatever was appended after it).

    >>> checked_line_id(b'{"id":"a","x":1}\\n', "id", "f.jsonl", 1)
    'a'
    >>> checked_line_id(b'{"id":"a","x":\\n', "id", "f.jsonl", 7)
    Traceback (most recent call last):
    dasd.errors.InputError: f.jsonl:7: damaged record line (a write cut short, then more written after it): \
remove or repair this line, then rerun
    """
    body = line.rstrip(b"\r\n \t")
    damaged = InputError(
        str(path),
        number,
        None,
        "damaged record line (a write cut short, then more written after it): remove or repair this line, then rerun",
    )
    if not (body.startswith(b"{") and body.endswith(b"}")):
        raise damaged
    try:
        return line_id(body, id_field)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise damaged from None


def jsonl_ids(path: str | os.PathLike, id_field: str = "id", *, checked: bool = False) -> Iterator[str]:
    """The ids of a JSONL output, line by line (memory: one line), stopping at a torn last line (no newline: its
    record was not finished). With `checked`, a damaged line in the middle is an `InputError` (`checked_line_id`);
    without, it is skipped."""
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.endswith(b"\n"):
                return  # a torn last line
            if not line.strip():
                continue
            if checked:
                record_id = checked_line_id(line, id_field, path, number)
            else:
                try:
                    record_id = line_id(line, id_field)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    continue
            if record_id is not None:
                yield record_id


def parquet_parts(folder: Path) -> list[Path]:
    """The part files of a Parquet output folder, in order."""
    return sorted(folder.glob("part-*.parquet"))


def parquet_ids(folder: Path, id_field: str = "id") -> Iterator[str]:
    """The ids of a Parquet output folder, from its id column only."""
    import pyarrow.parquet as pq

    for part in parquet_parts(folder):
        for value in pq.read_table(part, columns=[id_field]).column(0).to_pylist():
            yield str(value)


def ids_in(path: Path, id_field: str = "id") -> set[str]:
    """Every id of a JSONL file or a Parquet output folder."""
    return set(parquet_ids(path, id_field) if path.is_dir() else jsonl_ids(path, id_field))
