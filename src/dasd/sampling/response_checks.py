"""What a sampled response lacks — no text, no reasoning, an unclosed think block, no extractable answer — counted
while `dasd sample` writes, and the warnings (with counts and the likely fix) when most of a run's responses lack
the same part.

    tally = MissingPartTally(open_writer(output))        # writes as the writer does, and counts
    missing_part_warnings(tally.checked, tally.missing, "think")
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from ..grading.answers import answer_kind, extract_choice, extract_final_answer

RESPONSE_PARTS = ("empty", "no_reasoning", "unclosed", "unclosed_at_length", "no_extractable_answer")
MISSING_PART_LABELS = {  # the summary's rows
    "empty": "empty (no text)",
    "no_reasoning": "no reasoning",
    "unclosed": "reasoning, no answer",
    "unclosed_at_length": "  cut at max_new_tokens",
    "no_extractable_answer": "no extractable answer",
}


def missing_parts(record: dict[str, Any]) -> list[str]:
    """What a sampled response lacks (`RESPONSE_PARTS`): `empty` — no text at all; `no_reasoning` — an answer but
    no reasoning; `unclosed` — reasoning but no answer (a think block that never closed, a harmony response with no
    final channel), `unclosed_at_length` too when max_new_tokens cut it; `no_extractable_answer` — an answer in which
    the grader finds no final answer, for a question with a reference.

    >>> missing_parts({"reasoning": "", "content": "Paris.", "answer": None, "finish_reason": "stop"})
    ['no_reasoning']
    >>> missing_parts({"reasoning": "So the answer is", "content": "", "answer": "4", "finish_reason": "length"})
    ['unclosed', 'unclosed_at_length']
    >>> missing_parts({"reasoning": "Hm.", "content": "I think so.", "answer": "B", "finish_reason": "stop"})
    ['no_extractable_answer']
    """
    reasoning, content = record["reasoning"].strip(), record["content"].strip()
    if not reasoning and not content:
        return ["empty"]
    if not content:
        return ["unclosed"] + (["unclosed_at_length"] if record["finish_reason"] == "length" else [])
    missing = [] if reasoning else ["no_reasoning"]
    reference = record.get("answer")
    if reference not in (None, ""):
        extract = (
            extract_choice if answer_kind(str(reference), record.get("domain")) == "choice" else extract_final_answer
        )
        if extract(content) is None:
            missing.append("no_extractable_answer")
    return missing


class MissingPartTally:
    """A response writer, wrapped: each response it writes is counted by what it lacks (`missing_parts`), for
    `dasd sample`'s summary and warnings (`missing_part_warnings`). Everything else (`done`, `finish`, …) is the
    writer's."""

    def __init__(self, writer):
        self.writer = writer
        self.checked = 0
        self.missing: Counter = Counter()

    def write(self, record: dict[str, Any]) -> None:
        self.checked += 1
        self.missing.update(missing_parts(record))
        self.writer.write(record)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.writer, name)


def missing_part_warnings(checked: int, missing: Counter, reasoning_format: str) -> list[str]:
    """One line for each part that most (over half) of this run's `checked` responses lack, with counts and the
    likely fix. No reasoning is what `reasoning_format: none` expects, and is not warned about there.

    >>> missing_part_warnings(72, Counter(no_reasoning=63), "think")[0][:70]
    '63 of 72 responses have no reasoning: the teacher writes no <think> bl'
    >>> missing_part_warnings(72, Counter(no_reasoning=72), "none")
    []
    """

    def most(part: str) -> bool:
        return missing[part] * 2 > checked

    warnings = []
    if most("empty"):
        warnings.append(
            f"{missing['empty']} of {checked} responses are empty: the teacher wrote no text (check the backend's "
            "stop strings and the chat template's generation prompt)"
        )
    if most("no_reasoning") and reasoning_format == "think":
        warnings.append(
            f"{missing['no_reasoning']} of {checked} responses have no reasoning: the teacher writes no <think> block; "
            "set reasoning_format=none (the chain of thought is then the answer) or a chat template that opens one "
            "(chat_template_kwargs, e.g. {enable_thinking: true})"
        )
    if most("no_reasoning") and reasoning_format == "harmony":
        warnings.append(
            f"{missing['no_reasoning']} of {checked} responses have no reasoning: the teacher writes no analysis "
            "channel; set reasoning_format=none (the chain of thought is then the answer) unless it is a gpt-oss model"
        )
    if most("unclosed"):
        at_length = missing["unclosed_at_length"]
        block = "the <think> block never closed" if reasoning_format != "harmony" else "no final channel came"
        causes = []
        if missing["unclosed"] - at_length:
            causes.append(
                f"{missing['unclosed'] - at_length} ended inside it (finish=stop): the teacher does not close a think "
                "block (one its chat template opened?); set reasoning_format=none and a template that opens none"
            )
        if at_length:
            causes.append(f"{at_length} reached max_new_tokens first (finish=length): raise max_new_tokens")
        warnings.append(
            f"{missing['unclosed']} of {checked} responses have reasoning but no answer: {block}; " + "; ".join(causes)
        )
    if most("no_extractable_answer"):
        warnings.append(
            f"{missing['no_extractable_answer']} of {checked} responses have no extractable answer: the grader finds "
            "no final answer (\\boxed{…}, 'Answer: …', an option letter) to compare with the reference; ask for one "
            "in the prompt (e.g. system_prompt), or dasd filter's correctness check rejects them as no_answer"
        )
    return warnings
