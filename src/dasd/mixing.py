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

import math
import random

from .data.records import stable_seed
from .text.render import THINK_PREFIX
from .text.sentences import split_sentences


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
