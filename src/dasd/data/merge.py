"""Merging a sharded stage's files into its output by moving bytes: no record is parsed or re-dumped.

    counts = merge_shards("runs/x/scored.jsonl")   # scored.shard-*-of-*.jsonl -> scored.jsonl, each id once

JSONL shards are appended line by line (the id read from the line's start); Parquet shards' parts are hard-linked
into the output folder whole, or, when some of their ids are there already, rewritten without those rows by Arrow
(never decoded into Python). Shard files are removed only once everything is in and fsynced: a merge killed half
way leaves every shard intact and the output a prefix of the merge (its torn last line is cut by the next writer);
rerunning it appends only what is missing.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from .jsonl import cut_torn_tail
from .parquet import next_part_index
from .shards import checked_line_id, jsonl_ids, parquet_ids, parquet_parts, shard_files


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
    if output.name.endswith(".parquet"):
        _merge_parquet(output, shards, id_field, counts)
    else:
        _merge_jsonl(output, shards, id_field, counts)
    for shard in shards:  # its summary, config and errors stay, for the record of what each task did
        shutil.rmtree(shard) if shard.is_dir() else shard.unlink()
    return counts


def _merge_jsonl(output: Path, shards: list[Path], id_field: str, counts: dict[str, int]) -> None:
    done: set[str] = set()
    if output.exists():
        cut_torn_tail(output)  # a merge killed mid-line
        done.update(jsonl_ids(output, id_field, checked=True))
    merged_before = set(done)
    output.parent.mkdir(parents=True, exist_ok=True)
    with open(output, "ab") as sink:
        for shard in shards:
            with open(shard, "rb") as source:
                for number, line in enumerate(source, start=1):
                    if not line.endswith(b"\n"):
                        break  # a task killed mid-line: its record was not finished, the next run redoes it
                    if not line.strip():
                        continue
                    record_id = checked_line_id(line, id_field, shard, number)
                    if record_id is None:
                        continue
                    if record_id in done:
                        counts["already_merged" if record_id in merged_before else "duplicates"] += 1
                        continue
                    sink.write(line)
                    done.add(record_id)
                    counts["merged"] += 1
        sink.flush()
        os.fsync(sink.fileno())


def _merge_parquet(output: Path, shards: list[Path], id_field: str, counts: dict[str, int]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    output.mkdir(parents=True, exist_ok=True)
    for leftover in output.glob("*.tmp"):  # a part whose move was cut
        leftover.unlink()
    done = set(parquet_ids(output, id_field))
    merged_before = set(done)
    next_index = next_part_index(output)
    for shard in shards:
        for part in parquet_parts(shard):
            ids = [str(value) for value in pq.read_table(part, columns=[id_field]).column(0).to_pylist()]
            keep = []
            for record_id in ids:
                new = record_id not in done
                if not new:
                    counts["already_merged" if record_id in merged_before else "duplicates"] += 1
                keep.append(new)
                done.add(record_id)
            if not any(keep):
                continue
            final = output / f"part-{next_index:06d}.parquet"
            tmp = final.with_name(final.name + ".tmp")
            if all(keep):
                try:
                    os.link(part, tmp)  # the same bytes, no copy; the shard keeps its own link until the end
                except OSError:
                    shutil.copyfile(part, tmp)
            else:
                table = pq.read_table(part)
                pq.write_table(table.filter(pa.array(keep)), tmp, compression="zstd")
            os.replace(tmp, final)
            next_index += 1
            counts["merged"] += sum(keep)
    descriptor = os.open(output, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
