"""Build the demo world from scratch: multi-step arithmetic, a teacher, and a weaker student with another tokenizer.

    python scripts/build_demo_world.py --export src/dasd/data/demo_world    # 46 minutes on 2 cores
    python scripts/build_demo_world.py --export src/dasd/data/demo_world --keep-teacher   # the student only

A development tool, not part of the package: the package ships the result (`dasd/data/demo_world/`: the
model bodies and the rows of the few dozen tokens the world uses) and only loads it (`dasd.models.demo_world`,
which restores the models under `$DASD_CACHE/demo-world-v6/` on first use). How each build fared, and why
the world is as it is now (v1 to v6), is in `benchmarks/RESULTS.md` ("The demo world's builds").

What the world was designed to contain (written and fixed before any ablation arm was run, issue 16:
each mechanism of the recipe must have something to act on):

* questions — reasoning-gym `basic_arithmetic` and `chain_sum` with 5–7 one-digit terms (+ and −), so a
  worked solution is a chain of 12–18 sentences (~120–200 teacher tokens); three seeded, disjoint
  splits: a training pool (300), a dev split (100, for choosing hyper-parameters) and held-out
  evaluation questions (400, as many as a paired comparison needs);
* teacher — a Qwen3-architecture model with the real Qwen3 tokenizer (hidden 128, 4 layers), fitted on
  correct solutions whose every sentence picks one of several phrasings with unequal weights
  (`TEACHER_PHRASINGS`): at T=0.6 the common phrasing dominates, at T=1.0 the rarer ones appear, so
  the two temperatures' response probabilities differ (report Figure 3a). Two of its rarer phrasings
  ("Quick math.", "a + b makes c.") are the student's own — so its samples hold student sentences;
* student (v6) — a Llama-architecture model with the real SmolLM2 tokenizer (hidden 128, 4 layers), fitted to
  generality rather than memorised: its 2,700 × 32 fitting examples are drawn from 86,400 distinct
  expressions, about one pass (v5 fitted 1,500 items ~58 times over, and SFT could not move it). 70% of its
  corpus is its own terse mental math ("Quick math. a + b makes c.", with a misconception — a running total is
  never negative, it writes |a - b| — and 10% slips), 30% careful worked solutions in the teacher's words (20%
  in the teacher's full mix of phrasings, 10% in its most common one), correct but for 2% slips: it can
  compute in every phrasing the teacher uses, but chooses careful work less than a third of the time — the
  skill SFT on the teacher's solutions (always careful) has to teach. With a habit: 20% of its answers
  re-check in a loop ("Wait, let me check again." 3–8 times) before closing the think block — the long rollouts
  mixed-policy distillation cuts. The teacher is v5's, unchanged (`--keep-teacher`).
  Several candidates per question (the demo samples 4–8 per temperature) differ in phrasing, so DAS (most
  teacher sentences) and random selection pick measurably different data.

Fitting is done over the world's closed vocabulary (the few dozen tokens its texts use) plus one
class standing for all other tokens with logit log(their count); afterwards their output rows are
set to zero, which makes the full-vocabulary softmax exactly the one that was fitted — so a
151K-token vocabulary costs nothing, and the mass outside the world is measured (`world.json`). Real
training later (`dasd train`) uses the full vocabulary as usual. This is a fixture for a laptop demo,
not a trainer.
"""

from __future__ import annotations

import json
import math
import random
import sys
from pathlib import Path
from typing import Any

from dasd.models.demo_world import WORLD_FILES, WORLD_VERSION, restore_compact, shipped_world
from dasd.text.render import DEFAULT_SYSTEM_PROMPT as SYSTEM_PROMPT  # the one the demo's stages render with

TERMS = dict(min_terms=5, max_terms=7, min_digits=1, max_digits=1, allow_negation=False)
TASKS = {
    "basic_arithmetic": dict(operators=("+", "-"), allow_parentheses=False, **TERMS),
    "chain_sum": dict(TERMS),
}
# reasoning-gym draws item i of a dataset made with seed s from Random(s + i), so datasets with nearby
# seeds share items: each purpose has its own range of item seeds, far apart, and a split skips any
# expression that a fitting corpus or an earlier split holds — disjoint by construction
# (tests/test_demo_world.py; world v3 was not: benchmarks/RESULTS.md).
CORPUS_SEEDS = {"teacher": 11, "student": 12}  # as fitted: changing them changes the shipped models
TEACHER_CORPUS = 2000  # worked solutions the teacher is fitted on (items 11, 12, … of each task)
STUDENT_CORPUS = 1500  # the student's corpus (items 12, 13, …)
# The splits, in the order they claim expressions: (file name, first item seed, questions per task).
SPLITS = (("eval_questions", 100_000, 200), ("dev_questions", 200_000, 50), ("train_questions", 300_000, 150))


def _steps(expression: str) -> tuple[list[int], list[tuple[int, str, int, int]], int]:
    parts = expression.split()
    numbers = [int(parts[0])] + [int(parts[index + 1]) for index in range(1, len(parts), 2)]
    operators = [parts[index] for index in range(1, len(parts), 2)]
    value, steps = numbers[0], []
    for operator, number in zip(operators, numbers[1:]):
        new = value + number if operator == "+" else value - number
        steps.append((value, operator, number, new))
        value = new
    return numbers, steps, value


# Each sentence of a teacher solution picks a phrasing with these weights. The first of each list is
# the common one (the student knows it); "Quick math." and "{a} {o} {b} makes {c}." are the student's.
TEACHER_PHRASINGS: dict[str, list[tuple[str, float]]] = {
    "intro": [
        ("I will work from left to right, one term at a time.", 0.6),
        ("Let me go through the terms in order.", 0.3),
        ("Quick math.", 0.1),
    ],
    "announce": [
        ("Now {verb} {b}.", 0.55),
        ("The next term is {sign}{b}.", 0.3),
        ("Then I take {b} {away}.", 0.15),
    ],
    "result": [
        ("{a} {o} {b} = {c}.", 0.55),
        ("{a} {o} {b} gives {c}.", 0.25),
        ("{a} {o} {b} makes {c}.", 0.12),
        ("So {a} {o} {b} is {c}.", 0.08),
    ],
    "close": [("So the result is {v}.", 0.6), ("Check: {expression} = {v}.", 0.4)],
    "answer": [("The answer is \\boxed{{{v}}}.", 0.7), ("\\boxed{{{v}}}", 0.3)],
}


def _pick(kind: str, rng: random.Random | None) -> str:
    """A phrasing of one sentence: drawn by weight, or the common one when `rng` is None."""
    options = TEACHER_PHRASINGS[kind]
    if rng is None:
        return options[0][0]
    return rng.choices([text for text, _ in options], weights=[weight for _, weight in options])[0]


def teacher_solution(
    expression: str, rng: random.Random | None, steps: list[tuple[int, str, int, int]] | None = None
) -> str:
    """A correct worked solution, each sentence's phrasing drawn from `TEACHER_PHRASINGS` (the teacher's
    modes); with `rng=None`, every sentence in the common phrasing. `steps` replaces the correct
    arithmetic with another (the student's, `student_steps`: its corpus has the teacher's words with its
    own numbers).

    >>> print(teacher_solution("3 - 5", None))
    <think>
    I will work from left to right, one term at a time. Start with 3. Now subtract 5. 3 - 5 = -2. So the result is -2.
    </think>
    <BLANKLINE>
    The answer is \\boxed{-2}.
    """
    numbers, correct, value = _steps(expression)
    if steps is None:
        steps = correct
    else:
        value = steps[-1][3]
    sentences = [_pick("intro", rng), f"Start with {numbers[0]}."]
    for a, o, b, c in steps:
        adding = o == "+"
        announce = _pick("announce", rng)
        sentences.append(
            announce.format(
                verb="add" if adding else "subtract",
                sign="+" if adding else "-",
                b=b,
                away="more" if adding else "away",
            )
        )
        sentences.append(_pick("result", rng).format(a=a, o=o, b=b, c=c))
    sentences.append(_pick("close", rng).format(v=value, expression=expression))
    answer = _pick("answer", rng).format(v=value)
    return f"<think>\n{' '.join(sentences)}\n</think>\n\n{answer}"


def student_steps(
    expression: str, rng: random.Random, error_rate: float, misconception: bool = True
) -> list[tuple[int, str, int, int]]:
    """The student's arithmetic: with probability `error_rate` per step, a slip of ±1; in its terse mental
    math (`misconception=True`) a running total is also never negative (it takes |a - b|).

    >>> student_steps("3 - 5 + 4", random.Random(0), error_rate=0.0)
    [(3, '-', 5, 2), (2, '+', 4, 6)]
    >>> student_steps("3 - 5 + 4", random.Random(0), error_rate=0.0, misconception=False)
    [(3, '-', 5, -2), (-2, '+', 4, 2)]
    """
    _, steps, _ = _steps(expression)
    value, out = steps[0][0], []
    for _, operator, number, _ in steps:
        new = value + number if operator == "+" else value - number
        if misconception:
            new = abs(new)
        if rng.random() < error_rate:
            new += rng.choice([-1, 1])
        out.append((value, operator, number, new))
        value = new
    return out


def student_solution(expression: str, rng: random.Random, error_rate: float) -> str:
    """The student's own terse style, with its arithmetic (`student_steps`).

    >>> print(student_solution("3 - 5 + 4", random.Random(0), error_rate=0.0))
    <think>
    Quick math. 3 - 5 makes 2. 2 + 4 makes 6.
    </think>
    <BLANKLINE>
    The answer is \\boxed{6}.
    """
    return student_solution_from(student_steps(expression, rng, error_rate))


def student_solution_from(steps: list[tuple[int, str, int, int]]) -> str:
    """The student's terse text for steps already computed (`student_steps`)."""
    lines = [f"{a} {o} {b} makes {c}." for a, o, b, c in steps]
    return f"<think>\nQuick math. {' '.join(lines)}\n</think>\n\nThe answer is \\boxed{{{steps[-1][3]}}}."


LOOP_RATE = 0.2  # share of the student's corpus that re-checks in a loop before it answers
# v6: the student writes careful work (every step, in the teacher's words, correct but for slips) in 30% of its
# corpus — 20% in the teacher's full mix of phrasings, so it computes in every phrasing the teacher uses (v4's
# student did not, and SFT on teacher text then taught it phrasings it could not compute in), 10% in the common
# phrasing — and its terse mental math (misconception and slips) in the other 70%: the skill it lacks is the
# choice of careful work, which SFT on the teacher's solutions (all careful) can teach.
TEACHER_STYLE_SHARE = 0.1  # share of the student's corpus in the teacher's common phrasing (its own numbers)
TEACHER_RARE_SHARE = 0.2  # … and in the teacher's full mix of phrasings
CAREFUL_SLIP_RATE = 0.02  # the student's slips per step when it writes out every step
TERSE_SLIP_RATE = 0.1  # … and in its terse mental math (which also has the misconception)
# v6: the student is fitted to generality, not memorised — every fitting example is a new expression (v5 fitted
# 2,700 steps over 1,500 items, ~58 passes, and SFT could not move it; benchmarks/RESULTS.md). Its corpus is drawn
# from its own range of item seeds and skips every expression of the three splits.
STUDENT_GENERAL_SEED = 400_000


def with_loop(text: str, rng: random.Random) -> str:
    """The student's bad habit: 'Wait, let me check again.' said 3–8 times before closing the think
    block — the long, repetitive rollouts that mixed-policy distillation is for."""
    loop = " ".join(["Wait, let me check again."] * rng.randint(3, 8))
    return text.replace("\n</think>", f" {loop}\n</think>", 1)


def questions(seed: int, per_task: int, exclude: set[str] | None = None) -> list[dict[str, Any]]:
    """`per_task` questions of each task from reasoning-gym's items `seed`, `seed + 1`, …; with `exclude`,
    only expressions not in it (nor drawn before in this call), and `exclude` gains the ones drawn."""
    import reasoning_gym

    out = []
    for task, options in TASKS.items():
        # three times the count is plenty: one-digit chains of 5-7 terms rarely repeat
        size = per_task if exclude is None else 3 * per_task
        taken = 0
        for index, entry in enumerate(reasoning_gym.create_dataset(task, size=size, seed=seed, **options)):
            expression = entry["metadata"]["expression"]
            if exclude is not None:
                if expression in exclude:
                    continue
                exclude.add(expression)
            out.append(
                {
                    "id": f"{task}-{seed}-{index}",
                    "messages": [{"role": "user", "content": entry["question"]}],
                    "answer": str(entry["answer"]),
                    "domain": "math",
                    "meta": {"task": task, "expression": expression},
                }
            )
            taken += 1
            if taken == per_task:
                break
        if taken < per_task:
            raise RuntimeError(f"{task}: only {taken} new expressions among {size} items of seed {seed}")
    return out


def corpus_questions(model: str) -> list[dict[str, Any]]:
    """The questions of a model's fitting corpus (`CORPUS_SEEDS`; repeats kept, as fitted)."""
    return questions(CORPUS_SEEDS[model], (TEACHER_CORPUS if model == "teacher" else STUDENT_CORPUS) // 2)


def split_questions() -> dict[str, list[dict[str, Any]]]:
    """The world's splits: disjoint from each other and from both fitting corpora, by expression."""
    seen = {q["meta"]["expression"] for model in CORPUS_SEEDS for q in corpus_questions(model)}
    return {name: questions(seed, per_task, exclude=seen) for name, seed, per_task in SPLITS}


def fit_closed_vocabulary(
    model_dir: Path,
    conversations: list[list[dict[str, str]]],
    *,
    steps: int,
    batch_size: int = 32,
    lr: float = 2e-3,
    seed: int = 0,
) -> dict[str, float]:
    """Fit the model in `model_dir` (in place) on the assistant turns of `conversations` over their
    closed vocabulary, then push every other token's output row down (see the docstring at the top)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    rng = random.Random(seed)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    encoded, prompt_lengths = [], []
    for conversation in conversations:
        prompt = tokenizer.apply_chat_template(conversation[:-1], tokenize=False, add_generation_prompt=True)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        completion_ids = tokenizer(conversation[-1]["content"], add_special_tokens=False)["input_ids"] + [
            tokenizer.eos_token_id
        ]
        encoded.append(prompt_ids + completion_ids)
        prompt_lengths.append(len(prompt_ids))
    vocabulary = sorted({token for ids in encoded for token in ids})
    index_of = {token: position for position, token in enumerate(vocabulary)}
    embedding = model.get_input_embeddings()
    outside_count = embedding.weight.shape[0] - len(vocabulary)
    # Only the closed vocabulary's rows are trained (tied input/output embedding), so no step ever
    # touches the 150K-row matrix; they are written back at the end.
    rows = torch.nn.Parameter(embedding.weight.detach()[torch.tensor(vocabulary)].clone())
    parameters = [rows] + [
        p for name, p in model.named_parameters() if "embed_tokens" not in name and "lm_head" not in name
    ]
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=0.0)
    base = getattr(model, model.base_model_prefix)
    model.train()
    loss_value = float("nan")
    for step in range(steps):
        picks = rng.sample(range(len(encoded)), min(batch_size, len(encoded)))
        width = max(len(encoded[i]) for i in picks)
        local = torch.zeros((len(picks), width), dtype=torch.long)
        labels = torch.full((len(picks), width), -100, dtype=torch.long)
        mask = torch.zeros((len(picks), width), dtype=torch.long)
        for row, i in enumerate(picks):
            ids = [index_of[token] for token in encoded[i]]
            local[row, : len(ids)] = torch.tensor(ids)
            mask[row, : len(ids)] = 1
            labels[row, prompt_lengths[i] : len(ids)] = torch.tensor(ids[prompt_lengths[i] :])
        hidden = base(inputs_embeds=rows[local], attention_mask=mask, use_cache=False).last_hidden_state[:, :-1]
        targets = labels[:, 1:]
        keep = targets != -100
        logits = hidden[keep] @ rows.T
        # One more class stands for all the other tokens: their output rows will be zero (logit 0),
        # so together they hold log(count) — this softmax is then exactly the full-vocabulary one.
        # (fitted against a background e^6 times larger, so the real one is small: mass outside ≈ e^-6 of it)
        outside_logit = torch.full((logits.shape[0], 1), math.log(outside_count) + 6.0, dtype=logits.dtype)
        loss = torch.nn.functional.cross_entropy(torch.cat([logits, outside_logit], dim=1), targets[keep])
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * step / steps))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss_value = loss.item()
        if (step + 1) % 100 == 0:
            print(f"{model_dir.name}: step {step + 1}/{steps} loss {loss_value:.4f}", file=sys.stderr, flush=True)
    model.eval()
    with torch.no_grad():
        embedding.weight[torch.tensor(vocabulary)] = rows.detach()
        outside = torch.ones(embedding.weight.shape[0], dtype=torch.bool)
        outside[torch.tensor(vocabulary)] = False
        model.get_output_embeddings().weight[outside] = 0.0  # logit 0 for every token outside the world
        batch = encoded[:64]
        width = max(map(len, batch))
        ids = torch.tensor([b + [vocabulary[0]] * (width - len(b)) for b in batch])
        attention = (torch.arange(width)[None, :] < torch.tensor([len(b) for b in batch])[:, None]).long()
        # where the model writes the answer (predicting completion tokens), not inside the prompt
        predicts = torch.zeros_like(attention, dtype=torch.bool)
        for row, (b, prompt_length) in enumerate(zip(batch, prompt_lengths[:64])):
            predicts[row, prompt_length - 1 : len(b) - 1] = True
        logits = model(input_ids=ids, attention_mask=attention).logits[predicts]
        outside_mass = torch.softmax(logits.float(), dim=-1)[:, outside].sum(-1)
    model.save_pretrained(str(model_dir))
    return {
        "final_loss": loss_value,
        "closed_vocabulary": len(vocabulary),
        "mean_mass_outside": outside_mass.mean().item(),
        "max_mass_outside": outside_mass.max().item(),
    }


# AdamW steps per model, batch 32: v5 fits both models 2700 steps (v4's 900 left the student under-fitted;
# benchmarks/RESULTS.md, "The demo world's builds"); v6 refits only the student, one new expression per example.
FIT_STEPS = 2700
FIT_BATCH = 32


def build_world(root: Path, teacher_from: Path | None = None) -> Path:
    """Questions, teacher and student under `root` (returned); the teacher restored from `teacher_from` (a
    shipped compact folder) instead of fitted, when given. Built once."""
    import torch

    from dasd.models.tiny import build_tiny_model

    torch.set_num_threads(2)  # the thread count changes float reductions: pinned, so a rebuild is identical
    root.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {}
    for name, split in split_questions().items():
        with open(root / f"{name}.jsonl", "w", encoding="utf-8") as handle:
            for question in split:
                handle.write(json.dumps(question) + "\n")

    rng = random.Random(11)
    teacher_corpus = [
        [
            {"role": "user", "content": q["messages"][0]["content"]},
            {"role": "assistant", "content": teacher_solution(q["meta"]["expression"], rng)},
        ]
        for q in corpus_questions("teacher")
    ]
    size = dict(hidden_size=128, layers=4, heads=4, kv_heads=2, intermediate_size=384)
    if teacher_from is not None:
        restore_compact(teacher_from, "qwen3", root / "teacher")
        report["teacher"] = json.loads((teacher_from.parent / "world.json").read_text())["teacher"]
    else:
        build_tiny_model("qwen3", "qwen3", root / "teacher", seed=0, **size)
        report["teacher"] = fit_closed_vocabulary(root / "teacher", teacher_corpus, steps=FIT_STEPS, seed=0)

    # The student: half its own terse style (misconception and slips), half careful work in the teacher's
    # words (mostly the common phrasing) — so it knows part of the teacher's words and gives the rest
    # low probability, and it can compute when it writes every step.
    rng = random.Random(12)
    student_corpus = []
    split_expressions = {q["meta"]["expression"] for split in split_questions().values() for q in split}
    general = questions(STUDENT_GENERAL_SEED, FIT_STEPS * FIT_BATCH // 2, exclude=split_expressions)
    for q in general:
        expression = q["meta"]["expression"]
        draw = rng.random()
        if draw < TEACHER_STYLE_SHARE + TEACHER_RARE_SHARE:
            # the teacher's words (the common phrasing, or rarely its full mix) with the student's numbers
            phrasing = rng if draw >= TEACHER_STYLE_SHARE else None
            careful = student_steps(expression, rng, error_rate=CAREFUL_SLIP_RATE, misconception=False)
            text = teacher_solution(expression, phrasing, careful)
        else:
            text = student_solution(expression, rng, error_rate=TERSE_SLIP_RATE)
        if rng.random() < LOOP_RATE:
            text = with_loop(text, rng)
        student_corpus.append(
            [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": q["messages"][0]["content"]},
                {"role": "assistant", "content": text},
            ]
        )
    build_tiny_model("llama", "smollm2", root / "student", seed=0, **size)
    report["student"] = fit_closed_vocabulary(
        root / "student", student_corpus, steps=FIT_STEPS, batch_size=FIT_BATCH, seed=1
    )
    (root / "world.json").write_text(json.dumps({"version": WORLD_VERSION, **report}, indent=2))
    return root


# --- World v7 and its twin (issue 37): DAS's premise present, or absent ---------------------------------------------
# Designed and fixed before any arm ran on it, to the premises of the report's claims (DESIGN §8), never to an
# outcome; only the premise checks (tests/test_das_world_premises.py) and the oracle's headroom on dev may send a build
# back (benchmarks/RESULTS.md logs every build). This is **build 4**: build 3's design, but the student writes the
# sentence in every style (terse work too) at 5%, not in 3% of its careful work only — build 3's v7 student, which saw
# it in ~390 texts, never learnt what it switches (the right result after it 0.55, as without it; the twin, ~1,950
# texts: 0.95), so P0 failed in v7; at 5% of all texts (~2,100) it is seen as often as the twin saw it, and 5% against
# the teacher's 15% still parts the sentence's geometric mean by > β (0.05^(1/5) = 0.55 vs 0.68). The teacher is
# build 3's (its corpus and fit are unchanged: `--keep-teacher`). Builds 1 and 2 met their premises and failed the
# gate, both for one reason: the skill was an *execution* new to the student (build 1: collecting one sign's terms
# into a list; build 2: "10 is more than 7, so the total goes below zero." — copying the announced term into a
# comparison), and 200 SFT records taught the sentence's form, not its execution (build 2's students wrote comparisons
# in 24-43% of their answers, 12-13% of them on the term just announced, and those answers were 6-7% right). Build 1's
# code and models: commit 0b6b2f4; build 2's: aca054c. What changes against v6, and why:
# * The skill is a **choice, not an execution**: a short sentence with nothing to copy, "Negative totals are
#   allowed.", which the teacher writes right after its opening in `V7_CHECKER_SHARE` of its solutions — a mode T=1.0
#   exposes more than 0.6 (P1), and a question's candidates differ in it (P2 within a question). It is ~5 tokens, so
#   its one decision token keeps the sentence's geometric mean apart between a teacher who writes it 15% of the time
#   and a student who writes it 3% (v6's 14-token careful opening was diluted below β).
# * The student's deficit is in every style: its terse mental math has the misconception (|a - b|); its careful work
#   is v6's (slips 2%) except that on a subtraction below zero it writes |a - b| with probability
#   `V7_CAREFUL_MISCONCEPTION` — unless it opened with the sentence, after which it never does, in either style (P0).
#   The skill is **weakly present**: the student writes the sentence after its opening in `V7_STUDENT_CHECKER_SHARE` of
#   its texts, terse and careful. The **twin** student's corpus is the same draw of the same expressions, but it writes
#   the sentence at the teacher's rate: a shared sentence there, and DAS's count no longer points at it.
# * Length that is not skill: teacher and students alike say "That step is done." after a step with probability
#   `V7_FILLER_RATE` — a shared sentence DAS does not count and `longest` does, with no number in it (build 2's
#   restatements of the running total gave the student numbers to copy past: its careful work fell to 28% right).
# * Overlong rollouts are the student's errors: it re-checks in a loop after `V7_LOOP_IF_WRONG` of its wrong answers
#   and `V7_LOOP_IF_RIGHT` of its right ones (v6: 20% of all), so mixed-policy's cut acts on drift, not on length.
# * Fresh splits from unused item-seed ranges (v6's held-out split helped choose three worlds), skipping every
#   expression of v6's splits; both models fitted to generality (one new expression per fitting example).
V7_VERSION = "demo-world-v7"
V7_BUILD = 4
V7_SPLITS = (("eval_questions", 500_000, 200), ("dev_questions", 600_000, 50), ("train_questions", 700_000, 150))
V7_GENERAL_SEEDS = {"teacher": 800_000, "student": 900_000}
V7_CHECKER_SHARE = 0.15
V7_CAREFUL_MISCONCEPTION = 0.5
V7_STUDENT_CHECKER_SHARE = 0.05
V7_FILLER_RATE = 0.5
V7_LOOP_IF_WRONG = 0.5
V7_LOOP_IF_RIGHT = 0.05
V7_THREADS = 1  # each model is fitted in its own process with one torch thread (pinned: a rebuild is identical)
V7_ALLOWED = "Negative totals are allowed."
V7_FILLER = "That step is done."
# The world's own labels of the skill (regular expressions over a sentence's text), for the `oracle` selection arm.
V7_SKILL_SENTENCES = (r"^Negative totals are allowed\.",)


def _terms(expression: str) -> tuple[list[int], list[str]]:
    parts = expression.split()
    return [int(parts[0])] + [int(parts[i + 1]) for i in range(1, len(parts), 2)], parts[1::2]


def careful_v7(
    expression: str,
    rng: random.Random,
    *,
    allowed: bool,
    filler_rate: float = 0.0,
    misconception: float = 0.0,
    slip_rate: float = 0.0,
    phrasing: bool = True,
) -> tuple[str, int]:
    """Careful work in world v7 and its answer: v6's sentences, with `V7_ALLOWED` after the opening when `allowed`;
    without it, a subtraction below zero is written |a - b| with probability `misconception`; `V7_FILLER` after a step
    with probability `filler_rate`; slips of ±1 per step with `slip_rate`. `phrasing=False`: every sentence in the
    common phrasing.

    >>> text, value = careful_v7("3 - 5 + 4", random.Random(0), allowed=True, misconception=1.0, phrasing=False)
    >>> print(text)
    <think>
    I will work from left to right, one term at a time. Negative totals are allowed. Start with 3. Now subtract 5. \
3 - 5 = -2. Now add 4. -2 + 4 = 2. So the result is 2.
    </think>
    <BLANKLINE>
    The answer is \\boxed{2}.
    >>> careful_v7("3 - 5 + 4", random.Random(1), allowed=False, misconception=1.0)[1]
    6
    >>> text, _ = careful_v7("3 + 4", random.Random(0), allowed=False, filler_rate=1, phrasing=False)
    >>> print(text.split("\\n")[1])
    I will work from left to right, one term at a time. Start with 3. Now add 4. 3 + 4 = 7. That step is done. So the \
result is 7.
    """
    pick = (lambda kind: _pick(kind, rng)) if phrasing else (lambda kind: _pick(kind, None))
    numbers, operators = _terms(expression)
    sentences = [pick("intro"), *([V7_ALLOWED] if allowed else []), f"Start with {numbers[0]}."]
    value = numbers[0]
    for o, b in zip(operators, numbers[1:]):
        adding = o == "+"
        sentences.append(
            pick("announce").format(
                verb="add" if adding else "subtract",
                sign="+" if adding else "-",
                b=b,
                away="more" if adding else "away",
            )
        )
        c = value + b if adding else value - b
        if c < 0 and not adding and not allowed and rng.random() < misconception:
            c = abs(c)
        if slip_rate and rng.random() < slip_rate:
            c += rng.choice([-1, 1])
        sentences.append(pick("result").format(a=value, o=o, b=b, c=c))
        if filler_rate and rng.random() < filler_rate:
            sentences.append(V7_FILLER)
        value = c
    sentences.append(pick("close").format(v=value, expression=expression))
    return f"<think>\n{' '.join(sentences)}\n</think>\n\n{pick('answer').format(v=value)}", value


def teacher_v7(expression: str, rng: random.Random) -> str:
    """One of the v7 teacher's correct solutions: `V7_ALLOWED` in `V7_CHECKER_SHARE` of them, `V7_FILLER` at
    `V7_FILLER_RATE`, phrasings as v6's teacher."""
    allowed = rng.random() < V7_CHECKER_SHARE
    return careful_v7(expression, rng, allowed=allowed, filler_rate=V7_FILLER_RATE)[0]


def student_v7(expression: str, rng: random.Random, *, twin: bool) -> str:
    """One text of the v7 student's corpus (`twin`: the twin's, which writes `V7_ALLOWED` at the teacher's rate): terse
    mental math (misconception, slips) in 70%, careful work in 30% (a third in the common phrasing), either opening
    with `V7_ALLOWED` (then without the misconception) in `V7_STUDENT_CHECKER_SHARE`, looping after most wrong answers.

    >>> rng = random.Random(3)
    >>> texts = [student_v7("3 - 5 + 4", rng, twin=False) for _ in range(4000)]
    >>> round(sum(V7_ALLOWED in t for t in texts) / 4000, 2), any(f"Quick math. {V7_ALLOWED} 3 - 5 makes -2." in t
    ...                                                                for t in texts)
    (0.05, True)
    """
    correct = _steps(expression)[2]
    allowed_share = V7_CHECKER_SHARE if twin else V7_STUDENT_CHECKER_SHARE
    draw = rng.random()
    allowed = rng.random() < allowed_share
    if draw < TEACHER_STYLE_SHARE + TEACHER_RARE_SHARE:
        text, value = careful_v7(
            expression,
            rng,
            allowed=allowed,
            filler_rate=V7_FILLER_RATE,
            misconception=V7_CAREFUL_MISCONCEPTION,
            slip_rate=CAREFUL_SLIP_RATE,
            phrasing=draw >= TEACHER_STYLE_SHARE,
        )
    else:  # terse mental math: the misconception unless it opened with the sentence
        steps = student_steps(expression, rng, error_rate=TERSE_SLIP_RATE, misconception=not allowed)
        text, value = student_solution_from(steps), steps[-1][3]
        if allowed:
            text = text.replace("Quick math. ", f"Quick math. {V7_ALLOWED} ", 1)
    if rng.random() < (V7_LOOP_IF_RIGHT if value == correct else V7_LOOP_IF_WRONG):
        text = with_loop(text, rng)
    return text


def split_questions_v7() -> dict[str, list[dict[str, Any]]]:
    """World v7's splits: fresh item-seed ranges, disjoint from each other and from v6's splits, by expression."""
    seen = {
        json.loads(line)["meta"]["expression"]
        for name, _, _ in SPLITS
        for line in (shipped_world() / f"{name}.jsonl").read_text().splitlines()
    }
    return {name: questions(seed, per_task, exclude=seen) for name, seed, per_task in V7_SPLITS}


def general_corpus_v7(model: str, splits: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The questions of a v7 model's fitting corpus: one new expression per fitting example, none of any split's
    (the student and its twin share one corpus of expressions)."""
    exclude = {q["meta"]["expression"] for split in splits.values() for q in split}
    return questions(V7_GENERAL_SEEDS[model], FIT_STEPS * FIT_BATCH // 2, exclude=exclude)


def build_part_v7(root: Path, part: str) -> None:
    """One part of world v7 under `root`: `splits` (the question files), or one fitted model — `teacher`,
    `student` or `twin` (the twin's student) — with its fitting report in `<part>.json`."""
    import torch

    from dasd.models.tiny import build_tiny_model

    torch.set_num_threads(V7_THREADS)
    root.mkdir(parents=True, exist_ok=True)
    splits = split_questions_v7()
    if part == "splits":
        for name, split in splits.items():
            with open(root / f"{name}.jsonl", "w", encoding="utf-8") as handle:
                for question in split:
                    handle.write(json.dumps(question) + "\n")
        return
    size = dict(hidden_size=128, layers=4, heads=4, kv_heads=2, intermediate_size=384)
    if part == "teacher":
        rng = random.Random(21)
        corpus = [
            [
                {"role": "user", "content": q["messages"][0]["content"]},
                {"role": "assistant", "content": teacher_v7(q["meta"]["expression"], rng)},
            ]
            for q in general_corpus_v7("teacher", splits)
        ]
        build_tiny_model("qwen3", "qwen3", root / "teacher", seed=0, **size)
        report = fit_closed_vocabulary(root / "teacher", corpus, steps=FIT_STEPS, batch_size=FIT_BATCH, seed=0)
    else:
        rng = random.Random(22)  # the same draws for the student and its twin: only the two rates differ
        corpus = [
            [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": q["messages"][0]["content"]},
                {"role": "assistant", "content": student_v7(q["meta"]["expression"], rng, twin=part == "twin")},
            ]
            for q in general_corpus_v7("student", splits)
        ]
        build_tiny_model("llama", "smollm2", root / part, seed=0, **size)
        report = fit_closed_vocabulary(root / part, corpus, steps=FIT_STEPS, batch_size=FIT_BATCH, seed=1)
    (root / f"{part}.json").write_text(json.dumps(report, indent=2))


def build_world_v7(out: Path, scratch: Path, teacher_from: Path | None = None) -> None:
    """World v7 and its twin: the splits and the three models fitted in parallel processes (one thread each), then
    exported to `out` (teacher/, student/, twin/ compact folders, the splits and world.json). `teacher_from`: a shipped
    v7 folder whose teacher (compact files and fitting report) is kept as it is — its corpus and fit do not depend on
    the students'."""
    import shutil
    import subprocess

    parts = ("splits", "student", "twin") if teacher_from else ("splits", "teacher", "student", "twin")
    running = [
        subprocess.Popen([sys.executable, __file__, "--world", "v7", "--part", part, "--export", str(scratch)])
        for part in parts
    ]
    if any(process.wait() for process in running):
        raise SystemExit("a part of world v7 failed (see above)")
    out.mkdir(parents=True, exist_ok=True)
    for name, _, _ in V7_SPLITS:
        shutil.copy(scratch / f"{name}.jsonl", out / f"{name}.jsonl")
    report = {"version": V7_VERSION, "build": V7_BUILD, "skill_sentences": list(V7_SKILL_SENTENCES)}
    if teacher_from:
        kept = json.loads((teacher_from / "world.json").read_text())
        # the build whose fit this teacher is (a kept teacher keeps its number)
        report["teacher"] = {
            **kept["teacher"],
            "kept_from_build": kept["teacher"].get("kept_from_build", kept["build"]),
        }
        if Path(teacher_from).resolve() != (out / "teacher").resolve():
            shutil.copytree(teacher_from / "teacher", out / "teacher", dirs_exist_ok=True)
    for part in parts[1:]:
        report[part] = json.loads((scratch / f"{part}.json").read_text())
        export_compact(scratch / part, out / part)
    (out / "world.json").write_text(json.dumps(report, indent=2))


def export_compact(model_dir: Path, out: Path) -> None:
    """Save a fitted world model without its zero rows: body + closed-vocabulary rows (a few MB)."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    state = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    embedding = state.pop("model.embed_tokens.weight")
    state.pop("lm_head.weight", None)  # tied
    rows = (embedding != 0).any(dim=1).nonzero()[:, 0]
    state["dasd.row_ids"] = rows.to(torch.int64)
    state["dasd.rows"] = embedding[rows].contiguous()
    out.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out / "model.safetensors"))
    config = model.config.to_dict()
    config.pop("_name_or_path", None)  # a scratch folder: it would only make every export differ
    (out / "config.json").write_text(json.dumps(config, indent=1))


def main() -> None:
    """Build the demo world from scratch and write the files the package ships."""
    import argparse
    import shutil
    import tempfile

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--export", required=True, help="folder to write (src/dasd/data/demo_world)")
    parser.add_argument(
        "--keep-teacher",
        action="store_true",
        help="keep the shipped teacher; refit only the student (v6: ~25 minutes on 2 cores) or the students (v7)",
    )
    parser.add_argument(
        "--world",
        choices=["v6", "v7"],
        default="v6",
        help="v6: the demo's world; v7: DAS's world and its twin (src/dasd/data/demo_world_v7)",
    )
    parser.add_argument(
        "--part",
        choices=["splits", "teacher", "student", "twin"],
        help="v7: build only this part into --export (the parallel build runs each part this way)",
    )
    args = parser.parse_args()
    out = Path(args.export)
    if args.world == "v7":
        if args.part:
            build_part_v7(out, args.part)
        else:
            with tempfile.TemporaryDirectory() as scratch:
                build_world_v7(out, Path(scratch), teacher_from=shipped_world("v7") if args.keep_teacher else None)
        print(out)
        return
    with tempfile.TemporaryDirectory() as scratch:
        shipped = shipped_world() if args.keep_teacher else None
        root = build_world(Path(scratch) / "world", teacher_from=shipped / "teacher" if shipped else None)
        out.mkdir(parents=True, exist_ok=True)
        for name in WORLD_FILES:
            shutil.copy(root / name, out / name)
        export_compact(root / "teacher", out / "teacher")
        export_compact(root / "student", out / "student")
    print(out)


if __name__ == "__main__":
    main()
