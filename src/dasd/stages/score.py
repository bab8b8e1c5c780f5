"""`dasd score`: sentence-level teacher vs student probabilities across tokenizers (divergence-aware sampling).

    dasd score --config configs/score.yaml input=runs/x/responses.jsonl output=runs/x/scored.jsonl \\
        student.model=path/to/student

Each response's reasoning and answer are split into sentences (`dasd.text.sentences`). The teacher's
sentence log-prob is the mean of its recorded token log-probs in the sentence; the student's is the
mean of its own token log-probs, teacher-forced on exactly the text it would be trained on (its chat
template with the system prompt, then `<think>\\n{reasoning}\\n</think>\\n\\n{content}`). Tokens go to
sentences by the same character rule for both tokenizers (`dasd.scoring.sentence_scores.assign_tokens`). Each
sentence is classed `teacher` (p_T - p_S > beta), `student` (< -beta) or `shared`, and the record gets
`sentences` and `das` counts.

The released data: `input=` the text release and `released_logprobs=` its `-Logprob` file; the
gpt-oss token ids are decoded offline and joined by uuid.

A response sampled with `reasoning_format: none` (an instruct teacher that writes no think block) has no reasoning:
its chain of thought is its answer, and it is scored on the answer's sentences, as the student is trained on the
answer alone (`dasd.data.records.reasoning_in_answer`). This follows the record's own `reasoning_format` (written
by `dasd sample`), not an option here; the summary counts these records (`answer_only_scored`).

Records that cannot be scored (no teacher log-probs, offsets outside the text, empty reasoning in a think-format
response, longer than the student's context) go to `<name>.errors.jsonl` with the reason; the run goes on.
Responses longer than `max_length` student tokens are skipped with reason `too_long`, never truncated.
Resumable by id like every stage; `shard=i/n` (set automatically from RANK/WORLD_SIZE under
`accelerate launch`/`torchrun`) writes `<name>.shard-i-of-n.jsonl`; later stages read the shards
with a glob (`input='runs/x/scored.shard-*.jsonl'`).
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import Field

from ..backends import BackendConfig, server_log, with_launch_log
from ..config import ADDED, SPEED_ONLY, RecordOutput, StageConfig, dump_config
from ..data.io import (
    ErrorLog,
    RecordWriter,
    batched,
    iter_records,
    merge_shards,
    open_writer,
    shard_output,
    write_summary,
)
from ..data.records import check_fields, in_shard, parse_shard, reasoning_in_answer, record_count
from ..data.summaries import ScoreSummary
from ..errors import InputError
from ..naming import sidecar
from ..progress import Progress, format_summary
from ..reporting.summary_rows import score_rows
from ..scoring.sentence_scores import check_teacher_logprobs, score_sentences
from ..scoring.token_scorers import make_token_scorer
from ..text.render import DEFAULT_SYSTEM_PROMPT


class ScoreConfig(StageConfig):
    input: str = Field(
        ...,
        description="response records (JSONL/Parquet/…; a glob reads several files), or the text release "
        "with released_logprobs",
    )
    output: RecordOutput = Field(
        ...,
        description="scored records: JSONL (appended to), or *.parquet (a folder of parts); ids already there "
        "are skipped",
    )
    student: BackendConfig = Field(
        ...,
        description="the student model that will be trained: local (hf), or served (name=openai: prompt "
        "log-probs via /v1/completions echo; needs its tokenizer)",
    )
    released_logprobs: str | None = Field(
        None,
        description="the released -Logprob file ({sample_uuid, token_ids, logprobs}) to join with `input` = "
        "the text release",
    )
    released_tokenizer: str = Field(
        "o200k_harmony", description="tokenizer of the released token ids (gpt-oss: o200k_harmony)"
    )
    system_prompt: str | None = Field(
        DEFAULT_SYSTEM_PROMPT,
        description="system prompt of the student's chat template (as in training); null keeps the records' own",
    )
    chat_template_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="extra variables for the student's chat template"
    )
    beta: float = Field(
        0.1, ge=0, description="class threshold: teacher if p_T - p_S > beta, student if < -beta, else shared"
    )
    space: Literal["prob", "logratio"] = Field(
        "prob", description="difference in probability space (the report's) or log-ratio space"
    )
    tokens_per_batch: int = Field(
        16384, ge=256, description="student tokens per forward pass (rows × row width)", json_schema_extra=SPEED_ONLY
    )
    batching: Literal["auto", "packed", "padded", "single"] = Field(
        "auto",
        description="packed: several samples per row (position_ids restart) under mask-free attention "
        "(flash_attention_2, else dasd_packed: per-sample causal kernels, varlen flash on CUDA); padded: "
        "length-sorted rows of one sample each; single: one sample per forward; auto: packed on GPU, single on "
        "CPU (why: benchmarks/RESULTS.md, student scoring)",
        json_schema_extra=SPEED_ONLY,
    )
    max_length: int | None = Field(
        None,
        ge=16,
        description="longest student sequence (prompt + response) scored; longer ones are skipped as "
        "too_long (default: the model's max_position_embeddings)",
    )
    chunk_records: int = Field(
        512,
        ge=1,
        description="records read, scored and written per round (bounds memory; length-sorting happens within a round)",
        json_schema_extra=SPEED_ONLY,
    )
    shard: str | None = Field(
        None,
        pattern=r"^\d+/\d+$",
        description="i/n: score only the records whose id hashes to shard i of n (auto under accelerate/torchrun)",
        json_schema_extra=SPEED_ONLY,
    )
    limit: int | None = Field(None, ge=1, description="score only the first N records")
    allow_unverified_logprobs: bool = Field(
        False,
        description="also score records whose teacher log-probs were not verified to be raw (logprob_mode other "
        "than raw: a server run with logprob_check=skip); the summary counts them",
    )
    skip_unfinished: bool = Field(
        False,
        description="pass responses that did not finish (finish_reason other than stop: truncated at the token cap, "
        "tool calls, errors) through unscored (`das: null`, `unscored: finish_<reason>`), since `dasd filter`'s "
        "structure check drops them before reading anything scoring writes; these are the longest responses, so "
        "this saves the most scoring. `dasd run` sets it when the filter's structure.require_stop is on",
        json_schema_extra=ADDED,
    )


def _records(config: ScoreConfig, shard=None) -> Iterator[tuple[dict[str, Any], str | None]]:
    """(record, reason it cannot be scored or None) for each input record, fields checked. With a shard (and no
    `limit`, which counts the whole file's records), other shards' records are skipped before they are parsed."""
    if config.released_logprobs:
        from ..data.released import iter_released_responses

        yield from iter_released_responses(config.input, config.released_logprobs, tokenizer=config.released_tokenizer)
        return
    keep_id = (lambda record_id: in_shard(record_id, shard)) if shard is not None and not config.limit else None
    for line, record in iter_records(config.input, keep_id=keep_id):
        check_fields(record, ("id", "messages", "reasoning", "content"), path=config.input, line=line)
        yield record, None


def _input_size(config: ScoreConfig, shard) -> int | None:
    """How many records this run goes through, where that is known without parsing them (the progress bar's total):
    `limit`, the row count of a Parquet input, the line count of a plain JSONL file (a byte scan: well under 1% of
    scoring the same bytes); None for a shard (its records are a hash's share), a glob, gzip or the released data."""
    if shard is not None or config.released_logprobs:
        return None
    size = record_count(config.input)
    if config.limit:
        return config.limit if size is None else min(size, config.limit)
    return size


def _pending(
    config: ScoreConfig,
    shard,
    writer: RecordWriter,
    errors: ErrorLog,
    counts: Counter,
    reasons: Counter,
    progress: Progress,
):
    """The records of this shard that are not scored yet and have usable teacher log-probs; the others move the
    progress bar here."""
    for seen, (record, error) in enumerate(_records(config, shard)):
        if config.limit and seen >= config.limit:
            return
        record_id = str(record["id"])
        if not in_shard(record_id, shard):
            continue
        if record_id in writer.done:
            counts["already_done"] += 1
            progress.update(1)
            continue
        if config.skip_unfinished and record.get("finish_reason") != "stop":
            # dasd filter's structure check drops it first (filters.structure_filter reads only finish_reason there)
            writer.write({**record, "das": None, "unscored": f"finish_{record.get('finish_reason')}"})
            counts["unscored_unfinished"] += 1
            progress.update(1)
            continue
        error = error or check_teacher_logprobs(record)
        mode = record.get("logprob_mode", "unverified")
        if not error and mode != "raw":
            if config.allow_unverified_logprobs:
                counts["unverified_logprobs"] += 1
            else:
                error = (
                    f"logprobs_not_raw: logprob_mode={mode}; sample with a probed server (backend.logprob_check=probe) "
                    "or pass allow_unverified_logprobs=true"
                )
        if error:
            errors.log(record_id, error)
            reasons[error.split(":")[0]] += 1
            progress.update(1)
            continue
        yield record


def scored_record(record: dict[str, Any], sentences: list, student_model: str) -> dict[str, Any]:
    """The `ScoredResponse`: the record with its sentences, their classes and the DAS counts."""
    das = Counter(sentence.type for sentence in sentences)
    return {
        **record,
        "sentences": [sentence.as_dict() for sentence in sentences],
        "das": {"teacher": das["teacher"], "student": das["student"], "shared": das["shared"], "n": len(sentences)},
        "student_model": student_model,
    }


def run(config: ScoreConfig) -> dict[str, Any]:
    # 1. Validate before any work: the shard, and the first record of the input.
    shard = parse_shard(config.shard, from_launcher=True)
    output = shard_output(config.output, shard)
    if next(_records(config), None) is None:
        raise InputError(config.input, None, None, "no records (empty file)")

    # 2. Resume by id; this run's failures go to the errors file. A shard counts every other shard's ids as
    # done; the run without shard merges the shard files into the output first.
    if shard is None:
        merge_shards(config.output)
    writer = open_writer(output)
    errors = ErrorLog(sidecar(output, "errors", ".jsonl"))
    dump_config(config, sidecar(output, "config", ".yaml"))
    # 3. Score a chunk at a time (length-sorted within it), write each record as it is classified. The student is
    # loaded (or its server started) with the first chunk: a run with nothing left — a Slurm finalize, which merges
    # the shard files on a node without a GPU — never loads it.
    counts: Counter = Counter()
    reasons: Counter = Counter()
    sentence_types: Counter = Counter()
    scorer = None
    progress = Progress(_input_size(config, shard), f"score [{config.student.name}]", unit="rec")
    try:
        pending = _pending(config, shard, writer, errors, counts, reasons, progress)
        for chunk in batched(pending, config.chunk_records):
            if scorer is None:
                scorer = make_token_scorer(
                    with_launch_log(config.student, server_log(output)),
                    system_prompt=config.system_prompt,
                    chat_template_kwargs=config.chat_template_kwargs,
                    batching=config.batching,
                    tokens_per_batch=config.tokens_per_batch,
                    max_length=config.max_length,
                    role="student",
                )
                progress.bar.set_description(f"score [{scorer.label}]")
            for scores in scorer.score(chunk):
                record = scores.record
                sentences, error = (
                    score_sentences(record, scores.parts, beta=config.beta, space=config.space)
                    if scores.parts is not None
                    else ([], scores.error)
                )
                if error:
                    errors.log(str(record["id"]), error)
                    reasons[error.split(":")[0]] += 1
                else:
                    writer.write(scored_record(record, sentences, config.student.model))
                    counts["scored"] += 1
                    counts["answer_only"] += reasoning_in_answer(record)
                    sentence_types.update(sentence.type for sentence in sentences)
                progress.update(1, scores.tokens)
    finally:
        progress.close()
        writer.finish()
        errors.close()
        nothing = {"tokens_scored": 0, "batching": config.batching, "padding_fraction": 0.0}
        stats = scorer.stats() if scorer is not None else nothing
        if scorer is not None:
            scorer.close()

    # 4. Summary.
    elapsed = progress.elapsed
    summary: ScoreSummary = {
        "stage": "score",
        "output": output,
        "records_scored": counts["scored"],
        "records_already_done": counts["already_done"],
        "records_failed": sum(reasons.values()),
        "failure_reasons": dict(sorted(reasons.items())),
        "sentences": dict(sentence_types),
        "student_tokens_scored": stats["tokens_scored"],
        "batching": stats["batching"],
        "attention": stats.get("attention"),
        "padding_fraction": stats["padding_fraction"],
        "seconds": round(elapsed, 3),
        "student_tokens_per_s": round(stats["tokens_scored"] / elapsed, 1) if elapsed else 0.0,
        "beta": config.beta,
        "space": config.space,
        "unverified_logprobs_scored": counts["unverified_logprobs"],
    }
    if config.skip_unfinished:
        summary["unscored_unfinished"] = counts["unscored_unfinished"]
    if counts["answer_only"]:
        summary["answer_only_scored"] = counts["answer_only"]
    write_summary(output, summary)
    print(format_summary(f"dasd score -> {output}", score_rows(summary)), file=sys.stdout, flush=True)
    if reasons["empty_reasoning"]:
        print(
            f"warning: {reasons['empty_reasoning']} of {sum(reasons.values()) + counts['scored']} records have no "
            "reasoning: the teacher wrote no think block; to score and train on its answer as the chain of thought, "
            "sample with reasoning_format=none (dasd sample warns when most responses have no reasoning)",
            file=sys.stderr,
        )
    if counts["unverified_logprobs"]:
        print(
            f"warning: {counts['unverified_logprobs']} records were scored with teacher log-probs not verified to be "
            "raw (allow_unverified_logprobs=true): their teacher sentence probabilities may be temperature-processed",
            file=sys.stderr,
        )
    return summary
