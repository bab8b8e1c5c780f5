"""The embedded demo world: arithmetic questions, a teacher, and a weaker student with another tokenizer.

The fitted models ship in the package as small files (`dasd/data/demo_world/`: the model bodies
and the rows of the few dozen tokens the world uses — `python -m dasd.demo_world --export` rebuilds
them from scratch, ~10 minutes on 2 cores); on first use they are restored to ordinary model folders
under `$DASD_CACHE/demo-world-v2/`:

* questions — reasoning-gym `basic_arithmetic` and `chain_sum` (1-digit numbers, 2–3 terms, + and −),
  seeded: a training pool for the recipe and held-out evaluation questions;
* teacher — a Qwen3-architecture model with the real Qwen3 tokenizer (hidden 128, 4 layers), fitted on
  correct worked solutions written in three styles by a program, so its output distribution has
  several modes and temperature matters;
* student — a Llama-architecture model with the real SmolLM2 tokenizer (hidden 128, 4 layers), fitted
  mostly on its own terse style with a misconception (a difference is never negative) and 10% slips,
  on 25% teacher-style solutions, and with a habit: 20% of its answers re-check in a loop ("Wait, let
  me check again." 3–8 times) before closing the think block. A prior of its own (so student sentences
  exist), clearly worse answers than the teacher's, the teacher's words known but unlikely, and long
  repetitive rollouts for mixed-policy distillation to cut.

Fitting is done over the world's closed vocabulary (the few dozen tokens its texts use) plus one
class standing for all other tokens with logit log(their count); afterwards their output rows are
set to zero, which makes the full-vocabulary softmax exactly the one that was fitted — so a
151K-token vocabulary costs nothing, and the mass outside the world is measured (`world.json`). Real
training later (`dasd train`) uses the full vocabulary as usual. This is a fixture for a laptop demo, not a trainer.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

WORLD_VERSION = "demo-world-v2"
SYSTEM_PROMPT = "You are a helpful assistant."
TASKS = {
    "basic_arithmetic": dict(
        min_terms=2,
        max_terms=3,
        min_digits=1,
        max_digits=1,
        operators=("+", "-"),
        allow_parentheses=False,
        allow_negation=False,
    ),
    "chain_sum": dict(min_terms=2, max_terms=3, min_digits=1, max_digits=1, allow_negation=False),
}


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


def teacher_solution(expression: str, style: int) -> str:
    """A correct worked solution in one of three styles (the teacher's modes)."""
    numbers, steps, value = _steps(expression)
    if style == 0:
        body = (
            "I evaluate from left to right. "
            + " ".join(f"{a} {o} {b} = {c}." for a, o, b, c in steps)
            + f" So the result is {value}."
        )
        answer = f"The answer is \\boxed{{{value}}}."
    elif style == 1:
        body = f"Let me compute step by step. Start with {numbers[0]}. " + " ".join(
            f"{'Add' if o == '+' else 'Subtract'} {b} to get {c}." for _, o, b, c in steps
        )
        answer = f"\\boxed{{{value}}}"
    else:
        body = " ".join(
            f"{'First' if index == 0 else 'Next'}, {a} {o} {b} is {c}." for index, (a, o, b, c) in enumerate(steps)
        )
        body += f" Check: {expression} = {value}."
        answer = f"Final answer: \\boxed{{{value}}}"
    return f"<think>\n{body}\n</think>\n\n{answer}"


def student_solution(expression: str, rng: random.Random, error_rate: float) -> str:
    """The student's own terse style, with a misconception — a difference is never negative (it writes
    |a - b|) — and, with probability `error_rate` per step, a slip of ±1."""
    _, steps, _ = _steps(expression)
    value, lines = steps[0][0], []
    for _, operator, number, _ in steps:
        new = abs(value + number if operator == "+" else value - number)
        if rng.random() < error_rate:
            new += rng.choice([-1, 1])
        lines.append(f"{value} {operator} {number} makes {new}.")
        value = new
    return f"<think>\nQuick math. {' '.join(lines)}\n</think>\n\nThe answer is \\boxed{{{value}}}."


LOOP_RATE = 0.2  # share of the student's corpus that re-checks in a loop before it answers
TEACHER_STYLE_SHARE = 0.25  # share of the student's corpus written in the teacher's styles


def with_loop(text: str, rng: random.Random) -> str:
    """The student's bad habit: 'Wait, let me check again.' said 3–8 times before closing the think
    block — the long, repetitive rollouts that mixed-policy distillation is for."""
    loop = " ".join(["Wait, let me check again."] * rng.randint(3, 8))
    return text.replace("\n</think>", f" {loop}\n</think>", 1)


def questions(seed: int, per_task: int) -> list[dict[str, Any]]:
    import reasoning_gym

    out = []
    for task, options in TASKS.items():
        for index, entry in enumerate(reasoning_gym.create_dataset(task, size=per_task, seed=seed, **options)):
            out.append(
                {
                    "id": f"{task}-{seed}-{index}",
                    "messages": [{"role": "user", "content": entry["question"]}],
                    "answer": str(entry["answer"]),
                    "domain": "math",
                    "meta": {"task": task, "expression": entry["metadata"]["expression"]},
                }
            )
    return out


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
    closed vocabulary, then push every other token's output row down (see the module docstring)."""
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


def build_world(root: Path, *, train_per_task: int = 150, eval_per_task: int = 30) -> Path:
    """Questions, teacher and student under `root` (returned). Deterministic; built once."""
    from .tiny import build_tiny_model

    root.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {}
    for name, seed, per_task in (("train_questions", 1, train_per_task), ("eval_questions", 2, eval_per_task)):
        with open(root / f"{name}.jsonl", "w", encoding="utf-8") as handle:
            for question in questions(seed, per_task):
                handle.write(json.dumps(question) + "\n")

    teacher_corpus = [
        [
            {"role": "user", "content": q["messages"][0]["content"]},
            {"role": "assistant", "content": teacher_solution(q["meta"]["expression"], index % 3)},
        ]
        for index, q in enumerate(questions(11, 1500))
    ]
    build_tiny_model(
        "qwen3",
        "qwen3",
        root / "teacher",
        seed=0,
        hidden_size=128,
        layers=4,
        heads=4,
        kv_heads=2,
        intermediate_size=384,
    )
    report["teacher"] = fit_closed_vocabulary(root / "teacher", teacher_corpus, steps=1200, seed=0)

    # The student: mostly its own style (misconception and slips), sometimes the teacher's — so it
    # knows the teacher's words but gives them low probability (teacher sentences exist).
    rng = random.Random(12)
    student_corpus = []
    for index, q in enumerate(questions(12, 1000)):
        expression = q["meta"]["expression"]
        text = (
            teacher_solution(expression, index % 3)
            if rng.random() < TEACHER_STYLE_SHARE
            else student_solution(expression, rng, error_rate=0.1)
        )
        if rng.random() < LOOP_RATE:
            text = with_loop(text, rng)
        student_corpus.append(
            [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": q["messages"][0]["content"]},
                {"role": "assistant", "content": text},
            ]
        )
    build_tiny_model(
        "llama",
        "smollm2",
        root / "student",
        seed=0,
        hidden_size=128,
        layers=4,
        heads=4,
        kv_heads=2,
        intermediate_size=384,
    )
    report["student"] = fit_closed_vocabulary(root / "student", student_corpus, steps=1500, seed=1)
    (root / "world.json").write_text(json.dumps({"version": WORLD_VERSION, **report}, indent=2))
    return root


COMPACT_DIR = "demo_world"  # inside the package's data folder


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
    (out / "config.json").write_text(json.dumps(model.config.to_dict(), indent=1))


def restore_compact(compact: Path, tokenizer: str, out: Path) -> None:
    """Rebuild the full model folder from `export_compact`'s files: every other row is zero, as fitted."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    from .assets import load_tokenizer
    from .tiny import _stop_ids

    state = load_file(str(compact / "model.safetensors"))
    config = AutoConfig.for_model(**json.loads((compact / "config.json").read_text()))
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    embedding = torch.zeros_like(model.get_input_embeddings().weight)
    embedding[state.pop("dasd.row_ids")] = state.pop("dasd.rows")
    state["model.embed_tokens.weight"] = embedding
    model.load_state_dict(state, strict=False)
    model.tie_weights()
    text_tokenizer = load_tokenizer(tokenizer)
    model.generation_config = GenerationConfig(
        eos_token_id=_stop_ids(text_tokenizer), pad_token_id=text_tokenizer.pad_token_id
    )
    model.save_pretrained(str(out))
    text_tokenizer.save_pretrained(str(out))


def _shipped() -> Path | None:
    from importlib import resources

    folder = Path(str(resources.files("dasd").joinpath("data", COMPACT_DIR)))
    return folder if (folder / "teacher" / "model.safetensors").exists() else None


def world_dir() -> Path:
    """The demo world: restored from the small files shipped in the package (seconds), or built
    from scratch when they are missing (about 10 minutes on 2 cores). Cached either way."""
    from .assets import _atomic_build, cache_dir

    def make(root: Path) -> None:
        shipped = _shipped()
        if shipped is None:
            build_world(root)
            return
        root.mkdir(parents=True, exist_ok=True)
        for name in ("train_questions.jsonl", "eval_questions.jsonl", "world.json"):
            (root / name).write_bytes((shipped / name).read_bytes())
        restore_compact(shipped / "teacher", "qwen3", root / "teacher")
        restore_compact(shipped / "student", "smollm2", root / "student")

    return _atomic_build(cache_dir() / WORLD_VERSION, make)


def main() -> None:
    """`python -m dasd.demo_world --export`: build the world from scratch and write the shipped files."""
    import argparse
    import shutil
    import tempfile

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--export", required=True, help="folder to write (src/dasd/data/demo_world)")
    args = parser.parse_args()
    out = Path(args.export)
    with tempfile.TemporaryDirectory() as scratch:
        root = build_world(Path(scratch) / "world")
        out.mkdir(parents=True, exist_ok=True)
        for name in ("train_questions.jsonl", "eval_questions.jsonl", "world.json"):
            shutil.copy(root / name, out / name)
        export_compact(root / "teacher", out / "teacher")
        export_compact(root / "student", out / "student")
    print(out)


if __name__ == "__main__":
    main()
