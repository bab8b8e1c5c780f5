"""`dasd eval`: avg@k reasoning evaluation with answer verification, resumable per (question, sample).

    dasd eval backend.model=runs/x/train/high_temp/final benchmarks=[aime24,aime25] n=64 output_dir=runs/x/eval
    dasd eval backend.name=openai backend.model=student backend.base_urls=[http://gpu1:8000/v1] \\
        benchmarks=[rg:chain_sum:100]
    dasd eval --compare runs/a/eval runs/b/eval

Each question is answered `n` times (default 64) at temperature 1.0, top-p 1.0 (the report's
setting) through the same generation layer as `dasd sample` (backends hf / openai / vllm). The
reasoning is stripped and only the final answer is graded: math with math-verify (gold first,
bounded), multiple choice by letter, short answers by normalised exact match. A response cut at the
token limit counts as wrong and is reported separately (truncation rate).

Per benchmark (`<output_dir>/<benchmark>/`): `samples.jsonl` (the generations, appended; a rerun
generates only the missing samples), `results.jsonl` (one graded line per sample), and the
benchmark's numbers in `<output_dir>/summary.json` and `summary.md`: avg@k, pass@k (unbiased),
standard error, truncation rate, mean response length. reasoning-gym sets are also scored with
reasoning-gym's own scorer, and the agreement is reported.

On the local `hf` backend the samples are generated in fixed batches (`backend.batch_size` consecutive samples in
question order), and a batch that an earlier run — in any workdir — generated with the same model weights and
settings is read from the evaluation cache instead (`cache`, `dasd.sampling.eval_cache`): the demo's teacher is
evaluated
once for `make demo`, `make tune` and `make ablation`, and a larger limit generates only the batches a smaller one
did not. The records are the same bytes with and without the cache; the summary counts what came from it.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from ..backends import BackendConfig, make_backend, server_log, with_launch_log
from ..config import SPEED_ONLY, StageConfig, dump_config
from ..data.benchmarks import (
    CHOICE_SUFFIX,
    DEFAULT_MAX_NEW_TOKENS,
    FALLBACK_MAX_NEW_TOKENS,
    MATH_SUFFIX,
    load_benchmark,
)
from ..data.io import (
    ErrorLog,
    RecordWriter,
    iter_records,
    merge_shards,
    shard_output,
    write_jsonl_atomic,
    write_summary,
    write_text_atomic,
)
from ..data.records import EvalResult, Response, in_shard, parse_shard
from ..data.summaries import EvalCacheSummary, EvalSummary
from ..errors import DasdError
from ..grading.answers import BoundedVerifier, grade_records
from ..naming import sidecar, summary_file
from ..reporting.ablation import graded_samples
from ..reporting.cards import record_eval
from ..reporting.metrics import (
    avg_at_k,
    compare,
    mean_pass_at_k,
    paired_difference,
    pass_at_ks,
    standard_error,
    verdict,
)
from ..sampling.eval_cache import EvalCache, FixedBatches, cache_settings, default_root, fixed_batches
from ..sampling.generation import TemperatureStep, build_requests, generate_records
from ..text.render import DEFAULT_SYSTEM_PROMPT


class EvalConfig(StageConfig):
    output_dir: str = Field(..., description="folder of this evaluation run (one subfolder per benchmark)")
    backend: BackendConfig = Field(..., description="the model to evaluate and how to run it")
    benchmarks: list[str] = Field(
        default_factory=lambda: ["aime24", "aime25"],
        description="aime24, aime25, rg:<task>[:<size>] (reasoning-gym), or question files",
    )
    n: int = Field(64, ge=1, description="samples per question (k of avg@k)")
    temperature: float = Field(1.0, ge=0, description="sampling temperature")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass")
    top_k: int = Field(0, ge=0, description="top-k (0 = off)")
    max_new_tokens: int | None = Field(
        None, ge=1, description="generation limit; default per benchmark: 102,400 for AIME, 81,920 otherwise"
    )
    system_prompt: str | None = Field(
        DEFAULT_SYSTEM_PROMPT, description="system prompt (the one the student was trained with)"
    )
    math_prompt_suffix: str | None = Field(MATH_SUFFIX, description="instruction appended to math questions")
    choice_prompt_suffix: str | None = Field(
        CHOICE_SUFFIX, description="instruction appended to multiple-choice questions"
    )
    reasoning_format: Literal["think", "harmony", "none"] = Field(
        "think", description="how the model writes its reasoning (stripped before grading)"
    )
    prompt_format: Literal["chat_template", "harmony"] = Field(
        "chat_template", description="completions mode: chat template or openai-harmony"
    )
    chat_template_kwargs: dict[str, Any] = Field(default_factory=dict, description="extra chat-template variables")
    seed: int = Field(0, description="sampling seed (each sample's seed derives from it and the sample id)")
    rg_seed: int = Field(0, description="seed of the reasoning-gym task sets")
    rg_size: int = Field(50, ge=1, description="questions in a reasoning-gym set when rg:<task> gives no size")
    limit: int | None = Field(None, ge=1, description="use only the first N questions of each benchmark")
    verify_workers: int = Field(2, ge=1, description="math-verify worker processes", json_schema_extra=SPEED_ONLY)
    verify_timeout_s: float = Field(5.0, gt=0, description="seconds per math-verify check")
    model_name: str | None = Field(None, description="name recorded in the results (default: backend.model)")
    cache: str = Field(
        "auto",
        description="reuse what an earlier run (any workdir) generated with the same model weights (content hash) and "
        "settings: auto = the cache under $DASD_CACHE/eval; a folder = that cache; off = generate everything. Only "
        "the hf backend is cached; it generates in fixed batches of backend.batch_size samples in question order, "
        "and a batch is reused only whole, so the records are the same bytes with and without the cache",
        json_schema_extra=SPEED_ONLY,
    )

    @field_validator("cache", mode="before")
    @classmethod
    def _yaml_switch(cls, value: Any) -> Any:
        """YAML reads a bare `off` / `on` as false / true."""
        return {False: "off", True: "auto"}.get(value, value) if isinstance(value, bool) else value

    shard: str | None = Field(
        None,
        pattern=r"^\d+/\d+$",
        description="i/n: only generate the samples of the questions whose id hashes to shard i of n, into "
        "samples.shard-i-of-n.jsonl, and grade nothing; the run without shard merges the shards and grades",
        json_schema_extra=SPEED_ONLY,
    )


def grade_benchmark(benchmark, samples: list[Response], verifier: BoundedVerifier) -> list[EvalResult]:
    """One result line per sample: predicted answer, correct, truncated (truncated = wrong)."""
    gradable = [sample for sample in samples if sample["finish_reason"] == "stop"]
    by_id = {sample["id"]: grade for sample, grade in zip(gradable, grade_records(gradable, verifier))}
    results = []
    for sample in samples:
        grade = by_id.get(sample["id"])
        truncated = sample["finish_reason"] == "length"
        result: EvalResult = {
            "id": sample["id"],
            "question_id": sample["question_id"],
            "answer": sample["answer"],
            "predicted": grade.predicted if grade else None,
            "correct": bool(grade and grade.correct),
            "truncated": truncated,
            "finish_reason": sample["finish_reason"],
            "reason": (grade.reason if grade else ("truncated" if truncated else sample["finish_reason"])),
            "completion_tokens": sample.get("usage", {}).get("completion_tokens"),
        }
        if grade is not None and grade.kind == "code":
            result["outcome"] = "passed" if grade.correct else grade.reason
            result["tests_passed"], result["tests_total"] = grade.tests_passed, grade.tests_total
        entry = benchmark.rg_entries.get(sample["question_id"]) if benchmark.rg_entries else None
        if entry is not None:
            result["reasoning_gym_score"] = float(
                benchmark.rg_dataset.score_answer(answer=result["predicted"], entry=entry)
            )
        results.append(result)
    return results


def benchmark_metrics(results: list[dict[str, Any]], n: int, question_ids: list[str]) -> dict[str, Any]:
    per_question: dict[str, list[bool]] = defaultdict(list)
    for result in results:
        per_question[result["question_id"]].append(result["correct"])
    samples = [per_question[qid] for qid in question_ids if per_question.get(qid)]
    lengths = [r["completion_tokens"] for r in results if r.get("completion_tokens") is not None]
    complete = all(len(per_question.get(qid, [])) == n for qid in question_ids)
    metrics = {
        "questions": len(question_ids),
        "samples": len(results),
        "n": n,
        "complete": complete,
        "avg_at_k": avg_at_k(samples),
        "standard_error": standard_error(samples),
        "pass_at_k": {
            str(k): mean_pass_at_k(samples, k) for k in pass_at_ks(min((len(s) for s in samples), default=n) or 1)
        },
        "truncation_rate": sum(r["truncated"] for r in results) / len(results) if results else 0.0,
        "mean_completion_tokens": sum(lengths) / len(lengths) if lengths else None,
    }
    code = [r for r in results if "outcome" in r]
    if code:
        outcomes: dict[str, int] = defaultdict(int)
        for r in results:
            outcomes[r.get("outcome") or ("truncated" if r["truncated"] else r["reason"] or "not_graded")] += 1
        fractions = [r["tests_passed"] / r["tests_total"] for r in code if r.get("tests_total")]
        metrics["code"] = {
            "outcomes": dict(sorted(outcomes.items())),
            "test_pass_fraction": sum(fractions) / len(fractions) if fractions else 0.0,
        }
    scored = [r for r in results if "reasoning_gym_score" in r]
    if scored:
        agree = sum((r["reasoning_gym_score"] >= 1.0) == r["correct"] for r in scored)
        metrics["reasoning_gym"] = {
            "accuracy": sum(r["reasoning_gym_score"] >= 1.0 for r in scored) / len(scored),
            "agreement_with_ours": agree / len(scored),
        }
    return metrics


def summary_markdown(title: str, benchmarks: dict[str, dict]) -> str:
    lines = [
        f"# {title}",
        "",
        "| benchmark | questions | n | avg@k | ± s.e. | pass@1 | pass@n | truncated | mean tokens |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, m in benchmarks.items():
        pass_n = m["pass_at_k"][max(m["pass_at_k"], key=int)] if m["pass_at_k"] else 0.0
        tokens = f"{m['mean_completion_tokens']:.0f}" if m["mean_completion_tokens"] is not None else "-"
        lines.append(
            f"| {name} | {m['questions']} | {m['n']} | {100 * m['avg_at_k']:.2f} | {100 * m['standard_error']:.2f} | "
            f"{100 * m['pass_at_k'].get('1', 0):.2f} | {100 * pass_n:.2f} | {100 * m['truncation_rate']:.1f}% "
            f"| {tokens} |"
        )
    return "\n".join(lines) + "\n"


def open_cache(config: EvalConfig) -> tuple[EvalCache | None, EvalCacheSummary]:
    """The evaluation cache this run reads and adds to (None when off, or when its backend is not cached), and the
    summary's account of it, whose counts the run fills in."""
    account: EvalCacheSummary = {"folder": None, "reason": None, "reused": 0, "generated": 0, "benchmarks": {}}
    if config.cache == "off":
        account["reason"] = "cache=off"
        return None, account
    settings, reason = cache_settings(config.backend, chat_template_kwargs=config.chat_template_kwargs)
    if settings is None:
        account["reason"] = reason
        return None, account
    cache = EvalCache(default_root() if config.cache == "auto" else Path(config.cache), settings)
    account["folder"] = str(cache.folder)
    return cache, account


def run(config: EvalConfig) -> dict[str, Any]:
    benchmarks = [
        load_benchmark(
            spec,
            rg_seed=config.rg_seed,
            default_rg_size=config.rg_size,
            math_suffix=config.math_prompt_suffix,
            choice_suffix=config.choice_prompt_suffix,
        )
        for spec in config.benchmarks
    ]
    names = [benchmark.name for benchmark in benchmarks]
    if len(set(names)) != len(names):
        raise DasdError(f"benchmark names must be unique (got {names})")
    output_dir = Path(config.output_dir)
    shard = parse_shard(config.shard)
    dump_config(config, Path(shard_output(output_dir / "eval.jsonl", shard)).with_suffix(".config.yaml"))
    model_name = config.model_name or config.backend.model
    if any(benchmark.kind == "code" for benchmark in benchmarks):
        from ..grading.sandbox import isolation

        walls = isolation()
        if not walls.complete:
            print(
                f"warning: code answers run with these walls only: {walls.describe()} (no network namespace "
                "and/or not root: see README, the sandbox)",
                file=sys.stderr,
            )
    backend = None

    def open_backend():
        nonlocal backend
        if backend is None:
            backend = make_backend(
                with_launch_log(config.backend, server_log(output_dir, shard)),
                chat_template_kwargs=config.chat_template_kwargs,
                prompt_format=config.prompt_format,
            )
        return backend

    cache, cache_summary = open_cache(config)
    summaries: dict[str, dict] = {}
    try:
        with BoundedVerifier(config.verify_workers, config.verify_timeout_s) as verifier:
            for benchmark in benchmarks:
                questions = benchmark.questions[: config.limit] if config.limit else benchmark.questions
                folder = output_dir / benchmark.name
                if shard is None:  # the shards of an n-task run, if any, become one file first
                    merge_shards(folder / "samples.jsonl")
                samples_file = Path(shard_output(folder / "samples.jsonl", shard))
                writer = RecordWriter(samples_file)
                questions = [question for question in questions if in_shard(question["id"], shard)]
                limit = config.max_new_tokens or DEFAULT_MAX_NEW_TOKENS.get(benchmark.name, FALLBACK_MAX_NEW_TOKENS)
                schedule = [TemperatureStep(temperature=config.temperature, n=config.n, max_new_tokens=limit)]
                requests, context = build_requests(
                    questions,
                    set(),  # all of them: the fixed batches are cut from the whole list
                    schedule=schedule,
                    top_p=config.top_p,
                    top_k=config.top_k,
                    max_new_tokens=limit,
                    seed=config.seed,
                    system_prompt=config.system_prompt,
                )
                errors = ErrorLog(sidecar(samples_file, "errors", ".jsonl"))
                missing = [request for request in requests if request.id not in writer.done]
                if missing:
                    fixed = None
                    if config.backend.name == "hf":  # fixed batches, with or without the cache: the same records
                        fixed = FixedBatches(fixed_batches(requests, config.backend.batch_size), open_backend, cache)
                    generate_records(
                        fixed if fixed is not None else open_backend(),
                        missing,
                        context,
                        writer,
                        errors,
                        f"eval {benchmark.name} [{config.backend.name}]",
                        reasoning_format=config.reasoning_format,
                        model_name=model_name,
                        keep_logprobs=False,
                    )
                    if fixed is not None:
                        cache_summary["reused"] += fixed.reused
                        cache_summary["generated"] += fixed.generated
                        cache_summary["benchmarks"][benchmark.name] = {
                            "reused": fixed.reused,
                            "generated": fixed.generated,
                        }
                else:
                    writer.finish()
                if shard is not None:
                    summaries[benchmark.name] = {"samples_file": str(samples_file), "failed_samples": errors.count}
                    continue
                wanted = {question["id"] for question in questions}
                choices = {question["id"]: question.get("choices") for question in questions}
                samples = [
                    {**record, "choices": choices.get(record["question_id"])}
                    for _, record in iter_records(folder / "samples.jsonl")
                    if record["question_id"] in wanted
                ]
                results = grade_benchmark(benchmark, samples, verifier)
                write_jsonl_atomic(folder / "results.jsonl", results)
                summaries[benchmark.name] = benchmark_metrics(
                    results, config.n, [question["id"] for question in questions]
                )
                windows = {json.dumps(q["meta"]["window"]) for q in questions if q.get("meta", {}).get("window")}
                if windows:  # LiveCodeBench: the release dates the result covers
                    summaries[benchmark.name]["window"] = [json.loads(window) for window in sorted(windows)]
                summaries[benchmark.name]["failed_samples"] = errors.count
    finally:
        if backend is not None:
            backend.close()
        if cache is not None:
            cache.close()
    if config.backend.name == "hf":
        print(
            f"eval cache: {cache_summary['reused']} samples reused, {cache_summary['generated']} generated "
            f"({cache_summary['folder'] or cache_summary['reason']})",
            file=sys.stderr,
            flush=True,
        )
    if shard is not None:  # graded by the run without shard, once every shard is in
        return {"stage": "eval", "shard": config.shard, "benchmarks": summaries, "cache": cache_summary}
    summary: EvalSummary = {
        "stage": "eval",
        "model": model_name,
        "temperature": config.temperature,
        "top_p": config.top_p,
        "benchmarks": summaries,
        "cache": cache_summary,
    }
    write_summary(output_dir, summary)
    markdown = summary_markdown(f"dasd eval — {model_name}", summaries)
    write_text_atomic(output_dir / "summary.md", markdown)
    print(markdown, file=sys.stdout, flush=True)
    try:  # a model dasd trained: its card shows these results (and its model-index)
        record_eval(config.backend.model, summary)
    except OSError as exc:
        print(f"warning: the model card of {config.backend.model} was not updated: {exc}", file=sys.stderr)
    return summary


# --- `dasd eval --compare A B` -----------------------------------------------------------------


def extra_arguments(parser) -> None:
    parser.add_argument(
        "--compare",
        nargs=2,
        metavar=("RUN_A", "RUN_B"),
        help="print two finished eval runs (folders or summary.json files) side by side and stop: per "
        "benchmark B - A with its standard error, paired over the same questions and sample seeds, and its 95%% t "
        "interval (df = questions - 1)",
    )


def compare_runs(run_a: Path, run_b: Path) -> tuple[list[dict], dict, dict]:
    """Per shared benchmark: the paired difference (same questions, same sample seeds) from the two runs'
    results, with its 95% t interval (df = questions − 1) and whether that interval excludes 0 (`verdict`: `B > A`,
    `B < A` or `not distinguishable`; `significant`: it excludes 0), or — where a run has no results file — the
    unpaired difference of the summaries (`significant`: |B − A| > 2 s.e.)."""
    summaries = []
    for run in (run_a, run_b):
        summary_path = summary_file(run, "eval") if run.is_dir() else run
        if not summary_path.exists():
            raise DasdError(f"{summary_path}: no eval summary here (run dasd eval first)")
        summaries.append(json.loads(summary_path.read_text()))
    unpaired = {row["benchmark"]: row for row in compare(summaries[0]["benchmarks"], summaries[1]["benchmarks"])}
    if not unpaired:
        raise DasdError("the two runs share no benchmark")
    rows = []
    for benchmark, row in unpaired.items():
        graded = [graded_samples(run if run.is_dir() else run.parent, benchmark) for run in (run_a, run_b)]
        if graded[0] is None or graded[1] is None:
            rows.append({**row, "paired": False})
            continue
        paired = paired_difference(graded[0], graded[1])
        standard_error = paired["standard_error"]
        rows.append(
            {
                "benchmark": benchmark,
                "a": paired["a"],
                "b": paired["b"],
                "difference": paired["difference"],
                "standard_error": standard_error,
                "unpaired_standard_error": row["standard_error"],
                "interval": paired["interval"],
                "degrees_of_freedom": paired["degrees_of_freedom"],
                "t": paired["t"],
                "verdict": _direction(paired),
                "questions": paired["questions"],
                "samples": paired["samples"],
                "paired": True,
                # the t interval excludes 0 (with 4 questions t(0.975, 3) = 3.18, not 2)
                "significant": _direction(paired) != "not distinguishable",
            }
        )
    return rows, summaries[0], summaries[1]


def handle_extra(args) -> bool:
    if not getattr(args, "compare", None):
        return False
    rows, first, second = compare_runs(Path(args.compare[0]), Path(args.compare[1]))
    print(f"A = {args.compare[0]} ({first.get('model')})\nB = {args.compare[1]} ({second.get('model')})")
    print(
        f"{'benchmark':24} {'A avg@k':>9} {'B avg@k':>9} {'B - A':>8} {'± s.e.':>8}  differs?   pairing, "
        "[95% t interval] (df) and what it says"
    )
    for row in rows:
        pairing = (
            f"paired: {row['questions']} questions, {row['samples']} samples (unpaired s.e. "
            f"{100 * row['unpaired_standard_error']:.2f}) "
            f"[{100 * row['interval'][0]:+.2f}, {100 * row['interval'][1]:+.2f}] ({_df(row['degrees_of_freedom'])}) "
            f"{row['verdict']}"
            if row["paired"]
            else "unpaired (no results.jsonl)"
        )
        print(
            f"{row['benchmark']:24} {100 * row['a']:9.2f} {100 * row['b']:9.2f} {100 * row['difference']:+8.2f} "
            f"{100 * row['standard_error']:8.2f}  {'yes' if row['significant'] else 'no ':9}  {pairing}"
        )
    print(
        "(points; differs?: paired, the 95% t interval ± t(0.975, df) s.e., df = questions − 1, excludes 0; "
        "unpaired rows (no results.jsonl), |B − A| > 2 s.e.)"
    )
    return True


def _direction(paired: dict) -> str:
    """What a paired B − A's t interval says: `B > A`, `B < A` (it excludes 0) or `not distinguishable`."""
    if paired["degrees_of_freedom"] is None:  # under 2 questions: no interval
        return "not distinguishable"
    return {"agrees": "B > A", "opposite": "B < A"}.get(verdict(paired["interval"]), "not distinguishable")


def _df(value: float | None) -> str:
    return "df -" if value is None else f"df {value:g}"
