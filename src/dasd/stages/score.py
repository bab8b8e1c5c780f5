"""`dasd score`: sentence-level teacher vs student probabilities across tokenizers (divergence-aware sampling).

    dasd score --config configs/score.yaml input=runs/x/responses.jsonl output=runs/x/scored.jsonl \\
        student.model=path/to/student

Each response's reasoning and answer are split into sentences (`dasd.sentences`). The teacher's
sentence log-prob is the mean of its recorded token log-probs in the sentence; the student's is the
mean of its own token log-probs, teacher-forced on exactly the text it would be trained on (its chat
template with the system prompt, then `<think>\\n{reasoning}\\n</think>\\n\\n{content}`). Tokens go to
sentences by the same character rule for both tokenizers (`dasd.scoring.assign_tokens`). Each
sentence is classed `teacher` (p_T - p_S > beta), `student` (< -beta) or `shared`, and the record gets
`sentences` and `das` counts.

The released data: `input=` the text release and `released_logprobs=` its `-Logprob` file; the
gpt-oss token ids are decoded offline and joined by uuid.

Records that cannot be scored (no teacher log-probs, offsets outside the text, empty reasoning,
longer than the student's context) go to `<name>.errors.jsonl` with the reason; the run goes on.
Responses longer than `max_length` student tokens are skipped with reason `too_long`, never truncated.
Resumable by id like every stage; `shard=i/n` (set automatically from RANK/WORLD_SIZE under
`accelerate launch`/`torchrun`) writes `<name>.shard-i-of-n.jsonl`; later stages read the shards
with a glob (`input='runs/x/scored.shard-*.jsonl'`).
"""

from __future__ import annotations

import itertools
import math
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from ..backends.base import ModelConfig
from ..config import StageConfig, dump_config
from ..errors import ConfigError
from ..io import ErrorLog, RecordWriter, batched, iter_records, sidecar, write_json_atomic
from ..progress import Progress, format_summary
from ..records import stable_hash
from ..render import DEFAULT_SYSTEM_PROMPT, completion_part_logprobs, render_student
from ..scoring import ScoringItem, SentenceScore, StudentScorer, classify, sentence_scores_by_model

PARTS = ("reasoning", "content")


class ScoreConfig(StageConfig):
    input: str = Field(..., description="response records (JSONL/Parquet/…; a glob reads several files), or the text release with released_logprobs")
    output: str = Field(..., description="scored records JSONL (appended to; ids already there are skipped)")
    student: ModelConfig = Field(..., description="the student model that will be trained")
    released_logprobs: str | None = Field(None, description="the released -Logprob file ({sample_uuid, token_ids, logprobs}) to join with `input` = the text release")
    released_tokenizer: str = Field("o200k_harmony", description="tokenizer of the released token ids (gpt-oss: o200k_harmony)")
    system_prompt: str | None = Field(DEFAULT_SYSTEM_PROMPT, description="system prompt of the student's chat template (as in training); null keeps the records' own")
    chat_template_kwargs: dict[str, Any] = Field(default_factory=dict, description="extra variables for the student's chat template")
    beta: float = Field(0.1, ge=0, description="class threshold: teacher if p_T - p_S > beta, student if < -beta, else shared")
    space: Literal["prob", "logratio"] = Field("prob", description="difference in probability space (the report's) or log-ratio space")
    tokens_per_batch: int = Field(16384, ge=256, description="student tokens per forward pass (rows × row width)")
    batching: Literal["auto", "packed", "padded", "single"] = Field("auto", description="packed: several samples per row (position_ids restart; efficient with flash-attention's varlen kernels); padded: length-sorted rows of one sample each; single: one sample per forward; auto: packed with flash_attention_2, else single — with SDPA any attention mask leaves the fast causal kernel, and single was fastest on CPU and on an H100 (benchmarks/RESULTS.md)")
    max_length: int | None = Field(None, ge=16, description="longest student sequence (prompt + response) scored; longer ones are skipped as too_long (default: the model's max_position_embeddings)")
    chunk_records: int = Field(512, ge=1, description="records read, scored and written per round (bounds memory; length-sorting happens within a round)")
    shard: str | None = Field(None, pattern=r"^\d+/\d+$", description="i/n: score only the records whose id hashes to shard i of n (auto under accelerate/torchrun)")
    limit: int | None = Field(None, ge=1, description="score only the first N records")


def _shard(config: ScoreConfig) -> tuple[int, int] | None:
    if config.shard:
        index, count = (int(part) for part in config.shard.split("/"))
    elif int(os.environ.get("WORLD_SIZE", "1")) > 1:
        index, count = int(os.environ.get("RANK", "0")), int(os.environ["WORLD_SIZE"])
    else:
        return None
    if not 0 <= index < count:
        raise ConfigError(f"shard {index}/{count}: expected i/n with 0 <= i < n")
    return index, count


def shard_output(output: str, shard: tuple[int, int] | None) -> str:
    if shard is None:
        return output
    path = Path(output)
    stem = path.name[: -len(".jsonl")] if path.name.endswith(".jsonl") else path.stem
    return str(path.with_name(f"{stem}.shard-{shard[0]}-of-{shard[1]}.jsonl"))


def check_teacher_logprobs(record: dict[str, Any]) -> str | None:
    """Why a response cannot be scored, or None."""
    teacher = record.get("teacher_logprobs")
    if not isinstance(teacher, dict):
        return "missing_teacher_logprobs"
    if not (record.get("reasoning") or "").strip():
        return "empty_reasoning"
    for part in PARTS:
        text = record.get(part) or ""
        entry = teacher.get(part) or {"offsets": [], "logprobs": []}
        offsets, logprobs = entry.get("offsets") or [], entry.get("logprobs") or []
        if len(offsets) != len(logprobs):
            return f"teacher_offsets_mismatch: {part} has {len(offsets)} offsets for {len(logprobs)} log-probs"
        previous = 0
        for index, span in enumerate(offsets):
            if not (isinstance(span, (list, tuple)) and len(span) == 2 and 0 <= span[0] <= span[1] <= len(text) and span[0] >= previous):
                return f"teacher_offsets_mismatch: {part} token {index} span {span} does not fit a text of {len(text)} characters"
            previous = span[0]
        if any(value is None or not math.isfinite(value) or value > 1e-6 for value in logprobs):
            return f"teacher_logprob_invalid: {part} has a log-prob that is not a finite number <= 0"
    return None


def score_sentences(record: dict[str, Any], student_parts: dict[str, dict], *, beta: float, space: str) -> tuple[list[SentenceScore], str | None]:
    scored, error = sentence_scores_by_model(record, {"teacher": record["teacher_logprobs"], "student": student_parts})
    if error:
        return [], error
    return [SentenceScore(part, start, end, means["teacher"], means["student"],
                          classify(means["teacher"], means["student"], beta=beta, space=space))
            for part, start, end, means in scored], None


def model_part_logprobs(scorer: StudentScorer, tokenizer, records: list[dict[str, Any]], *, system_prompt: str | None,
                        chat_template_kwargs: dict[str, Any], max_length: int):
    """For each record, (record, `{reasoning: {offsets, logprobs}, content: {...}}`, tokens) with the
    model's own token log-probs, teacher-forced on the text as it sees it (`render_student`); parts is
    None when the rendered text is longer than `max_length` (tokens is then that length)."""
    rendered = [render_student(tokenizer, record["messages"], record["reasoning"], record.get("content") or "",
                               system_prompt=system_prompt, chat_template_kwargs=chat_template_kwargs) for record in records]
    scored = scorer.score([ScoringItem(key=key, input_ids=text.prompt_ids + text.completion_ids, first_scored=len(text.prompt_ids))
                           for key, text in enumerate(rendered) if text.length <= max_length])
    for key, (record, text) in enumerate(zip(records, rendered)):
        if text.length > max_length:
            yield record, None, text.length
            continue
        yield record, completion_part_logprobs(text, record["reasoning"], record.get("content") or "", scored[key]), len(text.completion_ids)


def make_scorer(model, tokenizer, batching: str, tokens_per_batch: int) -> tuple[StudentScorer, str]:
    """The scorer for `batching` (auto: packed with flash-attention, else one sample per forward)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    if batching == "auto":
        attention = getattr(model.config, "_attn_implementation", "sdpa")
        batching = "packed" if attention == "flash_attention_2" else "single"
    return StudentScorer(model, tokens_per_batch=1 if batching == "single" else tokens_per_batch, pack=batching == "packed", pad_id=int(pad)), batching


def _records(config: ScoreConfig):
    if config.released_logprobs:
        from ..released import iter_released_responses

        yield from iter_released_responses(config.input, config.released_logprobs, tokenizer=config.released_tokenizer)
    else:
        for line_number, record in iter_records(config.input):
            if "id" not in record:
                yield {"id": f"<line {line_number}>"}, "missing_id"
                continue
            yield record, None


def run(config: ScoreConfig) -> dict[str, Any]:
    shard = _shard(config)
    output = shard_output(config.output, shard)
    # Bad files fail before any work: the first record is read here.
    source = _records(config)
    first = next(source, None)
    if first is None:
        from ..errors import InputError

        raise InputError(config.input, None, None, "no records (empty file)")
    writer = RecordWriter(output)
    errors = ErrorLog(sidecar(output, "errors", ".jsonl"))
    errors.reset()
    dump_config(config, sidecar(output, "config", ".yaml"))

    from ..backends.hf import load_model

    model, tokenizer, device = load_model(config.student)
    max_length = config.max_length or getattr(model.config, "max_position_embeddings", None) or 1 << 30
    scorer, batching = make_scorer(model, tokenizer, config.batching, config.tokens_per_batch)

    counts: Counter = Counter()
    reasons: Counter = Counter()
    sentence_types: Counter = Counter()
    seen = 0
    progress = Progress(0, f"score [{device}]", unit="rec")

    def flush(chunk: list[dict[str, Any]]) -> None:
        for record, parts, length in model_part_logprobs(scorer, tokenizer, chunk, system_prompt=config.system_prompt,
                                                         chat_template_kwargs=config.chat_template_kwargs, max_length=max_length):
            if parts is None:
                errors.log(record["id"], f"too_long: {length} student tokens > max_length {max_length}")
                reasons["too_long"] += 1
                continue
            sentences, error = score_sentences(record, parts, beta=config.beta, space=config.space)
            if error:
                errors.log(record["id"], error)
                reasons[error.split(":")[0]] += 1
                continue
            das = Counter(sentence.type for sentence in sentences)
            record = dict(record)
            record["sentences"] = [sentence.as_dict() for sentence in sentences]
            record["das"] = {"teacher": das["teacher"], "student": das["student"], "shared": das["shared"], "n": len(sentences)}
            record["student_model"] = config.student.model
            writer.write(record)
            counts["scored"] += 1
            sentence_types.update(das)
            progress.update(1, length)

    def pending():
        nonlocal seen
        for record, error in itertools.chain([first], source):
            if config.limit and seen >= config.limit:
                return
            seen += 1
            record_id = str(record.get("id"))
            if shard and int(stable_hash(record_id, length=8), 16) % shard[1] != shard[0]:
                continue
            if record_id in writer.done:
                counts["already_done"] += 1
                continue
            progress.bar.total = (progress.bar.total or 0) + 1
            if error is None:
                error = check_teacher_logprobs(record)
            if error:
                errors.log(record_id, error)
                reasons[error.split(":")[0]] += 1
                progress.update(1)
                continue
            yield record

    try:
        for chunk in batched(pending(), config.chunk_records):
            flush(chunk)
    finally:
        progress.close()
        writer.finish()
        errors.close()

    elapsed = progress.elapsed
    summary = {
        "stage": "score",
        "output": output,
        "records_scored": counts["scored"],
        "records_already_done": counts["already_done"],
        "records_failed": sum(reasons.values()),
        "failure_reasons": dict(sorted(reasons.items())),
        "sentences": dict(sentence_types),
        "student_tokens_scored": scorer.tokens_scored,
        "batching": batching,
        "padding_fraction": round(scorer.padding_tokens / scorer.forward_tokens, 4) if scorer.forward_tokens else 0.0,
        "seconds": round(elapsed, 3),
        "student_tokens_per_s": round(scorer.tokens_scored / elapsed, 1) if elapsed else 0.0,
        "beta": config.beta,
        "space": config.space,
    }
    write_json_atomic(sidecar(output, "summary", ".json"), summary)
    total_sentences = sum(sentence_types.values()) or 1
    rows = [
        ("records scored", counts["scored"]),
        ("already done (skipped)", counts["already_done"]),
        ("failed (see errors file)", summary["records_failed"]),
        *((f"  {reason}", count) for reason, count in sorted(reasons.items())),
        *((f"{kind} sentences", f"{sentence_types[kind]:,} ({sentence_types[kind] / total_sentences:.1%})") for kind in ("teacher", "student", "shared")),
        ("student tokens scored", scorer.tokens_scored),
        ("padding fraction", summary["padding_fraction"]),
        ("student tokens/s", summary["student_tokens_per_s"]),
    ]
    print(format_summary(f"dasd score -> {output}", rows), file=sys.stdout, flush=True)
    return summary

