"""Parts of mixed-policy distillation (`dasd mix`): the student's budget, where to cut, the teacher's turn.

* budget — the student may write `ceil(budget_factor × L)` tokens, where L is the length of the
  teacher's reference response for the same question counted in **student** tokens (the
  think-tagged text the student is trained on);
* cut — a random character position in the second half of the student's reasoning (uniform, or
  Beta-shaped with `cut_shape`; `cut_range`, seeded per question), moved back to the end of the last whole
  sentence at or before it that still lies in that range (forward to the next one if there is none before it); a
  rollout with no sentence end in the range is not used;
* continuation — the teacher sees the question in its own format and an assistant turn already
  opened in its reasoning channel holding the student's text up to the cut: `<think>\\n` + prefix
  for think-tag teachers, the analysis channel for gpt-oss (harmony). It writes the rest.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

from ..data.io import iter_records
from ..data.records import stable_seed
from ..errors import InputError
from ..text.reasoning import parse_think
from ..text.render import THINK_PREFIX
from ..text.sentences import split_sentences


def student_budget(tokenizer, teacher_text: str, factor: float) -> tuple[int, int]:
    """(teacher response length in student tokens, the student's generation budget)."""
    length = len(tokenizer(teacher_text, add_special_tokens=False)["input_ids"])
    return length, max(1, math.ceil(factor * length))


def cut_position(
    text: str, *, seed: int, key: str, low: float = 0.5, high: float = 1.0, shape: tuple[float, float] = (1.0, 1.0)
) -> int | None:
    """Character index to cut `text` at: a sentence end in [low, high] of its length (see module doc). The target
    position is drawn uniformly in the range, or, with another `shape` (a, b), at low + (high − low) × Beta(a, b)
    (e.g. (2, 5) early in the range, (5, 2) late).

    >>> text = "One. Two. Three. Four. Five. Six. Seven. Eight."
    >>> cut_position(text, seed=0, key="q", low=0.0, high=1.0) in {end for _, end in split_sentences(text)}
    True
    >>> early = [cut_position(text, seed=s, key="q", low=0.0, high=1.0, shape=(1, 8)) for s in range(20)]
    >>> late = [cut_position(text, seed=s, key="q", low=0.0, high=1.0, shape=(8, 1)) for s in range(20)]
    >>> sum(early) < sum(late)
    True
    """
    if not text:
        return None
    length = len(text)
    ends = [end for _, end in split_sentences(text) if low * length <= end < length and end <= high * length]
    if not ends:
        return None
    rng = random.Random(stable_seed(seed, "cut", key))
    if tuple(shape) == (1.0, 1.0):
        target = rng.uniform(low * length, high * length)  # as before shapes existed: the same cuts
    else:
        target = (low + (high - low) * rng.betavariate(*shape)) * length
    before = [end for end in ends if end <= target]
    return max(before) if before else min(ends)


def continuation_prefix(prefix: str, reasoning_format: str) -> str:
    """The text that opens the teacher's assistant turn: `<think>\\n` + prefix (think), or the prefix alone
    (harmony: the renderer opens the analysis channel itself)."""
    return THINK_PREFIX + prefix if reasoning_format == "think" else prefix


class CuratedSet:
    """The curated SFT records mix draws from, by question: the first record of each question, loaded when asked
    for (`entry`). Opening reads the file once — checking every record, keeping only each question's byte offset
    — so memory grows with the number of questions, not with their responses' text (435K responses of ~20K tokens
    are ~35 GB of text; mix uses ~50K of them). Inputs other than plain JSONL (Parquet, .gz, a saved dataset) have
    no byte offsets: their entries are kept in memory.

    >>> import json, tempfile
    >>> from pathlib import Path
    >>> path = Path(tempfile.mkdtemp()) / "sft.jsonl"
    >>> rows = [{"id": f"r{i}", "question_id": q, "messages": [{"role": "user", "content": "Q" + q},
    ...         {"role": "assistant", "content": "<think>\\nwork " + str(i) + "\\n</think>\\n\\nA"}]}
    ...         for i, q in enumerate(["b", "a", "b"])]
    >>> _ = path.write_text("".join(json.dumps(row) + "\\n" for row in rows))
    >>> curated = CuratedSet(path)
    >>> curated.question_ids(), curated.entry("b")["reasoning"], curated.entry("b")["record"]["id"]
    (['a', 'b'], 'work 0', 'r0')
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._offsets: dict[str, int] = {}
        self._entries: dict[str, dict] = {}
        plain = self.path.is_file() and self.path.name.endswith(".jsonl")
        if plain:
            with open(self.path, "rb") as handle:
                position = 0
                for number, line in enumerate(handle, start=1):
                    if line.strip():
                        try:
                            record = json.loads(line)
                        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                            raise InputError(str(self.path), number, None, f"invalid JSON ({exc})") from None
                        record = self._checked(record, number)
                        self._offsets.setdefault(self._question_id(record), position)
                    position += len(line)
        else:
            for number, record in iter_records(self.path):
                question_id = self._question_id(self._checked(record, number))
                if question_id not in self._entries:
                    self._entries[question_id] = self._parsed(record)
        self._handle = None

    @staticmethod
    def _question_id(record: dict) -> str:
        return str(record.get("question_id") or record["id"])

    def _checked(self, record: dict, line: int) -> dict:
        if not isinstance(record, dict):
            raise InputError(str(self.path), line, None, "expected a JSON object")
        messages = record.get("messages")
        if not isinstance(messages, list) or not messages or messages[-1].get("role") != "assistant":
            raise InputError(str(self.path), line, "messages", "must end with the teacher's assistant turn")
        if not parse_think(messages[-1]["content"]).reasoning:
            raise InputError(str(self.path), line, "messages", "the assistant turn has no <think> reasoning")
        return record

    @staticmethod
    def _parsed(record: dict) -> dict:
        messages = record["messages"]
        parsed = parse_think(messages[-1]["content"])
        return {
            "record": record,
            "turns": [m for m in messages[:-1] if m["role"] not in ("system", "developer")],
            "reasoning": parsed.reasoning,
            "content": parsed.content,
        }

    def question_ids(self) -> list[str]:
        return sorted(self._offsets or self._entries)

    def __iter__(self):
        return iter(self.question_ids())

    def __contains__(self, question_id: str) -> bool:
        return question_id in self._offsets or question_id in self._entries

    def __len__(self) -> int:
        return len(self._offsets) or len(self._entries)

    def entry(self, question_id: str) -> dict:
        """`{record, turns, reasoning, content}` of the question's first curated record."""
        if question_id in self._entries:
            return self._entries[question_id]
        if self._handle is None:
            self._handle = open(self.path, "rb")
        self._handle.seek(self._offsets[question_id])
        return self._parsed(json.loads(self._handle.readline()))

    __getitem__ = entry

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
