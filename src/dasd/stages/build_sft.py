"""`dasd build-sft`: selected responses -> SFT records, split by stage, exported for TRL and LLaMA-Factory.

    dasd build-sft input=runs/x/selected.jsonl output=runs/x/sft/sft.jsonl student_tokenizer=path/to/student

Each response becomes `{id, messages, weight, stage, source, question_id, temperature, answer, domain}` with
`messages` = system prompt ("You are a helpful assistant." by default, as in all of the report's
stages), the question's turns, and the assistant turn `<think>\\n{reasoning}\\n</think>\\n\\n{content}`.
`stage` is `low_temp` for responses sampled at temperature <= `low_temperature_max` (0.8), else
`high_temp` — the two stages of temperature-scheduled SFT; `stage=NAME` forces one for all.

Written beside `output` (all rewritten whole on each run):
* `<name>.<stage>.jsonl` — the records of each stage;
* `<name>[.<stage>].trl_messages.jsonl` — TRL conversational `{"messages": [...]}`;
* `<name>[.<stage>].trl_prompt_completion.jsonl` — TRL `{"prompt": [...], "completion": [...]}`
  (what `dasd train` and TRL's completion-only loss use);
* `<name>[.<stage>].sharegpt.jsonl` and `dataset_info.json` — LLaMA-Factory's sharegpt format and
  the matching dataset entries.

With `student_tokenizer`, the student's real chat template renders the first records to check that
the reasoning appears exactly once (some templates strip or duplicate think blocks); the summary
says what it found.
"""

from __future__ import annotations

import json
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from ..config import RecordOutput, StageConfig, dump_config
from ..data.io import iter_records, write_json_atomic, write_jsonl_atomic, write_summary
from ..data.records import PARTS, SFTRecord, check_fields
from ..data.summaries import BuildSFTSummary
from ..errors import InputError
from ..naming import HIGH_TEMP_STAGE, sft_stage_file, sidecar, stage_for_temperature
from ..progress import format_summary
from ..text.render import DEFAULT_SYSTEM_PROMPT, think_text, with_system_prompt

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
    weight: float = Field(1.0, gt=0, description="per-sample loss weight written to every record")
    source: str = Field("dasd", description="`source` tag of the records")
    exports: list[Literal["trl_messages", "trl_prompt_completion", "sharegpt"]] = Field(
        default_factory=lambda: list(EXPORTS), description="export formats to write"
    )
    dataset_name: str = Field("dasd", description="prefix of the dataset names in LLaMA-Factory's dataset_info.json")
    student_tokenizer: str | None = Field(
        None, description="student tokenizer: check that its chat template keeps the reasoning exactly once"
    )
    template_check_records: int = Field(100, ge=0, description="how many records the template check renders")


def sft_record(record: dict[str, Any], config: BuildSFTConfig) -> SFTRecord:
    assistant, _, _ = think_text(record["reasoning"].strip(), record["content"].strip())
    messages = with_system_prompt(record["messages"], config.system_prompt) + [
        {"role": "assistant", "content": assistant}
    ]
    temperature = record.get("temperature")
    if config.stage:
        stage = config.stage
    elif temperature is None:
        stage = config.unknown_temperature_stage
    else:
        stage = stage_for_temperature(temperature, low_temperature_max=config.low_temperature_max)
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


def run(config: BuildSFTConfig) -> dict[str, Any]:
    # 1. Read and check every selected response before writing anything.
    records = []
    for line, record in iter_records(config.input):
        check_fields(record, ("id", "messages", "reasoning", "content"), path=config.input, line=line)
        for part in PARTS:
            if not record[part].strip():
                raise InputError(
                    config.input, line, part, "empty: build-sft expects filtered responses (run dasd filter first)"
                )
        records.append(sft_record(record, config))
    if not records:
        raise InputError(config.input, None, None, "no records (empty file)")

    # 2. Write all records, one file per stage, and the exports of each.
    output = Path(config.output)
    by_stage: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        by_stage[record["stage"]].append(record)
    groups = {None: records, **dict(sorted(by_stage.items()))}
    dataset_info: dict[str, Any] = {}
    written = []
    for stage, items in groups.items():
        base = output if stage is None else sft_stage_file(output, stage)
        if stage is not None:
            write_jsonl_atomic(base, items)
            written.append(base.name)
        for export in config.exports:
            path = sidecar(base, export, ".jsonl")
            write_jsonl_atomic(path, (WRITERS[export](record) for record in items))
            written.append(path.name)
            if export == "sharegpt":
                name = config.dataset_name + ("" if stage is None else f"_{stage}")
                dataset_info[name] = {"file_name": path.name, **SHAREGPT_DATASET_INFO}
    write_jsonl_atomic(output, records)
    if "sharegpt" in config.exports:
        info_path = output.with_name("dataset_info.json")
        existing = json.loads(info_path.read_text()) if info_path.exists() else {}
        write_json_atomic(info_path, {**existing, **dataset_info})
    dump_config(config, sidecar(output, "config", ".yaml"))

    check = None
    if config.student_tokenizer and config.template_check_records:
        from ..models.assets import load_tokenizer

        check = template_check(load_tokenizer(config.student_tokenizer), records[: config.template_check_records])
    summary: BuildSFTSummary = {
        "stage": "build-sft",
        "output": str(output),
        "records": len(records),
        "per_stage": {stage: len(items) for stage, items in sorted(by_stage.items())},
        "files": written,
        "template_check": check,
    }
    write_summary(output, summary)
    rows = [
        ("records", len(records)),
        *((f"  stage {stage}", len(items)) for stage, items in sorted(by_stage.items())),
        ("exports", ", ".join(config.exports) or "none"),
    ]
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
