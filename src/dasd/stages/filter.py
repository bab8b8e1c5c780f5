"""`dasd filter`: quality filters with a count per reason; rejected records go to a side file.

    dasd filter input=runs/x/scored.jsonl output=runs/x/filtered.jsonl student_tokenizer=path/to/student

Filters (`dasd.selection.filters`), in this order, each record stopping at the first that rejects it:
structure → length (student tokens) → repetition → dedupe → correctness (when a reference answer
exists). Kept records get `filter: {keep: true, reason: null}` and go to `output`; rejected ones get
`filter: {keep: false, reason}` and go to `<name>.rejected.jsonl` (`<name>.rejected.parquet` beside a
Parquet output). The summary counts drops per reason; kept + rejected always hold every input id exactly
once. Resumable by id.

A response sampled with `reasoning_format: none` (the record's field, written by `dasd sample`) has no reasoning: its
chain of thought is its answer, so it is not rejected as `empty_reasoning`, and its length is that of the answer alone
(what build-sft trains on); the summary counts the kept ones (`answer_only_kept`).

With `workers=N` the per-record filters and the grading run in N worker processes, a chunk at a time;
this process reads the input in order, runs dedupe (the one filter that depends on the records before
it) and writes the verdicts in input order, so the outputs are the same record for record as with one.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Iterator
from itertools import chain, islice
from typing import Any

from pydantic import Field

from ..config import SPEED_ONLY, RecordOutput, StageConfig, dump_config
from ..data.io import batched, iter_records, open_writer, write_summary
from ..data.records import RESPONSE_FIELDS, check_fields, reasoning_in_answer, record_count
from ..data.summaries import FilterSummary
from ..errors import ConfigError, InputError
from ..models.assets import load_tokenizer
from ..naming import sidecar
from ..progress import Progress, format_summary
from ..reporting.summary_rows import filter_rows
from ..selection.filters import (
    CorrectnessConfig,
    DedupeConfig,
    FilterChain,
    LengthConfig,
    RepetitionConfig,
    ScreeningPool,
    StructureConfig,
)
from ..text.render import DEFAULT_SYSTEM_PROMPT

# What an empty part of a response means, said when the structure filter drops some (`dasd sample` warns too).
EMPTY_PART_CAUSES = {
    "empty_reasoning": "the teacher wrote no think block; to train on its answer as the chain of thought, sample with "
    "reasoning_format=none",
    "empty_content": "reasoning without an answer after it: the think block never closed (cut at max_new_tokens, or "
    "a teacher that does not close the block its template opened: then reasoning_format=none and a template that "
    "opens none)",
}
AUTO_WORKERS_MAX = 4  # beyond this, reading and writing the records in one process is the limit (README)


class FilterConfig(StageConfig):
    input: str = Field(..., description="response records (sampled or scored; a glob reads several files)")
    output: RecordOutput = Field(
        ...,
        description="kept records: JSONL, or *.parquet (a folder of parts); rejected ones go beside it in the same "
        "format (<name>.rejected.jsonl or <name>.rejected.parquet)",
    )
    student_tokenizer: str | None = Field(
        None, description="student tokenizer folder or asset name, for the length filter"
    )
    system_prompt: str | None = Field(
        DEFAULT_SYSTEM_PROMPT, description="system prompt of the training text (length filter)"
    )
    chat_template_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="extra variables for the student's chat template"
    )
    structure: StructureConfig = Field(default_factory=StructureConfig, description="structure filter")
    length: LengthConfig = Field(default_factory=LengthConfig, description="length filter")
    repetition: RepetitionConfig = Field(default_factory=RepetitionConfig, description="repetition filter")
    dedupe: DedupeConfig = Field(default_factory=DedupeConfig, description="duplicate filter")
    correctness: CorrectnessConfig = Field(default_factory=CorrectnessConfig, description="answer correctness filter")
    chunk_records: int = Field(
        256,
        ge=1,
        description="records graded together (math-verify runs in parallel within a chunk)",
        json_schema_extra=SPEED_ONLY,
    )
    workers: int = Field(
        0,
        ge=0,
        description="processes that run the per-record filters and the grading (1: this process alone; 0: auto — "
        f"one per usable CPU beyond this one, at most {AUTO_WORKERS_MAX}, and none when the input fits in one "
        "chunk); each loads the student tokenizer and starts correctness.workers math-verify processes. This "
        "process reads, dedupes and writes in input order: the outputs are the same for any number",
        json_schema_extra=SPEED_ONLY,
    )


def _pending(config: FilterConfig, done: set[str], counts: Counter):
    """The input records not yet in the kept or rejected file (checked: the fields the filters read)."""
    for line, record in iter_records(config.input):
        check_fields(record, RESPONSE_FIELDS, path=config.input, line=line)
        counts["records"] += 1
        if str(record["id"]) in done:
            counts["already_done"] += 1
            continue
        done.add(str(record["id"]))
        yield record


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity: a Slurm task's CPUs, not the whole machine's)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def worker_count(config: FilterConfig, records: Iterator[dict[str, Any]]):
    """How many worker processes screen the records (1: none, this process does), and the records, unchanged.
    `auto` (workers=0) first reads up to one chunk and one record: starting workers costs more than filtering
    one chunk here."""
    if config.workers:
        return config.workers, records
    workers = max(1, min(AUTO_WORKERS_MAX, usable_cpus() - 1))
    if workers == 1:
        return 1, records
    head = list(islice(records, config.chunk_records + 1))
    return (workers if len(head) > config.chunk_records else 1), chain(head, records)


def run(config: FilterConfig) -> dict[str, Any]:
    # 1. Validate before anything is written: settings, and the first record of the input.
    if config.length.enabled and not config.student_tokenizer:
        raise ConfigError("the length filter counts student tokens: set student_tokenizer (or length.enabled=false)")
    if next(iter_records(config.input), None) is None:
        raise InputError(config.input, None, None, "no records (empty file)")

    # 2. Resume: ids already kept or rejected are done; the kept ones still count as seen for dedupe.
    kept = open_writer(config.output)
    rejected = open_writer(
        sidecar(config.output, "rejected", ".parquet" if config.output.endswith(".parquet") else ".jsonl")
    )
    done = kept.done | rejected.done
    size = record_count(config.input)  # the progress bar's total: the records not done yet, where known cheaply
    to_do = None if size is None else max(size - len(done), 0)
    dump_config(config, sidecar(config.output, "config", ".yaml"))
    settings = {
        "structure": config.structure,
        "length": config.length,
        "repetition": config.repetition,
        "dedupe": config.dedupe,
        "correctness": config.correctness,
        "system_prompt": config.system_prompt,
        "chat_template_kwargs": config.chat_template_kwargs,
    }
    tokenizer_name = config.student_tokenizer if config.length.enabled else None
    reasons: Counter = Counter()
    counts: Counter = Counter()
    workers, pending = worker_count(config, _pending(config, done, counts))
    # the chain here does it all (workers=1), or only decides (dedupe, in input order) what the workers screen
    if workers == 1:
        filters = FilterChain(**settings, tokenizer=load_tokenizer(tokenizer_name) if tokenizer_name else None)
    else:
        filters = FilterChain(dedupe=config.dedupe)
    if config.dedupe.enabled and kept.path.exists():
        for _, record in iter_records(kept.path):
            filters.seen(record)
    pool = ScreeningPool(workers, settings, tokenizer_name) if workers > 1 else None
    if pool is None:
        known = filters.deduper.seen if filters.deduper is not None else None
        screened = ((chunk, filters.screen(chunk, known)) for chunk in batched(pending, config.chunk_records))
    else:  # a worker's task is a part of a chunk: the records in flight stay about 2 chunks, whatever the count
        screened = pool.screen(batched(pending, -(-config.chunk_records // workers)))

    # 3. Filter chunk by chunk (correctness is graded a chunk at a time), writing each verdict in input order.
    progress = Progress(to_do, "filter", unit="rec")
    try:
        for chunk, screenings in screened:
            for record, verdict in zip(chunk, filters.decide(screenings)):
                (kept if verdict["keep"] else rejected).write({**record, "filter": verdict})
                counts["kept" if verdict["keep"] else "rejected"] += 1
                counts["answer_only"] += verdict["keep"] and reasoning_in_answer(record)
                if not verdict["keep"]:
                    reasons[verdict["reason"]] += 1
            progress.update(len(chunk))
    finally:
        progress.close()
        if pool is not None:
            pool.close()
        kept.finish()
        rejected.finish()
        filters.close()

    # 4. Summary.
    summary: FilterSummary = {
        "stage": "filter",
        "output": config.output,
        "records": counts["records"],
        "kept": counts["kept"],
        "rejected": counts["rejected"],
        "already_done": counts["already_done"],
        "reasons": dict(sorted(reasons.items(), key=lambda item: -item[1])),
        "verify_timeouts": filters.verify_timeouts,
        "student_tokens": filters.student_tokens,
        "seconds": round(progress.elapsed, 3),
        "records_per_s": round((counts["kept"] + counts["rejected"]) / progress.elapsed, 2)
        if progress.elapsed
        else 0.0,
    }
    if counts["answer_only"]:
        summary["answer_only_kept"] = counts["answer_only"]
    write_summary(config.output, summary)
    rows = filter_rows(summary, workers=workers if workers > 1 else "none (this process)")
    print(format_summary(f"dasd filter -> {config.output}", rows), file=sys.stdout, flush=True)
    for reason, cause in EMPTY_PART_CAUSES.items():
        if reasons[reason]:
            print(f"warning: {reasons[reason]} rejected as {reason}: {cause}", file=sys.stderr, flush=True)
    return summary
