"""`dasd build-sft`: selected responses -> SFT records, split by stage, exported for TRL and LLaMA-Factory.

    dasd build-sft input=runs/x/selected.jsonl output=runs/x/sft/sft.jsonl student_tokenizer=path/to/student

Each response becomes `{id, messages, weight, stage, source, question_id, temperature, answer, domain}` with
`messages` = system prompt ("You are a helpful assistant." by default, as in all of the report's
stages), the question's turns, and the assistant turn `<think>\\n{reasoning}\\n</think>\\n\\n{content}`.
`stage` is `low_temp` for responses sampled at temperature <= `low_temperature_max` (0.8), else
`high_temp` — the two stages of temperature-scheduled SFT; `stage=NAME` forces one for all; `stage_by=rank` splits
by select's rank instead (rank 0 → `low_temp`, the rest → `high_temp`: two stages at one temperature, stage 2 on the
runner-up of the same samples); `stage_by=draw` by select's fresh draw (`dasd select draw_size=8 'draws=[0, 1]'`:
draw 0 → `low_temp`, draw 1 → `high_temp`, another draw is an error: two stages at one temperature, each on the
best of its own fresh draw — the clean control of the temperature schedule).

    dasd select … 'temperatures=[1.0]' draw_size=8 'draws=[0, 1]'
    dasd build-sft input=runs/x/selected.jsonl output=runs/x/sft/sft.jsonl stage_by=draw

A response sampled with `reasoning_format: none` (an instruct teacher that writes no think block; the record's own
field, written by `dasd sample`) has no reasoning: its chain of thought is its answer, and its assistant turn is the
answer alone, without an empty think block (`dasd.data.records.assistant_text` says why); the summary counts them
(`answer_only`). Any other response needs both a reasoning and an answer.

Written (all rewritten whole on each run): `output`, every record (what `dasd mix` reads as its curated
set), and beside it `<name>.<stage>.jsonl`, the records of each stage (what `dasd train` and `dasd run`
train on). Only the exports asked for (`exports=[...]`; none by default — each is one more copy of every
text, twice: all stages and each stage) are written too:
* `<name>[.<stage>].trl_messages.jsonl` — TRL conversational `{"messages": [...]}`;
* `<name>[.<stage>].trl_prompt_completion.jsonl` — TRL `{"prompt": [...], "completion": [...]}`
  (for TRL's completion-only loss);
* `<name>[.<stage>].sharegpt.jsonl` and `dataset_info.json` — LLaMA-Factory's sharegpt format and
  the matching dataset entries.

With `student_tokenizer`, the student's real chat template renders the first records to check that
the reasoning appears exactly once (some templates strip or duplicate think blocks); the summary
says what it found.

`weight` is the same for every record unless `weight_by` says otherwise (`dasd train` multiplies each
record's weight into the loss of each of its tokens):
* `teacher_seq_logprob`: the records of one question in one stage (`question_id`, and `stage` — so
  candidates sampled at one temperature are compared with each other) share a softmax of their mean
  teacher log-prob per token (`teacher_logprobs`, reasoning and content tokens together) divided by
  `weight_temperature` (`softmax_weights`): a question's weights sum to 1, a lone candidate gets 1;
* `teacher_sentences`: the record's teacher-sentence count, read as `dasd select` reads it
  (`das.teacher`; the selected records carry the counts of select's threshold): a record with none
  gets 0 (a stage where no record has any: all 1).
Then each stage's weights are scaled to mean 1 (`mean_one`) and multiplied by `weight`; the summary
gives each stage's min / mean / max. A record without the field a mode reads stops the run before
anything is written. (Both weighting schemes are a part: `dasd.training.weighting`.)

`sentence_weights={teacher: 2, shared: 1, student: 0.5}` weighs tokens within a record by the DAS class of
the sentence they are in (`sentences`, as `dasd score` classified them or `dasd select` re-classified them;
a class left out weighs 1): each record gets `loss_weight_spans`, `[start, end, weight]` character spans of
its assistant turn (the way `loss_mask_prefix_chars` marks the mixed-policy prefix), which `dasd train`
turns into per-token weights (times the record's `weight`; the think tags and the end token weigh 1). Each
stage's weights are scaled so that its sentence characters weigh 1 on average: the weights move the loss
between classes, they do not scale it. The summary gives each stage's scaled weight and character share
per class.
"""

from __future__ import annotations

import json
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from ..config import ADDED, SPEED_ONLY, RecordOutput, StageConfig, dump_config
from ..data.io import AtomicJsonlFiles, iter_records, write_json_atomic, write_summary
from ..data.records import PARTS, SFTRecord, assistant_text, check_fields, reasoning_in_answer
from ..data.summaries import BuildSFTSummary
from ..errors import InputError
from ..naming import HIGH_TEMP_STAGE, LOW_TEMP_STAGE, sft_stage_file, sidecar, stage_for_temperature
from ..progress import format_summary
from ..reporting.summary_rows import build_sft_rows
from ..text.render import DEFAULT_SYSTEM_PROMPT, with_system_prompt
from ..training.weighting import (
    apply_weights,
    count_sentence_chars,
    sentence_spans,
    sentence_weight_scales,
    weight_score,
    weight_stats,
    weighted_spans,
)

EXPORTS = ("trl_messages", "trl_prompt_completion", "sharegpt")
SHAREGPT_ROLES = {"user": "human", "assistant": "gpt", "tool": "observation"}


class BuildSFTConfig(StageConfig):
    input: str = Field(..., description="selected response records (a glob reads several files)")
    output: RecordOutput = Field(
        ..., description="SFT records JSONL (all stages); per-stage files and exports are written beside it"
    )
    system_prompt: str | None = Field(
        DEFAULT_SYSTEM_PROMPT, description="system prompt of every SFT record (null keeps the questions' own)"
    )
    low_temperature_max: float = Field(
        0.8, description="responses sampled at or below this temperature go to stage low_temp, above to high_temp"
    )
    unknown_temperature_stage: str = Field(
        HIGH_TEMP_STAGE, description="stage of responses without a temperature (e.g. the released data)"
    )
    stage: str | None = Field(None, description="force this stage name for every record (e.g. mixed_policy)")
    stage_by: Literal["temperature", "rank", "draw"] = Field(
        "temperature",
        description="temperature: low_temp / high_temp by the sampling temperature (the report's schedule); rank: "
        "by select's rank within a question — rank 0 to low_temp (stage 1), the others to high_temp (stage 2) — "
        "a two-stage schedule at one temperature, the control that separates the temperatures from the two stages; "
        "draw: by select's fresh draw (select draw_size with draws [0, 1]) — draw 0 to low_temp, draw 1 to "
        "high_temp (another draw is an error) — the same control with each stage on a fresh best-of-draw_size",
        json_schema_extra=ADDED,
    )
    weight: float = Field(1.0, gt=0, description="per-sample loss weight written to every record")
    source: str = Field("dasd", description="`source` tag of the records")
    exports: list[Literal["trl_messages", "trl_prompt_completion", "sharegpt"]] = Field(
        default_factory=list,
        description="exports to write beside the SFT files, for other trainers: trl_messages, trl_prompt_completion "
        "(TRL), sharegpt (LLaMA-Factory, with dataset_info.json); none by default — dasd train and dasd run read the "
        "per-stage SFT files, and each export copies every text twice (all stages, each stage)",
    )
    dataset_name: str = Field("dasd", description="prefix of the dataset names in LLaMA-Factory's dataset_info.json")
    student_tokenizer: str | None = Field(
        None, description="student tokenizer: check that its chat template keeps the reasoning exactly once"
    )
    template_check_records: int = Field(
        100, ge=0, description="how many records the template check renders", json_schema_extra=SPEED_ONLY
    )
    weight_by: Literal["none", "teacher_seq_logprob", "teacher_sentences"] = Field(
        "none",
        description="per-record loss weights — none: `weight` for every record; teacher_seq_logprob: softmax, over "
        "a question's records in a stage, of their mean teacher token log-prob / weight_temperature (needs "
        "`teacher_logprobs`); teacher_sentences: proportional to the record's teacher-sentence count as dasd select "
        "counts it (needs `das`, i.e. scored records); both scaled to mean `weight` in each stage",
        json_schema_extra=ADDED,
    )
    weight_temperature: float = Field(
        1.0,
        gt=0,
        description="temperature of weight_by=teacher_seq_logprob's softmax: higher evens a question's weights out, "
        "lower gives more to the candidate the teacher found likeliest per token",
        json_schema_extra=ADDED,
    )

    sentence_weights: dict[Literal["teacher", "shared", "student"], Annotated[float, Field(ge=0)]] | None = Field(
        None,
        description="per-token loss weights by the DAS class of the token's sentence, e.g. {teacher: 2, shared: 1, "
        "student: 0.5} (a class left out: 1; needs `sentences`, i.e. scored records), scaled so that each stage's "
        "sentence characters weigh 1 on average; written as `loss_weight_spans`",
        json_schema_extra=ADDED,
    )


DRAW_STAGES = (LOW_TEMP_STAGE, HIGH_TEMP_STAGE)  # stage_by=draw: draw 0 trains in stage 1, draw 1 in stage 2


def record_stage(record: dict[str, Any], config: BuildSFTConfig) -> str:
    """The SFT stage a selected response trains in: `stage`, else by select's rank (`stage_by=rank`) or draw
    (`stage_by=draw`), else by its sampling temperature.

    >>> config = BuildSFTConfig(input="x", output="y", stage_by="draw")
    >>> [record_stage({"select": {"rank": 0, "draw": draw}}, config) for draw in (0, 1)]
    ['low_temp', 'high_temp']
    """
    temperature = record.get("temperature")
    if config.stage:
        return config.stage
    if config.stage_by == "rank":
        return LOW_TEMP_STAGE if record["select"]["rank"] == 0 else HIGH_TEMP_STAGE
    if config.stage_by == "draw":
        return DRAW_STAGES[record["select"]["draw"]]  # checked by _checked
    if temperature is None:
        return config.unknown_temperature_stage
    return stage_for_temperature(temperature, low_temperature_max=config.low_temperature_max)


def sft_record(record: dict[str, Any], config: BuildSFTConfig) -> SFTRecord:
    assistant, _, _ = assistant_text(record["reasoning"].strip(), record["content"].strip())
    messages = with_system_prompt(record["messages"], config.system_prompt) + [
        {"role": "assistant", "content": assistant}
    ]
    temperature = record.get("temperature")
    stage = record_stage(record, config)
    out = {
        "id": record["id"],
        "messages": messages,
        "weight": config.weight,
        "stage": stage,
        "source": config.source,
        "question_id": record.get("question_id"),
        "temperature": temperature,
        # kept for later stages (mixed-policy filters grade continuations against it)
        "answer": record.get("answer"),
        "domain": record.get("domain"),
    }
    if record.get("loss_mask_prefix_chars") is not None:
        out["loss_mask_prefix_chars"] = record["loss_mask_prefix_chars"]
    return out


def to_trl_messages(record: dict[str, Any]) -> dict[str, Any]:
    return {"id": record["id"], "messages": record["messages"]}


def to_trl_prompt_completion(record: dict[str, Any]) -> dict[str, Any]:
    return {"id": record["id"], "prompt": record["messages"][:-1], "completion": record["messages"][-1:]}


def to_sharegpt(record: dict[str, Any]) -> dict[str, Any]:
    system = "\n\n".join(m["content"] for m in record["messages"] if m["role"] in ("system", "developer"))
    conversations = [
        {"from": SHAREGPT_ROLES.get(m["role"], m["role"]), "value": m["content"]}
        for m in record["messages"]
        if m["role"] not in ("system", "developer")
    ]
    out = {"id": record["id"], "conversations": conversations}
    if system:
        out["system"] = system
    return out


SHAREGPT_DATASET_INFO = {
    "formatting": "sharegpt",
    "columns": {"messages": "conversations", "system": "system"},
    "tags": {
        "role_tag": "from",
        "content_tag": "value",
        "user_tag": "human",
        "assistant_tag": "gpt",
        "observation_tag": "observation",
        "function_tag": "function_call",
        "system_tag": "system",
    },
}

WRITERS = {"trl_messages": to_trl_messages, "trl_prompt_completion": to_trl_prompt_completion, "sharegpt": to_sharegpt}


def template_check(tokenizer, records: list[dict[str, Any]]) -> dict[str, int]:
    """How often the student's chat template keeps the reasoning once / drops it / repeats it."""
    found: Counter = Counter()
    for record in records:
        rendered = tokenizer.apply_chat_template(record["messages"], tokenize=False)
        reasoning = record["messages"][-1]["content"].split("</think>")[0].removeprefix("<think>\n").strip()
        occurrences = rendered.count(reasoning) if reasoning else 1
        found["ok" if occurrences == 1 else "reasoning_missing" if occurrences == 0 else "reasoning_repeated"] += 1
    return dict(found)


def empty_part_cause(record: dict[str, Any], part: str) -> str:
    """Why a response's `part` is empty, and what to do, for build-sft's one-line error: the teacher's format (no
    think block written, or one that never closed), then whether dasd filter could have caught it.

    >>> empty_part_cause({"reasoning": "Let me see", "content": "", "finish_reason": "stop"}, "content").split(" (")[0]
    'empty: the reasoning has no answer after it: the think block never closed'
    >>> empty_part_cause({"reasoning": "", "content": "4", "filter": {"keep": True}}, "reasoning").split("; ")[-1]
    'dasd filter kept it: its structure filter was off'
    """
    if not record["reasoning"].strip() and not record["content"].strip():
        cause = "the response is empty (no reasoning, no answer)"
    elif part == "reasoning":
        cause = (
            "the teacher wrote no reasoning (no think block); sample with reasoning_format=none (the chain of thought "
            "is then the answer, trained on alone) or a template that opens one"
        )
    elif record.get("finish_reason") == "length":
        cause = "the reasoning has no answer after it: max_new_tokens cut the response inside its think block"
    else:
        cause = (
            "the reasoning has no answer after it: the think block never closed (a teacher that does not close the "
            "block its template opened: sample with reasoning_format=none and a template that opens none)"
        )
    verdict = record.get("filter")
    if isinstance(verdict, dict) and verdict.get("keep"):
        where = "dasd filter kept it: its structure filter was off"
    elif isinstance(verdict, dict):
        where = "dasd filter rejected it: build-sft reads the kept records (its output), not the rejected ones"
    else:
        where = "dasd filter's structure filter drops such responses"
    return f"empty: {cause}; {where}"


def _checked(config: BuildSFTConfig, line: int, record: dict[str, Any]) -> None:
    check_fields(record, ("id", "messages", "reasoning", "content"), path=config.input, line=line)
    if config.stage_by == "rank" and not isinstance((record.get("select") or {}).get("rank"), int):
        raise InputError(config.input, line, "select", "missing: stage_by=rank needs dasd select's output")
    if config.stage_by == "draw" and not config.stage:
        draw = (record.get("select") or {}).get("draw")
        if draw is None or isinstance(draw, bool) or not isinstance(draw, int):
            raise InputError(
                config.input, line, "select.draw", "missing: stage_by=draw needs dasd select's output with draw_size"
            )
        if not 0 <= draw < len(DRAW_STAGES):
            raise InputError(
                config.input,
                line,
                "select.draw",
                f"draw {draw}: stage_by=draw trains draw 0 in stage 1 ({LOW_TEMP_STAGE}) and draw 1 in stage 2 "
                f"({HIGH_TEMP_STAGE}); select with draws=[0, 1]",
            )
    for part in PARTS:
        if part == "reasoning" and reasoning_in_answer(record):
            continue  # the chain of thought is the answer (checked next): trained on alone
        if not record[part].strip():
            raise InputError(config.input, line, part, empty_part_cause(record, part))


def run(config: BuildSFTConfig) -> dict[str, Any]:
    # 1. Pass 1: check every selected response (and what its weight is read from) before writing anything, keeping
    # a small entry per record (question, stage, weight score) and each stage's sentence characters — not records.
    entries: list[dict[str, Any]] = []
    scores = []
    chars: dict[str, Counter] = defaultdict(Counter)
    answer_only = 0
    for line, record in iter_records(config.input):
        _checked(config, line, record)
        answer_only += reasoning_in_answer(record)
        stage = record_stage(record, config)
        if config.weight_by != "none":
            scores.append(weight_score(record, config.weight_by, path=config.input, line=line))
        if config.sentence_weights is not None:
            count_sentence_chars(chars, stage, sentence_spans(record, path=config.input, line=line))
        entries.append({"question_id": record.get("question_id"), "stage": stage, "weight": config.weight})
    if not entries:
        raise InputError(config.input, None, None, "no records (empty file)")
    if config.weight_by != "none" and apply_weights(entries, scores, config) == 0:
        print(
            "warning: weight_by=teacher_seq_logprob weighs the records of a question within a stage, and every "
            f"question has one record per stage here: every weight is {config.weight:g} (select k >= 2 to weigh)",
            file=sys.stderr,
        )
    sentence_stats, scale = None, {}
    if config.sentence_weights is not None:
        scale, sentence_stats = sentence_weight_scales(chars, dict(config.sentence_weights))
    by_stage: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for entry in entries:
        by_stage[entry["stage"]].append(entry)

    # 2. Pass 2: each SFT record written as it is built, to the file of all records, its stage's file and the
    # exports of both (each file via a temporary one, renamed into place once all are written).
    output = Path(config.output)
    checked: list[dict[str, Any]] = []  # the first few, for the template check
    with AtomicJsonlFiles() as files:
        for index, (line, record) in enumerate(iter_records(config.input)):
            sft = sft_record(record, config)
            sft["weight"] = entries[index]["weight"]
            if config.sentence_weights is not None:
                spans = sentence_spans(record, path=config.input, line=line)
                sft["loss_weight_spans"] = weighted_spans(
                    spans, dict(config.sentence_weights), scale.get(sft["stage"], 1.0)
                )
            for base in (output, sft_stage_file(output, sft["stage"])):
                files.write(base, sft)
                for export in config.exports:
                    files.write(sidecar(base, export, ".jsonl"), WRITERS[export](sft))
            if len(checked) < config.template_check_records:
                checked.append(sft)
        files.commit()
    dataset_info: dict[str, Any] = {}
    written = []
    for stage in [None, *sorted(by_stage)]:
        base = output if stage is None else sft_stage_file(output, stage)
        if stage is not None:
            written.append(base.name)
        for export in config.exports:
            written.append(sidecar(base, export, ".jsonl").name)
            if export == "sharegpt":
                name = config.dataset_name + ("" if stage is None else f"_{stage}")
                dataset_info[name] = {"file_name": sidecar(base, export, ".jsonl").name, **SHAREGPT_DATASET_INFO}
    if "sharegpt" in config.exports:
        info_path = output.with_name("dataset_info.json")
        existing = json.loads(info_path.read_text()) if info_path.exists() else {}
        write_json_atomic(info_path, {**existing, **dataset_info})
    dump_config(config, sidecar(output, "config", ".yaml"))

    check = None
    if config.student_tokenizer and config.template_check_records:
        from ..models.assets import load_tokenizer

        check = template_check(load_tokenizer(config.student_tokenizer), checked)
    summary: BuildSFTSummary = {
        "stage": "build-sft",
        "output": str(output),
        "records": len(entries),
        "per_stage": {stage: len(items) for stage, items in sorted(by_stage.items())},
        "files": written,
        "template_check": check,
    }
    if answer_only:
        summary["answer_only"] = answer_only
    if config.weight_by != "none":
        summary["weight_by"] = config.weight_by
        if config.weight_by == "teacher_seq_logprob":
            summary["weight_temperature"] = config.weight_temperature
        summary["weights"] = {stage: weight_stats(items) for stage, items in sorted(by_stage.items())}
    if sentence_stats is not None:
        summary["sentence_weights"] = sentence_stats
    write_summary(output, summary)
    rows = build_sft_rows(summary, exports=config.exports)  # the exports asked for: a config fact, not in the summary
    print(format_summary(f"dasd build-sft -> {output}", rows), file=sys.stdout, flush=True)
    if check and (check.get("reasoning_missing") or check.get("reasoning_repeated")):
        print(
            "warning: the student's chat template does not keep the reasoning exactly once in "
            f"{check.get('reasoning_missing', 0) + check.get('reasoning_repeated', 0)} "
            "of the checked records; train on the prompt/completion files (dasd train does), not on rendered messages",
            file=sys.stderr,
        )
    return summary
