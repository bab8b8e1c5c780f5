"""The cards of what dasd publishes: how a dataset or a model was made, read from the run's own files.

    folder = export_dataset("runs/x/select/das.jsonl", "runs/x/select/das.hf")   # data/*.parquet + README.md
    write_model_card("runs/x/train/das/high_temp/final", evals=["runs/x/eval/high_temp"])

The facts come from `dasd.data.lineage` (each stage's resolved config and summary, followed from a file back to the
questions): the teacher and how it was served, temperatures and samples per question, whether the raw log-probs
were verified, β and the probability space, DAS/RS counts and the teacher-sentence histograms, filter counts by
reason, the student tokenizer, the dasd version and every resolved config — never from what the user says they did.
`export_dataset` writes a record file as a dataset folder: its Parquet shards (`dasd.data.io.write_parquet_dataset`)
and this card.

Cards are `huggingface_hub` `DatasetCard` / `ModelCard` objects made from the Markdown templates in
`dasd/templates/` (YAML metadata the Hub indexes: licence, task categories, `configs` with the data files,
`dataset_info` features and split sizes; `base_model`, `datasets`, `model-index`-free eval table with ± standard
errors in the body).
"""

from __future__ import annotations

import json
import re
from importlib.resources import files
from pathlib import Path
from typing import Any

from ..cache.keys import file_sha256
from ..data.io import read_summary, write_parquet_dataset, write_text_atomic
from ..data.lineage import LineageStep, lineage, resolve_recorded
from ..data.summaries import (
    BuildSFTSummary,
    FilterSummary,
    MixSummary,
    SampleSummary,
    ScoreSummary,
    SelectSummary,
    TrainStageMetrics,
)
from ..errors import InputError
from ..models.identity import folder_identity
from ..naming import STAGE_MARKER, is_final_dir, summary_file, train_dir_of
from ..naming import final_dir as stage_final_dir
from .summary_rows import (
    RUN_ROWS,
    build_sft_rows,
    filter_rows,
    mix_rows,
    row_value,
    sample_rows,
    score_rows,
    select_rows,
)

REPORT = "Distribution-Aligned Sequence Distillation for Superior Long-CoT Reasoning (arXiv:2601.09088)"
REPORT_URL = "https://arxiv.org/abs/2601.09088"


def _template(name: str) -> str:
    """A card's Markdown template (Jinja2, as huggingface_hub's `RepoCard.from_template` renders it)."""
    return str(files("dasd") / "templates" / name)


# --- what each stage contributes to a card ------------------------------------------------------------


def _get(mapping: dict, dotted: str, default: Any = None) -> Any:
    for key in dotted.split("."):
        if not isinstance(mapping, dict) or key not in mapping:
            return default
        mapping = mapping[key]
    return mapping


def _summary_facts(rows: list[tuple[str, Any]]) -> list[str]:
    """A summary's rows (`dasd.reporting.summary_rows`) as Markdown bullets, a detail row (indented) nested under the
    one above it; the rows about how the run went (`RUN_ROWS`: speed, work an earlier run had done) are left out.

    >>> _summary_facts([("kept", 9), ("  wrong_answer", 2), ("records/s", 41.5), ("template check", "ok: 3")])
    ['- kept: 9', '  - wrong_answer: 2', '- template check: ok: 3']
    """
    return [
        f"{'  ' if label.startswith('  ') else ''}- {label.strip()}: {row_value(value)}"
        for label, value in rows
        if label.strip() not in RUN_ROWS
    ]


def _sample_facts(config: dict[str, Any], summary: SampleSummary) -> list[str]:
    backend = config.get("backend") or {}
    facts = [
        f"- teacher: `{backend.get('model')}` via `{backend.get('name')}`"
        + (
            f" ({backend.get('mode')} mode, servers {backend.get('base_urls')})"
            if backend.get("name") == "openai"
            else ""
        )
    ]
    if backend.get("launch"):
        facts.append(f"- served by: `{backend['launch']}`")
    if backend.get("extra_body"):
        facts.append(f"- extra request fields: `{json.dumps(backend['extra_body'])}`")
    schedule = ", ".join(f"T={entry.get('temperature')} × {entry.get('n')}" for entry in config.get("schedule") or [])
    facts.append(
        f"- temperatures and samples per question: {schedule}; top_p {config.get('top_p')}, top_k "
        f"{config.get('top_k')} (sent explicitly), max_new_tokens {config.get('max_new_tokens')}, "
        f"seed {config.get('seed')}"
    )
    if not summary.get("logprob_probe"):  # a probe is one of the summary's rows: verified raw, mean |Δ| over N tokens
        facts.append(
            f"- log-probs: not probed (logprob_check={backend.get('logprob_check')}; a local hf teacher records raw "
            "log-probs itself)"
        )
    return facts + _summary_facts(sample_rows(summary))


def _score_facts(config: dict[str, Any], summary: ScoreSummary) -> list[str]:
    student = config.get("student") or {}
    return [
        f"- student: `{student.get('model')}` (tokenizer `{student.get('tokenizer') or student.get('model')}`), "
        f"β = {config.get('beta')}, difference in `{config.get('space')}` space",
        *_summary_facts(score_rows(summary)),
    ]


def _select_facts(config: dict[str, Any], summary: SelectSummary) -> list[str]:
    strategy = config.get("strategy")
    label = (
        "DAS (most teacher sentences)" if strategy == "count" else "RS (random)" if strategy == "random" else strategy
    )
    facts = [f"- selection: {label}, k = {config.get('k')} per question and temperature"]
    if config.get("budget"):
        facts.append(f"- global budget: {config.get('budget')}")
    return facts + _summary_facts(select_rows(summary))


def _filter_facts(config: dict[str, Any], summary: FilterSummary) -> list[str]:
    return _summary_facts(filter_rows(summary))


def _build_sft_facts(config: dict[str, Any], summary: BuildSFTSummary) -> list[str]:
    facts = [f"- student tokenizer `{config.get('student_tokenizer')}`"]
    if summary.get("weight_by"):
        facts.append(
            f"- per-record loss weights by {summary['weight_by']}, each stage scaled to mean {config.get('weight')}"
        )
    if summary.get("sentence_weights"):
        facts.append(
            f"- per-token loss weights by the DAS class of each sentence ({config.get('sentence_weights')}), "
            "scaled to mean 1 over each stage's sentence characters"
        )
    return facts + _summary_facts(build_sft_rows(summary, exports=config.get("exports")))


def _mix_facts(config: dict[str, Any], summary: MixSummary) -> list[str]:
    shape = config.get("cut_shape") or (1, 1)
    return [
        f"- mixed-policy: cut within [{config.get('cut_low')}, {config.get('cut_high')}] of the rollout, "
        + ("uniform" if tuple(shape) == (1, 1) else f"Beta({shape[0]:g}, {shape[1]:g})")
        + f"; {config.get('continuations_per_cut') or 1} teacher continuation(s) per cut",
        *_summary_facts(mix_rows(summary)),
    ]


# The facts of each stage whose output a card can describe, by the stage its summary names. A summary from an
# older dasd may lack a field: the card then says None for it rather than failing.
STAGE_FACTS = {
    "sample": _sample_facts,
    "score": _score_facts,
    "select": _select_facts,
    "filter": _filter_facts,
    "build-sft": _build_sft_facts,
    "mix": _mix_facts,
}


def stage_facts(step: LineageStep) -> list[str]:
    """Markdown bullet lines: the facts of one stage a reader of the data needs — what its config says, then its
    summary's rows (`dasd.reporting.summary_rows`, as the stage printed them).

    >>> stage_facts({"stage": "filter", "file": "f.jsonl", "config": {}, "summary": {"stage": "filter",
    ...     "records": 12, "kept": 9, "rejected": 3, "reasons": {"wrong_answer": 2, "duplicate": 1}}})
    ['- records: 12', '- kept: 9', '- rejected: 3', '  - wrong_answer: 2', '  - duplicate: 1']
    """
    facts = STAGE_FACTS.get(step["stage"])
    # published text: every fact is read from the redacted config and summary
    return facts(redacted(step["config"]), redacted(step["summary"])) if facts else []


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


# An absolute path in a card's text: "/" not inside a word, a URL ("://", "host/v1") or a closing tag ("</details>").
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/<~-])/[\w.@+=-]+(?:/[\w.@+=-]+)*/?")


def public_name(path: str) -> str:
    """How a card names a local path: a model folder (or `.gguf` file) by its name and content hash, anything else by
    its name — never where it sits on this machine (cards are published). A Hub id or any other text: as it is.

    >>> public_name("/home/me/runs/x/sft.high_temp.jsonl"), public_name("Qwen/Qwen3-4B-Instruct-2507")
    ('sft.high_temp.jsonl', 'Qwen/Qwen3-4B-Instruct-2507')
    """
    local = Path(path)
    if not local.is_absolute():
        return path
    name = local.name or str(local)
    if name == "final" and local.parent.name:  # a dasd train stage's model: name its stage
        name = f"{local.parent.name}/final"
    try:
        if local.is_dir() and (local / "config.json").exists():
            return f"{name} (content {folder_identity(local)[:12]})"
        if local.is_file() and local.suffix == ".gguf":
            return f"{name} (content {file_sha256(local)[:12]})"
    except OSError:
        pass
    return name


def public_paths(text: str) -> str:
    """`text` with every absolute path replaced by its `public_name`.

    >>> public_paths("input: /tmp/run/questions.jsonl, url http://node2:8000/v1 </details> 1/2")
    'input: questions.jsonl, url http://node2:8000/v1 </details> 1/2'
    """
    names: dict[str, str] = {}
    return _ABSOLUTE_PATH.sub(lambda m: names.setdefault(m.group(0), public_name(m.group(0).rstrip("/"))), text)


def _details(step: LineageStep) -> str:
    import yaml

    step = {**step, "config": redacted(step["config"]), "summary": redacted(step["summary"])}
    return (
        f"<details><summary>resolved config and summary of <code>{step['stage']}</code></summary>\n\n"
        f"```yaml\n{yaml.safe_dump(step['config'], sort_keys=False).strip()}\n```\n\n"
        f"```json\n{json.dumps(step['summary'], indent=1)}\n```\n\n</details>"
    )


def provenance_section(steps: list[LineageStep], level: int = 2) -> str:
    """How it was made: each stage from the questions on, its facts, its full config and summary."""
    from .. import __version__

    head = "#" * level
    lines = [f"{head} How it was made\n\nWith dasd {__version__}, the DASD recipe ([{REPORT}]({REPORT_URL})):"]
    for number, step in enumerate(reversed(steps), start=1):
        lines.append(f"\n{head}# {number}. `dasd {step['stage']}` → `{Path(step['file']).name}`\n")
        lines.extend(stage_facts(step))
        lines.append("\n" + _details(step))
    if not steps:
        lines.append("\n(no dasd stage sidecars were found beside this file: its lineage is unknown)")
    return public_paths("\n".join(lines))


# --- dataset cards ----------------------------------------------------------------------------------------


def _size_category(rows: int) -> str:
    """The Hub's size_categories bucket.

    >>> _size_category(500), _size_category(12_000)
    ('n<1K', '10K<n<100K')
    """
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if rows < limit:
            return label
    return "1M<n<10M" if rows < 10_000_000 else "n>10M"


def dataset_card(steps: list[LineageStep], *, features, rows: int, license: str, pretty_name: str):
    """The card of an exported record file (`export_dataset`): Hub metadata and how it was made."""
    from huggingface_hub import DatasetCard, DatasetCardData

    from .. import __version__

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
    # as TRL writes its model cards (trl/trainer/utils.py `generate_model_card`: a Markdown template in the package,
    # rendered by huggingface_hub's `from_template`)
    return DatasetCard.from_template(
        data,
        template_path=_template("dataset_card.md"),
        pretty_name=pretty_name,
        rows=f"{rows:,}",
        teacher=public_name(str(teacher)) if teacher else teacher,
        stages=" → ".join(stages) or "(unknown)",
        provenance=provenance_section(steps),
    )


def export_dataset(
    path: str | Path,
    folder: str | Path,
    *,
    rows_per_shard: int = 50_000,
    bytes_per_shard: int = 512 << 20,
    license: str = "other",
    pretty_name: str | None = None,
) -> Path:
    """A record file as a Hugging Face dataset folder (`dasd.data.io.write_parquet_dataset`) whose card carries its
    lineage."""
    source = Path(path)

    def card(*, features, rows: int):
        return dataset_card(
            lineage(source), features=features, rows=rows, license=license, pretty_name=pretty_name or source.name
        )

    return write_parquet_dataset(
        source, folder, rows_per_shard=rows_per_shard, bytes_per_shard=bytes_per_shard, card=card
    )


# --- model cards -------------------------------------------------------------------------------------------


EVALS_FILE = "dasd_evals.json"  # in a trained model's folder: its pipeline's eval results (numbers only), for the card


def eval_results(summary: dict) -> dict[str, dict]:
    """The publishable part of an eval summary, by benchmark: avg@k ± s.e., k, questions and the sampling — no path.

    >>> eval_results({"model": "/x/final", "temperature": 1.0, "top_p": 1.0,
    ...               "benchmarks": {"aime24": {"avg_at_k": 0.25, "standard_error": 0.05, "n": 4, "questions": 30}}})
    {'aime24': {'avg_at_k': 0.25, 'standard_error': 0.05, 'n': 4, 'questions': 30, 'temperature': 1.0, 'top_p': 1.0}}
    """
    out = {}
    for benchmark, result in sorted((summary.get("benchmarks") or {}).items()):
        out[benchmark] = {
            **{key: result.get(key) for key in ("avg_at_k", "standard_error", "n", "questions")},
            "temperature": summary.get("temperature"),
            "top_p": summary.get("top_p"),
        }
    return out


def record_eval(final_dir: str | Path, summary: dict) -> Path | None:
    """After `dasd eval` of a model dasd trained: its results join the model folder's `EVALS_FILE` (by benchmark, the
    newest kept) and the model card is written again with them. None (nothing written) for any other model."""
    final_dir = Path(final_dir)
    if not (final_dir / STAGE_MARKER).exists():
        return None
    recorded = {**_recorded_evals(final_dir), **eval_results(summary)}
    write_text_atomic(final_dir / EVALS_FILE, json.dumps(recorded, indent=1, sort_keys=True) + "\n")
    return write_model_card(final_dir)


def _recorded_evals(final_dir: Path) -> dict[str, dict]:
    path = final_dir / EVALS_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def _evals_of(final_dir: Path, evals: list[str | Path]) -> dict[str, dict]:
    """The model's recorded eval results (`record_eval`), updated by the eval folders given (`dasd push eval=…`)."""
    results = _recorded_evals(final_dir)
    for folder in evals:
        summary_path = summary_file(folder, "eval") if Path(folder).is_dir() else Path(folder)
        summary = read_summary(summary_path)
        if summary is None:
            raise InputError(str(summary_path), None, None, "not a dasd eval summary")
        results.update(eval_results(summary))
    return results


def _eval_rows(results: dict[str, dict]) -> list[str]:
    return [
        f"| {benchmark} | {100 * result['avg_at_k']:.2f} ± {100 * result['standard_error']:.2f} | {result.get('n')} | "
        f"{result.get('questions')} | T={result.get('temperature')}, top_p={result.get('top_p')} |"
        for benchmark, result in sorted(results.items())
    ]


def _model_index(name: str, results: dict[str, dict]) -> list:
    """The Hub's `model-index` entries: one per benchmark, avg@k in % (the body's table has the ± s.e.)."""
    from huggingface_hub import EvalResult

    return [
        EvalResult(
            task_type="text-generation",
            dataset_type=benchmark,
            dataset_name=benchmark,
            metric_type="avg@k",
            metric_name=f"avg@{result.get('n')}",
            metric_value=round(100 * result["avg_at_k"], 2),
            metric_args={"temperature": result.get("temperature"), "top_p": result.get("top_p")},
        )
        for benchmark, result in sorted(results.items())
    ]


def _number(value) -> str:
    """A count as an integer, a rate as it is.

    >>> _number(30681.0), _number(1.0), _number(2.5), _number(None)
    ('30,681', '1', '2.5', '—')
    """
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int):
        return f"{value:,}"
    return "—" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _loss(value) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "—"


def _weighting(metrics: TrainStageMetrics) -> str:
    weighting = metrics.get("loss_weights", "none")
    return "" if weighting == "none" else f" ({weighting} loss weights)"


def _stage_metrics(final: Path) -> TrainStageMetrics:
    return json.loads((final / STAGE_MARKER).read_text())


def write_model_card(final_dir: str | Path, *, evals: list[str | Path] = (), license: str = "other") -> Path:
    """`README.md` in a trained model's folder: the base model, the data (with their lineage), every training
    stage's hyper-parameters and numbers, and the eval table (avg@k ± s.e.) when eval folders are given."""
    import yaml
    from huggingface_hub import ModelCard, ModelCardData

    from .. import __version__

    final_dir = Path(final_dir)
    run_dir = train_dir_of(final_dir)
    if not (final_dir / STAGE_MARKER).exists():
        raise InputError(str(final_dir), None, None, f"not a finished dasd train stage (no final/{STAGE_MARKER})")
    this = _stage_metrics(final_dir)
    chain = [this]  # this stage and the ones it started from (by stage name, in this run), first first
    while is_final_dir(str(chain[0].get("init", ""))):
        parent = stage_final_dir(run_dir, Path(str(chain[0].get("init"))).parent.name)
        if not (parent / STAGE_MARKER).exists():
            break
        chain.insert(0, _stage_metrics(parent))
    base = chain[0].get("init")

    config_path = run_dir / "train.config.yaml"
    config = yaml.safe_load(config_path.read_text()) if config_path.exists() else {}
    base_model = _get(config, "student.model", base)
    results = _evals_of(final_dir, list(evals))
    data = ModelCardData(
        base_model=base_model if base_model and not Path(str(base_model)).exists() else None,
        model_name=final_dir.parent.name if results else None,
        eval_results=_model_index(final_dir.parent.name, results) or None,
        license=license,
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=["dasd", "distillation", "reasoning", "chain-of-thought", "trl", "sft"],
        dasd_version=__version__,
    )
    stage_rows = [
        f"| {metrics['stage']} | `{Path(str(metrics.get('data'))).name}`{_weighting(metrics)} | "
        f"{_number(metrics.get('samples'))} | "
        f"{_number(metrics.get('epochs'))} | {metrics.get('learning_rate'):g} → {metrics.get('min_learning_rate'):g} | "
        f"{_number(metrics.get('optimizer_steps'))} | {_number(metrics.get('tokens_seen'))} | "
        f"{_loss(metrics.get('first_loss'))} → {_loss(metrics.get('final_loss'))} |"
        for metrics in chain
    ]
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
    stage_data = []
    for metrics in chain:
        data_file = resolve_recorded(str(metrics.get("data")), final_dir)
        stage_data.append(
            {
                "name": metrics["stage"],
                "file": Path(str(metrics.get("data"))).name,
                "provenance": provenance_section(lineage(data_file), level=4)
                if data_file
                else "(data file not found: lineage unknown)",
            }
        )
    card = ModelCard.from_template(  # as TRL does (see dataset_card)
        data,
        template_path=_template("model_card.md"),
        title=final_dir.parent.name,
        student=public_name(str(base_model)) if base_model else base_model,
        stage_count=len(chain),
        report=REPORT,
        report_url=REPORT_URL,
        stage_rows="\n".join(stage_rows),
        settings=json.dumps(shared),
        eval_rows="\n".join(_eval_rows(results)),
        data=stage_data,
        train_config=yaml.safe_dump(redacted(config), sort_keys=False),
    )
    write_text_atomic(final_dir / "README.md", public_paths(str(card)))
    return final_dir / "README.md"
