"""`dasd mix`: mixed-policy distillation — student prefixes, teacher continuations, across tokenizers.

    dasd mix --config configs/mix.yaml input=runs/x/sft/sft.jsonl output=runs/x/mix/mixed.jsonl \\
        student.model=runs/x/train/high_temp/final teacher.name=openai teacher.base_urls=[http://gpu:8000/v1]

The report's remedy for exposure bias, in four resumable steps, each with its own file
beside `output`:

1. rollouts (`<name>.rollouts.jsonl`): the trained student answers a seeded subset of the curated
   questions, capped at ceil(1.5 × the teacher's response length in student tokens);
2. cut-off data (`<name>.cutoff.jsonl`, `<name>.cutoff.png`): each rollout's length over the teacher's
   (the report's Figure 7); only rollouts that hit the cap (finish_reason = length) go on;
3. continuations (`<name>.continuations.jsonl`): each kept rollout is cut at a random sentence end in
   the second half of its reasoning (seeded; `dasd.sampling.mixing`), and the teacher — in its own chat
   template or harmony, with its own tokenizer — continues the student's text from the cut; the
   continuation's token log-probs are kept;
4. the mixed SFT records (`output`): assistant text = `<think>\\n` + student prefix + teacher
   continuation (for think-tag teachers exactly that text), `loss_mask_prefix_chars` = the length of
   `<think>\\n` + prefix, `stage: mixed_policy`; the joined response must pass the quality filters
   (structure, repetition, correctness when a reference exists, length in student tokens) — rejected
   ones go to `<name>.rejected.jsonl` — and `off_policy` extra curated samples are mixed in.

With `on_policy=true` (the report's §6.4: "mixed-policy data via on-policy rejection sampling and off-policy teacher
revision") the student's own rollouts that finished within the cap (not truncated) and pass the same quality filters
(correct, when a reference exists) are kept too, whole, as records with `source: on_policy` (`stage: mixed_policy`,
no masked prefix: every token is the student's); the summary counts them (`on_policy`, with its drop reasons).
The off-policy extras then prefer questions that have neither a mixed nor an on-policy record.

Train on it with the `mixed_policy` stage (1 epoch, from the last stage's weights): see
configs/mixed-train.yaml.
"""

from __future__ import annotations

import random
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from ..backends import BackendConfig, GenerationRequest, make_backend, server_log, with_launch_log
from ..config import ADDED, RecordOutput, StageConfig, dump_config
from ..data.io import ErrorLog, RecordWriter, batched, iter_records, write_jsonl_atomic, write_summary
from ..data.records import stable_seed
from ..data.summaries import MixSummary
from ..errors import InputError
from ..models.assets import load_tokenizer
from ..naming import MIXED_POLICY_STAGE, sidecar
from ..progress import Progress, format_summary
from ..reporting.figures import plot_cutoff
from ..reporting.summary_rows import mix_rows
from ..sampling.generation import generate_records
from ..sampling.mixing import CuratedSet, continuation_prefix, cut_position, student_budget
from ..selection.filters import CorrectnessConfig, FilterChain, LengthConfig, RepetitionConfig, StructureConfig
from ..text.harmony import ANALYSIS_OPEN
from ..text.reasoning import parse_harmony, parse_think
from ..text.render import DEFAULT_SYSTEM_PROMPT, THINK_PREFIX, think_text, with_system_prompt

JUDGED_AT_ONCE = 256  # continuations joined and filtered together (each carries per-token log-probs)


class MixFilters(StageConfig):
    """The `dasd filter` filters that apply to a joined (student prefix + teacher) response."""

    structure: StructureConfig = Field(
        default_factory=StructureConfig, description="finished, closed think block, non-empty parts, no tool call"
    )
    repetition: RepetitionConfig = Field(default_factory=RepetitionConfig, description="loops and repeats")
    correctness: CorrectnessConfig = Field(
        default_factory=CorrectnessConfig, description="graded against the reference answer when there is one"
    )
    length: LengthConfig = Field(default_factory=LengthConfig, description="training length in student tokens")


class MixConfig(StageConfig):
    input: str = Field(
        ...,
        description="the curated SFT records (dasd build-sft output): questions and the teacher's reference responses",
    )
    output: RecordOutput = Field(
        ...,
        description="mixed SFT records JSONL; rollouts, cut-off data, continuations and rejected records go beside it",
    )
    student: BackendConfig = Field(..., description="the trained student that writes the rollouts")
    teacher: BackendConfig = Field(..., description="the teacher that continues the student's text")
    questions: int | None = Field(
        50000, ge=1, description="how many curated questions get a rollout (a seeded subset; null = all)"
    )
    budget_factor: float = Field(
        1.5,
        gt=0,
        description="the student's generation cap, in multiples of the teacher response's length in student tokens",
    )
    rollout_temperature: float = Field(1.0, ge=0, description="the student's sampling temperature")
    rollout_top_p: float = Field(1.0, gt=0, le=1, description="the student's top-p")
    cut_low: float = Field(0.5, ge=0, lt=1, description="cut no earlier than this share of the student's reasoning")
    cut_high: float = Field(1.0, gt=0, le=1, description="… and no later than this share")
    cut_shape: tuple[float, float] = Field(
        (1.0, 1.0),
        description="Beta(a, b) shape of the cut position within [cut_low, cut_high]: (1, 1) uniform (the "
        "report's), (2, 5) early in the range, (5, 2) late",
        json_schema_extra=ADDED,
    )
    continuations_per_cut: int = Field(
        1,
        ge=1,
        description="teacher continuations of each cut prefix (different seeds); every one that passes the "
        "filters becomes a mixed record",
        json_schema_extra=ADDED,
    )
    teacher_temperature: float = Field(1.0, ge=0, description="the teacher's sampling temperature for continuations")
    teacher_top_p: float = Field(1.0, gt=0, le=1, description="the teacher's top-p")
    teacher_max_new_tokens: int = Field(32768, ge=1, description="longest teacher continuation")
    teacher_reasoning_format: Literal["think", "harmony"] = Field(
        "think", description="the teacher's format: think tags, or gpt-oss harmony (analysis channel)"
    )
    teacher_prompt_format: Literal["chat_template", "harmony"] = Field(
        "chat_template", description="completions mode: render with the teacher's chat template or openai-harmony"
    )
    teacher_chat_template_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="extra variables for the teacher's chat template (e.g. reasoning_effort)"
    )
    teacher_system_prompt: str | None = Field(None, description="system prompt for the teacher (none by default)")
    system_prompt: str | None = Field(
        DEFAULT_SYSTEM_PROMPT, description="the student's system prompt (rollouts and the output records)"
    )
    student_chat_template_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="extra variables for the student's chat template"
    )
    filters: MixFilters = Field(default_factory=MixFilters, description="quality filters on the joined response")
    off_policy: int = Field(
        0,
        ge=0,
        description="extra curated (off-policy) samples mixed into the output (the report's ablation: 20K "
        "with 7.7K mixed)",
    )
    on_policy: bool = Field(
        False,
        description="also keep the student's own rollouts that finished within the cap (not truncated) and pass "
        "the quality filters (correct), whole, as records with source: on_policy — on-policy rejection sampling "
        "beside the teacher's revisions (the report's §6.4)",
        json_schema_extra=ADDED,
    )
    weight: float = Field(1.0, gt=0, description="loss weight of the mixed records")
    equal_size_as: str | None = Field(
        None,
        description="write the off-policy-only control of this mixed file instead of mixing (no rollouts): its "
        "off-policy records, and the curated record of each mixed record's question in its place",
    )
    seed: int = Field(0, description="seed of the subset, the rollouts, the cuts and the off-policy draw")

    @field_validator("cut_shape")
    @classmethod
    def _positive_shape(cls, shape: tuple[float, float]) -> tuple[float, float]:
        if min(shape) <= 0:
            raise ValueError("both Beta parameters must be > 0")
        return shape


def rollouts(
    config: MixConfig, curated: CuratedSet, budgets: dict[str, tuple[int, int]], path: Path, errors: ErrorLog
) -> dict[str, dict[str, Any]]:
    """Step 1: the student answers each chosen question, capped at its budget (resumable). question id -> the
    rollout's finish reason, usage and whether it has reasoning (its text stays in the file)."""
    writer = RecordWriter(path)
    requests, context = [], {}
    for question_id in budgets:
        request_id = f"{question_id}:rollout"
        if request_id in writer.done:
            continue
        entry = curated[question_id]
        requests.append(
            GenerationRequest(
                id=request_id,
                messages=with_system_prompt(entry["turns"], config.system_prompt),
                temperature=config.rollout_temperature,
                top_p=config.rollout_top_p,
                max_new_tokens=budgets[question_id][1],
                seed=stable_seed(config.seed, request_id),
            )
        )
        record = entry["record"]
        context[request_id] = (
            {"id": question_id, "answer": record.get("answer"), "domain": record.get("domain") or "other", "meta": {}},
            0,
        )
    if requests:
        with make_backend(
            with_launch_log(config.student, server_log(path)),
            chat_template_kwargs=config.student_chat_template_kwargs,
        ) as student:
            generate_records(
                student,
                requests,
                context,
                writer,
                errors,
                f"mix: student rollouts [{config.student.name}]",
                reasoning_format="think",
                model_name=config.student.model,
                keep_logprobs=False,
            )
    else:
        writer.finish()
    # what the cut-off points and the cuts read; the rollouts' text is read again only for the ones cut
    return {
        record["question_id"]: {
            "finish_reason": record["finish_reason"],
            "usage": record.get("usage") or {},
            "has_reasoning": bool(record.get("reasoning")),
        }
        for _, record in iter_records(path)
        if record["question_id"] in budgets
    }


def cutoff_points(rollouts_by_question: dict[str, dict], budgets: dict[str, tuple[int, int]]) -> list[dict[str, Any]]:
    """Step 2: each rollout's length against the teacher's (the report's Figure 7), and whether it hit the cap."""
    points = []
    for question_id, record in sorted(rollouts_by_question.items()):
        teacher_tokens, budget = budgets[question_id]
        student_tokens = record.get("usage", {}).get("completion_tokens") or 0
        points.append(
            {
                "question_id": question_id,
                "teacher_tokens": teacher_tokens,
                "budget": budget,
                "student_tokens": student_tokens,
                "ratio": student_tokens / teacher_tokens if teacher_tokens else 0.0,
                "truncated": record["finish_reason"] == "length",
            }
        )
    return points


def cuts(
    config: MixConfig, points: list[dict], rollouts_by_question: dict[str, dict], rollouts_file: Path, reasons: Counter
) -> dict[str, dict]:
    """Step 3a: where each capped rollout is cut (a sentence end in the second half). request id -> cut. The
    rollouts' text is read from their file, only for those that hit the cap."""
    capped = set()
    for point in points:
        if not point["truncated"]:
            reasons["finished_within_budget"] += 1  # only rollouts that hit the cap are continued
            continue
        if not rollouts_by_question[point["question_id"]]["has_reasoning"]:
            reasons["rollout_without_reasoning"] += 1  # the student never opened <think>
            continue
        capped.add(f"{point['question_id']}:rollout")
    found = {}
    rollouts_cut = iter_records(rollouts_file, keep_id=capped.__contains__)
    reasoning_of = {record["question_id"]: record["reasoning"] for _, record in rollouts_cut}
    for point in points:
        question_id = point["question_id"]
        if f"{question_id}:rollout" not in capped:
            continue
        reasoning = reasoning_of[question_id]
        cut = cut_position(
            reasoning,
            seed=config.seed,
            key=question_id,
            low=config.cut_low,
            high=config.cut_high,
            shape=config.cut_shape,
        )
        if cut is None:
            reasons["no_sentence_end_to_cut_at"] += 1
            continue
        for index in range(config.continuations_per_cut):
            # the first continuation keeps the id it had before continuations_per_cut existed
            found[f"{question_id}:mixed" + (f":{index}" if index else "")] = {
                "question_id": question_id,
                "cut": cut,
                "student_chars": len(reasoning),
                "prefix": reasoning[:cut],
            }
    return found


def continuations(
    config: MixConfig, curated: CuratedSet, cut_by_request: dict[str, dict], path: Path, errors: ErrorLog
) -> Path:
    """Step 3b: the teacher continues each cut prefix in its own format (resumable); returns their file (the
    continuations carry per-token log-probs: they are read back a chunk at a time)."""
    writer = RecordWriter(path)
    requests = []
    system = [{"role": "system", "content": config.teacher_system_prompt}] if config.teacher_system_prompt else []
    for request_id, cut in cut_by_request.items():
        if request_id in writer.done:
            continue
        requests.append(
            GenerationRequest(
                id=request_id,
                messages=system + curated[cut["question_id"]]["turns"],
                temperature=config.teacher_temperature,
                top_p=config.teacher_top_p,
                max_new_tokens=config.teacher_max_new_tokens,
                seed=stable_seed(config.seed, request_id),
                assistant_prefix=continuation_prefix(cut["prefix"], config.teacher_reasoning_format),
            )
        )
    if requests:
        with make_backend(
            with_launch_log(config.teacher, server_log(path)),
            chat_template_kwargs=config.teacher_chat_template_kwargs,
            prompt_format=config.teacher_prompt_format,
        ) as teacher:
            progress = Progress(len(requests), f"mix: teacher continuations [{config.teacher.name}]")
            try:
                teacher.check_continuation(requests[0])  # a chat-mode server must render the prefix exactly
                for result in teacher.generate(requests):
                    if result.error:
                        errors.log(result.id, result.error, retries=result.retries)
                    else:
                        writer.write(
                            {
                                "id": result.id,
                                **cut_by_request[result.id],
                                "continuation": result.raw_text or result.server_content or "",
                                "finish_reason": result.finish_reason,
                                "sampling": result.sampling,
                                "continuation_logprobs": {
                                    "offsets": [list(span) for span in result.token_spans],
                                    "logprobs": result.token_logprobs,
                                },
                                "usage": {
                                    "prompt_tokens": result.prompt_tokens,
                                    "completion_tokens": result.completion_tokens,
                                },
                            }
                        )
                    progress.update(1, result.completion_tokens)
            finally:
                progress.close()
    writer.finish()
    return path


def mixed_record(config: MixConfig, curated: CuratedSet, continuation: dict[str, Any]) -> tuple[dict, dict]:
    """Step 4a: the mixed SFT record (student prefix + teacher continuation), and the response view of it
    that the quality filters read."""
    question_id, prefix = continuation["question_id"], continuation["prefix"]
    finish = continuation["finish_reason"]
    if config.teacher_reasoning_format == "think":
        assistant = THINK_PREFIX + prefix + continuation["continuation"]
        parsed = parse_think(assistant, finish_reason=finish)
        if not parsed.has_close_tag:
            finish = "unclosed_think"  # the teacher ran out before closing its reasoning
    else:
        parsed = parse_harmony(ANALYSIS_OPEN + prefix + continuation["continuation"], finish_reason=finish)
        assistant = think_text(parsed.reasoning, parsed.content)[0]
    source = curated[question_id]["record"]
    messages = with_system_prompt(curated[question_id]["turns"], config.system_prompt)
    mixed = {
        "id": continuation["id"],
        "question_id": question_id,
        "messages": messages + [{"role": "assistant", "content": assistant}],
        "loss_mask_prefix_chars": len(THINK_PREFIX + prefix),
        "weight": config.weight,
        "stage": MIXED_POLICY_STAGE,
        "source": "mixed_policy",
        "answer": source.get("answer"),
        "domain": source.get("domain"),
        "cut": {"position": continuation["cut"], "of_chars": continuation["student_chars"]},
    }
    response = {
        "id": continuation["id"],
        "question_id": question_id,
        "messages": messages,
        "reasoning": parsed.reasoning,
        "content": parsed.content,
        "finish_reason": finish,
        "answer": source.get("answer"),
        "domain": source.get("domain"),
    }
    return mixed, response


def on_policy_record(config: MixConfig, curated: CuratedSet, rollout: dict[str, Any]) -> tuple[dict, dict]:
    """The SFT record of a rollout the student finished within its cap (on-policy rejection sampling: every token
    its own, nothing masked), and the response view of it that the quality filters read."""
    question_id = rollout["question_id"]
    source = curated[question_id]["record"]
    messages = with_system_prompt(curated[question_id]["turns"], config.system_prompt)
    record_id = f"{question_id}:on_policy"
    assistant = think_text(rollout["reasoning"], rollout["content"])[0]
    record = {
        "id": record_id,
        "question_id": question_id,
        "messages": messages + [{"role": "assistant", "content": assistant}],
        "weight": config.weight,
        "stage": MIXED_POLICY_STAGE,
        "source": "on_policy",
        "answer": source.get("answer"),
        "domain": source.get("domain"),
    }
    response = {
        "id": record_id,
        "question_id": question_id,
        "messages": messages,
        "reasoning": rollout["reasoning"],
        "content": rollout["content"],
        "finish_reason": rollout["finish_reason"],
        "answer": source.get("answer"),
        "domain": source.get("domain"),
    }
    return record, response


def off_policy_extras(config: MixConfig, curated: CuratedSet, mixed_questions: set[str]) -> Iterator[dict[str, Any]]:
    """Step 4c: `off_policy` curated records, preferably of questions without a mixed record (seeded draw)."""
    pool = [qid for qid in sorted(curated) if qid not in mixed_questions] or sorted(curated)
    random.Random(stable_seed(config.seed, "off_policy")).shuffle(pool)
    for qid in pool[: config.off_policy]:
        record = curated[qid]["record"]
        yield {
            **record,
            "id": f"{record['id']}:off_policy",
            "stage": MIXED_POLICY_STAGE,
            "source": "off_policy",
            "weight": config.weight,
        }


def off_policy_control(config: MixConfig, curated: CuratedSet) -> list[dict[str, Any]]:
    """The equal-size control of a mixed file: its off-policy records as they are, and in place of each
    mixed record the teacher's curated record of the same question — the same questions, the same
    number of records, nothing on-policy."""
    control = []
    seen: Counter = Counter()  # a question with several continuations (continuations_per_cut) gets as many copies
    for line, record in iter_records(config.equal_size_as):
        if record.get("source") == "off_policy":
            control.append(record)
            continue
        question_id = str(record["question_id"])
        if question_id not in curated:
            raise InputError(config.equal_size_as, line, "question_id", f"{question_id!r} is not in {config.input}")
        control.append(
            {
                **curated[question_id]["record"],
                "id": f"{curated[question_id]['record']['id']}:control"
                + (f":{seen[question_id]}" if seen[question_id] else ""),
                "stage": MIXED_POLICY_STAGE,
                "source": "off_policy",
                "weight": config.weight,
            }
        )
        seen[question_id] += 1
    return control


def run(config: MixConfig) -> dict[str, Any]:
    curated = CuratedSet(config.input)
    output = Path(config.output)
    dump_config(config, sidecar(output, "config", ".yaml"))
    if config.equal_size_as:  # the off-policy-only control arm: nothing to generate
        control = off_policy_control(config, curated)
        write_jsonl_atomic(output, control)
        summary: MixSummary = {"stage": "mix", "output": str(output), "kept": 0, "off_policy": len(control)}
        write_summary(output, summary)
        print(
            format_summary(f"dasd mix (off-policy control of {config.equal_size_as}) -> {output}", mix_rows(summary)),
            file=sys.stdout,
            flush=True,
        )
        return summary
    student_tokenizer = load_tokenizer(config.student.tokenizer or config.student.model)
    chosen_ids = sorted(curated)
    random.Random(stable_seed(config.seed, "subset")).shuffle(chosen_ids)
    if config.questions:
        chosen_ids = chosen_ids[: config.questions]
    errors = ErrorLog(sidecar(output, "errors", ".jsonl"))
    counts: Counter = Counter()
    reasons: Counter = Counter()

    # 1. rollouts, capped at budget_factor × the teacher's length in student tokens
    budgets = {}
    for question_id in chosen_ids:
        entry = curated[question_id]
        budgets[question_id] = student_budget(
            student_tokenizer, think_text(entry["reasoning"], entry["content"])[0], config.budget_factor
        )
    by_question = rollouts(config, curated, budgets, sidecar(output, "rollouts", ".jsonl"), errors)

    # 2. cut-off ratios (Figure 7), and the rollouts that hit the cap
    points = cutoff_points(by_question, budgets)
    write_jsonl_atomic(sidecar(output, "cutoff", ".jsonl"), points)
    plot_cutoff(points, sidecar(output, "cutoff", ".png"), config.budget_factor)
    counts["rollouts"] = len(points)
    counts["truncated"] = sum(point["truncated"] for point in points)

    # 3. cut at a sentence end in the second half; the teacher continues from there
    rollouts_file = sidecar(output, "rollouts", ".jsonl")
    cut_by_request = cuts(config, points, by_question, rollouts_file, reasons)
    counts["cut"] = len(cut_by_request)
    continued = continuations(config, curated, cut_by_request, sidecar(output, "continuations", ".jsonl"), errors)
    errors.close()

    # 4. join, filter (the same chain as `dasd filter`), write the mixed SFT records and the off-policy extras — a
    # chunk of continuations at a time (they carry per-token log-probs), streamed into both files
    kept_questions: set[str] = set()
    on_policy_reasons: Counter = Counter()
    rejected_file = sidecar(output, "rejected", ".jsonl")
    with FilterChain(
        structure=config.filters.structure,
        length=config.filters.length,
        repetition=config.filters.repetition,
        correctness=config.filters.correctness,
        tokenizer=student_tokenizer,
        system_prompt=config.system_prompt,
        chat_template_kwargs=config.student_chat_template_kwargs,
    ) as chain:

        def passing(lines, join, seen: str, kept: str, dropped: Counter, rejected_records: list):
            """The records `join` makes of `lines` (a chunk at a time) that pass the filters; the others go to
            `rejected_records`, counted by reason into `dropped`."""
            for chunk in batched(lines, JUDGED_AT_ONCE):
                counts[seen] += len(chunk)
                joined = [join(config, curated, item) for _, item in chunk]
                verdicts = chain.apply([response for _, response in joined])
                for (record, _), verdict in zip(joined, verdicts):
                    if verdict["keep"]:
                        counts[kept] += 1
                        kept_questions.add(record["question_id"])
                        yield {**record, "filter": verdict}
                    else:
                        dropped[verdict["reason"]] += 1
                        rejected_records.append({**record, "filter": verdict})

        def judged(rejected_records: list) -> Iterator[dict[str, Any]]:
            """The kept mixed records, the kept on-policy rollouts (on_policy), then the off-policy extras; rejected
            ones go to `rejected_records`."""
            continuations_read = iter_records(continued, keep_id=cut_by_request.__contains__)
            yield from passing(continuations_read, mixed_record, "continued", "kept", reasons, rejected_records)
            if config.on_policy:  # the rollouts the student finished within its cap, whole, when they pass too
                finished = {f"{point['question_id']}:rollout" for point in points if not point["truncated"]}
                rollouts_read = iter_records(rollouts_file, keep_id=finished.__contains__)
                yield from passing(
                    rollouts_read,
                    on_policy_record,
                    "on_policy_finished",
                    "on_policy",
                    on_policy_reasons,
                    rejected_records,
                )
            for extra in off_policy_extras(config, curated, kept_questions):
                counts["off_policy"] += 1
                yield extra

        rejected: list[dict[str, Any]] = []  # the few the filters drop (their text only)
        write_jsonl_atomic(output, judged(rejected))
    write_jsonl_atomic(rejected_file, rejected)
    curated.close()

    ratios = sorted(point["ratio"] for point in points)
    steps = ("rollouts", "truncated", "cut", "continued", "kept", "off_policy")
    summary: MixSummary = {
        "stage": "mix",
        "output": str(output),
        **{key: counts[key] for key in steps},
        "drop_reasons": dict(sorted(reasons.items(), key=lambda item: -item[1])),
        "cutoff_ratio": {"median": ratios[len(ratios) // 2], "max": ratios[-1]} if ratios else None,
    }
    if config.on_policy:
        summary["on_policy"] = counts["on_policy"]
        summary["on_policy_finished"] = counts["on_policy_finished"]
        summary["on_policy_drop_reasons"] = dict(sorted(on_policy_reasons.items(), key=lambda item: -item[1]))
    write_summary(output, summary)
    print(format_summary(f"dasd mix -> {output}", mix_rows(summary)), file=sys.stdout, flush=True)
    return summary
