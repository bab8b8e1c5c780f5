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
anything is written.

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
import math
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from ..config import ADDED, SPEED_ONLY, RecordOutput, StageConfig, dump_config
from ..data.io import AtomicJsonlFiles, iter_records, write_json_atomic, write_summary
from ..data.records import PARTS, SENTENCE_TYPES, SFTRecord, assistant_text, check_fields, reasoning_in_answer
from ..data.summaries import BuildSFTSummary
from ..errors import InputError
from ..naming import HIGH_TEMP_STAGE, LOW_TEMP_STAGE, sft_stage_file, sidecar, stage_for_temperature
from ..progress import format_summary
from ..scoring.sentence_scores import check_teacher_logprobs, mean_teacher_logprob, strategy_score
from ..text.render import DEFAULT_SYSTEM_PROMPT, with_system_prompt

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


def softmax_weights(scores: list[float], temperature: float = 1.0) -> list[float]:
    """The softmax of `scores / temperature`: weights that sum to 1 over one question's candidates, so a lone
    candidate gets 1 and a question's k candidates share what a lone one gets.

    >>> softmax_weights([-0.7])
    [1.0]
    >>> [round(w, 6) for w in softmax_weights([-1.0, -1.0 - math.log(2), -1.0 - math.log(4)])]  # 4/7, 2/7, 1/7
    [0.571429, 0.285714, 0.142857]
    >>> [round(w, 6) for w in softmax_weights([0.0, -math.log(4)], temperature=2.0)]  # 1 : 1/2 -> 2/3, 1/3
    [0.666667, 0.333333]
    """
    top = max(scores)
    exps = [math.exp((score - top) / temperature) for score in scores]
    total = sum(exps)
    return [value / total for value in exps]


def mean_one(values: list[float]) -> list[float]:
    """`values` scaled so that their mean is 1 (one stage's weights); all 1.0 when they sum to 0.

    >>> mean_one([1, 2, 3])
    [0.5, 1.0, 1.5]
    >>> mean_one([0, 0])
    [1.0, 1.0]
    """
    total = sum(values)
    if total <= 0:
        return [1.0] * len(values)
    return [value * len(values) / total for value in values]


def weight_score(record: dict[str, Any], weight_by: str, *, path: str, line: int) -> float:
    """What `weight_by` weighs a record by, from the record as build-sft reads it (`InputError` when it lacks it):
    its mean teacher token log-prob, or its teacher-sentence count as `dasd select` reads it."""
    if weight_by == "teacher_sentences":
        das = record.get("das")
        if not isinstance(das, dict) or not isinstance(das.get("teacher"), (int, float)):
            field = "das" if not isinstance(das, dict) else "das.teacher"
            raise InputError(
                path, line, field, "missing: weight_by=teacher_sentences needs scored records (run dasd score first)"
            )
        return strategy_score(record, "count", seed=0)
    if record.get("question_id") is None:
        raise InputError(path, line, "question_id", "missing: weight_by=teacher_seq_logprob groups by it")
    if not isinstance(record.get("teacher_logprobs"), dict):
        raise InputError(
            path,
            line,
            "teacher_logprobs",
            "missing: weight_by=teacher_seq_logprob needs the teacher's token log-probs (sampled with log-probs on)",
        )
    error = check_teacher_logprobs(record)
    mean = mean_teacher_logprob(record["teacher_logprobs"])
    if error or mean is None:
        raise InputError(path, line, "teacher_logprobs", error or "no token log-probs")
    return mean


def apply_weights(records: list[dict[str, Any]], scores: list[float], config: BuildSFTConfig) -> int | None:
    """Set each SFT record's `weight` from its score (`weight_score`): per question and stage a softmax
    (teacher_seq_logprob) or the score itself (teacher_sentences), then each stage scaled to mean `config.weight`.
    Returns, for teacher_seq_logprob, how many (question, stage) groups have more than one record."""
    raw = list(scores)
    shared = None
    if config.weight_by == "teacher_seq_logprob":
        groups: dict[tuple[str, str], list[int]] = defaultdict(list)
        for index, record in enumerate(records):
            groups[(str(record["question_id"]), record["stage"])].append(index)
        for indices in groups.values():
            for index, value in zip(indices, softmax_weights([scores[i] for i in indices], config.weight_temperature)):
                raw[index] = value
        shared = sum(len(indices) > 1 for indices in groups.values())
    stages: dict[str, list[int]] = defaultdict(list)
    for index, record in enumerate(records):
        stages[record["stage"]].append(index)
    for indices in stages.values():
        for index, value in zip(indices, mean_one([raw[i] for i in indices])):
            records[index]["weight"] = config.weight * value
    return shared


def weight_stats(records: list[dict[str, Any]]) -> dict[str, float]:
    weights = [record["weight"] for record in records]
    return {
        "min": round(min(weights), 6),
        "mean": round(sum(weights) / len(weights), 6),
        "max": round(max(weights), 6),
    }


def sentence_spans(record: dict[str, Any], *, path: str, line: int) -> list[tuple[int, int, str]]:
    """The record's scored sentences as `(start, end, class)` character spans of its assistant turn
    (`assistant_text` of the stripped reasoning and content, as `sft_record` writes it).

    >>> record = {"reasoning": " A b. C d.", "content": "E.", "sentences": [
    ...     {"part": "reasoning", "start": 1, "end": 5, "type": "teacher"},
    ...     {"part": "reasoning", "start": 6, "end": 10, "type": "shared"},
    ...     {"part": "content", "start": 0, "end": 2, "type": "student"}]}
    >>> sentence_spans(record, path="x", line=1)
    [(8, 12, 'teacher'), (13, 17, 'shared'), (28, 30, 'student')]
    """
    sentences = record.get("sentences")
    if not isinstance(sentences, list):
        raise InputError(path, line, "sentences", "missing: sentence_weights needs scored records (run dasd score)")
    _, reasoning_start, content_start = assistant_text(record["reasoning"].strip(), record["content"].strip())
    starts = {"reasoning": reasoning_start, "content": content_start}
    spans = []
    for sentence in sentences:
        part, kind = sentence.get("part"), sentence.get("type")
        if part not in starts or kind not in SENTENCE_TYPES:
            raise InputError(path, line, "sentences", f"a sentence with part {part!r} and type {kind!r}")
        text = record[part]
        lead, kept = len(text) - len(text.lstrip()), len(text.strip())
        start = min(max(int(sentence["start"]) - lead, 0), kept)
        end = min(max(int(sentence["end"]) - lead, 0), kept)
        if end > start:
            spans.append((starts[part] + start, starts[part] + end, kind))
    return sorted(spans)


def apply_sentence_weights(
    records: list[dict[str, Any]], spans: list[list[tuple[int, int, str]]], weights: dict[str, float]
) -> dict[str, dict[str, Any]]:
    """Give each record `loss_weight_spans` from its sentences' classes, each stage's weights scaled so that its
    sentence characters weigh 1 on average; returns per stage the scaled weight and character share per class.

    >>> records = [{"stage": "s"}, {"stage": "s"}]
    >>> stats = apply_sentence_weights(records, [[(0, 3, "teacher")], [(0, 1, "student")]], {"teacher": 3.0})
    >>> records[0]["loss_weight_spans"], records[1]["loss_weight_spans"]  # mean (3·3 + 1·1) / 4 = 2.5
    ([[0, 3, 1.2]], [[0, 1, 0.4]])
    >>> stats["s"]["char_share"]
    {'teacher': 0.75, 'student': 0.25, 'shared': 0.0}
    """
    chars: dict[str, Counter] = defaultdict(Counter)
    for record, items in zip(records, spans):
        count_sentence_chars(chars, record["stage"], items)
    scale, stats = sentence_weight_scales(chars, weights)
    for record, items in zip(records, spans):
        record["loss_weight_spans"] = weighted_spans(items, weights, scale.get(record["stage"], 1.0))
    return stats


def count_sentence_chars(chars: dict[str, Counter], stage: str, spans: list[tuple[int, int, str]]) -> None:
    for start, end, kind in spans:
        chars[stage][kind] += end - start


def sentence_weight_scales(
    chars: dict[str, Counter], weights: dict[str, float]
) -> tuple[dict[str, float], dict[str, dict[str, Any]]]:
    """Per stage, the factor that makes its sentence characters weigh 1 on average, and the scaled weight and
    character share per class (the summary's `sentence_weights`)."""
    scale = {}
    for stage, counts in chars.items():
        total = sum(counts.values())
        weighted = sum(weights.get(kind, 1.0) * count for kind, count in counts.items())
        scale[stage] = total / weighted if weighted > 0 else 1.0
    stats = {
        stage: {
            "weight": {kind: round(weights.get(kind, 1.0) * scale[stage], 6) for kind in SENTENCE_TYPES},
            "char_share": {kind: round(counts[kind] / max(sum(counts.values()), 1), 6) for kind in SENTENCE_TYPES},
        }
        for stage, counts in sorted(chars.items())
    }
    return scale, stats


def weighted_spans(spans: list[tuple[int, int, str]], weights: dict[str, float], factor: float) -> list[list]:
    """A record's `loss_weight_spans`: each sentence span with its class's weight times its stage's factor."""
    return [[start, end, round(weights.get(kind, 1.0) * factor, 6)] for start, end, kind in spans]


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
    rows = [
        ("records", len(entries)),
        *((f"  stage {stage}", len(items)) for stage, items in sorted(by_stage.items())),
        *(
            (("answer only", f"{answer_only:,} (reasoning_format none: the answer alone, no think block)"),)
            if answer_only
            else ()
        ),
        ("exports", ", ".join(config.exports) or "none"),
    ]
    if config.weight_by != "none":
        rows.append(("weights", config.weight_by))
        rows.extend(
            (f"  weight {stage}", "min {min:g}, mean {mean:g}, max {max:g}".format(**stats))
            for stage, stats in summary["weights"].items()
        )
    for stage, stats in (sentence_stats or {}).items():
        classes = (f"{kind} {stats['weight'][kind]:.3g} ({stats['char_share'][kind]:.0%})" for kind in SENTENCE_TYPES)
        rows.append((f"  sentence weights {stage}", ", ".join(classes)))
    if check is not None:
        rows.append(("template check", ", ".join(f"{key}: {value}" for key, value in sorted(check.items()))))
    print(format_summary(f"dasd build-sft -> {output}", rows), file=sys.stdout, flush=True)
    if check and (check.get("reasoning_missing") or check.get("reasoning_repeated")):
        print(
            "warning: the student's chat template does not keep the reasoning exactly once in "
            f"{check.get('reasoning_missing', 0) + check.get('reasoning_repeated', 0)} "
            "of the checked records; train on the prompt/completion files (dasd train does), not on rendered messages",
            file=sys.stderr,
        )
    return summary
