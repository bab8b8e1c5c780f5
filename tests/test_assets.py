"""The offline tokenizers are the real ones, and token bytes/spans are exact for each."""

from __future__ import annotations

import pytest

from dasd.text.tokens import TokenBytes

TEXTS = [
    "Hello, world! The quick brown fox jumps over the lazy dog.",
    "<think>\nLet me compute 3.14 × 2 = 6.28. Wait, \\frac{1}{2} ≠ 0.49…\n</think>\n\nThe answer is **5**.",
    "café résumé naïve — Zürich 日本語 한국어 🚀🔥",
    "def f(x):\n    return [i**2 for i in range(100)]  # 1+2+3==6\n\n\n",
    "don't can't I'll we've they're 'tis 'TWAS  \r\n",
]


@pytest.mark.parametrize(
    "name, quicktok_name", [("qwen3", "qwen3"), ("llama3", "llama3"), ("o200k_harmony", "o200k_harmony")]
)
def test_quicktok_tokenizers_match_the_reference_encoder(name, quicktok_name):
    import quicktok
    from quicktok._import_core import STRESS

    from dasd.models.assets import load_tokenizer

    tokenizer = load_tokenizer(name)
    reference = quicktok.get_encoding(quicktok_name)
    for text in STRESS + TEXTS:
        has_special = any(token in text for token in reference.special_tokens_set)
        expected = reference.encode_with_special_tokens(text) if has_special else reference.encode_ordinary(text)
        assert tokenizer.encode(text, add_special_tokens=False) == expected, text


def test_tokenizers_differ_and_special_tokens_have_their_real_ids(smollm2_tokenizer, qwen3_tokenizer):
    assert len(smollm2_tokenizer) == 49152 and len(qwen3_tokenizer) == 151669
    assert qwen3_tokenizer.convert_tokens_to_ids("<|im_end|>") == 151645
    assert qwen3_tokenizer.convert_tokens_to_ids("<think>") == 151667
    text = "The answer is 5."
    assert smollm2_tokenizer.encode(text) != qwen3_tokenizer.encode(text)


@pytest.mark.parametrize("fixture", ["smollm2_tokenizer", "qwen3_tokenizer"])
def test_token_bytes_rebuild_text_exactly(fixture, request):
    tokenizer = request.getfixturevalue(fixture)
    table = TokenBytes(tokenizer)
    assert table.byte_level
    for text in TEXTS:
        ids = tokenizer.encode(text, add_special_tokens=False)
        rebuilt, spans = table.text_and_spans(ids)
        assert rebuilt == text
        assert table.check(ids)
        # spans are contiguous, ordered, and cover the text
        assert spans[0][0] == 0 and spans[-1][1] == len(text)
        for (s1, e1), (s2, e2) in zip(spans, spans[1:]):
            assert s1 <= s2 and e1 <= e2 and s2 <= e1 + 0


def test_harmony_encoding_works_offline():
    from dasd.text.harmony import decode, render_prompt_ids

    ids = render_prompt_ids(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+3?"}],
        reasoning_effort="high",
    )
    text = decode(ids)
    assert "Reasoning: high" in text and "# Instructions\n\nBe brief." in text
    assert text.endswith("<|start|>assistant")
