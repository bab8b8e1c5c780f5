"""The record types that flow between stages (DESIGN §3): questions in, response records out.

A *question* is normalised to `{id, messages, answer, domain, meta}`; a bare `prompt` string
becomes one user message. A *response* record carries the prompt, the teacher's reasoning and
answer, and the teacher's per-token log-probs with character offsets into those two strings.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .errors import InputError

DOMAINS = ("math", "code", "science", "instruction", "other")
ROLES = ("system", "developer", "user", "assistant", "tool")
FINISH_REASONS = ("stop", "length", "tool_call", "error")


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


def normalize_question(record: dict[str, Any], *, path: str = "<input>", line: int | None = None) -> dict[str, Any]:
    """Validate one question record and return it in canonical form; `InputError` names the field."""

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
    elif not isinstance(question_id, (str, int)) or isinstance(question_id, bool) or str(question_id) == "":
        raise fail("id", "must be a non-empty string")

    domain = record.get("domain") or "other"
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


def load_questions(path: str) -> list[dict[str, Any]]:
    """Read and validate every question of a file before any work starts (duplicate ids are errors)."""
    from .io import read_records

    questions, seen = [], {}
    for line, record in read_records(path):
        if is_released_row(record):
            question, _ = released_row_to_records(record, path=path, line=line)
        else:
            question = normalize_question(record, path=path, line=line)
        if question["id"] in seen:
            raise InputError(path, line, "id", f"duplicate id {question['id']!r} (first on line {seen[question['id']]})")
        seen[question["id"]] = line
        questions.append(question)
    return questions


# --- the released DASD data (Superior-Reasoning-SFT-gpt-oss-120b) ------------------------------

def is_released_row(record: dict[str, Any]) -> bool:
    return "uuid" in record and "input" in record and "output" in record and "messages" not in record


def released_row_to_records(
    record: dict[str, Any], *, path: str = "<input>", line: int | None = None, model: str = "gpt-oss-120b"
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One released row `{uuid, input, output, domain, meta}` -> (question record, response record).

    `output` is `<think>\\n{reasoning}\\n</think>\\n\\n{answer}`; the response id is the row's
    uuid, which is what the `-Logprob` release's `sample_uuid` refers to.
    """
    from .reasoning import parse_think

    uuid, prompt, output = record.get("uuid"), record.get("input"), record.get("output")
    if not isinstance(uuid, str) or not uuid:
        raise InputError(path, line, "uuid", "must be a non-empty string")
    if isinstance(prompt, list):
        question = normalize_question({"id": uuid, "messages": prompt, "domain": _released_domain(record), "meta": record.get("meta")}, path=path, line=line)
    elif isinstance(prompt, str) and prompt.strip():
        question = normalize_question({"id": uuid, "prompt": prompt, "domain": _released_domain(record), "meta": record.get("meta")}, path=path, line=line)
    else:
        raise InputError(path, line, "input", "must be a non-empty string or a list of messages")
    if not isinstance(output, str):
        raise InputError(path, line, "output", "must be a string")
    meta = question["meta"]
    if "answer" in meta and question["answer"] is None:
        question["answer"] = str(meta["answer"])
    parsed = parse_think(output, prefilled_open=False)
    response = {
        "id": uuid,
        "question_id": uuid,
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


def _released_domain(record: dict[str, Any]) -> str:
    domain = str(record.get("domain") or "other").lower()
    return domain if domain in DOMAINS else "other"
