"""`dasd filter`: quality filters with a count per reason; rejected records go to a side file.

    dasd filter input=runs/x/scored.jsonl output=runs/x/filtered.jsonl student_tokenizer=path/to/student

Filters (`dasd.filters`), in this order, each record stopping at the first that rejects it:
structure → length (student tokens) → repetition → dedupe → correctness (when a reference answer
exists). Kept records get `filter: {keep: true, reason: null}` and go to `output`; rejected ones get
`filter: {keep: false, reason}` and go to `<name>.rejected.jsonl`. The summary counts drops per
reason; kept + rejected always hold every input id exactly once. Resumable by id.
"""

from __future__ import annotations

import itertools
import sys
from collections import Counter
from typing import Any

from pydantic import Field

from ..answers import BoundedVerifier, grade_many
from ..config import StageConfig, dump_config
from ..errors import ConfigError, InputError
from ..filters import (CorrectnessConfig, DedupeConfig, Deduper, LengthConfig, RepetitionConfig, StructureConfig,
                       length_filter, repetition_filter, structure_filter, student_length)
from ..io import RecordWriter, batched, iter_records, sidecar, write_json_atomic
from ..progress import Progress, format_summary
from ..render import DEFAULT_SYSTEM_PROMPT


class FilterConfig(StageConfig):
    input: str = Field(..., description="response records (sampled or scored; a glob reads several files)")
    output: str = Field(..., description="kept records JSONL; rejected ones go to <name>.rejected.jsonl")
    student_tokenizer: str | None = Field(None, description="student tokenizer folder or asset name, for the length filter")
    system_prompt: str | None = Field(DEFAULT_SYSTEM_PROMPT, description="system prompt of the training text (length filter)")
    chat_template_kwargs: dict[str, Any] = Field(default_factory=dict, description="extra variables for the student's chat template")
    structure: StructureConfig = Field(default_factory=StructureConfig, description="structure filter")
    length: LengthConfig = Field(default_factory=LengthConfig, description="length filter")
    repetition: RepetitionConfig = Field(default_factory=RepetitionConfig, description="repetition filter")
    dedupe: DedupeConfig = Field(default_factory=DedupeConfig, description="duplicate filter")
    correctness: CorrectnessConfig = Field(default_factory=CorrectnessConfig, description="answer correctness filter")
    chunk_records: int = Field(256, ge=1, description="records graded together (math-verify runs in parallel within a chunk)")


def run(config: FilterConfig) -> dict[str, Any]:
    if config.length.enabled and not config.student_tokenizer:
        raise ConfigError("the length filter counts student tokens: set student_tokenizer (or length.enabled=false)")
    source = iter_records(config.input)
    first = next(source, None)
    if first is None:
        raise InputError(config.input, None, None, "no records (empty file)")

    kept = RecordWriter(config.output)
    rejected = RecordWriter(sidecar(config.output, "rejected", ".jsonl"))
    done = kept.done | rejected.done
    deduper = Deduper()
    if config.dedupe.enabled and kept.path.exists():  # resume: the kept responses still count as seen
        for _, record in iter_records(kept.path):
            deduper.add(record)
    dump_config(config, sidecar(config.output, "config", ".yaml"))
    tokenizer = None
    if config.length.enabled:
        from ..assets import load_tokenizer

        tokenizer = load_tokenizer(config.student_tokenizer)
    verifier = BoundedVerifier(config.correctness.workers, config.correctness.timeout_s) if config.correctness.enabled else None

    reasons: Counter = Counter()
    counts: Counter = Counter()
    lengths: list[int] = []
    progress = Progress(0, "filter", unit="rec")

    def reject(record: dict[str, Any], reason: str) -> None:
        rejected.write({**record, "filter": {"keep": False, "reason": reason}})
        reasons[reason] += 1
        counts["rejected"] += 1

    def flush(chunk: list[dict[str, Any]]) -> None:
        survivors = []
        for record in chunk:
            verdict = structure_filter(record, config.structure) if config.structure.enabled else True
            if verdict is True and tokenizer is not None:
                length = student_length(tokenizer, record, system_prompt=config.system_prompt, chat_template_kwargs=config.chat_template_kwargs)
                lengths.append(length)
                verdict = length_filter(length, config.length)
            if verdict is True and config.repetition.enabled:
                verdict = repetition_filter(record, config.repetition)
            if verdict is True and config.dedupe.enabled:
                verdict = deduper(record)
                if verdict is True:
                    deduper.add(record)
            if verdict is True:
                survivors.append(record)
            else:
                reject(record, verdict[1])
        graded = [r for r in survivors if verifier is not None and r.get("answer") not in (None, "")]
        grades = grade_many([(r.get("content") or "", str(r["answer"]), r.get("domain"), r.get("choices")) for r in graded], verifier) if graded else []
        verdicts = {id(record): grade for record, grade in zip(graded, grades)}
        for record in survivors:
            grade = verdicts.get(id(record))
            if grade is not None and not grade.correct:
                reject(record, grade.reason or "wrong_answer")
                continue
            kept.write({**record, "filter": {"keep": True, "reason": None}})
            counts["kept"] += 1
        progress.update(len(chunk))

    records = 0

    def pending():
        nonlocal records
        for line, record in itertools.chain([first], source):
            if "id" not in record:
                raise InputError(config.input, line, "id", "missing")
            records += 1
            if str(record["id"]) in done:
                counts["already_done"] += 1
                continue
            done.add(str(record["id"]))
            progress.bar.total = (progress.bar.total or 0) + 1
            yield record

    try:
        for chunk in batched(pending(), config.chunk_records):
            flush(chunk)
    finally:
        progress.close()
        kept.finish()
        rejected.finish()
        if verifier is not None:
            verifier.close()

    summary = {
        "stage": "filter", "output": config.output, "records": records, "kept": counts["kept"],
        "rejected": counts["rejected"], "already_done": counts["already_done"],
        "reasons": dict(sorted(reasons.items(), key=lambda item: -item[1])),
        "verify_timeouts": verifier.timeouts if verifier else 0,
        "student_tokens": {"max": max(lengths), "mean": round(sum(lengths) / len(lengths), 1)} if lengths else None,
        "seconds": round(progress.elapsed, 3),
        "records_per_s": round((counts["kept"] + counts["rejected"]) / progress.elapsed, 2) if progress.elapsed else 0.0,
    }
    write_json_atomic(sidecar(config.output, "summary", ".json"), summary)
    rows = [("records", records), ("kept", counts["kept"]), ("rejected", counts["rejected"]),
            *((f"  {reason}", count) for reason, count in summary["reasons"].items()),
            ("already done (skipped)", counts["already_done"]), ("records/s", summary["records_per_s"])]
    print(format_summary(f"dasd filter -> {config.output}", rows), file=sys.stdout, flush=True)
    return summary

