"""Sentence segmentation on realistic reasoning text (labelled examples), and its invariants."""

from __future__ import annotations

import pytest

from dasd.text.sentences import split_sentences

# (text, expected sentences) — the kinds of text long chain-of-thought is made of.
LABELLED = [
    (
        "Let me compute 3.14 * 2. That gives 6.28. Wait, I should double-check.",
        ["Let me compute 3.14 * 2.", "That gives 6.28.", "Wait, I should double-check."],
    ),
    (
        "We need $x.y$ where $x = 2.5$. So the product is $\\frac{1}{2}$. Done.",
        ["We need $x.y$ where $x = 2.5$.", "So the product is $\\frac{1}{2}$.", "Done."],
    ),
    (
        "Use the identity, e.g. the sum of squares, i.e. $a^2+b^2$. Then simplify.",
        ["Use the identity, e.g. the sum of squares, i.e. $a^2+b^2$.", "Then simplify."],
    ),
    (
        "Steps:\n1. Expand the bracket.\n2. Collect terms.\n3. Solve for x.",
        ["Steps:", "1. Expand the bracket.", "2. Collect terms.", "3. Solve for x."],
    ),
    (
        "First idea.\n\nSecond paragraph starts here. It has two sentences.",
        ["First idea.", "Second paragraph starts here.", "It has two sentences."],
    ),
    (
        "- bullet one\n- bullet two. With more.\n* star bullet",
        ["- bullet one", "- bullet two.", "With more.", "* star bullet"],
    ),
    (
        "The code is:\n```python\ndef f(x):\n    return x.real. Done\n```\nIt returns the real part.",
        ["The code is:", "```python\ndef f(x):\n    return x.real. Done\n```", "It returns the real part."],
    ),
    (
        "So we get\n$$\nx = 1.5. y = 2\n$$\nTherefore x < y.",
        ["So we get", "$$\nx = 1.5. y = 2\n$$", "Therefore x < y."],
    ),
    (
        "Hmm. Wait, that's not right! Let me redo it? Yes.",
        ["Hmm.", "Wait, that's not right!", "Let me redo it?", "Yes."],
    ),
    (
        "Compare approx. 3 vs. 4 (see Fig. 2). The answer is **B**. Next.",
        ["Compare approx. 3 vs. 4 (see Fig. 2).", "The answer is **B**.", "Next."],
    ),
    (
        "\\begin{aligned}\na &= 1. \\\\\nb &= 2.\n\\end{aligned}\nHence a+b=3.",
        ["\\begin{aligned}\na &= 1. \\\\\nb &= 2.\n\\end{aligned}", "Hence a+b=3."],
    ),
    (
        "It costs $5. The total is \\(3.5 + 1.5\\). Good...",
        ["It costs $5.", "The total is \\(3.5 + 1.5\\).", "Good..."],
    ),
    (
        "Wait, maybe 0.5 works... Actually no. So the answer is \\boxed{7}.",
        ["Wait, maybe 0.5 works...", "Actually no.", "So the answer is \\boxed{7}."],
    ),
]


@pytest.mark.parametrize("text, expected", LABELLED)
def test_labelled_reasoning_text(text, expected):
    assert [text[s:e] for s, e in split_sentences(text)] == expected


@pytest.mark.parametrize(
    "text",
    [example[0] for example in LABELLED]
    + [
        "",
        "   \n\n  ",
        "no punctuation at all",
        "trailing space.   ",
        "```\nunclosed code. Still code",
        "x" * 50 + ". " + "Y" * 50 + "!\n\n\n?",
        "$unclosed math. Then text.",
    ],
)
def test_every_non_whitespace_character_is_in_exactly_one_sentence(text):
    spans = split_sentences(text)
    owner = [0] * len(text)
    for start, end in spans:
        assert start < end and not text[start].isspace() and not text[end - 1].isspace()
        for position in range(start, end):
            owner[position] += 1
    for position, char in enumerate(text):
        assert owner[position] == (1 if not char.isspace() else owner[position]) and owner[position] <= 1
    assert spans == sorted(spans)
    assert split_sentences(text) == spans  # deterministic
