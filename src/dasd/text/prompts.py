"""Render a request's prompt with a tokenizer's chat template, the same way for every backend.

An assistant turn that has already begun — the student's prefix the teacher continues (`dasd mix`),
or the think-tagged answer a student is trained on (`dasd.text.render`) — is never rendered as an assistant
message: real templates rewrite the last assistant message (Qwen3 renders it as
`<think>\\n{reasoning}\\n</think>\\n\\n{content}`, so a prefix without `</think>` gets an empty, closed think
block before it and the model is told that thinking is over). Instead the text is the template's
generation prompt followed by the assistant text as raw text (`after_generation_prompt`), taking care
of templates that open `<think>` themselves (Qwen3-*-Thinking-2507) and refusing those that close it
(Qwen3 hybrid with `enable_thinking: false`).
"""

from __future__ import annotations

from typing import Any

from ..errors import DasdError

THINK = "<think>"


def after_generation_prompt(prompt: str, assistant_text: str) -> str:
    """`assistant_text` as it follows the generation prompt `prompt`: a leading `<think>` (and its newline)
    is dropped when the prompt already opened one, so the block is opened exactly once.

    >>> after_generation_prompt("<|im_start|>assistant\\n<think>\\n", "<think>\\nLet me see.")
    'Let me see.'
    >>> after_generation_prompt("<|im_start|>assistant\\n", "<think>\\nLet me see.")
    '<think>\\nLet me see.'
    """
    if not assistant_text.startswith(THINK):
        return assistant_text
    stripped = prompt.rstrip()
    if stripped.endswith("</think>"):
        raise DasdError(
            "the chat template closes the think block in its generation prompt (e.g. Qwen3 with "
            "enable_thinking: false), so reasoning cannot follow it: enable thinking in chat_template_kwargs"
        )
    if not stripped.endswith(THINK):
        return assistant_text
    rest = assistant_text[len(THINK) :]
    return rest[1:] if prompt.endswith(THINK + "\n") and rest.startswith("\n") else rest


def render_chat_prompt(
    tokenizer,
    messages: list[dict[str, str]],
    *,
    assistant_prefix: str | None = None,
    chat_template_kwargs: dict[str, Any] | None = None,
) -> tuple[list[int], bool]:
    """Prompt token ids, and whether the rendered prompt already opened `<think>` (some templates do).

    With `assistant_prefix` (e.g. `<think>\\n` + the student's text) the prompt is the generation prompt
    followed by the prefix as raw text, so the model continues that text inside its reasoning.
    """
    kwargs = chat_template_kwargs or {}
    text = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True, **kwargs)
    prefilled = text.rstrip().endswith(THINK)
    if assistant_prefix is not None:
        text += after_generation_prompt(text, assistant_prefix)
        prefilled = False  # the prefix is part of the response, opening included
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids, prefilled


def check_chat_continuation(
    tokenizer, messages: list[dict[str, str]], assistant_prefix: str, **template_kwargs
) -> None:
    """Raise unless the template renders `assistant_prefix` as a continued assistant message
    (`continue_final_message`, what chat-mode servers do) exactly as generation prompt + raw prefix."""
    via_chat = tokenizer.apply_chat_template(
        [*messages, {"role": "assistant", "content": assistant_prefix}],
        tokenize=False,
        add_generation_prompt=False,
        continue_final_message=True,
        **template_kwargs,
    )
    prompt = tokenizer.apply_chat_template(
        list(messages), tokenize=False, add_generation_prompt=True, **template_kwargs
    )
    if via_chat != prompt + after_generation_prompt(prompt, assistant_prefix):
        raise DasdError(
            "mode=chat cannot continue a reasoning prefix with this chat template: it renders the prefix as a "
            "finished assistant message (e.g. Qwen3 puts an empty, closed think block before it); use "
            "mode=completions, where dasd renders generation prompt + prefix itself"
        )
