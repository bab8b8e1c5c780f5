"""How the student sees a response: its chat template around the question, then the think-tagged answer.

The same rendering serves scoring (`dasd score`: the student's log-probs of the text it would be
trained on), the length filter and training, so all three agree token for token:

    prompt     = student chat template(system prompt + question turns, add_generation_prompt=True)
    completion = "<think>\\n{reasoning}\\n</think>\\n\\n{content}" (+ the end-of-turn token)

The prompt and the completion are tokenized separately (the completion with character offsets), so
no token straddles the two and every completion token maps back into `reasoning` or `content`.
"""

from __future__ import annotations

from dataclasses import dataclass

from .prompts import after_generation_prompt

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."
# How every think-tagged training text starts (`reasoning.THINK_OPEN` is the bare tag the parsers look for).
THINK_PREFIX = "<think>\n"


def think_text(reasoning: str, content: str) -> tuple[str, int, int]:
    """`<think>\\n{reasoning}\\n</think>\\n\\n{content}`, and where reasoning and content start in it."""
    head = THINK_PREFIX
    middle = "\n</think>\n\n"
    return head + reasoning + middle + content, len(head), len(head) + len(reasoning) + len(middle)


def with_system_prompt(messages: list[dict[str, str]], system_prompt: str | None) -> list[dict[str, str]]:
    """Replace the question's own system/developer messages by `system_prompt` (None: keep them;
    "": remove them, for a model that was used without one)."""
    if system_prompt is None:
        return list(messages)
    turns = [message for message in messages if message["role"] not in ("system", "developer")]
    return ([{"role": "system", "content": system_prompt}] if system_prompt else []) + turns


@dataclass
class StudentText:
    prompt_ids: list[int]
    completion_ids: list[int]
    completion_spans: list[tuple[int, int]]  # character span of each completion token in `completion`
    completion: str
    reasoning_start: int  # where `reasoning` starts inside `completion`
    content_start: int
    end_token: bool  # whether completion_ids ends with the end-of-turn token (it has no span)

    @property
    def length(self) -> int:
        return len(self.prompt_ids) + len(self.completion_ids)


def render_completion(
    tokenizer,
    prompt_messages: list[dict[str, str]],
    completion: str,
    *,
    add_end_token: bool = False,
    chat_template_kwargs: dict | None = None,
) -> tuple[list[int], list[int], list[tuple[int, int]], str]:
    """(prompt ids, completion ids, completion token spans, completion text) for a prompt and an
    assistant text; the end-of-turn token (no span) is appended when asked."""
    prompt = tokenizer.apply_chat_template(
        list(prompt_messages), tokenize=False, add_generation_prompt=True, **(chat_template_kwargs or {})
    )
    # A template that opens the think block itself (Qwen3-*-Thinking-2507): do not open it twice.
    completion = after_generation_prompt(prompt, completion)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    encoded = tokenizer(completion, add_special_tokens=False, return_offsets_mapping=True)
    completion_ids = list(encoded["input_ids"])
    spans = [tuple(span) for span in encoded["offset_mapping"]]
    if add_end_token and tokenizer.eos_token_id is not None:
        completion_ids.append(tokenizer.eos_token_id)
    return prompt_ids, completion_ids, spans, completion


def render_student(
    tokenizer,
    messages: list[dict[str, str]],
    reasoning: str,
    content: str,
    *,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    add_end_token: bool = False,
    chat_template_kwargs: dict | None = None,
    answer_only: bool = False,
) -> StudentText:
    """The student's view of a response: the prompt rendered by its chat template, then the assistant text.
    `answer_only`: a response whose chain of thought is its answer (`dasd.data.records.reasoning_in_answer`) is
    the answer alone, without an empty think block — the text `dasd build-sft` trains the student on."""
    if answer_only and not reasoning:
        completion, reasoning_start, content_start = content, 0, 0
    else:
        completion, reasoning_start, content_start = think_text(reasoning, content)
    prompt_ids, completion_ids, spans, rendered = render_completion(
        tokenizer,
        with_system_prompt(messages, system_prompt),
        completion,
        add_end_token=add_end_token,
        chat_template_kwargs=chat_template_kwargs,
    )
    cut = len(completion) - len(rendered)  # the template opened <think> itself
    return StudentText(
        prompt_ids, completion_ids, spans, rendered, reasoning_start - cut, content_start - cut, add_end_token
    )


def completion_part_logprobs(text: StudentText, reasoning: str, content: str, logprobs: list[float]) -> dict:
    """Per-token log-probs of the completion -> `{reasoning: {offsets, logprobs}, content: {...}}`.

    The same structure (and the same token-to-part rule, `reasoning.map_token_offsets`) as the
    teacher's `teacher_logprobs`; the end-of-turn token and the tag tokens belong to neither part.
    """
    from .reasoning import ParsedResponse, Segment, map_token_offsets

    segments = [
        Segment(part, start, start + len(value), 0)
        for part, start, value in (
            ("reasoning", text.reasoning_start, reasoning),
            ("content", text.content_start, content),
        )
        if value
    ]
    parsed = ParsedResponse(reasoning, content, "stop", segments)
    spans = list(text.completion_spans)
    return map_token_offsets(spans, logprobs[: len(spans)], parsed)
