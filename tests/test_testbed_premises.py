"""The demo world as a testbed (issue 28): what it gives each mechanism of the recipe, measured on the shipped
teacher and student from their exact probabilities (dasd's own scoring path, each model with its own tokenizer and
chat template) and one short fine-tuning run — small data, about a minute on 2 cores.

- P0: the student lacks the teacher's skill (choosing careful work over terse mental math) and learns it from a
  few hundred teacher solutions, on questions it has not seen (it is fitted to generality, not memorised).
- P1: T=1.0 raises the teacher's rarer modes against T=0.6 — in this world they are phrasings of the same careful
  work, so the premise holds in form only ("not met in value", benchmarks/PREREGISTERED.md).
- P2: candidates of one question differ in their teacher sentences — which here are rare phrasings: the skill (the
  careful opening) is a shared sentence, so DAS selects phrasing ("not met"; the test pins that diagnosis).
- P3: the student drifts (it re-checks in loops) and the teacher continues a student's prefix to the right answer.
  (Measured on the student before SFT; after the recipe it rarely drifts — 5 terse and 3 looping of 98 rollouts in
  `make ablation` — so the mixed stage has little to act on: benchmarks/RESULTS.md.)

The solutions scored are the world builder's own (`scripts/build_demo_world.py`): the texts its models were fitted
on, drawn afresh for the dev and training questions.
"""

from __future__ import annotations

import json
import math
import random
import re
import sys
from pathlib import Path

import pytest

from dasd.backends import BackendConfig, GenerationRequest, make_backend
from dasd.models.demo_world import world_dir
from dasd.sampling.mixing import continuation_prefix, cut_position
from dasd.scoring.sentence_scores import classify, sentence_scores_by_model
from dasd.scoring.token_scorers import make_token_scorer
from dasd.text.render import DEFAULT_SYSTEM_PROMPT, render_student

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import build_demo_world as builder  # noqa: E402  (scripts/ is not a package)

TERSE_OPENING = "Quick math. "  # the student's terse mental math opens so and goes on with a number

# The demo world's premises sample and score with its real models (~1 min alone on 2 cores, most of `make test-unit`'s
# time before): in `make test` and CI, not in the quick loop.
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def world() -> Path:
    return world_dir()


def questions(world: Path, split: str, count: int) -> list[dict]:
    with open(world / f"{split}.jsonl", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle][:count]


def record(question: dict, solution: str) -> dict:
    """A response record from a builder solution (`<think>\\n…\\n</think>\\n\\nanswer`)."""
    reasoning, content = solution.split("\n</think>\n\n")
    return {
        "id": question["id"],
        "messages": question["messages"],
        "reasoning": reasoning.removeprefix("<think>\n"),
        "content": content,
    }


def scorer(model: Path, role: str):
    # the student is rendered with the system prompt the demo's stages (and its fitting) use; the teacher without
    system_prompt = DEFAULT_SYSTEM_PROMPT if role == "student" else None
    return make_token_scorer(BackendConfig(model=str(model)), system_prompt=system_prompt, role=role)


def opening_probabilities(model_scorer, records: list[dict], characters: int) -> list[float]:
    """The probability of each record's first `characters` reasoning characters (all tokens starting in them)."""
    out = []
    for scores in model_scorer.score(records):
        part = scores.parts["reasoning"]
        out.append(math.exp(sum(lp for (start, _), lp in zip(part["offsets"], part["logprobs"]) if start < characters)))
    return out


def terse_records(dev: list[dict]) -> list[dict]:
    rng = random.Random(0)
    return [record(q, builder.student_solution(q["meta"]["expression"], rng, error_rate=0.0)) for q in dev]


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def fine_tune(world: Path, out: Path, train: list[dict], *, steps: int, learning_rate: float) -> Path:
    """The student after `steps` AdamW steps (batch 8) on the teacher's solutions of `train` (completion loss)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(world / "student")
    rng = random.Random(1)
    examples = []
    for question in train:
        solution = record(question, builder.teacher_solution(question["meta"]["expression"], rng))
        text = render_student(
            tokenizer,
            question["messages"],
            solution["reasoning"],
            solution["content"],
            system_prompt=DEFAULT_SYSTEM_PROMPT,
            chat_template_kwargs={},
        )
        examples.append((text.prompt_ids, text.completion_ids))
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(world / "student", dtype=torch.float32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, betas=(0.9, 0.95), weight_decay=0.0)
    model.train()
    for step in range(steps):
        batch = [examples[(step * 8 + row) % len(examples)] for row in range(8)]
        width = max(len(prompt) + len(completion) for prompt, completion in batch)
        ids = torch.zeros((8, width), dtype=torch.long)
        labels = torch.full((8, width), -100, dtype=torch.long)
        mask = torch.zeros((8, width), dtype=torch.long)
        for row, (prompt, completion) in enumerate(batch):
            ids[row, : len(prompt) + len(completion)] = torch.tensor(prompt + completion)
            mask[row, : len(prompt) + len(completion)] = 1
            labels[row, len(prompt) : len(prompt) + len(completion)] = torch.tensor(completion)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def test_p0_the_student_lacks_the_skill_and_learns_it_on_questions_it_has_not_seen(world, tmp_path):
    dev = terse_records(questions(world, "dev_questions", 8))
    opening = len(TERSE_OPENING) + 1  # "Quick math. " and the first digit: the terse mode, not the phrasing
    student = mean(opening_probabilities(scorer(world / "student", "student"), dev, opening))
    teacher = mean(opening_probabilities(scorer(world / "teacher", "teacher"), dev, opening))
    assert 0.6 < student < 0.8  # fitted: 70% of its corpus is terse (measured 0.70)
    assert teacher < 0.01  # the teacher always writes every step (measured 0.000)
    # 32 steps × 8 = 256 teacher solutions of training questions (measured: 40 steps at 5e-5 took it to 0.25)
    tuned = fine_tune(world, tmp_path / "tuned", questions(world, "train_questions", 128), steps=32, learning_rate=5e-5)
    after = mean(opening_probabilities(scorer(tuned, "student"), dev, opening))
    assert after < student - 0.25, (student, after)


def test_p1_temperature_one_raises_the_teachers_rarer_modes(world):
    """Each opening sentence's first token decides it; its share at temperature T is p^(1/T), renormalised over
    the three openings (the rest of the vocabulary holds ~1e-6). Averaged over 8 training questions."""
    openings = [text for text, _ in builder.TEACHER_PHRASINGS["intro"]]
    teacher = scorer(world / "teacher", "teacher")
    by_temperature: dict[float, list[list[float]]] = {0.6: [], 1.0: []}
    for question in questions(world, "train_questions", 8):
        records = [record(question, f"<think>\n{text} Start with 1.\n</think>\n\nx") for text in openings]
        first = [scores.parts["reasoning"]["logprobs"][0] for scores in teacher.score(records)]
        for temperature, shares in by_temperature.items():
            weights = [math.exp(lp / temperature) for lp in first]
            shares.append([weight / sum(weights) for weight in weights])
    share = {temperature: [mean(column) for column in zip(*rows)] for temperature, rows in by_temperature.items()}
    assert sum(share[1.0]) == pytest.approx(1.0)
    # its fitted mix is not the designed 0.6 / 0.3 / 0.1 (measured on one question: 0.81 / 0.02 / 0.17); the
    # rarer openings gain at T=1.0 and the common one loses
    common = share[1.0].index(max(share[1.0]))
    assert share[1.0][common] < share[0.6][common]
    for position in range(len(openings)):
        if position != common:
            assert share[1.0][position] > 1.1 * share[0.6][position], share


def test_p2_candidates_differ_in_teacher_sentences_which_here_are_phrasings(world):
    teacher, student = scorer(world / "teacher", "teacher"), scorer(world / "student", "student")
    rng = random.Random(3)
    counts, classes_of = [], {}
    for question in questions(world, "train_questions", 3):
        candidates = [record(question, builder.teacher_solution(question["meta"]["expression"], rng)) for _ in range(6)]
        per_candidate = []
        for candidate, by_teacher, by_student in zip(candidates, teacher.score(candidates), student.score(candidates)):
            scored, error = sentence_scores_by_model(
                candidate, {"teacher": by_teacher.parts, "student": by_student.parts}
            )
            assert error is None
            kinds = []
            for part, start, end, means in scored:
                kind = classify(means["teacher"], means["student"], beta=0.1)
                kinds.append(kind)
                text = candidate[part][start:end]
                classes_of.setdefault(re.sub(r"-?\d+", "N", text), set()).add(kind)
            per_candidate.append(kinds.count("teacher"))
        counts.append(per_candidate)
    assert all(len(set(per_candidate)) > 1 for per_candidate in counts)  # a question's candidates differ
    assert sum(map(sum, counts)) > 0.05 * sum(len(c) for c in counts) * 8  # teacher sentences are common
    # the diagnosis of PREREGISTERED.md (P2 not met): the careful opening, which carries the skill, is shared;
    # the teacher sentences include rare phrasings of the same steps
    assert classes_of["I will work from left to right, one term at a time."] == {"shared"}
    rare = [text for text, kinds in classes_of.items() if "teacher" in kinds]
    assert any(text.startswith(("The next term is", "Then I take")) for text in rare), rare


def test_p3_the_student_loops_and_the_teacher_continues_its_prefixes_to_the_right_answer(world):
    dev = questions(world, "dev_questions", 6)
    rng = random.Random(5)
    careful = []  # the student's careful work (its own arithmetic, here without slips), as it writes it
    for question in dev:
        steps = builder.student_steps(question["meta"]["expression"], rng, error_rate=0.0, misconception=False)
        careful.append(record(question, builder.teacher_solution(question["meta"]["expression"], None, steps)))
    # drift: after its last step the student re-checks in a loop instead of closing
    student = scorer(world / "student", "student")
    loop_probabilities = []
    for work in careful:
        looped = {**work, "reasoning": builder.with_loop(f"<think>\n{work['reasoning']}\n</think>", random.Random(0))}
        looped["reasoning"] = looped["reasoning"].removeprefix("<think>\n").removesuffix("\n</think>")
        start = looped["reasoning"].index("Wait")
        part = next(student.score([looped])).parts["reasoning"]
        loop_probabilities.append(
            math.exp(next(lp for (_, end), lp in zip(part["offsets"], part["logprobs"]) if end > start))
        )
    assert 0.1 < mean(loop_probabilities) < 0.4, loop_probabilities  # fitted: 20% of its corpus loops
    # recovery: the teacher continues the student's work cut where mixed-policy cuts it (a sentence end in the
    # second half, `dasd.sampling.mixing.cut_position`) and reaches the right answer (measured 5 of 6)
    teacher = make_backend(BackendConfig(model=str(world / "teacher")))
    requests = [
        GenerationRequest(
            id=work["id"],
            messages=work["messages"],
            temperature=1.0,
            max_new_tokens=128,
            seed=1,
            assistant_prefix=continuation_prefix(
                work["reasoning"][: cut_position(work["reasoning"], seed=1, key=work["id"])], "think"
            ),
        )
        for work in careful
    ]
    answers = {question["id"]: question["answer"] for question in dev}
    right = 0
    for result in teacher.generate(requests):
        boxed = re.findall(r"\\boxed\{(-?\d+)\}", result.raw_text)
        right += bool(boxed) and boxed[-1] == answers[result.id]
    teacher.close()
    assert right >= 4, right
