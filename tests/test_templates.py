"""Training text, scoring, the length filter and teacher continuations with the models' REAL chat
templates (tests/real_templates.py): the property under test is how a real template renders, so no
reduced stand-in is used here."""

from __future__ import annotations

import pytest

from dasd.errors import DasdError
from dasd.selection.filters import student_length
from dasd.stages.build_sft import BuildSFTConfig, sft_record
from dasd.text.prompts import check_chat_continuation, render_chat_prompt
from dasd.text.render import DEFAULT_SYSTEM_PROMPT, render_student
from dasd.training.sft import prepare_examples

from .real_templates import real_tokenizer

STUDENTS = ["qwen3", "qwen3-thinking-2507", "llama-3.1", "smollm2"]
QUESTION = [{"role": "user", "content": "What is 17 + 25?"}]
REASONING = "I add 17 and 25.\n\nThat gives 42. Let me check: 42 - 25 = 17."
CONTENT = "The answer is $\\boxed{42}$."
PREFIX = "I add 17 and 25. That gives 42."


def _response() -> dict:
    return {
        "id": "r",
        "question_id": "q",
        "messages": QUESTION,
        "reasoning": REASONING,
        "content": CONTENT,
        "finish_reason": "stop",
        "temperature": 0.6,
    }


@pytest.mark.parametrize("name", STUDENTS)
def test_training_text_is_the_templates_own_rendering_of_the_answer(name):
    """What the student is scored and trained on is exactly what its template renders for the conversation
    with the think-tagged answer: one `<think>` (never doubled after a template's own), no doubled newline."""
    tokenizer = real_tokenizer(name)
    text = render_student(tokenizer, QUESTION, REASONING, CONTENT)
    rendered = tokenizer.decode(text.prompt_ids + text.completion_ids)
    conversation = [
        {"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
        *QUESTION,
        {"role": "assistant", "content": f"<think>\n{REASONING}\n</think>\n\n{CONTENT}"},
    ]
    full = tokenizer.apply_chat_template(conversation, tokenize=False)
    assert full.startswith(rendered), f"{name}: training text differs from the template's rendering"
    assert rendered.count("<think>") == 1 and "<think>\n\n" not in rendered
    assert text.completion[text.reasoning_start :].startswith(REASONING)
    assert text.completion[text.content_start :] == CONTENT


@pytest.mark.parametrize("name", STUDENTS)
def test_scoring_the_length_filter_and_training_agree_token_for_token(name):
    tokenizer = real_tokenizer(name)
    response = _response()
    scored = render_student(tokenizer, response["messages"], REASONING, CONTENT, add_end_token=True)
    length = student_length(tokenizer, response, system_prompt=DEFAULT_SYSTEM_PROMPT)
    sft = sft_record(response, BuildSFTConfig(input="x", output="y"))
    prepared = prepare_examples([(1, sft)], tokenizer, max_length=4096, mask_student_prefix=False)
    (example,) = prepared.examples
    assert example["input_ids"] == scored.prompt_ids + scored.completion_ids
    assert length == len(example["input_ids"]) == scored.length
    first_trained = next(i for i, label in enumerate(example["labels"]) if label != -100)
    assert first_trained == len(scored.prompt_ids)  # loss on the whole answer and only on it


@pytest.mark.parametrize("name", STUDENTS)
def test_an_answer_only_response_is_scored_filtered_and_trained_as_the_same_tokens(name):
    """A `reasoning_format: none` response (its chain of thought is its answer): the student is scored on the
    answer alone, as build-sft trains it and the length filter measures it — no empty think block anywhere."""
    tokenizer = real_tokenizer(name)
    response = {**_response(), "reasoning": "", "content": REASONING + "\n\n" + CONTENT, "reasoning_format": "none"}
    scored = render_student(
        tokenizer, response["messages"], "", response["content"], add_end_token=True, answer_only=True
    )
    length = student_length(tokenizer, response, system_prompt=DEFAULT_SYSTEM_PROMPT)
    sft = sft_record(response, BuildSFTConfig(input="x", output="y"))
    prepared = prepare_examples([(1, sft)], tokenizer, max_length=4096, mask_student_prefix=False)
    (example,) = prepared.examples
    assert example["input_ids"] == scored.prompt_ids + scored.completion_ids
    assert length == len(example["input_ids"]) == scored.length
    assert "</think>" not in scored.completion and scored.completion.endswith(CONTENT)


@pytest.mark.parametrize("name", STUDENTS)
def test_a_teacher_continues_inside_its_reasoning(name):
    """The continuation prompt is the generation prompt, the think opening once, then the student's prefix
    as raw text — not an assistant message that the template closes."""
    tokenizer = real_tokenizer(name)
    ids, prefilled = render_chat_prompt(tokenizer, QUESTION, assistant_prefix="<think>\n" + PREFIX)
    generation_prompt = tokenizer.apply_chat_template(QUESTION, tokenize=False, add_generation_prompt=True)
    opening = "" if generation_prompt.endswith("<think>\n") else "<think>\n"
    assert tokenizer.decode(ids) == generation_prompt + opening + PREFIX and not prefilled
    assert "</think>" not in tokenizer.decode(ids)[len(generation_prompt) - 20 :]


def test_chat_mode_continuation_is_refused_where_the_template_would_close_the_reasoning():
    for name in ("qwen3", "qwen3-thinking-2507"):
        with pytest.raises(DasdError, match="mode=chat cannot continue"):
            check_chat_continuation(real_tokenizer(name), QUESTION, "<think>\n" + PREFIX)
    check_chat_continuation(real_tokenizer("smollm2"), QUESTION, "<think>\n" + PREFIX)  # renders it verbatim


def test_a_template_that_closes_thinking_is_refused_not_silently_continued():
    with pytest.raises(DasdError, match="closes the think block"):
        render_chat_prompt(
            real_tokenizer("qwen3"),
            QUESTION,
            assistant_prefix="<think>\n" + PREFIX,
            chat_template_kwargs={"enable_thinking": False},
        )
    with pytest.raises(DasdError, match="closes the think block"):
        render_student(
            real_tokenizer("qwen3"), QUESTION, REASONING, CONTENT, chat_template_kwargs={"enable_thinking": False}
        )


def test_gpt_oss_continuation_follows_its_real_template():
    """gpt-oss (harmony): the continuation prompt is the real template's generation prompt, then the
    analysis channel holding the student's prefix."""
    from dasd.text import harmony

    messages = [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}, *QUESTION]
    tokenizer = real_tokenizer("gpt-oss")
    ids = harmony.render_prompt_ids(messages, reasoning_effort="high", assistant_prefix=PREFIX)
    generation_prompt = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, reasoning_effort="high"
    )
    ours = harmony.decode(ids)
    assert ours.endswith("<|start|>assistant<|channel|>analysis<|message|>" + PREFIX)

    def comparable(text: str) -> str:
        # The template writes today's date (openai-harmony none by default), and ends the developer
        # instructions with a blank line that openai-harmony — which vLLM's gpt-oss serving uses — does not.
        text = text.replace("\n\n<|end|>", "<|end|>")
        return "\n".join(line for line in text.split("\n") if not line.startswith("Current date:"))

    assert "Reasoning: high" in ours
    assert comparable(ours[: -len("<|channel|>analysis<|message|>" + PREFIX)]) == comparable(generation_prompt)
