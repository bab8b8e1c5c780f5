"""The generation loop shared by `dasd sample`, `dasd eval` and `dasd mix`: requests in, response records out.

    requests, context = build_requests(questions, writer.done, schedule=[TemperatureStep(temperature=0.6, n=4)], ...)
    outcome = generate_records(backend, requests, context, writer, errors, "sample [hf]", reasoning_format="think",
                               model_name="teacher")

One `GenerationRequest` per (question, schedule step, sample index) whose response id is not written
yet; each result becomes a `Response` record (`dasd.data.records`): the reasoning and the answer split
apart, and the model's log-prob of every generated token with its character offsets into them.
Records are written as they complete; failures go to the errors file, never to the output.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from pydantic import Field

from ..backends import GenerationRequest, GenerationResult
from ..config import StageConfig
from ..data.io import ErrorLog, RecordWriter
from ..data.records import Question, Response, response_id, stable_seed
from ..progress import Progress
from ..text.reasoning import map_token_offsets, parse_fields, parse_response


class TemperatureStep(StageConfig):
    temperature: float = Field(..., ge=0, description="sampling temperature (0 = greedy)")
    n: int = Field(..., ge=1, description="responses per question at this temperature")
    top_p: float | None = Field(None, gt=0, le=1, description="top-p for this step (default: the stage's top_p)")
    max_new_tokens: int | None = Field(None, ge=1, description="generation limit for this step (default: the stage's)")


def build_requests(
    questions: list[Question],
    done: set[str],
    *,
    schedule: list[TemperatureStep],
    top_p: float,
    top_k: int,
    max_new_tokens: int,
    seed: int,
    system_prompt: str | None,
) -> tuple[list[GenerationRequest], dict[str, tuple]]:
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
                    id=rid,
                    messages=messages,
                    temperature=step.temperature,
                    top_p=step.top_p or top_p,
                    top_k=top_k,
                    max_new_tokens=step.max_new_tokens or max_new_tokens,
                    seed=stable_seed(seed, rid),
                )
                requests.append(request)
                context[rid] = (question, index)
    return requests, context


def response_record(
    question: Question,
    index: int,
    request: GenerationRequest,
    result: GenerationResult,
    *,
    reasoning_format: str,
    model_name: str,
    keep_logprobs: bool = True,
) -> Response:
    """The `Response` record (`dasd.data.records`) for one generation result."""
    if result.server_reasoning is not None:
        parsed = parse_fields(
            result.raw_text, result.server_reasoning, result.server_content, finish_reason=result.finish_reason
        )
    else:
        text = result.raw_text if result.raw_text is not None else (result.server_content or "")
        parsed = parse_response(
            text, reasoning_format, finish_reason=result.finish_reason, prefilled_open=result.prefilled_open
        )
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
        "answer": question["answer"],
        "domain": question["domain"],
        "temperature": request.temperature,
        "top_p": request.top_p,
        "top_k": request.top_k,
        "model": model_name,
        "seed": request.seed,
        "sample_index": index,
        "reasoning": parsed.reasoning,
        "content": parsed.content,
        "finish_reason": finish,
        "reasoning_format": reasoning_format,  # with none, an empty reasoning is expected: the answer is the reasoning
        "teacher_logprobs": teacher_logprobs,
        "logprob_mode": result.logprob_mode,
        "sampling": result.sampling,
        "usage": {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens},
        "meta": question["meta"],
    }


@dataclass
class GenerationOutcome:
    finish_counts: Counter = field(default_factory=Counter)  # finish reasons, plus "failed"
    tokens: int = 0
    seconds: float = 0.0


def generate_records(
    backend,
    requests: list[GenerationRequest],
    context: dict[str, tuple],
    writer: RecordWriter,
    errors: ErrorLog,
    label: str,
    *,
    reasoning_format: str,
    model_name: str,
    keep_logprobs: bool = True,
) -> GenerationOutcome:
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
                record = response_record(
                    question,
                    index,
                    request,
                    result,
                    reasoning_format=reasoning_format,
                    model_name=model_name,
                    keep_logprobs=keep_logprobs,
                )
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
