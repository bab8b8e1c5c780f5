"""`dasd sample`: temperature-scheduled teacher sampling with raw log-probs, resumable.

    dasd sample --config configs/sample.yaml input=questions.jsonl output=runs/x/responses.jsonl

For every question and every step of the temperature schedule (default 4 samples at 0.6 and 8 at
1.0, as in the DASD report) the teacher writes one response per sample. Each response record
(DESIGN §3) holds the reasoning and the answer split apart, and the teacher's log-prob of every
generated token with its character offsets into those two strings.

Beside the output it writes `<name>.config.yaml` (the resolved config), `<name>.errors.jsonl` (this
run's failures — a rerun retries them) and `<name>.summary.json`. Rerunning the same command skips
the response ids already written, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field

from ..backends.base import BackendConfig, GenerationRequest, GenerationResult, make_backend
from ..config import StageConfig, dump_config
from ..errors import ConfigError
from ..io import ErrorLog, RecordWriter, sidecar, write_json_atomic
from ..progress import Progress, format_summary
from ..reasoning import map_token_offsets, parse_fields, parse_response
from ..records import load_questions, response_id, stable_hash, stable_seed


class TemperatureStep(StageConfig):
    temperature: float = Field(..., ge=0, description="sampling temperature (0 = greedy)")
    n: int = Field(..., ge=1, description="responses per question at this temperature")
    top_p: float | None = Field(None, gt=0, le=1, description="top-p for this step (default: the stage's top_p)")
    max_new_tokens: int | None = Field(None, ge=1, description="generation limit for this step (default: the stage's)")


class SampleConfig(StageConfig):
    input: str = Field(..., description="questions file: JSONL/JSONL.gz/Parquet/saved HF dataset, or the released DASD format")
    output: str = Field(..., description="response records JSONL (appended to; ids already there are skipped)")
    backend: BackendConfig = Field(..., description="generation backend")
    schedule: list[TemperatureStep] = Field(
        default_factory=lambda: [TemperatureStep(temperature=0.6, n=4), TemperatureStep(temperature=1.0, n=8)],
        description="temperature schedule: list of {temperature, n[, top_p, max_new_tokens]}",
    )
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass")
    top_k: int = Field(0, ge=0, description="top-k sampling (0 = off; HF's default of 50 is not applied)")
    max_new_tokens: int = Field(32768, ge=1, description="generation limit per response, in teacher tokens")
    seed: int = Field(0, description="run seed; each response's seed derives from it and the response id")
    system_prompt: str | None = Field(None, description="system message put before questions that have none (none by default)")
    reasoning_format: Literal["think", "harmony", "none"] = Field("think", description="how the teacher writes its reasoning: think (<think>…</think>), harmony (gpt-oss channels), none")
    prompt_format: Literal["chat_template", "harmony"] = Field("chat_template", description="completions mode: render the prompt with the tokenizer's chat template, or with openai-harmony (gpt-oss)")
    chat_template_kwargs: dict[str, Any] = Field(default_factory=dict, description="extra chat-template variables, e.g. {enable_thinking: true} or {reasoning_effort: high}")
    model_name: str | None = Field(None, description="teacher name recorded in each response's `model` (default: backend.model)")
    limit: int | None = Field(None, ge=1, description="use only the first N questions")
    shard: str | None = Field(None, pattern=r"^\d+/\d+$", description="i/n: process only the questions whose id hashes to shard i of n (run n processes)")


def _shard_filter(shard: str | None):
    if not shard:
        return lambda question_id: True
    index, count = (int(part) for part in shard.split("/"))
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"shard={shard}: expected i/n with 0 <= i < n")
    return lambda question_id: int(stable_hash(question_id, length=8), 16) % count == index


def build_requests(questions: list[dict[str, Any]], done: set[str], *, schedule: list[TemperatureStep], top_p: float,
                   top_k: int, max_new_tokens: int, seed: int, system_prompt: str | None) -> tuple[list[GenerationRequest], dict[str, tuple]]:
    """One request per (question, schedule step, sample index) whose response id is not written yet."""
    requests, context = [], {}
    for question in questions:
        messages = question["messages"]
        if system_prompt and messages[0]["role"] not in ("system", "developer"):
            messages = [{"role": "system", "content": system_prompt}] + messages
        for step in schedule:
            for index in range(step.n):
                rid = response_id(question["id"], step.temperature, index)
                if rid in done:
                    continue
                request = GenerationRequest(
                    id=rid, messages=messages, temperature=step.temperature, top_p=step.top_p or top_p,
                    top_k=top_k, max_new_tokens=step.max_new_tokens or max_new_tokens, seed=stable_seed(seed, rid),
                )
                requests.append(request)
                context[rid] = (question, index)
    return requests, context


def response_record(question: dict[str, Any], index: int, request: GenerationRequest, result: GenerationResult, *,
                    reasoning_format: str, model_name: str, keep_logprobs: bool = True) -> dict[str, Any]:
    """The DESIGN §3 response record for one generation result."""
    if result.server_reasoning is not None:
        parsed = parse_fields(result.raw_text, result.server_reasoning, result.server_content, finish_reason=result.finish_reason)
    else:
        text = result.raw_text if result.raw_text is not None else (result.server_content or "")
        parsed = parse_response(text, reasoning_format, finish_reason=result.finish_reason, prefilled_open=result.prefilled_open)
    teacher_logprobs = None
    if keep_logprobs and result.raw_text is not None and result.token_spans:
        teacher_logprobs = map_token_offsets(result.token_spans, result.token_logprobs, parsed)
    finish = parsed.finish_reason
    if result.finish_reason == "tool_call":
        finish = "tool_call"
    return {
        "id": request.id,
        "question_id": question["id"],
        "messages": request.messages,
        "answer": question.get("answer"),
        "domain": question.get("domain", "other"),
        "temperature": request.temperature,
        "top_p": request.top_p,
        "top_k": request.top_k,
        "model": model_name,
        "seed": request.seed,
        "sample_index": index,
        "reasoning": parsed.reasoning,
        "content": parsed.content,
        "finish_reason": finish,
        "teacher_logprobs": teacher_logprobs,
        "logprob_mode": result.logprob_mode,
        "usage": {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens},
        "meta": question.get("meta", {}),
    }


@dataclass
class GenerationOutcome:
    finish_counts: Counter = field(default_factory=Counter)  # finish reasons, plus "failed"
    tokens: int = 0
    seconds: float = 0.0


def generate_records(backend, requests: list[GenerationRequest], context: dict[str, tuple], writer: RecordWriter,
                     errors: ErrorLog, label: str, *, reasoning_format: str, model_name: str,
                     keep_logprobs: bool = True) -> GenerationOutcome:
    """Run `requests` through `backend`, writing one response record per success (as it completes)
    and one errors-file line per failure. `context[id]` is `(question, sample index)`. Closes the
    writer and the error log."""
    outcome = GenerationOutcome()
    by_id = {request.id: request for request in requests}
    progress = Progress(len(requests), label)
    try:
        for result in backend.generate(requests):
            request = by_id[result.id]
            if result.error:
                errors.log(result.id, result.error, retries=result.retries)
                outcome.finish_counts["failed"] += 1
            else:
                question, index = context[result.id]
                record = response_record(question, index, request, result, reasoning_format=reasoning_format,
                                         model_name=model_name, keep_logprobs=keep_logprobs)
                writer.write(record)
                outcome.finish_counts[record["finish_reason"]] += 1
                outcome.tokens += result.completion_tokens
            progress.update(1, result.completion_tokens)
    finally:
        progress.close()
        writer.finish()
        errors.close()
        outcome.seconds = progress.elapsed
    return outcome


def run(config: SampleConfig) -> dict[str, Any]:
    # 1. Validate every input before anything is written.
    questions = load_questions(config.input)
    keep = _shard_filter(config.shard)
    questions = [question for question in questions if keep(question["id"])]
    if config.limit:
        questions = questions[: config.limit]

    # 2. Resume: ids already in the output are done; a torn last line is cut off.
    writer = RecordWriter(config.output)
    requests, context = build_requests(questions, writer.done, schedule=config.schedule, top_p=config.top_p, top_k=config.top_k,
                                       max_new_tokens=config.max_new_tokens, seed=config.seed, system_prompt=config.system_prompt)
    expected = sum(step.n for step in config.schedule) * len(questions)
    errors = ErrorLog(sidecar(config.output, "errors", ".jsonl"))
    errors.reset()
    dump_config(config, sidecar(config.output, "config", ".yaml"))

    backend_stats: dict[str, Any] = {}
    outcome = GenerationOutcome()
    if requests:
        backend = make_backend(config.backend, chat_template_kwargs=config.chat_template_kwargs,
                               prompt_format=config.prompt_format, reasoning_format=config.reasoning_format)
        try:
            outcome = generate_records(backend, requests, context, writer, errors, f"sample [{config.backend.name}]",
                                       reasoning_format=config.reasoning_format, model_name=config.model_name or config.backend.model)
        finally:
            backend_stats = backend.stats()
            backend.close()
    else:
        writer.finish()
    finish_counts, tokens, elapsed = outcome.finish_counts, outcome.tokens, outcome.seconds

    written = sum(count for reason, count in finish_counts.items() if reason != "failed")
    summary = {
        "stage": "sample",
        "output": config.output,
        "questions": len(questions),
        "responses_expected": expected,
        "responses_already_done": expected - len(requests),
        "responses_written": written,
        "failed": finish_counts.get("failed", 0),
        "finish_reasons": {reason: count for reason, count in sorted(finish_counts.items()) if reason != "failed"},
        "completion_tokens": tokens,
        "seconds": round(elapsed, 3),
        "responses_per_s": round(written / elapsed, 3) if elapsed else 0.0,
        "tokens_per_s": round(tokens / elapsed, 1) if elapsed else 0.0,
        "torn_bytes_repaired": writer.repaired_bytes,
        "backend": {"name": config.backend.name, **backend_stats},
    }
    write_json_atomic(sidecar(config.output, "summary", ".json"), summary)
    rows = [
        ("questions", len(questions)),
        ("responses expected", expected),
        ("already done (skipped)", expected - len(requests)),
        ("written this run", written),
        *((f"  finish={reason}", count) for reason, count in summary["finish_reasons"].items()),
        ("failed (see errors file)", summary["failed"]),
        ("completion tokens", tokens),
        ("seconds", round(elapsed, 2)),
        ("responses/s", summary["responses_per_s"]),
        ("tokens/s", summary["tokens_per_s"]),
    ]
    if "retries" in backend_stats:
        rows.append(("retries", backend_stats["retries"]))
    print(format_summary(f"dasd sample -> {config.output}", rows), file=sys.stdout, flush=True)
    return summary
