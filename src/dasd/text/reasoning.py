"""Split a generated text into `reasoning` and `content`, and carry token offsets across the split.

Three teacher formats are understood:

* think tags — `<think>\\n{reasoning}\\n</think>\\n\\n{answer}`; the opening tag may have been put in
  the prompt by the chat template (`prefilled_open`), and a truncated response has no closing tag;
* separate fields — a server's `reasoning_content` / `reasoning` beside `content`;
* gpt-oss harmony — `analysis` channel -> reasoning, `final` channel -> content; a message with a
  recipient (`to=functions.x`) or ending in `<|call|>` is a tool call (`finish_reason: tool_call`).

With `none` (an instruct teacher that writes no think block) the whole text is the answer: `reasoning` is
empty and the chain of thought is in `content`. `dasd sample` records the format on each response
(`reasoning_format`), so later stages score, filter and train such a response on its answer
(`dasd.data.records.reasoning_in_answer`, `dasd.data.records.assistant_text`).

Every parser returns a `ParsedResponse` whose `segments` say which characters of the raw text
became which characters of `reasoning` / `content`. `map_token_offsets` uses them to turn the
raw-text character span of each generated token into offsets into the stored strings, so that
`reasoning[start:end]` is exactly the text of that token (clipped to the part). Tokens that fall
only on tags, channel headers or the whitespace around the parts belong to neither part and are
dropped from `teacher_logprobs`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
# Text that looks like a tool call in a Qwen/Hermes-style answer.
TOOL_CALL_MARKERS = ("<tool_call>", "<|tool_call|>", "<function_call>", "<|python_tag|>")
PARTS = ("reasoning", "content")  # the two texts a response is split into (the one copy; records re-exports it)
REASONING_FORMATS = ("think", "harmony", "none")  # how a teacher writes its reasoning (`parse_response`)


@dataclass
class Segment:
    """Characters `raw[raw_start:raw_end]` are `part[part_start:part_start + raw_end - raw_start]`."""

    part: str
    raw_start: int
    raw_end: int
    part_start: int


@dataclass
class ParsedResponse:
    reasoning: str
    content: str
    finish_reason: str
    segments: list[Segment] = field(default_factory=list)
    has_open_tag: bool = False
    has_close_tag: bool = False


def _strip_span(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _looks_like_tool_call(content: str) -> bool:
    return any(marker in content for marker in TOOL_CALL_MARKERS)


def parse_think(raw: str, *, prefilled_open: bool = False, finish_reason: str = "stop") -> ParsedResponse:
    """Parse `<think>…</think>` text. `finish_reason` is what the generator reported (stop/length).

    - opening tag in the text (after optional whitespace) or put in the prompt (`prefilled_open`):
      reasoning runs to `</think>`, or to the end when the response was cut before closing it;
    - a closing tag without an opening one (template prefilled it without saying so): everything
      before it is reasoning;
    - no tags at all: there is no reasoning, everything is content.
    """
    reasoning_start = None
    stripped_left = len(raw) - len(raw.lstrip())
    has_open = raw.startswith(THINK_OPEN, stripped_left)
    if has_open:
        reasoning_start = stripped_left + len(THINK_OPEN)
    elif prefilled_open:
        reasoning_start = 0
    close_at = raw.find(THINK_CLOSE, reasoning_start or 0)
    if reasoning_start is None and close_at >= 0:
        reasoning_start = 0
    segments: list[Segment] = []
    if reasoning_start is None:
        r_start = r_end = 0
        c_start, c_end = _strip_span(raw, 0, len(raw))
    elif close_at < 0:
        r_start, r_end = _strip_span(raw, reasoning_start, len(raw))
        c_start = c_end = len(raw)
    else:
        r_start, r_end = _strip_span(raw, reasoning_start, close_at)
        c_start, c_end = _strip_span(raw, close_at + len(THINK_CLOSE), len(raw))
    if r_end > r_start:
        segments.append(Segment("reasoning", r_start, r_end, 0))
    if c_end > c_start:
        segments.append(Segment("content", c_start, c_end, 0))
    content = raw[c_start:c_end]
    if _looks_like_tool_call(content):
        finish_reason = "tool_call"
    return ParsedResponse(
        reasoning=raw[r_start:r_end],
        content=content,
        finish_reason=finish_reason,
        segments=segments,
        has_open_tag=has_open or prefilled_open,
        has_close_tag=close_at >= 0,
    )


# --- harmony (gpt-oss) -----------------------------------------------------------------------

HARMONY_START = "<|start|>"
HARMONY_CHANNEL = "<|channel|>"
HARMONY_MESSAGE = "<|message|>"
HARMONY_ENDS = ("<|end|>", "<|return|>", "<|call|>")  # the tokens that end a harmony message
_HARMONY_END_RE = re.compile("|".join(map(re.escape, HARMONY_ENDS)))
_RECIPIENT_RE = re.compile(r"\bto=(\S+)")


def parse_harmony(raw: str, *, finish_reason: str = "stop", joiner: str = "\n\n") -> ParsedResponse:
    """Parse the assistant side of a harmony conversation (the text after `<|start|>assistant`).

    Several analysis messages are joined with `joiner` into one reasoning string; likewise for
    final messages. Commentary without a recipient (a preamble shown to the user) counts as
    reasoning. A message addressed to a tool, or ending in `<|call|>`, makes the response a tool call.
    """
    position, length = 0, len(raw)
    pieces: dict[str, list[tuple[int, int]]] = {"reasoning": [], "content": []}
    tool_call = False
    ended_with = None
    while position < length:
        message_at = raw.find(HARMONY_MESSAGE, position)
        if message_at < 0:
            break  # a header without a body: the text was cut inside a header
        header = raw[position:message_at]
        body_start = message_at + len(HARMONY_MESSAGE)
        end_match = _HARMONY_END_RE.search(raw, body_start)
        body_end = end_match.start() if end_match else length
        ended_with = end_match.group(0) if end_match else None
        channel = ""
        if HARMONY_CHANNEL in header:
            channel = (
                header.split(HARMONY_CHANNEL, 1)[1].split()[0] if header.split(HARMONY_CHANNEL, 1)[1].split() else ""
            )
            channel = channel.split("<|")[0]
        recipient = _RECIPIENT_RE.search(header)
        if recipient or ended_with == "<|call|>":
            tool_call = True
        elif channel == "final":
            pieces["content"].append((body_start, body_end))
        elif channel in ("analysis", "commentary", ""):
            pieces["reasoning"].append((body_start, body_end))
        position = end_match.end() if end_match else length
        if raw.startswith(HARMONY_START, position):
            # next header: `<|start|>assistant<|channel|>...`
            position += len(HARMONY_START)
    segments: list[Segment] = []
    texts: dict[str, str] = {}
    for part in PARTS:
        chunks = []
        cursor = 0
        for start, end in pieces[part]:
            start, end = _strip_span(raw, start, end)
            if end <= start:
                continue
            if chunks:
                cursor += len(joiner)
            segments.append(Segment(part, start, end, cursor))
            chunks.append(raw[start:end])
            cursor += end - start
        texts[part] = joiner.join(chunks)
    segments.sort(key=lambda segment: segment.raw_start)
    if tool_call:
        finish_reason = "tool_call"
    elif ended_with == "<|return|>":
        finish_reason = "stop"
    return ParsedResponse(
        reasoning=texts["reasoning"],
        content=texts["content"],
        finish_reason=finish_reason,
        segments=segments,
        has_open_tag=True,
        has_close_tag=bool(pieces["content"]),
    )


def parse_fields(
    raw: str | None, reasoning: str | None, content: str | None, *, finish_reason: str = "stop"
) -> ParsedResponse:
    """A server returned reasoning and content as separate fields; find them in the raw token text.

    `raw` is the text rebuilt from the returned tokens (or None when no tokens came back). Each part
    is searched for in order, so its offsets can still be mapped; a part that cannot be found in the
    raw text gets no segment (its tokens are then dropped, and `teacher_logprobs` is incomplete).
    """
    reasoning = (reasoning or "").strip()
    content = (content or "").strip()
    segments: list[Segment] = []
    if raw is not None:
        cursor = 0
        for part, text in (("reasoning", reasoning), ("content", content)):
            if not text:
                continue
            found = raw.find(text, cursor)
            if found >= 0:
                segments.append(Segment(part, found, found + len(text), 0))
                cursor = found + len(text)
    if _looks_like_tool_call(content):
        finish_reason = "tool_call"
    return ParsedResponse(
        reasoning=reasoning,
        content=content,
        finish_reason=finish_reason,
        segments=segments,
        has_open_tag=bool(reasoning),
        has_close_tag=bool(content),
    )


def parse_response(raw: str, fmt: str, *, finish_reason: str = "stop", prefilled_open: bool = False) -> ParsedResponse:
    """Dispatch on the configured reasoning format: `think`, `harmony` or `none` (no reasoning: the whole text is
    the answer, and the chain of thought is in it)."""
    if fmt == "think":
        return parse_think(raw, prefilled_open=prefilled_open, finish_reason=finish_reason)
    if fmt == "harmony":
        return parse_harmony(raw, finish_reason=finish_reason)
    if fmt == "none":
        start, end = _strip_span(raw, 0, len(raw))
        segments = [Segment("content", start, end, 0)] if end > start else []
        return ParsedResponse("", raw[start:end], finish_reason, segments)
    raise ValueError(f"unknown reasoning format {fmt!r} (expected {', '.join(REASONING_FORMATS)})")


def map_token_offsets(
    token_spans: list[tuple[int, int]], logprobs: list[float], parsed: ParsedResponse
) -> dict[str, dict[str, list]]:
    """Raw-text character spans of tokens -> `teacher_logprobs` with offsets into reasoning/content.

    A token is given to the segment it overlaps most (ties: the earlier one) and its span is clipped
    to that segment, so `part[start:end]` is always a substring of the stored part. Tokens that
    overlap no segment (tags, headers, surrounding whitespace, EOS) are left out.
    """
    result = {part: {"offsets": [], "logprobs": []} for part in PARTS}
    segments = sorted(parsed.segments, key=lambda segment: segment.raw_start)
    first_candidate = 0
    for (start, end), logprob in zip(token_spans, logprobs):
        while first_candidate < len(segments) and segments[first_candidate].raw_end <= start:
            first_candidate += 1
        best, best_overlap = None, 0
        index = first_candidate
        while index < len(segments) and segments[index].raw_start < end:
            segment = segments[index]
            overlap = min(end, segment.raw_end) - max(start, segment.raw_start)
            if overlap > best_overlap:
                best, best_overlap = segment, overlap
            index += 1
        if best is None:
            continue
        clipped_start = max(start, best.raw_start) - best.raw_start + best.part_start
        clipped_end = min(end, best.raw_end) - best.raw_start + best.part_start
        result[best.part]["offsets"].append([clipped_start, clipped_end])
        result[best.part]["logprobs"].append(float(logprob))
    return result
