"""GPQA-Diamond, a multiple-choice science benchmark, as `dasd.data.records.Question` records.

**GPQA-Diamond** (the official `gpqa_diamond.csv`: `Question`, `Correct Answer`, `Incorrect Answer 1..3`,
`Record ID`, and more): the four options are shuffled once per question with a seed derived from the
run's seed and the Record ID, so a rerun shows the same order; `answer` is the letter of the correct one.
The question text does not list the options: `dasd eval` appends them from `choices`, as it does for
any multiple-choice question file.

    from dasd.data.gpqa import load_gpqa

    gpqa = load_gpqa("gpqa_diamond.csv", seed=0)   # choices + answer letter, domain "science"
"""

from __future__ import annotations

import csv
import os
import random
from typing import Any

from ..errors import InputError
from .records import Question, stable_seed

GPQA_COLUMNS = (
    "Question",
    "Correct Answer",
    "Incorrect Answer 1",
    "Incorrect Answer 2",
    "Incorrect Answer 3",
    "Record ID",
)
GPQA_LETTERS = "ABCD"


def shuffled_options(correct: str, incorrect: list[str], seed: int) -> tuple[list[str], str]:
    """The options in the order a seeded shuffle gives, and the letter of the correct one.

    >>> options, letter = shuffled_options("right", ["wrong 1", "wrong 2", "wrong 3"], seed=7)
    >>> options[GPQA_LETTERS.index(letter)]
    'right'
    >>> shuffled_options("right", ["wrong 1", "wrong 2", "wrong 3"], seed=7) == (options, letter)
    True
    """
    options = [correct, *incorrect]
    order = list(range(len(options)))
    random.Random(seed).shuffle(order)
    return [options[index] for index in order], GPQA_LETTERS[order.index(0)]


def load_gpqa(path: str | os.PathLike, *, seed: int = 0) -> list[Question]:
    """Read GPQA's CSV (`gpqa_diamond.csv`, or main/extended: same columns) into multiple-choice questions:
    `choices` are the four options shuffled with `stable_seed(seed, record_id)`, `answer` the correct
    letter, `domain` "science", `id` the Record ID. A missing column or an empty field stops with one line
    naming the file, line and column."""
    path = str(path)
    try:
        handle = open(path, encoding="utf-8-sig", newline="")
    except FileNotFoundError:
        raise InputError(path, None, None, "file not found") from None
    except IsADirectoryError:
        raise InputError(path, None, None, "is a folder, not a CSV file") from None
    questions, seen = [], {}
    with handle:
        reader = csv.DictReader(handle)
        try:
            header = reader.fieldnames
        except (csv.Error, UnicodeDecodeError) as exc:
            raise InputError(path, None, None, f"cannot read CSV: {exc}") from None
        if not header:
            raise InputError(path, None, None, "no records (empty file)")
        for column in GPQA_COLUMNS:
            if column not in header:
                raise InputError(path, 1, column, "missing column (is this GPQA's CSV?)")
        line = reader.line_num + 1
        try:
            for row in reader:
                questions.append(_gpqa_question(row, seed, path=path, line=line, seen=seen))
                line = reader.line_num + 1
        except (csv.Error, UnicodeDecodeError) as exc:
            raise InputError(path, line, None, f"cannot read CSV: {exc}") from None
    if not questions:
        raise InputError(path, None, None, "no records (only a header)")
    return questions


def _gpqa_question(row: dict[str, Any], seed: int, *, path: str, line: int, seen: dict[str, int]) -> Question:
    values = {}
    for column in GPQA_COLUMNS:
        text = (row.get(column) or "").strip()
        if not text:
            raise InputError(path, line, column, "empty")
        values[column] = text
    record_id = values["Record ID"]
    if record_id in seen:
        raise InputError(path, line, "Record ID", f"duplicate id {record_id!r} (first on line {seen[record_id]})")
    seen[record_id] = line
    incorrect = [values[f"Incorrect Answer {number}"] for number in (1, 2, 3)]
    choices, letter = shuffled_options(values["Correct Answer"], incorrect, stable_seed(seed, record_id))
    return {
        "id": record_id,
        "messages": [{"role": "user", "content": values["Question"]}],
        "answer": letter,
        "domain": "science",
        "meta": {
            "source": "gpqa",
            "record_id": record_id,
            "correct_answer": values["Correct Answer"],
            "shuffle_seed": seed,
            "high_level_domain": (row.get("High-level domain") or "").strip() or None,
            "subdomain": (row.get("Subdomain") or "").strip() or None,
        },
        "choices": choices,
    }
