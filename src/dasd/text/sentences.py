"""Sentence segmentation of long chain-of-thought text, as character spans.

DASD compares teacher and student probabilities sentence by sentence, so the splitter must be
deterministic, cover every non-whitespace character exactly once, and not break where reasoning text
is full of periods that end nothing: decimals (`3.14`), LaTeX (`\\frac{1}{2}`, `$x.y$`, display
math), abbreviations (`e.g.`, `i.e.`, `vs.`), enumerations (`1. First`), code blocks.

Rules (our own). `benchmarks/bench_sentences.py` compares them with pysbd on the labelled reasoning
examples of `tests/test_sentences.py` (written together with these rules, so read the score with
that in mind): pysbd got 9 of 13 right — it cuts code blocks and display math (`$$…$$`,
`\begin{aligned}…`) line by line and breaks after `approx.` — and was ~50x slower on long text.

1. Protected regions never contain a boundary: fenced code blocks (each is one sentence), display
   math (`$$…$$`, `\\[…\\]`, `\\begin{…}…\\end{…}`), inline math (`$…$`, `\\(…\\)`).
2. Outside them, every line break is a boundary: reasoning models write one step, equation or list
   item per line, and blank lines separate paragraphs.
3. Within a line, a boundary follows `.`, `!`, `?` or `…` (plus closing quotes, brackets and `*`/`_`
   emphasis) when whitespace follows and the next word does not start in lower case — unless the
   period ends a known abbreviation or a line-initial list number (`1.`, `a)` is not split either).

Spans are stripped of surrounding whitespace, so `text[start:end]` of each sentence starts and ends
with a non-whitespace character and the spans are disjoint and in order.
"""

from __future__ import annotations

import re

# A period after these never ends a sentence …
ABBREVIATIONS = {
    "e.g",
    "i.e",
    "vs",
    "cf",
    "al",
    "approx",
    "resp",
    "dr",
    "mr",
    "mrs",
    "ms",
    "prof",
    "jr",
    "sr",
    "st",
    "viz",
    "incl",
    "ca",
}
# … and after these only when a number follows ("see Fig. 2", but "the max. Then").
ABBREVIATIONS_BEFORE_NUMBER = {
    "no",
    "nos",
    "eq",
    "eqs",
    "fig",
    "figs",
    "sec",
    "ch",
    "vol",
    "pp",
    "p",
    "thm",
    "lem",
    "def",
    "ex",
}

_FENCE = re.compile(r"^[ \t]*(```|~~~)", re.MULTILINE)
_DISPLAY_MATH = re.compile(r"\$\$.*?\$\$|\\\[.*?\\\]|\\begin\{([a-zA-Z*]+)\}.*?\\end\{\1\}", re.DOTALL)
_INLINE_MATH = re.compile(r"(?<![\\$])\$(?!\$)[^$\n]+?(?<!\\)\$(?!\$)|\\\(.*?\\\)")
_TERMINAL = re.compile(r"(?:[.!?]+|…)[\"'”’)\]}*_]*(?=\s)")
_LIST_NUMBER = re.compile(r"^[ \t]*(?:\d+|[a-zA-Z]|[ivxIVX]+)[.)]$")


def _protected_regions(text: str) -> list[tuple[int, int]]:
    """Character ranges that no boundary may split (code fences, display and inline math)."""
    regions: list[tuple[int, int]] = []
    fences = list(_FENCE.finditer(text))
    index = 0
    while index < len(fences):
        opening = fences[index]
        marker = opening.group(1)
        closing = next((f for f in fences[index + 1 :] if f.group(1) == marker), None)
        if closing is None:
            regions.append((opening.start(), len(text)))
            break
        line_end = text.find("\n", closing.end())
        regions.append((opening.start(), len(text) if line_end < 0 else line_end))
        index = fences.index(closing) + 1
    covered = _Coverage(regions)
    for pattern in (_DISPLAY_MATH, _INLINE_MATH):
        for match in pattern.finditer(text):
            if not covered.overlaps(match.start(), match.end()):
                regions.append((match.start(), match.end()))
        covered = _Coverage(regions)
    return sorted(regions)


class _Coverage:
    def __init__(self, regions: list[tuple[int, int]]):
        self.regions = sorted(regions)

    def overlaps(self, start: int, end: int) -> bool:
        return any(s < end and start < e for s, e in self.regions)


def _is_abbreviation(text: str, period: int, next_char: str) -> bool:
    """True when the `.` at `period` ends an abbreviation (`e.g.`, `Dr.`) or a list number (`1.`)."""
    word_start = period
    while word_start > 0 and not text[word_start - 1].isspace() and text[word_start - 1] not in "([{\"'":
        word_start -= 1
    word = text[word_start:period].lower().lstrip("*_")
    if word in ABBREVIATIONS or (word in ABBREVIATIONS_BEFORE_NUMBER and next_char.isdigit()):
        return True
    line_start = text.rfind("\n", 0, word_start) + 1
    return bool(_LIST_NUMBER.match(text[line_start : period + 1]))


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Sentence spans `(start, end)` of `text`, in order, disjoint, covering every non-whitespace char."""
    if not text.strip():
        return []
    protected = _protected_regions(text)
    cuts = set()
    # Line breaks outside protected regions (a code block or display math on its own lines
    # thereby becomes its own sentence; math inside a line stays in its sentence).
    region_index = 0
    for match in re.finditer(r"\n", text):
        at = match.start()
        while region_index < len(protected) and protected[region_index][1] <= at:
            region_index += 1
        inside = region_index < len(protected) and protected[region_index][0] <= at < protected[region_index][1]
        if not inside:
            cuts.add(at)
    # Terminal punctuation inside lines.
    region_index = 0
    for match in _TERMINAL.finditer(text):
        end = match.end()
        while region_index < len(protected) and protected[region_index][1] <= match.start():
            region_index += 1
        if region_index < len(protected) and protected[region_index][0] <= match.start() < protected[region_index][1]:
            continue
        following = end
        while following < len(text) and text[following] in " \t":
            following += 1
        if following >= len(text) or text[following] == "\n":
            cuts.add(end)
            continue
        if text[following].islower():
            continue
        if (
            match.group(0).startswith(".")
            and not match.group(0).startswith("..")
            and _is_abbreviation(text, match.start(), text[following])
        ):
            continue
        cuts.add(end)
    cuts.discard(0)
    boundaries = [0] + sorted(cut for cut in cuts if 0 < cut < len(text)) + [len(text)]
    spans = []
    for start, end in zip(boundaries, boundaries[1:]):
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        if end > start:
            spans.append((start, end))
    return spans
