"""`dasd filter`: quality filters with a count per reason; rejected records go to a side file.

    dasd filter input=runs/x/scored.jsonl output=runs/x/filtered.jsonl student_tokenizer=path/to/student

Filters (`dasd.filters`), in this order, each record stopping at the first that rejects it:
structure → length (student tokens) → repetition → dedupe → correctness (when a reference answer
exists). Kept records get `filter: {keep: true, reason: null}` and go to `output`; rejected ones get
`filter: {keep: false, reason}` and go to `<name>.rejected.jsonl`. The summary counts drops per
reason; kept + rejected always hold every input id exactly once. Resumable by id.
"""

from __future__ import annotations

import sys
from collections import Counter
from typing import Any

from pydantic import Field

from ..config import RecordOutput, StageConfig, dump_config
from ..data.io import RecordWriter, batched, iter_records, open_writer, write_summary
from ..data.records import RESPONSE_FIELDS, check_fields
from ..data.summaries import FilterSummary
from ..errors import ConfigError, InputError
from ..filters import CorrectnessConfig, DedupeConfig, FilterChain, LengthConfig, RepetitionConfig, StructureConfig
from ..models.assets import load_tokenizer
from ..naming import sidecar
from ..progress import Progress, format_summary
from ..text.render import DEFAULT_SYSTEM_PROMPT


class FilterConfig(StageConfig):
    input: str = Field(..., description="response records (sampled or scored; a glob reads several files)")
    output: RecordOutput = Field(
        ...,
        description="kept records: JSONL, or *.parquet (a folder of parts); rejected ones go to <name>.rejected.jsonl",
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
        256, ge=1, description="records graded together (math-verify runs in parallel within a chunk)"
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


def run(config: FilterConfig) -> dict[str, Any]:
    # 1. Validate before anything is written: settings, and the first record of the input.
    if config.length.enabled and not config.student_tokenizer:
        raise ConfigError("the length filter counts student tokens: set student_tokenizer (or length.enabled=false)")
    if next(iter_records(config.input), None) is None:
        raise InputError(config.input, None, None, "no records (empty file)")

    # 2. Resume: ids already kept or rejected are done; the kept ones still count as seen for dedupe.
    kept = open_writer(config.output)
    rejected = RecordWriter(sidecar(config.output, "rejected", ".jsonl"))
    done = kept.done | rejected.done
    dump_config(config, sidecar(config.output, "config", ".yaml"))
    tokenizer = load_tokenizer(config.student_tokenizer) if config.length.enabled else None
    chain = FilterChain(
        structure=config.structure,
        length=config.length,
        repetition=config.repetition,
        dedupe=config.dedupe,
        correctness=config.correctness,
        tokenizer=tokenizer,
        system_prompt=config.system_prompt,
        chat_template_kwargs=config.chat_template_kwargs,
    )
    if config.dedupe.enabled and kept.path.exists():
        for _, record in iter_records(kept.path):
            chain.seen(record)

    # 3. Filter chunk by chunk (correctness is graded a chunk at a time), writing each verdict.
    reasons: Counter = Counter()
    counts: Counter = Counter()
    progress = Progress(0, "filter", unit="rec")
    try:
        for chunk in batched(_pending(config, done, counts), config.chunk_records):
            progress.bar.total = (progress.bar.total or 0) + len(chunk)
            for record, verdict in zip(chunk, chain.apply(chunk)):
                (kept if verdict["keep"] else rejected).write({**record, "filter": verdict})
                counts["kept" if verdict["keep"] else "rejected"] += 1
                if not verdict["keep"]:
                    reasons[verdict["reason"]] += 1
            progress.update(len(chunk))
    finally:
        progress.close()
        kept.finish()
        rejected.finish()
        chain.close()

    # 4. Summary.
    lengths = chain.lengths
    summary: FilterSummary = {
        "stage": "filter",
        "output": config.output,
        "records": counts["records"],
        "kept": counts["kept"],
        "rejected": counts["rejected"],
        "already_done": counts["already_done"],
        "reasons": dict(sorted(reasons.items(), key=lambda item: -item[1])),
        "verify_timeouts": chain.verify_timeouts,
        "student_tokens": {"max": max(lengths), "mean": round(sum(lengths) / len(lengths), 1)} if lengths else None,
        "seconds": round(progress.elapsed, 3),
        "records_per_s": round((counts["kept"] + counts["rejected"]) / progress.elapsed, 2)
        if progress.elapsed
        else 0.0,
    }
    write_summary(config.output, summary)
    rows = [
        ("records", counts["records"]),
        ("kept", counts["kept"]),
        ("rejected", counts["rejected"]),
        *((f"  {reason}", count) for reason, count in summary["reasons"].items()),
        ("already done (skipped)", counts["already_done"]),
        ("records/s", summary["records_per_s"]),
    ]
    print(format_summary(f"dasd filter -> {config.output}", rows), file=sys.stdout, flush=True)
    return summary
