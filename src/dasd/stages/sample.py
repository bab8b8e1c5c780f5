"""`dasd sample`: temperature-scheduled teacher sampling with raw log-probs, resumable.

    dasd sample --config configs/sample.yaml input=questions.jsonl output=runs/x/responses.jsonl

For every question and every step of the temperature schedule (default 4 samples at 0.6 and 8 at
1.0, as in the DASD report) the teacher writes one response per sample. Each response record
(`dasd.data.records.Response`) holds the reasoning and the answer split apart, and the teacher's log-prob of every
generated token with its character offsets into those two strings.

Beside the output it writes `<name>.config.yaml` (the resolved config), `<name>.errors.jsonl` (this
run's failures — a rerun retries them) and `<name>.summary.json`. Rerunning the same command skips
the response ids already written, so a killed run resumes where it stopped.

Each response records the run's `reasoning_format`. With `none` (an instruct teacher that writes no think block:
most do) the chain of thought is the answer: score, filter, select and build-sft then work on the answer. The
summary counts the responses with a part missing — no reasoning, reasoning but no answer (a think block that never
closed), no extractable answer — and when most of this run's responses have one, a warning names the likely fix.
Questions without an `id` or a `domain` get one (the prompt's hash, `other`); the summary counts them too.

Choosing the temperature pair (the report picks 0.6 / 1.0 by hand): sample a few questions at several
temperatures and pass `--suggest-temperatures` (`suggest_temperatures=true`):

    dasd sample input=questions.jsonl output=runs/probe/responses.jsonl limit=16 --suggest-temperatures \\
        'schedule=[{temperature: 0.3, n: 4}, {temperature: 0.6, n: 4}, {temperature: 1.0, n: 4},
                   {temperature: 1.3, n: 4}]'

It prints, and writes to `<name>.temperatures.json`, each temperature's density of mean raw log-prob per
token, the overlaps between temperatures, stop / distinct / correct shares and a suggested low / high pair
with its reasons (`dasd.sampling.temperature_probe`).
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from ..backends import BackendConfig, make_backend, server_log, with_launch_log
from ..config import ADDED, SPEED_ONLY, RecordOutput, StageConfig, dump_config, fingerprint_view
from ..data.io import ErrorLog, merge_shards, open_writer, shard_output, write_json_atomic, write_summary
from ..data.records import in_shard, load_questions, parse_shard
from ..data.summaries import SampleSummary
from ..naming import sidecar
from ..progress import format_summary
from ..reporting.summary_rows import sample_rows
from ..sampling.generation import GenerationOutcome, TemperatureStep, build_requests, generate_records
from ..sampling.response_checks import RESPONSE_PARTS, MissingPartTally, missing_part_warnings
from ..sampling.sample_cache import SampleCache, default_root, settings_for
from ..sampling.temperature_probe import format_temperature_report, temperature_report


class SampleConfig(StageConfig):
    @field_validator("cache", mode="before", check_fields=False)
    @classmethod
    def _yaml_switch(cls, value: Any) -> Any:
        """YAML reads a bare `off` / `on` as false / true."""
        return {False: "off", True: "auto"}.get(value, value) if isinstance(value, bool) else value

    input: str = Field(
        ..., description="questions file: JSONL/JSONL.gz/Parquet/saved HF dataset, or the released DASD format"
    )
    output: RecordOutput = Field(
        ...,
        description="response records: JSONL (appended to), or *.parquet (a folder of parts); ids already "
        "there are skipped",
    )
    backend: BackendConfig = Field(..., description="generation backend")
    schedule: list[TemperatureStep] = Field(
        default_factory=lambda: [TemperatureStep(temperature=0.6, n=4), TemperatureStep(temperature=1.0, n=8)],
        description="temperature schedule: list of {temperature, n[, top_p, max_new_tokens]}",
    )
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass")
    top_k: int = Field(0, ge=0, description="top-k sampling (0 = off; HF's default of 50 is not applied)")
    max_new_tokens: int = Field(32768, ge=1, description="generation limit per response, in teacher tokens")
    seed: int = Field(0, description="run seed; each response's seed derives from it and the response id")
    system_prompt: str | None = Field(
        None, description="system message put before questions that have none (none by default)"
    )
    reasoning_format: Literal["think", "harmony", "none"] = Field(
        "think",
        description="how the teacher writes its reasoning: think (<think>…</think>), harmony (gpt-oss channels), none",
    )
    prompt_format: Literal["chat_template", "harmony"] = Field(
        "chat_template",
        description="completions mode: render the prompt with the tokenizer's chat template, or with "
        "openai-harmony (gpt-oss)",
    )
    chat_template_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="extra chat-template variables, e.g. {enable_thinking: true} or {reasoning_effort: high}",
    )
    model_name: str | None = Field(
        None, description="teacher name recorded in each response's `model` (default: backend.model)"
    )
    limit: int | None = Field(None, ge=1, description="use only the first N questions")
    cache: str = Field(
        "auto",
        description="copy a whole run an earlier run (any workdir) made with the same teacher weights (content hash), "
        "questions and settings instead of generating it: auto = the cache under $DASD_CACHE/sample; a folder = "
        "that cache; off = always generate. hf backend, no shard; a run is stored only when it made every response "
        "in one go, so the file is the same bytes either way (for Parquet, the same records; "
        "dasd.sampling.sample_cache). "
        "Outside the step's fingerprint: it does not change what is written",
        json_schema_extra=SPEED_ONLY,
    )
    suggest_temperatures: bool = Field(
        False,
        description="after sampling, measure each temperature's density of mean raw log-prob per token, their "
        "overlaps, stop / distinct / correct shares, and suggest a low / high pair (<name>.temperatures.json); "
        "meant for a small probe over several temperatures",
        json_schema_extra=ADDED,
    )
    shard: str | None = Field(
        None,
        pattern=r"^\d+/\d+$",
        description="i/n: process only the questions whose id hashes to shard i of n, writing "
        "<output>.shard-i-of-n.jsonl (run n processes; the run without shard merges the shard files)",
        json_schema_extra=SPEED_ONLY,
    )


def run(config: SampleConfig) -> dict[str, Any]:
    # 1. Validate every input before anything is written.
    defaulted: Counter = Counter()
    questions = load_questions(config.input, defaulted=defaulted)
    if config.limit:  # the first N of the file, whichever shard runs them
        questions = questions[: config.limit]
    shard = parse_shard(config.shard)
    questions = [question for question in questions if in_shard(question["id"], shard)]

    # 2. Resume: ids already in the output are done; a torn last line is cut off. A shard writes its own
    # file (and counts every other shard's ids as done); the run without shard merges them first.
    output = shard_output(config.output, shard)
    if shard is None:
        merge_shards(config.output)
    cache, cache_account = open_sample_cache(config, shard, questions, output)
    if cache is not None and cache.lookup() is not None and not _has_records(output):
        cache_account["reused"] = cache.copy_to(Path(output))
    writer = MissingPartTally(open_writer(output))
    requests, context = build_requests(
        questions,
        writer.done,
        schedule=config.schedule,
        top_p=config.top_p,
        top_k=config.top_k,
        max_new_tokens=config.max_new_tokens,
        seed=config.seed,
        system_prompt=config.system_prompt,
    )
    expected = sum(step.n for step in config.schedule) * len(questions)

    # 3. A server must give raw log-probs: probe it before anything is written (local backends are raw).
    backend = None
    probe = None
    if requests:
        backend = make_backend(
            with_launch_log(config.backend, server_log(output)),
            chat_template_kwargs=config.chat_template_kwargs,
            prompt_format=config.prompt_format,
        )
        try:
            probe = backend.probe_logprobs(requests)
        except BaseException:
            backend.close()
            raise
    errors = ErrorLog(sidecar(output, "errors", ".jsonl"))
    dump_config(config, sidecar(output, "config", ".yaml"))

    # 4. Generate, writing each response as it completes.
    backend_stats: dict[str, Any] = {}
    outcome = GenerationOutcome()
    if backend is not None:
        try:
            outcome = generate_records(
                backend,
                requests,
                context,
                writer,
                errors,
                f"sample [{config.backend.name}]",
                reasoning_format=config.reasoning_format,
                model_name=config.model_name or config.backend.model,
            )
        finally:
            backend_stats = backend.stats()
            backend.close()
    else:
        writer.finish()
    finish_counts, tokens, elapsed = outcome.finish_counts, outcome.tokens, outcome.seconds

    written = sum(count for reason, count in finish_counts.items() if reason != "failed")
    summary: SampleSummary = {
        "stage": "sample",
        "output": output,
        "questions": len(questions),
        "responses_expected": expected,
        "responses_already_done": expected - len(requests),
        "responses_written": written,
        "failed": finish_counts.get("failed", 0),
        "finish_reasons": {reason: count for reason, count in sorted(finish_counts.items()) if reason != "failed"},
        "completion_tokens": tokens,
        "seconds": round(elapsed, 3),
        "responses_per_s": round(written / elapsed, 3) if elapsed else 0.0,
        "tokens_per_s": round(tokens / elapsed, 1) if elapsed else 0.0,
        "torn_bytes_repaired": writer.repaired_bytes,
        "backend": {"name": config.backend.name, **backend_stats},
        "logprob_probe": probe,
        "questions_defaulted": {"id": defaulted["id"], "domain": defaulted["domain"]},
        "reasoning_format": config.reasoning_format,
        "missing_parts": {"checked": writer.checked, **{part: writer.missing[part] for part in RESPONSE_PARTS}},
        "warnings": missing_part_warnings(writer.checked, writer.missing, config.reasoning_format),
    }
    fresh = expected - len(requests) == 0 and written == expected and not summary["failed"]
    if cache is not None and fresh and cache_account["reused"] == 0:
        cache.store(Path(output), written)  # a whole run made in one go: the next run with these settings copies it
        cache_account["stored"] = True
    summary["cache"] = cache_account
    write_summary(output, summary)
    print(format_summary(f"dasd sample -> {output}", sample_rows(summary)), file=sys.stdout, flush=True)
    for warning in summary["warnings"]:
        print(f"warning: {warning}", file=sys.stderr, flush=True)

    # 5. With suggest_temperatures: the densities, overlaps and the suggested pair, over every response written.
    if config.suggest_temperatures:
        report = temperature_report(output)
        write_json_atomic(sidecar(output, "temperatures", ".json"), report)
        summary["temperature_suggestion"] = report["suggestion"]
        write_summary(output, summary)
        print(format_temperature_report(report, sidecar(output, "temperatures", ".json")), flush=True)
    return summary


def open_sample_cache(config: SampleConfig, shard, questions: list, output: str):
    """The sampling cache this run reads and adds to (None when off or not cacheable), and the summary's account."""
    account: dict[str, Any] = {"folder": None, "reason": None, "reused": 0, "stored": False}
    if config.cache == "off":
        account["reason"] = "cache=off"
        return None, account
    if shard is not None:
        account["reason"] = "shards are not cached"
        return None, account
    stage = {
        key: value
        for key, value in fingerprint_view(config).items()
        if key not in ("input", "output", "backend", "suggest_temperatures")
    }
    settings, reason = settings_for(config.backend, stage, questions, chat_template_kwargs=config.chat_template_kwargs)
    if settings is None:
        account["reason"] = reason
        return None, account
    cache = SampleCache(default_root() if config.cache == "auto" else Path(config.cache), settings)
    account["folder"] = str(cache.folder)
    return cache, account


def _has_records(output: str) -> bool:
    path = Path(output)
    if path.is_dir():  # a Parquet output: a folder of parts
        return any(path.glob("part-*.parquet"))
    return path.exists() and path.stat().st_size > 0


def extra_arguments(parser) -> None:
    parser.add_argument(
        "--suggest-temperatures", action="store_true", help="same as suggest_temperatures=true (see its help)"
    )


def handle_extra(args) -> bool:
    if getattr(args, "suggest_temperatures", False):
        args.overrides = [*args.overrides, "suggest_temperatures=true"]
    return False
