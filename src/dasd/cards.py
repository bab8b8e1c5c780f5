"""Hugging Face dataset and model folders whose cards say how they were made.

    folder = export_dataset("runs/x/select/das.jsonl", "runs/x/select/das.hf")   # data/*.parquet + README.md
    write_model_card("runs/x/train/das/high_temp/final", evals=["runs/x/eval/high_temp"])

Every stage writes `<name>.config.yaml` (its resolved config) and `<name>.summary.json` beside its output;
each config names its `input`. `lineage(path)` follows those links from a file back to the questions, and
the cards are built from what it finds — the teacher and how it was served, temperatures and samples per
question, whether the raw log-probs were verified, β and the probability space, DAS/RS counts and the
teacher-sentence histograms, filter counts by reason, the student tokenizer, the dasd version and every
resolved config — never from what the user says they did.

Cards are `huggingface_hub` `DatasetCard` / `ModelCard` objects (YAML metadata the Hub indexes: licence,
task categories, `configs` with the data files, `dataset_info` features and split sizes; `base_model`,
`datasets`, `model-index`-free eval table with ± standard errors in the body).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from .errors import InputError

REPORT = "Distribution-Aligned Sequence Distillation for Superior Long-CoT Reasoning (arXiv:2601.09088)"
REPORT_URL = "https://arxiv.org/abs/2601.09088"
RECORD_SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet")


# --- lineage: the stages that made a file ---------------------------------------------------------


def _sidecars(path: Path) -> tuple[Path, Path] | None:
    """(`<name>.config.yaml`, `<name>.summary.json`) beside a stage output; `sft.low_temp.jsonl` falls back
    to `sft.*` (build-sft writes one config for all its files).

    >>> _sidecars(Path("/nonexistent/scored.jsonl")) is None
    True
    """
    parts = path.name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        stem = ".".join(parts[:cut])
        config = path.with_name(f"{stem}.config.yaml")
        if config.exists():
            return config, path.with_name(f"{stem}.summary.json")
    return None


def _resolve(reference: str, near: Path) -> Path | None:
    """A path a config recorded (relative to where that command ran): as is, or below an ancestor of `near`."""
    candidate = Path(reference)
    if candidate.exists():
        return candidate
    for ancestor in near.resolve().parents:
        if (ancestor / reference).exists():
            return ancestor / reference
    return None


def lineage(path: str | Path) -> list[dict[str, Any]]:
    """The stages behind a record file, newest first: `[{stage, file, config, summary}]`."""
    import yaml

    steps: list[dict[str, Any]] = []
    current: Path | None = Path(path)
    seen: set[Path] = set()
    while current is not None and current.resolve() not in seen:
        seen.add(current.resolve())
        sidecars = _sidecars(current)
        if sidecars is None:
            break
        config = yaml.safe_load(sidecars[0].read_text()) or {}
        summary = json.loads(sidecars[1].read_text()) if sidecars[1].exists() else {}
        steps.append({"stage": summary.get("stage", "?"), "file": str(current), "config": config, "summary": summary})
        reference = config.get("input")
        current = _resolve(str(reference), current) if reference else None
    return steps


# --- what each stage contributes to a card ------------------------------------------------------------


def _get(mapping: dict, dotted: str, default: Any = None) -> Any:
    for key in dotted.split("."):
        if not isinstance(mapping, dict) or key not in mapping:
            return default
        mapping = mapping[key]
    return mapping


def stage_facts(step: dict[str, Any]) -> list[str]:
    """Markdown bullet lines: the facts of one stage a reader of the data needs.

    >>> stage_facts({"stage": "filter", "config": {}, "summary": {"kept": 9, "rejected": 3,
    ...     "reasons": {"wrong_answer": 2, "duplicate": 1}}})
    ['- kept 9, rejected 3 — by reason: duplicate 1, wrong_answer 2']
    """
    # published text: every fact below is read from the redacted config and summary
    stage, config, summary = step["stage"], redacted(step["config"]), redacted(step["summary"])
    facts: list[str] = []
    if stage == "sample":
        backend = config.get("backend") or {}
        facts.append(
            f"- teacher: `{backend.get('model')}` via `{backend.get('name')}`"
            + (
                f" ({backend.get('mode')} mode, servers {backend.get('base_urls')})"
                if backend.get("name") == "openai"
                else ""
            )
        )
        if backend.get("launch"):
            facts.append(f"- served by: `{backend['launch']}`")
        if backend.get("extra_body"):
            facts.append(f"- extra request fields: `{json.dumps(backend['extra_body'])}`")
        schedule = ", ".join(
            f"T={entry.get('temperature')} × {entry.get('n')}" for entry in config.get("schedule") or []
        )
        facts.append(
            f"- temperatures and samples per question: {schedule}; top_p {config.get('top_p')}, top_k "
            f"{config.get('top_k')} (sent explicitly), max_new_tokens {config.get('max_new_tokens')}, "
            f"seed {config.get('seed')}"
        )
        probe = summary.get("logprob_probe")
        verified = (
            f"verified raw by teacher-forced rescoring ({json.dumps(probe)})"
            if probe
            else f"not probed (logprob_check={backend.get('logprob_check')}; a local hf teacher records raw "
            "log-probs itself)"
        )
        facts.append(f"- log-probs: {verified}")
        facts.append(
            f"- {summary.get('responses_written')} responses to {summary.get('questions')} questions, "
            f"{summary.get('completion_tokens')} completion tokens, finish reasons {summary.get('finish_reasons')}"
        )
    elif stage == "score":
        student = config.get("student") or {}
        facts.append(
            f"- student: `{student.get('model')}` (tokenizer `{student.get('tokenizer') or student.get('model')}`), "
            f"β = {config.get('beta')}, difference in `{config.get('space')}` space"
        )
        facts.append(
            f"- sentences by class: {summary.get('sentences')}; {summary.get('records_scored')} records scored, "
            f"{summary.get('records_failed')} failed {summary.get('failure_reasons') or ''}".rstrip()
        )
    elif stage == "select":
        strategy = config.get("strategy")
        label = (
            "DAS (most teacher sentences)"
            if strategy == "count"
            else "RS (random)"
            if strategy == "random"
            else strategy
        )
        facts.append(
            f"- selection: {label}, k = {config.get('k')} per question and temperature — {summary.get('selected')} "
            f"of {summary.get('candidates')} candidates for {summary.get('questions')} questions"
        )
        for temperature, groups in sorted((summary.get("per_temperature") or {}).items()):
            kept, dropped = groups.get("kept", {}), groups.get("dropped", {})
            facts.append(
                f"- T={temperature}: kept {kept.get('count')} "
                f"(mean teacher sentences {kept.get('mean_teacher_sentences')}, "
                f"histogram {kept.get('histogram')}), dropped {dropped.get('count')} "
                f"(mean {dropped.get('mean_teacher_sentences')}, histogram {dropped.get('histogram')})"
            )
    elif stage == "filter":
        reasons = ", ".join(f"{reason} {count}" for reason, count in sorted((summary.get("reasons") or {}).items()))
        facts.append(
            f"- kept {summary.get('kept')}, rejected {summary.get('rejected')} — by reason: {reasons or 'none'}"
        )
    elif stage == "build-sft":
        facts.append(
            f"- student tokenizer `{config.get('student_tokenizer')}`; records per training stage "
            f"{summary.get('per_stage')}; chat-template check {summary.get('template_check')}"
        )
    elif stage == "mix":
        facts.append(
            f"- mixed-policy: {summary.get('rollouts')} student rollouts, {summary.get('cut')} cut, "
            f"{summary.get('continued')} continued by the teacher, {summary.get('kept')} kept, "
            f"{summary.get('off_policy')} off-policy records; dropped {summary.get('drop_reasons')}"
        )
    return facts


# Credentials are recognised by the exact key that holds them (case and `-`/`_` aside) and by their value, wherever
# they sit: a key-substring rule ("token") also hid facts a reader needs (`max_new_tokens`, `tokenizer`,
# `completion_tokens`), and missed credentials inside strings (`--api-key sk-…` in a launch command, `user:pass@` in a
# URL).
CREDENTIAL_KEYS = frozenset(
    {
        "api_key",
        "apikey",
        "api_keys",
        "x_api_key",
        "token",
        "hf_token",
        "access_token",
        "auth_token",
        "bearer_token",
        "refresh_token",
        "secret",
        "secret_key",
        "client_secret",
        "password",
        "passwd",
        "authorization",
        "proxy_authorization",
        "cookie",
    }
)
_CREDENTIAL_VALUES = (
    # a flag that takes a credential: --api-key X, --api-key=X, --hf-token X, --token X, --password X
    (
        re.compile(r"(--(?:api[-_]key|hf[-_]token|token|access[-_]token|password|secret)(?:=|\s+))(\S+)"),
        r"\1<redacted>",
    ),
    # credentials in a URL: scheme://user:password@host
    (re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s:]+:[^/@\s]+@"), r"\1<redacted>@"),
    # an HTTP authorization value
    (re.compile(r"\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 <redacted>"),
    # tokens by their shape: Hugging Face (hf_…), OpenAI-style (sk-…)
    (re.compile(r"\bhf_[A-Za-z0-9]{20,}\b"), "<redacted>"),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"), "<redacted>"),
)


def redacted_text(text: str) -> str:
    """`text` with every credential-shaped value replaced.

    >>> redacted_text("vllm serve m --api-key sk-abc --port 8000")
    'vllm serve m --api-key <redacted> --port 8000'
    >>> redacted_text("http://alice:pw@node1:8000/v1 and http://node2:8000/v1")
    'http://<redacted>@node1:8000/v1 and http://node2:8000/v1'
    """
    for pattern, replacement in _CREDENTIAL_VALUES:
        text = pattern.sub(replacement, text)
    return text


def is_credential_key(key: Any) -> bool:
    """Whether a config key holds a credential: exact names only, so facts that merely contain "token" stay.

    >>> [is_credential_key(k) for k in ("api_key", "HF-Token", "max_new_tokens", "tokenizer", "completion_tokens")]
    [True, True, False, False, False]
    """
    return str(key).lower().replace("-", "_") in CREDENTIAL_KEYS


def redacted(value: Any) -> Any:
    """A config with every credential replaced (cards are published), every other fact kept.

    >>> redacted({"backend": {"api_key": "sk-123", "model": "m", "max_new_tokens": 8}})
    {'backend': {'api_key': '<redacted>', 'model': 'm', 'max_new_tokens': 8}}
    >>> redacted({"extra_body": {"Authorization": "Bearer x"}, "base_urls": ["http://u:p@h/v1"]})
    {'extra_body': {'Authorization': '<redacted>'}, 'base_urls': ['http://<redacted>@h/v1']}
    """
    if isinstance(value, dict):
        return {
            key: "<redacted>" if is_credential_key(key) and item not in (None, "") else redacted(item)
            for key, item in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [redacted(item) for item in value]
    if isinstance(value, str):
        return redacted_text(value)
    return value


def _details(step: dict[str, Any]) -> str:
    import yaml

    step = {**step, "config": redacted(step["config"]), "summary": redacted(step["summary"])}
    return (
        f"<details><summary>resolved config and summary of <code>{step['stage']}</code></summary>\n\n"
        f"```yaml\n{yaml.safe_dump(step['config'], sort_keys=False).strip()}\n```\n\n"
        f"```json\n{json.dumps(step['summary'], indent=1)}\n```\n\n</details>"
    )


def provenance_section(steps: list[dict[str, Any]], level: int = 2) -> str:
    """How it was made: each stage from the questions on, its facts, its full config and summary."""
    from . import __version__

    head = "#" * level
    lines = [f"{head} How it was made\n\nWith dasd {__version__}, the DASD recipe ([{REPORT}]({REPORT_URL})):"]
    for number, step in enumerate(reversed(steps), start=1):
        lines.append(f"\n{head}# {number}. `dasd {step['stage']}` → `{Path(step['file']).name}`\n")
        lines.extend(stage_facts(step))
        lines.append("\n" + _details(step))
    if not steps:
        lines.append("\n(no dasd stage sidecars were found beside this file: its lineage is unknown)")
    return "\n".join(lines)


# --- dataset folders ------------------------------------------------------------------------------------


def _size_category(rows: int) -> str:
    """The Hub's size_categories bucket.

    >>> _size_category(500), _size_category(12_000)
    ('n<1K', '10K<n<100K')
    """
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if rows < limit:
            return label
    return "1M<n<10M" if rows < 10_000_000 else "n>10M"


def _writable(data_type):
    """Parquet cannot hold a struct without fields (a field that is `{}` in every record): such a type is
    written as null. Nested types are rebuilt around the fixed children.

    >>> import pyarrow as pa
    >>> _writable(pa.struct([])), _writable(pa.list_(pa.struct([("a", pa.int64())])))
    (DataType(null), ListType(list<item: struct<a: int64>>))
    """
    import pyarrow as pa

    if pa.types.is_struct(data_type):
        if data_type.num_fields == 0:
            return pa.null()
        return pa.struct(
            [data_type.field(i).with_type(_writable(data_type.field(i).type)) for i in range(data_type.num_fields)]
        )
    if pa.types.is_list(data_type) or pa.types.is_large_list(data_type):
        return pa.list_(_writable(data_type.value_type))
    return data_type


def _conform(value, data_type):
    """A value reshaped to a `_writable` type (`{}` where the type became null -> None).

    >>> import pyarrow as pa
    >>> _conform({"a": {}, "b": [1]}, pa.struct([("a", pa.null()), ("b", pa.list_(pa.int64()))]))
    {'a': None, 'b': [1]}
    """
    import pyarrow as pa

    if pa.types.is_null(data_type):
        return None
    if value is None:
        return None
    if pa.types.is_struct(data_type) and isinstance(value, dict):
        children = {data_type.field(i).name: data_type.field(i).type for i in range(data_type.num_fields)}
        return {key: _conform(value.get(key), child) for key, child in children.items()}
    if pa.types.is_list(data_type) and isinstance(value, list):
        return [_conform(item, data_type.value_type) for item in value]
    return value


def export_dataset(
    path: str | Path,
    folder: str | Path,
    *,
    rows_per_shard: int = 50_000,
    license: str = "other",
    pretty_name: str | None = None,
) -> Path:
    """A Hugging Face dataset folder for a record file: `data/train-XXXXX-of-YYYYY.parquet` (one schema, unified
    over all records) and `README.md` (the card). Written into a temporary folder and moved into place, so an
    interrupted export leaves nothing half-written."""
    import shutil
    import tempfile

    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Features

    from .io import iter_records

    source = Path(path)
    folder = Path(folder)
    schema = None
    rows = 0
    batch: list[dict] = []
    for _, record in iter_records(source):  # first pass: one schema for every shard
        batch.append(record)
        rows += 1
        if len(batch) >= 2048:
            inferred = pa.Table.from_pylist(batch).schema
            schema = inferred if schema is None else pa.unify_schemas([schema, inferred], promote_options="permissive")
            batch = []
    if batch:
        inferred = pa.Table.from_pylist(batch).schema
        schema = inferred if schema is None else pa.unify_schemas([schema, inferred], promote_options="permissive")
    if not rows or schema is None:
        raise InputError(str(source), None, None, "no records to export")
    inferred_schema = schema
    schema = pa.schema([field.with_type(_writable(field.type)) for field in schema])
    conform = schema != inferred_schema  # some `{}` fields became null: their values must too
    shards = max(1, math.ceil(rows / rows_per_shard))
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        (staging / "data").mkdir()
        shard, batch = 0, []

        def flush(records: list[dict], index: int) -> None:
            if conform:
                records = [_conform(record, pa.struct(list(schema))) for record in records]
            table = pa.Table.from_pylist(records, schema=schema)
            pq.write_table(table, staging / "data" / f"train-{index:05d}-of-{shards:05d}.parquet", compression="zstd")

        for _, record in iter_records(source):
            batch.append(record)
            if len(batch) >= rows_per_shard:
                flush(batch, shard)
                shard, batch = shard + 1, []
        if batch:
            flush(batch, shard)
        steps = lineage(source)
        card = dataset_card(
            steps,
            features=Features.from_arrow_schema(schema),
            rows=rows,
            license=license,
            pretty_name=pretty_name or source.name,
        )
        card.save(staging / "README.md")
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def dataset_card(steps: list[dict[str, Any]], *, features, rows: int, license: str, pretty_name: str):
    from huggingface_hub import DatasetCard, DatasetCardData

    from . import __version__

    stages = [step["stage"] for step in reversed(steps)]
    data = DatasetCardData(
        license=license,
        language=["en"],
        task_categories=["text-generation"],
        size_categories=[_size_category(rows)],
        pretty_name=pretty_name,
        tags=["dasd", "distillation", "reasoning", "chain-of-thought", *[f"dasd-{stage}" for stage in stages]],
        configs=[{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*.parquet"}]}],
        dataset_info={"features": features._to_yaml_list(), "splits": [{"name": "train", "num_examples": rows}]},
        dasd_version=__version__,
    )
    teacher = next((_get(step["config"], "backend.model") for step in steps if step["stage"] == "sample"), None)
    body = (
        f"# {pretty_name}\n\n{rows:,} records made by dasd"
        + (f" from the teacher `{teacher}`" if teacher else "")
        + f" through the stages {' → '.join(stages) or '(unknown)'}. One record per line of the source file; "
        "fields as in dasd's data contract (`dasd/records.py`).\n\n" + provenance_section(steps) + "\n"
    )
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


# --- model cards -------------------------------------------------------------------------------------------


def _eval_rows(evals: list[str | Path]) -> list[str]:
    rows = []
    for folder in evals:
        summary_path = Path(folder) / "summary.json" if Path(folder).is_dir() else Path(folder)
        summary = json.loads(summary_path.read_text())
        for benchmark, result in sorted((summary.get("benchmarks") or {}).items()):
            rows.append(
                f"| {benchmark} | {summary.get('model')} | {100 * result['avg_at_k']:.2f} ± "
                f"{100 * result['standard_error']:.2f} | {result.get('n')} | {result.get('questions')} | "
                f"T={summary.get('temperature')}, top_p={summary.get('top_p')} |"
            )
    return rows


def _loss(value) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "—"


def write_model_card(final_dir: str | Path, *, evals: list[str | Path] = (), license: str = "other") -> Path:
    """`README.md` in a trained model's folder: the base model, the data (with their lineage), every training
    stage's hyper-parameters and numbers, and the eval table (avg@k ± s.e.) when eval folders are given."""
    from huggingface_hub import ModelCard, ModelCardData

    from . import __version__

    final_dir = Path(final_dir)
    run_dir = final_dir.parent.parent  # <output_dir>/<stage>/final
    stage_metrics = []
    for marker in sorted(run_dir.glob("*/final/dasd_stage.json")):
        stage_metrics.append(json.loads(marker.read_text()))
    own = final_dir / "dasd_stage.json"
    if not own.exists():
        raise InputError(str(final_dir), None, None, "not a finished dasd train stage (no final/dasd_stage.json)")
    this = json.loads(own.read_text())
    order = {m["stage"]: m for m in stage_metrics}
    chain = []  # this stage and the ones it started from, first first
    current = this
    while current is not None:
        chain.insert(0, current)
        parent = Path(str(current.get("init", ""))).parent.name
        current = order.get(parent) if Path(str(current.get("init", ""))).name == "final" else None
    base = chain[0].get("init")
    import yaml

    config_path = run_dir / "train.config.yaml"
    config = yaml.safe_load(config_path.read_text()) if config_path.exists() else {}
    base_model = _get(config, "student.model", base)
    data = ModelCardData(
        base_model=base_model if base_model and not Path(str(base_model)).exists() else None,
        license=license,
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=["dasd", "distillation", "reasoning", "chain-of-thought", "trl", "sft"],
        dasd_version=__version__,
    )
    lines = [
        f"# {final_dir.parent.name} — distilled with dasd\n",
        f"Student `{base_model}` trained by `dasd train` (TRL SFTTrainer) in {len(chain)} stage(s), the DASD recipe "
        f"([{REPORT}]({REPORT_URL})).\n",
        "## Training stages\n",
        "| stage | data | samples | epochs | lr → min | optimizer steps | tokens seen | first → final loss |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for metrics in chain:
        lines.append(
            f"| {metrics['stage']} | `{Path(str(metrics.get('data'))).name}` | {metrics.get('samples')} | "
            f"{metrics.get('epochs')} | {metrics.get('learning_rate'):g} → {metrics.get('min_learning_rate'):g} | "
            f"{metrics.get('optimizer_steps')} | {metrics.get('tokens_seen')} | "
            f"{_loss(metrics.get('first_loss'))} → {_loss(metrics.get('final_loss'))} |"
        )
    shared = {
        key: this.get(key)
        for key in (
            "packing",
            "batch_unit",
            "rows_per_step",
            "processes",
            "bf16",
            "master_weights",
            "attention",
            "liger",
        )
    }
    shared.update(
        {
            key: config.get(key)
            for key in (
                "global_batch_size",
                "max_length",
                "warmup_ratio",
                "weight_decay",
                "adam_beta1",
                "adam_beta2",
                "adam_epsilon",
                "max_grad_norm",
                "seed",
            )
        }
    )
    lines.append(f"\nSettings: `{json.dumps(shared)}`.\n")
    rows = _eval_rows(list(evals))
    lines += ["## Evaluation\n"]
    if rows:
        lines += [
            "avg@k in %, ± one standard error over questions (`dasd eval`):\n",
            "| benchmark | model | avg@k | k | questions | sampling |",
            "| --- | --- | --- | --- | --- | --- |",
            *rows,
        ]
    else:
        lines.append("Not evaluated yet (`dasd eval`, then `dasd push … eval=runs/x/eval/<model>`).")
    lines.append("\n## Data\n")
    for metrics in chain:
        data_file = _resolve(str(metrics.get("data")), final_dir)
        lines.append(f"### `{metrics['stage']}`: `{metrics.get('data')}`\n")
        lines.append(
            provenance_section(lineage(data_file), level=4) if data_file else "(data file not found: lineage unknown)"
        )
    lines.append(
        "\n<details><summary>resolved train config</summary>\n\n"
        f"```yaml\n{yaml.safe_dump(redacted(config), sort_keys=False)}```\n</details>\n"
    )
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n")
    card.save(final_dir / "README.md")
    return final_dir / "README.md"
