"""Reasoning/content splitting for think tags, server fields and gpt-oss harmony; offset mapping."""

from __future__ import annotations

import pytest

from dasd.text.reasoning import map_token_offsets, parse_fields, parse_harmony, parse_think
from dasd.text.tokens import decode_bytes_with_spans


def spans_of(pieces: list[str]) -> tuple[str, list[tuple[int, int]]]:
    return decode_bytes_with_spans([piece.encode("utf-8") for piece in pieces])


def test_think_complete():
    parsed = parse_think("<think>\nStep 1. Step 2.\n</think>\n\nThe answer is 5.")
    assert (parsed.reasoning, parsed.content, parsed.finish_reason) == ("Step 1. Step 2.", "The answer is 5.", "stop")


def test_think_truncated_without_closing_tag():
    parsed = parse_think("<think>\nStep 1. Step 2 is", finish_reason="length")
    assert (parsed.reasoning, parsed.content, parsed.finish_reason) == ("Step 1. Step 2 is", "", "length")


def test_think_opened_by_the_template():
    parsed = parse_think("\nreasoning here\n</think>\n\nanswer", prefilled_open=True)
    assert (parsed.reasoning, parsed.content) == ("reasoning here", "answer")
    # closing tag alone, template not declared: still reasoning before it
    parsed = parse_think("reasoning here</think>answer")
    assert (parsed.reasoning, parsed.content) == ("reasoning here", "answer")


def test_no_tags_is_all_content():
    parsed = parse_think("  Just an answer.  ")
    assert (parsed.reasoning, parsed.content) == ("", "Just an answer.")


def test_tool_call_text_in_answer():
    parsed = parse_think('<think>x</think>\n<tool_call>\n{"name": "f"}\n</tool_call>')
    assert parsed.finish_reason == "tool_call"


def test_offsets_index_into_the_stored_strings():
    pieces = [
        "<",
        "think",
        ">\n",
        "Let",
        " me",
        " think",
        ".\n",
        "</",
        "think",
        ">\n\n",
        "The",
        " answer",
        " is",
        " 5",
        ".",
    ]
    raw, spans = spans_of(pieces)
    parsed = parse_think(raw)
    logprobs = [-0.1 * (i + 1) for i in range(len(pieces))]
    mapped = map_token_offsets(spans, logprobs, parsed)
    reasoning_text = "".join(parsed.reasoning[s:e] for s, e in mapped["reasoning"]["offsets"])
    content_text = "".join(parsed.content[s:e] for s, e in mapped["content"]["offsets"])
    assert reasoning_text == "Let me think." and content_text == "The answer is 5."
    # the token ".\n" keeps its log-prob, clipped to "." inside the reasoning; tag tokens are dropped
    assert mapped["reasoning"]["logprobs"] == pytest.approx([-0.4, -0.5, -0.6, -0.7])
    assert mapped["content"]["logprobs"] == pytest.approx([-1.1, -1.2, -1.3, -1.4, -1.5])


def test_spans_of_tokens_that_split_a_character():
    text, spans = decode_bytes_with_spans([b"caf", b"\xc3", b"\xa9", b"!"])
    assert text == "café!"
    assert spans == [(0, 3), (3, 4), (3, 4), (4, 5)]
    text, spans = decode_bytes_with_spans([b"ok", b"\xe2\x80"])  # cut inside a character
    assert text == "ok\ufffd\ufffd" and spans == [(0, 2), (2, 4)]


def test_fields_from_a_reasoning_parser_are_found_in_the_token_text():
    raw = "<think>\nI compute 2+3.\n</think>\n\nIt is 5."
    parsed = parse_fields(raw, "I compute 2+3.\n", "It is 5.")
    assert (parsed.reasoning, parsed.content) == ("I compute 2+3.", "It is 5.")
    assert [(s.part, raw[s.raw_start : s.raw_end]) for s in parsed.segments] == [
        ("reasoning", "I compute 2+3."),
        ("content", "It is 5."),
    ]


# --- harmony, rendered by openai-harmony itself --------------------------------------------------


@pytest.fixture(scope="module")
def harmony():
    from dasd.text.harmony import encoding

    return encoding()


def _completion_text(harmony, messages, *, generated_end: str | None = None) -> str:
    """Render assistant messages as the model generates them after `<|start|>assistant`.

    openai-harmony renders a finished message with `<|end|>`; a model ends its answer with
    `<|return|>`, which `generated_end` puts in place of the last `<|end|>`.
    """
    from openai_harmony import Conversation, Message, RenderConversationConfig, Role

    prompt = [Message.from_role_and_content(Role.USER, "What is 2+3?")]
    keep_analysis = RenderConversationConfig(auto_drop_analysis=False)
    full = harmony.decode_utf8(
        harmony.render_conversation(Conversation.from_messages(prompt + messages), config=keep_analysis)
    )
    prefix = harmony.decode_utf8(
        harmony.render_conversation_for_completion(Conversation.from_messages(prompt), Role.ASSISTANT)
    )
    assert full.startswith(prefix)
    text = full[len(prefix) :]
    if generated_end and text.endswith("<|end|>"):
        text = text[: -len("<|end|>")] + generated_end
    return text


def _harmony_reference(harmony, text: str) -> tuple[str, str]:
    """openai-harmony's own parse of the same completion: (analysis text, final text)."""
    from openai_harmony import Role

    tokens = harmony.encode(text, allowed_special="all")
    messages = harmony.parse_messages_from_completion_tokens(tokens, Role.ASSISTANT)
    analysis = "\n\n".join(m.content[0].text.strip() for m in messages if m.channel == "analysis")
    final = "\n\n".join(m.content[0].text.strip() for m in messages if m.channel == "final")
    return analysis, final


def test_harmony_analysis_and_final(harmony):
    from openai_harmony import Message, Role

    text = _completion_text(
        harmony,
        [
            Message.from_role_and_content(Role.ASSISTANT, "User wants a sum. 2+3=5.").with_channel("analysis"),
            Message.from_role_and_content(Role.ASSISTANT, "The answer is 5.").with_channel("final"),
        ],
        generated_end="<|return|>",
    )
    parsed = parse_harmony(text, finish_reason="stop")
    assert (parsed.reasoning, parsed.content) == ("User wants a sum. 2+3=5.", "The answer is 5.")
    assert (parsed.reasoning, parsed.content) == _harmony_reference(harmony, text)
    assert parsed.finish_reason == "stop"


def test_harmony_tool_call(harmony):
    from openai_harmony import Message, Role

    text = _completion_text(
        harmony,
        [
            Message.from_role_and_content(Role.ASSISTANT, "I should use the calculator.").with_channel("analysis"),
            Message.from_role_and_content(Role.ASSISTANT, '{"expression": "2+3"}')
            .with_channel("commentary")
            .with_recipient("functions.calculator")
            .with_content_type("<|constrain|>json"),
        ],
    )
    assert "to=functions.calculator" in text and text.rstrip().endswith("<|call|>")
    parsed = parse_harmony(text, finish_reason="stop")
    assert parsed.finish_reason == "tool_call"
    assert parsed.reasoning == "I should use the calculator." and parsed.content == ""


def test_harmony_missing_final_channel(harmony):
    from openai_harmony import Message, Role

    text = _completion_text(
        harmony,
        [
            Message.from_role_and_content(Role.ASSISTANT, "Let me think about 2+3 carefully").with_channel("analysis"),
        ],
    )
    # The generation ran out of tokens before any final message: no end token either.
    cut = text[: text.rindex("<|end|>")]
    parsed = parse_harmony(cut, finish_reason="length")
    assert (parsed.reasoning, parsed.content, parsed.finish_reason) == (
        "Let me think about 2+3 carefully",
        "",
        "length",
    )
    # It stopped after the analysis message without writing a final one.
    parsed = parse_harmony(text, finish_reason="stop")
    assert (parsed.reasoning, parsed.content, parsed.finish_reason) == ("Let me think about 2+3 carefully", "", "stop")
    assert (parsed.reasoning, parsed.content) == _harmony_reference(harmony, text)


def test_harmony_offsets_with_several_analysis_messages():
    raw = (
        "<|channel|>analysis<|message|>First "
        "thought.<|end|><|start|>assistant<|channel|>analysis<|message|>Second.<|end|><|start|>assistant<|channel|>final<|message|>Done.<|return|>"
    )
    parsed = parse_harmony(raw)
    assert parsed.reasoning == "First thought.\n\nSecond." and parsed.content == "Done."
    pieces = [
        "<|channel|>",
        "analysis",
        "<|message|>",
        "First",
        " thought",
        ".",
        "<|end|>",
        "<|start|>",
        "assistant",
        "<|channel|>",
        "analysis",
        "<|message|>",
        "Second",
        ".",
        "<|end|>",
        "<|start|>",
        "assistant",
        "<|channel|>",
        "final",
        "<|message|>",
        "Done",
        ".",
        "<|return|>",
    ]
    text, spans = spans_of(pieces)
    assert text == raw
    mapped = map_token_offsets(spans, list(range(len(pieces))), parsed)
    assert [parsed.reasoning[s:e] for s, e in mapped["reasoning"]["offsets"]] == [
        "First",
        " thought",
        ".",
        "Second",
        ".",
    ]
    assert [parsed.content[s:e] for s, e in mapped["content"]["offsets"]] == ["Done", "."]


def test_token_strings_from_servers_become_exact_bytes():
    from dasd.backends.openai_compat import _token_piece

    assert _token_piece("bytes:\\xe2\\x80", None, None) == b"\xe2\x80"  # vLLM's spelling of a partial character
    assert _token_piece(" caf\u00e9", None, None) == " café".encode()
    assert _token_piece("ignored", [99, 97, 102], None) == b"caf"  # chat `bytes` field wins over the string
