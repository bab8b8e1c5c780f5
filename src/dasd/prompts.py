"""Render a request's prompt with a tokenizer's chat template, the same way for every backend."""

from __future__ import annotations

from typing import Any


def render_chat_prompt(
    tokenizer,
    messages: list[dict[str, str]],
    *,
    assistant_prefix: str | None = None,
    chat_template_kwargs: dict[str, Any] | None = None,
) -> tuple[list[int], bool]:
    """Prompt token ids, and whether the rendered prompt already opened `<think>` (some templates do).

    With `assistant_prefix` the assistant turn is left open after the prefix
    (`continue_final_message`), so generation continues that text.
    """
    kwargs = chat_template_kwargs or {}
    if assistant_prefix is not None:
        text = tokenizer.apply_chat_template(
            list(messages) + [{"role": "assistant", "content": assistant_prefix}],
            tokenize=False,
            add_generation_prompt=False,
            continue_final_message=True,
            **kwargs,
        )
    else:
        text = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True, **kwargs)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    prefilled = assistant_prefix is None and text.rstrip().endswith("<think>")
    return ids, prefilled
