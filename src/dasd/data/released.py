"""The released DASD data with its teacher log-probs, as response records ready for `dasd score`.

`Superior-Reasoning-SFT-gpt-oss-120b` rows are `{uuid, input, output, domain, meta}` with `output`
= `<think>\\n{reasoning}\\n</think>\\n\\n{answer}`; its `-Logprob` variant's rows are
`{sample_uuid, token_ids, logprobs}`: gpt-oss (o200k harmony) token ids of the same response and the
log-prob of each sampled token. The ids are decoded offline (quicktok's exact o200k vocabulary) into
text with a character span per token; the text release's reasoning and answer are then found in that
text (whatever framing — harmony channels or think tags — surrounds them), which gives every token's
offsets into `reasoning` / `content`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..text.reasoning import map_token_offsets, parse_fields
from .io import iter_records
from .records import released_row_to_records


class LogprobIndex:
    """`sample_uuid` -> (token_ids, logprobs), reading the `-Logprob` file lazily for JSONL files."""

    def __init__(self, path: str):
        self.path = Path(path)
        self.offsets: dict[str, int] = {}
        self.rows: dict[str, tuple[list[int], list[float]]] = {}
        if self.path.suffix == ".jsonl" and self.path.exists():
            # index byte offsets only: the token lists of 400K long responses do not fit in memory
            with open(self.path, "rb") as handle:
                position = 0
                for line_number, line in enumerate(handle, start=1):
                    if line.strip():
                        uuid = _sample_uuid(line, path, line_number)
                        self.offsets[uuid] = position
                    position += len(line)
        else:
            for line_number, row in iter_records(path):
                self.rows[str(row.get("sample_uuid"))] = _validated(row, path, line_number)

    def get(self, uuid: str) -> tuple[list[int], list[float]] | None:
        if uuid in self.rows:
            return self.rows[uuid]
        position = self.offsets.get(uuid)
        if position is None:
            return None
        with open(self.path, "rb") as handle:
            handle.seek(position)
            return _validated(json.loads(handle.readline()), str(self.path), None)


def _sample_uuid(line: bytes, path: str, line_number: int) -> str:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InputError(path, line_number, None, f"invalid JSON ({exc.msg})") from None
    if not isinstance(row, dict) or not row.get("sample_uuid"):
        raise InputError(path, line_number, "sample_uuid", "missing")
    return str(row["sample_uuid"])


def _validated(row: dict[str, Any], path: str, line_number: int | None) -> tuple[list[int], list[float]]:
    token_ids, logprobs = row.get("token_ids"), row.get("logprobs")
    if not isinstance(token_ids, list) or not isinstance(logprobs, list):
        raise InputError(path, line_number, "token_ids", "token_ids and logprobs must be lists")
    if len(token_ids) != len(logprobs):
        raise InputError(path, line_number, "logprobs", f"{len(logprobs)} log-probs for {len(token_ids)} tokens")
    return [int(token) for token in token_ids], [float(value) for value in logprobs]


def iter_released_responses(
    text_path: str, logprob_path: str, *, tokenizer: str = "o200k_harmony"
) -> Iterator[tuple[dict[str, Any], str | None]]:
    """Yield `(response record, error)` for every text row; error names why its log-probs could not be joined."""
    from ..models.assets import load_tokenizer
    from ..text.tokens import TokenBytes

    table = TokenBytes(load_tokenizer(tokenizer))
    index = LogprobIndex(logprob_path)
    for line_number, row in iter_records(text_path):
        _, response = released_row_to_records(row, path=text_path, line=line_number)
        joined = index.get(response["id"])
        if joined is None:
            yield response, "no_logprobs: sample_uuid not in the -Logprob file"
            continue
        token_ids, logprobs = joined
        if any(math.isnan(value) for value in logprobs):
            yield response, "teacher_logprob_nan"
            continue
        raw, spans = table.text_and_spans(token_ids)
        parsed = parse_fields(raw, response["reasoning"], response["content"], finish_reason=response["finish_reason"])
        found = {segment.part for segment in parsed.segments}
        missing = [part for part in ("reasoning", "content") if response[part] and part not in found]
        if missing:
            yield (
                response,
                f"logprob_text_mismatch: the decoded tokens do not contain the {' and '.join(missing)} of "
                "the text release",
            )
            continue
        response["teacher_logprobs"] = map_token_offsets(spans, logprobs, parsed)
        response["logprob_mode"] = "raw"
        yield response, None
