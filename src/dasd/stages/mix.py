"""`dasd mix`: mixed-policy distillation — student prefixes, teacher continuations, across tokenizers.

    dasd mix --config configs/mix.yaml input=runs/x/sft/sft.jsonl output=runs/x/mix/mixed.jsonl \\
        student.model=runs/x/train/high_temp/final teacher.name=openai teacher.base_urls=[http://gpu:8000/v1]

The report's remedy for exposure bias (DESIGN §2), in four resumable steps, each with its own file
beside `output`:

1. rollouts (`<name>.rollouts.jsonl`): the trained student answers a seeded subset of the curated
   questions, capped at ceil(1.5 × the teacher's response length in student tokens);
2. cut-off data (`<name>.cutoff.jsonl`, `<name>.cutoff.png`): each rollout's length over the teacher's
   (the report's Figure 7); only rollouts that hit the cap (finish_reason = length) go on;
3. continuations (`<name>.continuations.jsonl`): each kept rollout is cut at a random sentence end in
   the second half of its reasoning (seeded; `dasd.mixing`), and the teacher — in its own chat
   template or harmony, with its own tokenizer — continues the student's text from the cut; the
   continuation's token log-probs are kept;
4. the mixed SFT records (`output`): assistant text = `<think>\\n` + student prefix + teacher
   continuation (for think-tag teachers exactly that text), `loss_mask_prefix_chars` = the length of
   `<think>\\n` + prefix, `stage: mixed_policy`; the joined response must pass the quality filters
   (structure, repetition, correctness when a reference exists, length in student tokens) — rejected
   ones go to `<name>.rejected.jsonl` — and `off_policy` extra curated samples are mixed in.

Train on it with the `mixed_policy` stage (1 epoch, from the last stage's weights): see
configs/train-mixed.yaml.
"""

from __future__ import annotations

import random
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from ..answers import BoundedVerifier, grade_many
from ..backends.base import BackendConfig, GenerationRequest, make_backend
from ..config import StageConfig, dump_config
from ..errors import InputError
from ..filters import (CorrectnessConfig, LengthConfig, RepetitionConfig, StructureConfig, length_filter, repetition_filter,
                       structure_filter, student_length)
from ..io import ErrorLog, RecordWriter, dumps_record, iter_records, read_records, sidecar, write_json_atomic
from ..mixing import THINK_OPEN, continuation_prefix, cut_position, student_budget
from ..progress import Progress, format_summary
from ..reasoning import parse_harmony, parse_think
from ..records import stable_seed
from ..render import DEFAULT_SYSTEM_PROMPT, think_text, with_system_prompt
from .sample import generate_records


class MixFilters(StageConfig):
    """The `dasd filter` filters that apply to a joined (student prefix + teacher) response."""

    structure: StructureConfig = Field(default_factory=StructureConfig, description="finished, closed think block, non-empty parts, no tool call")
    repetition: RepetitionConfig = Field(default_factory=RepetitionConfig, description="loops and repeats")
    correctness: CorrectnessConfig = Field(default_factory=CorrectnessConfig, description="graded against the reference answer when there is one")
    length: LengthConfig = Field(default_factory=LengthConfig, description="training length in student tokens")


class MixConfig(StageConfig):
    input: str = Field(..., description="the curated SFT records (dasd build-sft output): questions and the teacher's reference responses")
    output: str = Field(..., description="mixed SFT records JSONL; rollouts, cut-off data, continuations and rejected records go beside it")
    student: BackendConfig = Field(..., description="the trained student that writes the rollouts")
    teacher: BackendConfig = Field(..., description="the teacher that continues the student's text")
    questions: int | None = Field(50000, ge=1, description="how many curated questions get a rollout (a seeded subset; null = all)")
    budget_factor: float = Field(1.5, gt=0, description="the student's generation cap, in multiples of the teacher response's length in student tokens")
    rollout_temperature: float = Field(1.0, ge=0, description="the student's sampling temperature")
    rollout_top_p: float = Field(1.0, gt=0, le=1, description="the student's top-p")
    cut_low: float = Field(0.5, ge=0, lt=1, description="cut no earlier than this share of the student's reasoning")
    cut_high: float = Field(1.0, gt=0, le=1, description="… and no later than this share")
    teacher_temperature: float = Field(1.0, ge=0, description="the teacher's sampling temperature for continuations")
    teacher_top_p: float = Field(1.0, gt=0, le=1, description="the teacher's top-p")
    teacher_max_new_tokens: int = Field(32768, ge=1, description="longest teacher continuation")
    teacher_reasoning_format: Literal["think", "harmony"] = Field("think", description="the teacher's format: think tags, or gpt-oss harmony (analysis channel)")
    teacher_prompt_format: Literal["chat_template", "harmony"] = Field("chat_template", description="completions mode: render with the teacher's chat template or openai-harmony")
    teacher_chat_template_kwargs: dict[str, Any] = Field(default_factory=dict, description="extra variables for the teacher's chat template (e.g. reasoning_effort)")
    teacher_system_prompt: str | None = Field(None, description="system prompt for the teacher (none by default)")
    system_prompt: str | None = Field(DEFAULT_SYSTEM_PROMPT, description="the student's system prompt (rollouts and the output records)")
    student_chat_template_kwargs: dict[str, Any] = Field(default_factory=dict, description="extra variables for the student's chat template")
    filters: MixFilters = Field(default_factory=MixFilters, description="quality filters on the joined response")
    off_policy: int = Field(0, ge=0, description="extra curated (off-policy) samples mixed into the output (the report's ablation: 20K with 7.7K mixed)")
    weight: float = Field(1.0, gt=0, description="loss weight of the mixed records")
    seed: int = Field(0, description="seed of the subset, the rollouts, the cuts and the off-policy draw")


def _curated(config: MixConfig) -> dict[str, dict[str, Any]]:
    """question id -> the first curated record of that question, with its reasoning/content parsed."""
    questions: dict[str, dict[str, Any]] = {}
    for line, record in read_records(config.input):
        messages = record.get("messages")
        if not isinstance(messages, list) or not messages or messages[-1].get("role") != "assistant":
            raise InputError(config.input, line, "messages", "must end with the teacher's assistant turn")
        parsed = parse_think(messages[-1]["content"])
        if not parsed.reasoning:
            raise InputError(config.input, line, "messages", "the assistant turn has no <think> reasoning")
        question_id = str(record.get("question_id") or record["id"])
        if question_id not in questions:
            questions[question_id] = {"record": record, "turns": [m for m in messages[:-1] if m["role"] not in ("system", "developer")],
                                      "reasoning": parsed.reasoning, "content": parsed.content}
    return questions


def plot_cutoff(points: list[dict[str, Any]], path: Path, factor: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.8), dpi=110)
    for truncated, colour, label in ((False, "#4c72b0", "finished"), (True, "#dd8452", "cut off at the cap")):
        xs = [p["teacher_tokens"] for p in points if p["truncated"] is truncated]
        ys = [p["ratio"] for p in points if p["truncated"] is truncated]
        axis.scatter(xs, ys, s=12, alpha=0.7, color=colour, label=f"{label} ({len(xs)})")
    axis.axhline(factor, color="grey", linestyle="--", linewidth=1)
    axis.set_xlabel("teacher response length (student tokens)")
    axis.set_ylabel("student length / teacher length")
    axis.set_title("student rollouts against the teacher's length")
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def run(config: MixConfig) -> dict[str, Any]:
    from ..assets import load_tokenizer

    curated = _curated(config)
    output = Path(config.output)
    rollouts_path, continuations_path = sidecar(output, "rollouts", ".jsonl"), sidecar(output, "continuations", ".jsonl")
    dump_config(config, sidecar(output, "config", ".yaml"))
    student_tokenizer = load_tokenizer(config.student.tokenizer or config.student.model)
    chosen_ids = sorted(curated)
    random.Random(stable_seed(config.seed, "subset")).shuffle(chosen_ids)
    if config.questions:
        chosen_ids = chosen_ids[: config.questions]
    counts: Counter = Counter()
    reasons: Counter = Counter()

    # 1. rollouts, capped at budget_factor × the teacher's length in student tokens
    budgets = {}
    for question_id in chosen_ids:
        entry = curated[question_id]
        text, _, _ = think_text(entry["reasoning"], entry["content"])
        budgets[question_id] = student_budget(student_tokenizer, text, config.budget_factor)
    writer = RecordWriter(rollouts_path)
    requests, context = [], {}
    for question_id in chosen_ids:
        request_id = f"{question_id}:rollout"
        if request_id in writer.done:
            continue
        entry = curated[question_id]
        requests.append(GenerationRequest(id=request_id, messages=with_system_prompt(entry["turns"], config.system_prompt),
                                          temperature=config.rollout_temperature, top_p=config.rollout_top_p,
                                          max_new_tokens=budgets[question_id][1], seed=stable_seed(config.seed, request_id)))
        record = entry["record"]
        context[request_id] = ({"id": question_id, "answer": record.get("answer"), "domain": record.get("domain") or "other",
                                "meta": {}}, 0)
    errors = ErrorLog(sidecar(output, "errors", ".jsonl"))
    errors.reset()
    if requests:
        student = make_backend(config.student, chat_template_kwargs=config.student_chat_template_kwargs)
        try:
            generate_records(student, requests, context, writer, errors, f"mix: student rollouts [{config.student.name}]",
                             reasoning_format="think", model_name=config.student.model, keep_logprobs=False)
        finally:
            student.close()
    else:
        writer.finish()
    errors = ErrorLog(errors.path)  # keep the rollout failures; continuation failures are appended

    # 2. cut-off ratios (Figure 7), and the rollouts that hit the cap
    rollouts = {record["question_id"]: record for _, record in iter_records(rollouts_path) if record["question_id"] in budgets}
    points = []
    for question_id, record in sorted(rollouts.items()):
        teacher_tokens, budget = budgets[question_id]
        student_tokens = (record.get("usage") or {}).get("completion_tokens") or 0
        points.append({"question_id": question_id, "teacher_tokens": teacher_tokens, "budget": budget, "student_tokens": student_tokens,
                       "ratio": student_tokens / teacher_tokens if teacher_tokens else 0.0, "truncated": record["finish_reason"] == "length"})
    temporary = sidecar(output, "cutoff", ".jsonl.tmp")
    temporary.write_text("".join(dumps_record(point) + "\n" for point in points), encoding="utf-8")
    temporary.replace(sidecar(output, "cutoff", ".jsonl"))
    plot_cutoff(points, sidecar(output, "cutoff", ".png"), config.budget_factor)
    counts["rollouts"] = len(points)
    counts["truncated"] = sum(point["truncated"] for point in points)

    # 3. cut at a sentence end in the second half; the teacher continues from there
    writer = RecordWriter(continuations_path)
    requests, cuts = [], {}
    for point in points:
        if not point["truncated"]:
            reasons["finished_within_budget"] += 1  # only rollouts that hit the cap are continued
            continue
        question_id = point["question_id"]
        reasoning = rollouts[question_id]["reasoning"]
        if not reasoning:
            reasons["rollout_without_reasoning"] += 1  # the student never opened <think>
            continue
        cut = cut_position(reasoning, seed=config.seed, key=question_id, low=config.cut_low, high=config.cut_high)
        if cut is None:
            reasons["no_sentence_end_to_cut_at"] += 1
            continue
        counts["cut"] += 1
        request_id = f"{question_id}:mixed"
        prefix = reasoning[:cut]
        cuts[request_id] = {"question_id": question_id, "cut": cut, "student_chars": len(reasoning), "prefix": prefix}
        if request_id in writer.done:
            continue
        turns = curated[question_id]["turns"]
        messages = ([{"role": "system", "content": config.teacher_system_prompt}] if config.teacher_system_prompt else []) + turns
        requests.append(GenerationRequest(id=request_id, messages=messages, temperature=config.teacher_temperature,
                                          top_p=config.teacher_top_p, max_new_tokens=config.teacher_max_new_tokens,
                                          seed=stable_seed(config.seed, request_id),
                                          assistant_prefix=continuation_prefix(prefix, config.teacher_reasoning_format)))
    if requests:
        teacher = make_backend(config.teacher, chat_template_kwargs=config.teacher_chat_template_kwargs,
                               prompt_format=config.teacher_prompt_format, reasoning_format=config.teacher_reasoning_format)
        progress = Progress(len(requests), f"mix: teacher continuations [{config.teacher.name}]")
        try:
            for result in teacher.generate(requests):
                if result.error:
                    errors.log(result.id, result.error, retries=result.retries)
                else:
                    writer.write({"id": result.id, **cuts[result.id], "continuation": result.raw_text or result.server_content or "",
                                  "finish_reason": result.finish_reason,
                                  "continuation_logprobs": {"offsets": [list(span) for span in result.token_spans], "logprobs": result.token_logprobs},
                                  "usage": {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens}})
                progress.update(1, result.completion_tokens)
        finally:
            progress.close()
            teacher.close()
    writer.finish()
    errors.close()

    # 4. join, filter, write the mixed SFT records
    kept, rejected = [], []
    continuations = [record for _, record in iter_records(continuations_path) if record["id"] in cuts]
    counts["continued"] = len(continuations)
    candidates = []
    for record in continuations:
        question_id = record["question_id"]
        prefix, continuation = record["prefix"], record["continuation"]
        if config.teacher_reasoning_format == "think":
            assistant = THINK_OPEN + prefix + continuation
            parsed = parse_think(assistant, finish_reason=record["finish_reason"])
        else:
            parsed = parse_harmony("<|channel|>analysis<|message|>" + prefix + continuation, finish_reason=record["finish_reason"])
            assistant = think_text(parsed.reasoning, parsed.content)[0]
        source = curated[question_id]["record"]
        mixed = {"id": record["id"], "question_id": question_id,
                 "messages": with_system_prompt(curated[question_id]["turns"], config.system_prompt) + [{"role": "assistant", "content": assistant}],
                 "loss_mask_prefix_chars": len(THINK_OPEN + prefix), "weight": config.weight, "stage": "mixed_policy",
                 "source": "mixed_policy", "answer": source.get("answer"), "domain": source.get("domain"),
                 "cut": {"position": record["cut"], "of_chars": record["student_chars"]}}
        check = {"reasoning": parsed.reasoning, "content": parsed.content, "messages": mixed["messages"][:-1], "question_id": question_id,
                 "finish_reason": record["finish_reason"] if parsed.has_close_tag or config.teacher_reasoning_format == "harmony" else "unclosed_think"}
        verdict = structure_filter(check, config.filters.structure) if config.filters.structure.enabled else True
        if verdict is True and config.filters.repetition.enabled:
            verdict = repetition_filter(check, config.filters.repetition)
        if verdict is True and config.filters.length.enabled:
            verdict = length_filter(student_length(student_tokenizer, check, system_prompt=config.system_prompt,
                                                   chat_template_kwargs=config.student_chat_template_kwargs), config.filters.length)
        if verdict is True:
            candidates.append((mixed, check))
        else:
            rejected.append({**mixed, "filter": {"keep": False, "reason": verdict[1]}})
    graded = [(mixed, check) for mixed, check in candidates if config.filters.correctness.enabled and mixed.get("answer") not in (None, "")]
    verdicts = {}
    if graded:
        with BoundedVerifier(config.filters.correctness.workers, config.filters.correctness.timeout_s) as verifier:
            grades = grade_many([(check["content"], str(mixed["answer"]), mixed.get("domain"), None) for mixed, check in graded], verifier)
        verdicts = {mixed["id"]: grade for (mixed, _), grade in zip(graded, grades)}
    for mixed, _ in candidates:
        grade = verdicts.get(mixed["id"])
        if grade is not None and not grade.correct:
            rejected.append({**mixed, "filter": {"keep": False, "reason": grade.reason or "wrong_answer"}})
        else:
            kept.append({**mixed, "filter": {"keep": True, "reason": None}})
    for item in rejected:
        reasons[item["filter"]["reason"]] += 1
    counts["kept"] = len(kept)

    mixed_questions = {record["question_id"] for record in kept}
    pool = [qid for qid in sorted(curated) if qid not in mixed_questions] or sorted(curated)
    random.Random(stable_seed(config.seed, "off_policy")).shuffle(pool)
    extras = [{**curated[qid]["record"], "id": f"{curated[qid]['record']['id']}:off_policy", "stage": "mixed_policy", "source": "off_policy",
               "weight": config.weight} for qid in pool[: config.off_policy]]
    counts["off_policy"] = len(extras)
    for path, records in ((output, kept + extras), (sidecar(output, "rejected", ".jsonl"), rejected)):
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text("".join(dumps_record(record) + "\n" for record in records), encoding="utf-8")
        temporary.replace(path)

    ratios = sorted(point["ratio"] for point in points)
    summary = {"stage": "mix", "output": str(output), **{key: counts[key] for key in ("rollouts", "truncated", "cut", "continued", "kept", "off_policy")},
               "drop_reasons": dict(sorted(reasons.items(), key=lambda item: -item[1])),
               "cutoff_ratio": {"median": ratios[len(ratios) // 2], "max": ratios[-1]} if ratios else None}
    write_json_atomic(sidecar(output, "summary", ".json"), summary)
    rows = [(name, counts[name]) for name in ("rollouts", "truncated", "cut", "continued", "kept", "off_policy")]
    rows += [(f"  dropped: {reason}", count) for reason, count in summary["drop_reasons"].items()]
    print(format_summary(f"dasd mix -> {output}", rows), file=sys.stdout, flush=True)
    return summary

