"""The records that flow between stages — the data contract, in code.

Every file dasd reads or writes is JSON Lines of one of these record types. Each stage only *adds*
fields to the records it reads, so a record further down the pipeline is also a valid record of
every earlier type:

    Question ──sample──▶ Response ──score──▶ ScoredResponse ──filter──▶ FilteredResponse
        ──select──▶ (same, with `select`) ──build-sft──▶ SFTRecord ──train
    Question ──eval──▶ Response (samples.jsonl) + EvalResult (results.jsonl)

They are `TypedDict`s rather than pydantic models on purpose: records are plain JSON objects that
round-trip through files unchanged (user fields such as `meta` or a benchmark's `choices` pass
through untouched), and a stage's hot loop over millions of records with token log-prob arrays
should not pay for a model instance per record. Validation happens once, where a file is read
(`normalize_question`, `check_fields`): a bad record stops the run with one line naming the file,
line and field, and past that point code indexes fields directly (`record["reasoning"]`) instead of
guessing with `.get(...) or ""`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from typing import Any, Literal

from typing_extensions import NotRequired, TypedDict  # typing's own lacks NotRequired before 3.11

from ..errors import ConfigError, InputError
from ..text.reasoning import (
    PARTS,  # a response's two texts: defined by the parser that splits a response into them
    REASONING_FORMATS,
)
from ..text.render import think_text

DOMAINS = ("math", "code", "science", "instruction", "other")
ROLES = ("system", "developer", "user", "assistant", "tool")
FINISH_REASONS = ("stop", "length", "tool_call", "error")
# Sentence classes of `dasd score` (two models) and of `dasd provenance` (three models).
SENTENCE_TYPES = ("teacher", "student", "shared")
PROVENANCE_CLASSES = ("teacher", "student", "shared", "boosted")

Domain = Literal["math", "code", "science", "instruction", "other"]
FinishReason = Literal["stop", "length", "tool_call", "error"]
ReasoningFormat = Literal["think", "harmony", "none"]  # REASONING_FORMATS


class Message(TypedDict):
    role: str  # one of ROLES
    content: str


class Question(TypedDict):
    """A question to answer: input of `dasd sample` and of `dasd eval` (benchmarks)."""

    id: str
    messages: list[Message]  # the prompt; never ends with an assistant turn
    answer: str | None  # reference answer, when known
    domain: Domain
    meta: dict[str, Any]
    choices: NotRequired[list[str]]  # multiple choice: the options, shown to the model


class TokenLogprobs(TypedDict):
    """One model's tokens over one part of a response."""

    offsets: list[list[int]]  # [start, end) character span of each token in the part's text
    logprobs: list[float]  # natural-log probability of each token (raw distribution: T=1, no top-k/p)


class PartLogprobs(TypedDict):
    reasoning: TokenLogprobs
    content: TokenLogprobs


class Usage(TypedDict):
    prompt_tokens: int
    completion_tokens: int


class Response(TypedDict):
    """One sampled answer (`dasd sample`, `dasd eval` samples, `dasd mix` rollouts)."""

    id: str  # response_id(question_id, temperature, sample_index): re-running never changes it
    question_id: str
    messages: list[Message]  # the prompt as sent
    answer: str | None
    domain: Domain
    temperature: float | None  # None for the released data
    top_p: float | None
    top_k: NotRequired[int]
    model: str
    seed: int | None
    sample_index: NotRequired[int]
    reasoning: str  # the text inside the think block / analysis channel, no tags ("" when none)
    content: str  # the final answer ("" when none)
    # how the teacher wrote its reasoning (`dasd sample`'s reasoning_format); absent (older records, the released
    # data, eval samples): think. With none an empty `reasoning` is expected: the chain of thought is the answer
    # (`reasoning_in_answer`)
    reasoning_format: NotRequired[ReasoningFormat]
    finish_reason: FinishReason
    teacher_logprobs: PartLogprobs | None
    logprob_mode: NotRequired[Literal["raw", "processed"]]
    # every parameter the sample was drawn with, as sent: temperature, top_p, top_k (-1 = off), min_p,
    # repetition/presence/frequency penalties, seed, max_tokens — never a server's defaults
    sampling: NotRequired[dict[str, Any] | None]
    usage: NotRequired[Usage]
    meta: NotRequired[dict[str, Any]]
    source: NotRequired[str]  # "released" for rows of the released data


class Sentence(TypedDict):
    part: Literal["reasoning", "content"]
    start: int  # character span in the part
    end: int
    teacher_logprob: float  # mean token log-prob: p = exp(logprob) is the geometric-mean token probability
    student_logprob: float
    type: Literal["teacher", "student", "shared"]


class DasCounts(TypedDict):
    teacher: int
    student: int
    shared: int
    n: int


class ScoredResponse(Response):
    """After `dasd score`."""

    sentences: list[Sentence]
    das: DasCounts
    student_model: str


class FilterVerdict(TypedDict):
    keep: bool
    reason: str | None  # snake_case reason of a rejection


class FilteredResponse(ScoredResponse):
    """After `dasd filter` (kept records; rejected ones go to the side file with keep=false). `dasd filter`
    also accepts unscored responses, which then lack `sentences`/`das`."""

    filter: FilterVerdict


class SFTRecord(TypedDict):
    """Input of `dasd train` (`dasd build-sft` and `dasd mix` write them)."""

    id: str
    # system prompt, question turns, assistant turn "<think>\n…\n</think>\n\n…" (`assistant_text`: the answer alone
    # for a response whose chain of thought is its answer)
    messages: list[Message]
    weight: float  # per-sample loss weight
    stage: str  # training stage: low_temp, high_temp, mixed_policy (dasd.naming)
    source: str  # dasd, mixed_policy, off_policy, …
    question_id: NotRequired[str | None]
    temperature: NotRequired[float | None]
    answer: NotRequired[str | None]
    domain: NotRequired[str | None]
    loss_mask_prefix_chars: NotRequired[int]  # mixed policy: characters of the student-written prefix
    # build-sft sentence_weights: [start, end, weight] character spans of the assistant turn (other characters: 1)
    loss_weight_spans: NotRequired[list[list[float]]]


class EvalResult(TypedDict):
    """One graded sample of `dasd eval` (`<output_dir>/<benchmark>/results.jsonl`)."""

    id: str
    question_id: str
    answer: str | None
    predicted: str | None  # the extracted final answer
    correct: bool  # a truncated response is never correct
    truncated: bool
    finish_reason: str
    reason: str | None  # why it is wrong when that is not simply another answer (no_answer, truncated, …)
    completion_tokens: int | None
    reasoning_gym_score: NotRequired[float]


def reasoning_in_answer(record: dict[str, Any]) -> bool:
    """Whether a response's chain of thought is its answer: it was sampled with `reasoning_format: none` (an
    instruct teacher that writes no think block) and has no separate reasoning. `dasd score` then scores the
    answer's sentences, `dasd filter` does not reject it as `empty_reasoning`, and `dasd build-sft` trains on the
    answer alone (`assistant_text`). The choice is the record's, not a stage option: the records carry the format
    they were sampled in, so every stage of a recipe agrees without being told, and a think-format response
    without reasoning (a teacher or template that failed to open the block) stays an error.

    >>> reasoning_in_answer({"reasoning": "", "content": "2 + 2 = 4.", "reasoning_format": "none"})
    True
    >>> reasoning_in_answer({"reasoning": "", "content": "2 + 2 = 4."})  # no format: think, and reasoning is missing
    False
    """
    return record.get("reasoning_format") == "none" and not record["reasoning"].strip()


def assistant_text(reasoning: str, content: str) -> tuple[str, int, int]:
    """The assistant text a student is trained on for a response, and where reasoning and content start in it:
    `<think>\\n{reasoning}\\n</think>\\n\\n{content}` (`dasd.text.render.think_text`), or the answer alone when
    there is no reasoning (a `reasoning_format: none` teacher, whose chain of thought is its answer).

    Not an empty think block: that is text the teacher never wrote, and it would teach the student to close its
    reasoning at once and then reason in the answer, outside the block. Trained on the answer alone, the student
    learns to answer as the teacher did (a student whose chat template opens `<think>` itself then reasons inside
    the block the template opened). Scoring and the length filter should see the same text, so that the student's
    log-probs and lengths are those of what it is trained on.

    >>> assistant_text("Two and two.", "4")
    ('<think>\\nTwo and two.\\n</think>\\n\\n4', 8, 31)
    >>> assistant_text("", "2 + 2 = 4, so the answer is 4.")
    ('2 + 2 = 4, so the answer is 4.', 0, 0)
    """
    if not reasoning:
        return content, 0, 0
    return think_text(reasoning, content)


# Fields a stage needs from each record it reads, checked where the file is read.
RESPONSE_FIELDS = ("id", "question_id", "messages", "reasoning", "content", "finish_reason")


def check_fields(record: dict[str, Any], fields: tuple[str, ...], *, path: str, line: int | None) -> None:
    """Raise `InputError` (file, line, field) when `record` lacks one of `fields`, when a text part
    (`reasoning`, `content`) is not a string, when `finish_reason` is not one of FINISH_REASONS, or when the record
    names a `reasoning_format` that is not one of REASONING_FORMATS.

    >>> check_fields({"id": "a", "reasoning": "r"}, ("id", "reasoning"), path="x.jsonl", line=3)
    >>> check_fields({"id": "a"}, ("id", "content"), path="x.jsonl", line=3)
    Traceback (most recent call last):
    ...
    dasd.errors.InputError: x.jsonl:3: field 'content': missing
    """
    for field in fields:
        if field not in record:
            raise InputError(path, line, field, "missing")
        if field in PARTS and not isinstance(record[field], str):
            raise InputError(path, line, field, f"must be a string (got {type(record[field]).__name__})")
        if field == "finish_reason" and record[field] not in FINISH_REASONS:
            raise InputError(path, line, field, f"must be one of {', '.join(FINISH_REASONS)} (got {record[field]!r})")
    if record.get("reasoning_format", "think") not in REASONING_FORMATS:
        message = f"must be one of {', '.join(REASONING_FORMATS)} (got {record['reasoning_format']!r})"
        raise InputError(path, line, "reasoning_format", message)


def parse_shard(spec: str | None, *, from_launcher: bool = False) -> tuple[int, int] | None:
    """`"i/n"` -> (i, n); None when not sharded. With `from_launcher`, an unset spec falls back to the
    RANK / WORLD_SIZE that accelerate and torchrun set.

    >>> parse_shard("1/4")
    (1, 4)
    >>> parse_shard(None) is None
    True
    """
    if spec:
        index, count = (int(part) for part in spec.split("/"))
    elif from_launcher and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        index, count = int(os.environ.get("RANK", "0")), int(os.environ["WORLD_SIZE"])
    else:
        return None
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"shard={index}/{count}: expected i/n with 0 <= i < n")
    return index, count


def in_shard(record_id: str, shard: tuple[int, int] | None) -> bool:
    """Whether a record belongs to shard (i, n): its id's stable hash modulo n is i.

    >>> sum(in_shard(f"q{k}", (0, 2)) for k in range(100)) + sum(in_shard(f"q{k}", (1, 2)) for k in range(100))
    100
    """
    if shard is None:
        return True
    return int(stable_hash(record_id, length=8), 16) % shard[1] == shard[0]


def stable_hash(*parts: Any, length: int = 16) -> str:
    """Hex digest of the JSON of `parts`: the same inputs give the same string on every machine."""
    blob = json.dumps(parts, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:length]


def stable_seed(*parts: Any) -> int:
    """A 63-bit seed derived from `parts` (so each sample has its own reproducible random stream)."""
    return int(stable_hash(*parts, length=16), 16) & ((1 << 63) - 1)


def response_id(question_id: str, temperature: float, index: int) -> str:
    """Deterministic response id from (question id, temperature, sample index); reruns never change it."""
    return f"{question_id}:t{float(temperature):g}:{index}"


def normalize_question(
    record: dict[str, Any], *, path: str = "<input>", line: int | None = None, defaulted: Counter | None = None
) -> Question:
    """Validate one question record and return it in canonical form; `InputError` names the field. A missing `id`
    becomes the hash of the prompt and a missing `domain` `other`; `defaulted` (when given) counts each ("id",
    "domain"), so that `dasd sample` can say how many questions it gave one.

    >>> defaulted = Counter()
    >>> normalize_question({"prompt": "What is 2 + 2?"}, defaulted=defaulted)["domain"], dict(defaulted)
    ('other', {'id': 1, 'domain': 1})
    """

    def fail(field: str, message: str) -> InputError:
        return InputError(path, line, field, message)

    if "messages" in record and record["messages"] is not None:
        messages = record["messages"]
        if not isinstance(messages, list) or not messages:
            raise fail("messages", "must be a non-empty list of {role, content}")
        clean = []
        for position, message in enumerate(messages):
            if not isinstance(message, dict):
                raise fail(f"messages[{position}]", "must be an object with 'role' and 'content'")
            role, content = message.get("role"), message.get("content")
            if role not in ROLES:
                raise fail(f"messages[{position}].role", f"must be one of {', '.join(ROLES)} (got {role!r})")
            if not isinstance(content, str):
                raise fail(f"messages[{position}].content", "must be a string")
            clean.append({"role": role, "content": content})
        if clean[-1]["role"] == "assistant":
            raise fail("messages", "the prompt must not end with an assistant turn")
    elif "prompt" in record:
        prompt = record["prompt"]
        if not isinstance(prompt, str) or not prompt.strip():
            raise fail("prompt", "must be a non-empty string")
        clean = [{"role": "user", "content": prompt}]
    else:
        raise fail("messages", "missing: give 'messages' (list of {role, content}) or 'prompt' (string)")

    question_id = record.get("id", record.get("uuid"))
    if question_id is None:
        # A file without ids still gets stable ones: the hash of the prompt.
        question_id = "q-" + stable_hash(clean, length=12)
        if defaulted is not None:
            defaulted["id"] += 1
    elif not isinstance(question_id, (str, int)) or isinstance(question_id, bool) or str(question_id) == "":
        raise fail("id", "must be a non-empty string")

    domain = record.get("domain") or "other"
    if defaulted is not None and not record.get("domain"):
        defaulted["domain"] += 1
    if domain not in DOMAINS:
        raise fail("domain", f"must be one of {', '.join(DOMAINS)} (got {domain!r})")
    meta = record.get("meta") or {}
    if not isinstance(meta, dict):
        raise fail("meta", "must be an object")
    answer = record.get("answer")
    if answer is not None and not isinstance(answer, str):
        answer = json.dumps(answer) if isinstance(answer, (list, dict)) else str(answer)
    question = {"id": str(question_id), "messages": clean, "answer": answer, "domain": domain, "meta": meta}
    for extra in ("choices",):
        if extra in record:
            question[extra] = record[extra]
    return question


def load_questions(path: str, *, defaulted: Counter | None = None) -> list[Question]:
    """Read and validate every question of a file before any work starts (duplicate ids are errors; rows of
    the released data repeat their question once per response, and each question is kept once). `defaulted`
    (when given) counts the questions given an id or a domain because they had none (`normalize_question`; a
    released row's domain that is missing or not one of DOMAINS counts too)."""
    from .io import read_records

    questions, seen = [], {}
    for line, record in read_records(path):
        released = is_released_row(record)
        if released:
            question, _ = released_row_to_records(record, path=path, line=line)
        else:
            question = normalize_question(record, path=path, line=line, defaulted=defaulted)
        if released and question["id"] in seen:
            continue  # another response to a question already read
        if released and defaulted is not None and str(record.get("domain") or "").lower() not in DOMAINS:
            defaulted["domain"] += 1  # `_released_domain` made it `other`
        if question["id"] in seen:
            raise InputError(
                path, line, "id", f"duplicate id {question['id']!r} (first on line {seen[question['id']]})"
            )
        seen[question["id"]] = line
        questions.append(question)
    return questions


COUNTED_JSONL_BYTES = 1 << 30  # record_count scans a JSONL file this size or smaller


def record_count(path: str) -> int | None:
    """How many records an input holds, where that is known without parsing them: the rows of a Parquet file or
    output folder (their metadata), the lines of a plain JSONL file up to `COUNTED_JSONL_BYTES` (a byte scan in
    1 MiB blocks; a blank line counts too); None for anything else (gzip, a glob, a saved or Hub dataset, a larger
    JSONL file: at report scale a responses file is ~344 GB, and reading it once more for a bar's total would cost
    minutes of I/O) — a progress bar's total.

    >>> record_count("/nonexistent.jsonl") is None
    True
    """
    from pathlib import Path

    from .shards import parquet_parts

    file = Path(path)
    if any(char in path for char in "*?[") or path.startswith("hf://") or not file.exists():
        return None
    if file.is_dir() or file.suffix == ".parquet":
        import pyarrow.parquet as pq

        parts = parquet_parts(file) if file.is_dir() else [file]
        return sum(pq.ParquetFile(part).metadata.num_rows for part in parts) if parts else None
    if file.name.endswith(".gz") or file.stat().st_size > COUNTED_JSONL_BYTES:
        return None
    lines, last = 0, b"\n"
    with open(file, "rb") as handle:
        while block := handle.read(1 << 20):
            lines += block.count(b"\n")
            last = block[-1:]
    return lines + (last != b"\n")


# --- the released DASD data (Superior-Reasoning-SFT-gpt-oss-120b) ------------------------------


def is_released_row(record: dict[str, Any]) -> bool:
    return "uuid" in record and "input" in record and "output" in record and "messages" not in record


def released_row_to_records(
    record: dict[str, Any], *, path: str = "<input>", line: int | None = None, model: str = "gpt-oss-120b"
) -> tuple[Question, Response]:
    """One released row `{uuid, input, output, domain, meta}` -> (question record, response record).

    `output` is `<think>\\n{reasoning}\\n</think>\\n\\n{answer}`; the response id is the row's
    uuid, which is what the `-Logprob` release's `sample_uuid` refers to. The release has one uuid per
    *response* and several responses per question, so the question id is the hash of the question's
    normalised text (`released_question_id`): responses to one question share it, and DAS selects
    among them.
    """
    from ..text.reasoning import parse_think

    uuid, prompt, output = record.get("uuid"), record.get("input"), record.get("output")
    if not isinstance(uuid, str) or not uuid:
        raise InputError(path, line, "uuid", "must be a non-empty string")
    if isinstance(prompt, list):
        question = normalize_question(
            {"id": uuid, "messages": prompt, "domain": _released_domain(record), "meta": record.get("meta")},
            path=path,
            line=line,
        )
    elif isinstance(prompt, str) and prompt.strip():
        question = normalize_question(
            {"id": uuid, "prompt": prompt, "domain": _released_domain(record), "meta": record.get("meta")},
            path=path,
            line=line,
        )
    else:
        raise InputError(path, line, "input", "must be a non-empty string or a list of messages")
    if not isinstance(output, str):
        raise InputError(path, line, "output", "must be a string")
    question["id"] = released_question_id(question["messages"])
    meta = question["meta"]
    if "answer" in meta and question["answer"] is None:
        question["answer"] = str(meta["answer"])
    parsed = parse_think(output, prefilled_open=False)
    response = {
        "id": uuid,
        "question_id": question["id"],
        "messages": question["messages"],
        "answer": question["answer"],
        "domain": question["domain"],
        "temperature": meta.get("temperature"),
        "top_p": meta.get("top_p"),
        "model": model,
        "seed": None,
        "reasoning": parsed.reasoning,
        "content": parsed.content,
        "finish_reason": parsed.finish_reason,
        "teacher_logprobs": None,
        "source": "released",
    }
    return question, response


def released_question_id(messages: list[Message]) -> str:
    """The id of a released question: the hash of its turns with whitespace runs collapsed, so that the
    responses to one question (one uuid each in the release) group together.

    >>> released_question_id([{"role": "user", "content": "What is 2 + 2?"}]) == released_question_id(
    ...     [{"role": "user", "content": "  What is 2 +  2? "}])
    True
    """
    turns = [(message["role"], " ".join(message["content"].split())) for message in messages]
    return "q-" + stable_hash(turns, length=16)


def _released_domain(record: dict[str, Any]) -> str:
    domain = str(record.get("domain") or "other").lower()
    return domain if domain in DOMAINS else "other"
