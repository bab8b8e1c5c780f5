"""Benchmarks `dasd eval` knows by name, and how any question file becomes one.

* `aime24`, `aime25` — the 30 problems of AIME I and II of each year with their integer answers,
  shipped in `dasd/data/` (sources in `dasd/data/SOURCES.md`);
* `rg:<task>[:<size>]` — a reasoning-gym task set generated offline with the run's `rg_seed`
  (e.g. `rg:basic_arithmetic:50`); reasoning-gym's own scorer re-checks every grade;
* `code` — the shipped code problems (`dasd/data/code_problems.jsonl`, written for this project, stdin and
  functional), graded by running the answer's program in the sandbox (`dasd.grading.code_grading`);
* `lcb:<file>[:<window>]` — a LiveCodeBench file (`dasd.data.code_data`), optionally cut to a release-date
  window: `v5`, `v6` or `START..END` (the dates used are in every result);
* `gpqa:<file>` — GPQA-Diamond's CSV, as multiple choice with seeded option order (`rg_seed`);
* a path — any question file (`dasd.data.records.Question`); multiple-choice questions carry `choices` (a list) and
  the answer as a letter or as the text of the right choice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import ConfigError, InputError
from ..grading.answers import CHOICE_LETTERS
from .records import load_questions

SHIPPED = {"aime24": "aime24.jsonl", "aime25": "aime25.jsonl"}
# The report's generation limits: 102,400 tokens for AIME, 81,920 for GPQA and LiveCodeBench (the fallback).
DEFAULT_MAX_NEW_TOKENS = {"aime24": 102400, "aime25": 102400}
FALLBACK_MAX_NEW_TOKENS = 81920
MATH_SUFFIX = "Please reason step by step, and put your final answer within \\boxed{}."
CHOICE_SUFFIX = "Answer with the letter of the correct option, within \\boxed{}."


@dataclass
class Benchmark:
    name: str
    questions: list[dict[str, Any]]
    kind: str  # math | choice | mixed
    rg_entries: dict[str, dict] = field(default_factory=dict)  # question id -> reasoning-gym entry
    rg_dataset: Any = None


def _with_choices(question: dict[str, Any], path: str) -> dict[str, Any]:
    choices = question.get("choices")
    if not choices:
        return question
    if not isinstance(choices, list) or not 2 <= len(choices) <= len(CHOICE_LETTERS):
        raise InputError(
            path, None, "choices", f"question {question['id']}: must be a list of 2 to {len(CHOICE_LETTERS)} options"
        )
    answer = (question.get("answer") or "").strip()
    if answer and answer not in CHOICE_LETTERS[: len(choices)]:
        matches = [index for index, choice in enumerate(choices) if str(choice).strip() == answer]
        if not matches:
            raise InputError(
                path,
                None,
                "answer",
                f"question {question['id']}: {answer!r} is neither a letter nor one of the choices",
            )
        answer = CHOICE_LETTERS[matches[0]]
    listing = "\n".join(f"{CHOICE_LETTERS[index]}. {choice}" for index, choice in enumerate(choices))
    messages = [dict(message) for message in question["messages"]]
    messages[-1]["content"] = f"{messages[-1]['content']}\n\n{listing}"
    return {**question, "messages": messages, "answer": answer, "domain": question.get("domain", "science")}


def _suffixed(question: dict[str, Any], suffix: str | None) -> dict[str, Any]:
    if not suffix:
        return question
    messages = [dict(message) for message in question["messages"]]
    messages[-1]["content"] = f"{messages[-1]['content']}\n\n{suffix}"
    return {**question, "messages": messages}


def _file_and_window(rest: str) -> tuple[str, str | None]:
    """`file[:window]` -> (file, window); the window is v5, v6 or START..END.

    >>> _file_and_window("data/lcb.jsonl:v6"), _file_and_window("data/lcb.jsonl")
    (('data/lcb.jsonl', 'v6'), ('data/lcb.jsonl', None))
    """
    file, _, window = rest.rpartition(":")
    if file and (window in ("v5", "v6") or ".." in window):
        return file, window
    return rest, None


def load_benchmark(
    spec: str,
    *,
    rg_seed: int = 0,
    default_rg_size: int = 50,
    math_suffix: str | None = MATH_SUFFIX,
    choice_suffix: str | None = CHOICE_SUFFIX,
) -> Benchmark:
    if spec in SHIPPED:
        data = resources.files("dasd").joinpath("data", SHIPPED[spec])
        with resources.as_file(data) as path:
            questions = load_questions(str(path))
        return Benchmark(spec, [_suffixed(question, math_suffix) for question in questions], "math")
    if spec.startswith(("rg:", "reasoning_gym:")):
        parts = spec.split(":")
        if len(parts) not in (2, 3) or not parts[1]:
            raise ConfigError(f"benchmark {spec!r}: expected rg:<task>[:<size>]")
        task, size = parts[1], int(parts[2]) if len(parts) == 3 else default_rg_size
        import reasoning_gym

        try:
            dataset = reasoning_gym.create_dataset(task, size=size, seed=rg_seed)
        except Exception as exc:
            raise ConfigError(f"benchmark {spec!r}: reasoning-gym cannot build {task!r} ({exc})") from None
        questions, entries = [], {}
        for index, entry in enumerate(dataset):
            question_id = f"{task}-{rg_seed}-{index}"
            entries[question_id] = entry
            questions.append(
                {
                    "id": question_id,
                    "messages": [{"role": "user", "content": entry["question"]}],
                    "answer": str(entry["answer"]),
                    "domain": "math",
                    "meta": {"task": task, "index": index},
                }
            )
        name = f"rg_{task}"
        return Benchmark(name, [_suffixed(question, math_suffix) for question in questions], "math", entries, dataset)
    if spec == "code" or spec.startswith("lcb:"):
        from .code_data import load_code_problems, load_livecodebench

        if spec == "code":
            return Benchmark("code", load_code_problems(), "code")
        file, window = _file_and_window(spec[len("lcb:") :])
        questions = load_livecodebench(file, window=window)
        window_name = f"_{window.replace('..', '_')}" if window else ""
        return Benchmark(f"lcb_{Path(file).stem}{window_name}", questions, "code")
    if spec.startswith("gpqa:"):
        from .gpqa import load_gpqa

        questions = [_with_choices(question, spec) for question in load_gpqa(spec[len("gpqa:") :], seed=rg_seed)]
        return Benchmark("gpqa_diamond", [_suffixed(question, choice_suffix) for question in questions], "choice")
    path = Path(spec)
    if not path.exists():
        raise ConfigError(
            f"benchmark {spec!r}: not a shipped benchmark ({', '.join(SHIPPED)}), an rg:<task> set, or a file"
        )
    questions = [_with_choices(question, spec) for question in load_questions(spec)]
    for question in questions:
        if question.get("answer") in (None, ""):
            raise InputError(
                spec, None, "answer", f"question {question['id']}: a benchmark question needs a reference answer"
            )
    kinds = {"choice" if question.get("choices") else "math" for question in questions}
    questions = [
        _suffixed(question, choice_suffix if question.get("choices") else math_suffix) for question in questions
    ]
    return Benchmark(path.stem, questions, kinds.pop() if len(kinds) == 1 else "mixed")
