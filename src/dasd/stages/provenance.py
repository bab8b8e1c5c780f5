"""`dasd provenance`: where the distilled model's sentences come from — teacher, student, shared or boosted.

    dasd provenance --outputs runs/demo/eval/high_temp --teacher T --student S --distilled D
    dasd provenance outputs=runs/x/eval/high_temp teacher.name=openai teacher.model=gpt-oss-120b \\
        teacher.tokenizer=o200k_harmony teacher.prompt_format=harmony student.model=Qwen3-4B \\
        distilled.model=runs/x/train/das/high_temp/final

The report's analysis behind DAS. The distilled model's answers on test questions (a `dasd eval`
output folder, one benchmark folder of it, or a samples file) are split into sentences
(`dasd.text.sentences`), and every sentence is scored under three models — the teacher (T), the original
student (S) and the distilled model (D) — each with its own tokenizer and chat template, teacher-forced
on exactly the same text, as in `dasd score`: a sentence's probability is the geometric mean of its
token probabilities. Classes, with d(a, b) = p_a - p_b (or log p_a - log p_b with `space=logratio`):

* shared — |d(S, D)| <= alpha and |d(T, D)| <= alpha and |d(T, S)| <= alpha: all three agree;
* teacher — otherwise, d(T, S) > beta;  student — d(T, S) < -beta;
* boosted — otherwise (T and S agree within beta, but D moved away from them by more than alpha).

Each class's share of the sentences of correct and of incorrect answers comes with a 95% interval from a
cluster bootstrap over questions (`bootstrap_resamples`, 1,000; a question's answers are drawn together),
and so does the difference of the two shares (answers graded as `dasd eval` does; its `results.jsonl` is
reused when present). Per sentence position (the i-th sentence of a response), the fraction of each class
among correct and among incorrect answers, over the positions where both groups have at least
`min_samples` responses; Δ is the signed area between the two curves (the mean over those positions of
correct minus incorrect). Outputs in `output_dir`: `provenance.jsonl` (each response's sentences with the
three log-probs, class and correctness), `summary.json`, `example.png` (one response's three probability
lines over class-coloured sentences: the report's Figure 5) and `positions.png` (Figure 6).

Models run one at a time (`hf`: local transformers; `openai`: a server that returns prompt log-probs
through `/v1/completions` with `echo` — vLLM does — with the text rendered locally in the model's chat
template, or in harmony for gpt-oss with `prompt_format=harmony`). Each model's token log-probs are
kept in `logprobs.<role>.jsonl` as they are computed, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from ..backends import with_launch_log
from ..config import SPEED_ONLY, StageConfig, dump_config
from ..data.io import ErrorLog, LineIndex, RecordWriter, batched, iter_records, write_jsonl_atomic, write_summary
from ..data.records import PROVENANCE_CLASSES, RESPONSE_FIELDS, check_fields
from ..data.summaries import ProvenanceSummary
from ..errors import ConfigError, InputError
from ..grading.answers import BoundedVerifier, grade_records
from ..progress import Progress, format_summary
from ..reporting.figures import plot_provenance_example, plot_provenance_positions
from ..reporting.metrics import cluster_bootstrap
from ..reporting.summary_rows import provenance_rows
from ..scoring.sentence_scores import classify_provenance, sentence_scores_by_model
from ..scoring.token_scorers import ScorerConfig, make_token_scorer

MODELS = ("teacher", "student", "distilled")  # the three models it compares (records.ROLES are message roles)


class ProvenanceConfig(StageConfig):
    outputs: str = Field(
        ...,
        description="the distilled model's answers: a `dasd eval` output folder, one benchmark folder of it, "
        "or a samples JSONL",
    )
    teacher: ScorerConfig = Field(..., description="the teacher (T)")
    student: ScorerConfig = Field(..., description="the original student, before distillation (S)")
    distilled: ScorerConfig = Field(..., description="the distilled model whose answers these are (D)")
    output_dir: str | None = Field(None, description="where to write (default: <outputs folder>/provenance)")
    alpha: float = Field(
        0.1,
        ge=0,
        description="shared when all three pairwise differences are within alpha; boosted when D moved by more",
    )
    beta: float = Field(0.1, ge=0, description="teacher / student sentence when d(T, S) is above beta / below -beta")
    space: Literal["prob", "logratio"] = Field(
        "prob", description="differences of probabilities (the report's) or of log-probabilities"
    )
    min_samples: int = Field(
        20,
        ge=1,
        description="a sentence position is used when both correct and incorrect answers have at least this "
        "many responses reaching it",
    )
    max_positions: int = Field(200, ge=1, description="look at most at this many sentence positions")
    bootstrap_resamples: int = Field(
        1000,
        ge=0,
        description="95% intervals of the correct / incorrect class shares and their difference from this many "
        "resamples of the questions (a cluster bootstrap: a question's answers are drawn together); 0: none",
    )
    bootstrap_seed: int = Field(0, description="seed of the bootstrap resamples")
    example: str | None = Field(
        None, description="id of the response drawn in example.png (default: a correct one with the most classes)"
    )
    limit: int | None = Field(None, ge=1, description="analyse only the first N responses")
    tokens_per_batch: int = Field(
        16384, ge=256, description="hf: tokens per forward pass", json_schema_extra=SPEED_ONLY
    )
    batching: Literal["auto", "packed", "padded", "single"] = Field(
        "auto", description="hf: as in `dasd score`", json_schema_extra=SPEED_ONLY
    )
    chunk_records: int = Field(
        256, ge=1, description="responses scored and written per round", json_schema_extra=SPEED_ONLY
    )


# --- classes --------------------------------------------------------------------------------------


def position_fractions(responses: list[dict[str, Any]], *, min_samples: int, max_positions: int) -> dict[str, Any]:
    """Per sentence position, the fraction of each class among correct and incorrect responses, the
    positions where both groups have `min_samples` responses, and Δ per class (mean of correct - incorrect)."""
    counts = {group: [Counter() for _ in range(max_positions)] for group in ("correct", "incorrect")}
    reaching = {group: [0] * max_positions for group in ("correct", "incorrect")}
    for response in responses:
        group = "correct" if response["correct"] else "incorrect"
        for position, sentence in enumerate(response["sentences"][:max_positions]):
            counts[group][position][sentence["type"]] += 1
            reaching[group][position] += 1
    used = [
        p
        for p in range(max_positions)
        if reaching["correct"][p] >= min_samples and reaching["incorrect"][p] >= min_samples
    ]
    fractions = {
        group: {kind: [counts[group][p][kind] / reaching[group][p] for p in used] for kind in PROVENANCE_CLASSES}
        for group in counts
    }
    delta = {
        kind: (
            sum(c - i for c, i in zip(fractions["correct"][kind], fractions["incorrect"][kind])) / len(used)
            if used
            else None
        )
        for kind in PROVENANCE_CLASSES
    }
    return {
        "positions": used,
        "responses_reaching": {group: [reaching[group][p] for p in used] for group in reaching},
        "fractions": fractions,
        "delta": delta,
    }


def share_intervals(responses: list[dict[str, Any]], *, resamples: int, seed: int) -> dict[str, dict[str, Any]]:
    """95% cluster-bootstrap intervals (questions resampled) of each class's share of the sentences of correct and
    of incorrect answers, and of their difference (correct − incorrect)."""
    by_question: dict[str, list[tuple[bool, Counter]]] = {}
    for response in responses:
        counts = Counter(sentence["type"] for sentence in response["sentences"])
        by_question.setdefault(str(response.get("question_id", response["id"])), []).append(
            (bool(response["correct"]), counts)
        )

    def shares(drawn: list[list[tuple[bool, Counter]]]) -> dict[str, float | None]:
        totals = {"correct": Counter(), "incorrect": Counter()}
        for cluster in drawn:
            for correct, counts in cluster:
                totals["correct" if correct else "incorrect"].update(counts)
        out: dict[str, float | None] = {}
        for group, counter in totals.items():
            size = sum(counter.values())
            for kind in PROVENANCE_CLASSES:
                out[f"{group}/{kind}"] = counter[kind] / size if size else None
        for kind in PROVENANCE_CLASSES:
            correct, incorrect = out[f"correct/{kind}"], out[f"incorrect/{kind}"]
            out[f"difference/{kind}"] = None if correct is None or incorrect is None else correct - incorrect
        return out

    intervals = cluster_bootstrap(list(by_question.values()), shares, resamples=resamples, seed=seed)
    grouped: dict[str, dict[str, Any]] = {group: {} for group in ("correct", "incorrect", "difference")}
    for name, interval in intervals.items():
        group, kind = name.split("/")
        grouped[group][kind] = interval
    return grouped


# --- scoring (one model at a time, resumable) ------------------------------------------------------


def score_role(
    role: str,
    config: ScorerConfig,
    records: list[dict[str, Any]],
    settings: ProvenanceConfig,
    folder: Path,
    errors: ErrorLog,
) -> LineIndex:
    """One model's token log-probs of each record, in `logprobs.<role>.jsonl` (resumed, appended to), as an index
    by id: the per-token parts are read one record at a time when the sentences are classed, never all at once."""
    writer = RecordWriter(folder / f"logprobs.{role}.jsonl")
    todo = [record for record in records if record["id"] not in writer.done]
    if todo:
        scorer = make_token_scorer(
            with_launch_log(config, folder / f"server.{role}.log"),
            system_prompt=config.system_prompt,
            chat_template_kwargs=config.chat_template_kwargs,
            prompt_format=config.prompt_format,
            batching=settings.batching,
            tokens_per_batch=settings.tokens_per_batch,
            role=role,
        )
        progress = Progress(len(todo), f"provenance: {role} [{config.name}]", unit="resp")
        try:
            for chunk in batched(iter(todo), settings.chunk_records):
                for scores in scorer.score(chunk):
                    if scores.parts is None:
                        errors.log(scores.record["id"], f"{role}: {scores.error}")
                    else:
                        writer.write({"id": scores.record["id"], "parts": scores.parts})
                    progress.update(1, scores.tokens)
        finally:
            progress.close()
            writer.finish()
            scorer.close()
    return LineIndex(writer.path)


def sentence_provenance(
    record: dict[str, Any], parts: dict[str, dict[str, dict]], settings: ProvenanceConfig
) -> tuple[list[dict], str | None]:
    """The record's sentences with the three mean log-probs and their class, or an error."""
    scored, error = sentence_scores_by_model(record, {role: parts[role] for role in MODELS})
    if error:
        return [], error
    return [
        {
            "part": part,
            "start": start,
            "end": end,
            **{f"{role}_logprob": means[role] for role in MODELS},
            "type": classify_provenance(
                means["teacher"],
                means["student"],
                means["distilled"],
                alpha=settings.alpha,
                beta=settings.beta,
                space=settings.space,
            ),
        }
        for part, start, end, means in scored
    ], None


# --- inputs ---------------------------------------------------------------------------------------


def _sample_files(outputs: Path) -> list[Path]:
    if outputs.is_file():
        return [outputs]
    if (outputs / "samples.jsonl").exists():
        return [outputs / "samples.jsonl"]
    found = sorted(outputs.glob("*/samples.jsonl"))
    if not found:
        raise InputError(
            str(outputs), None, "outputs", "no samples.jsonl here or in its subfolders (a `dasd eval` output folder?)"
        )
    return found


def load_graded(outputs: Path, limit: int | None) -> list[dict[str, Any]]:
    """The answers with `correct`: from `results.jsonl` beside the samples, else graded here as `dasd eval` grades."""
    records: list[dict[str, Any]] = []
    for path in _sample_files(outputs):
        benchmark = path.parent.name
        graded = {}
        results = path.with_name("results.jsonl")
        if results.exists():
            graded = {str(r["id"]): bool(r["correct"]) for _, r in iter_records(results)}
        for line, record in iter_records(path):
            check_fields(record, RESPONSE_FIELDS, path=str(path), line=line)
            records.append(
                {**record, "id": str(record["id"]), "benchmark": benchmark, "correct": graded.get(str(record["id"]))}
            )
            if limit and len(records) >= limit:
                break
        if limit and len(records) >= limit:
            break
    ungraded = [r for r in records if r["correct"] is None]
    if ungraded:
        with BoundedVerifier() as verifier:
            grades = grade_records(ungraded, verifier)
        for record, grade in zip(ungraded, grades):
            record["correct"] = grade is not None and grade.correct and record["finish_reason"] != "length"
    return records


# --- figures --------------------------------------------------------------------------------------


def _pick_example(responses: list[dict[str, Any]], wanted: str | None) -> dict[str, Any] | None:
    if wanted is not None:
        for response in responses:
            if response["id"] == wanted:
                return response
        raise ConfigError(f"example: no analysed response has id {wanted!r}")
    if not responses:
        return None
    return max(
        responses,
        key=lambda r: (len({s["type"] for s in r["sentences"]}), r["correct"], -abs(len(r["sentences"]) - 12)),
    )


# --- the stage ------------------------------------------------------------------------------------


def run(config: ProvenanceConfig) -> dict[str, Any]:
    outputs = Path(config.outputs)
    if not outputs.exists():
        raise InputError(config.outputs, None, "outputs", "does not exist")
    records = load_graded(outputs, config.limit)
    if not records:
        raise InputError(config.outputs, None, "outputs", "no answers to analyse (empty)")
    folder = (
        Path(config.output_dir)
        if config.output_dir
        else (outputs.parent if outputs.is_file() else outputs) / "provenance"
    )
    folder.mkdir(parents=True, exist_ok=True)
    dump_config(config, folder / "provenance.config.yaml")
    errors = ErrorLog(folder / "errors.jsonl")
    scored = [r for r in records if r["reasoning"].strip() or r["content"].strip()]
    logprobs = {}
    try:
        for role in MODELS:
            logprobs[role] = score_role(role, getattr(config, role), scored, config, folder, errors)
    finally:
        errors.close()

    responses, reasons = [], Counter()
    for record in scored:
        if any(record["id"] not in logprobs[role] for role in MODELS):
            reasons["not_scored"] += 1
            continue
        parts = {role: logprobs[role].get(record["id"])["parts"] for role in MODELS}
        sentences, error = sentence_provenance(record, parts, config)
        if error:
            reasons[error.split(":")[0]] += 1
            continue
        if sentences:
            responses.append(
                {
                    "id": record["id"],
                    "question_id": record["question_id"],
                    "benchmark": record["benchmark"],
                    "correct": record["correct"],
                    "finish_reason": record["finish_reason"],
                    "sentences": sentences,
                }
            )
    for index in logprobs.values():
        index.close()
    write_jsonl_atomic(folder / "provenance.jsonl", responses)

    analysis = position_fractions(responses, min_samples=config.min_samples, max_positions=config.max_positions)
    totals = {group: Counter() for group in ("correct", "incorrect")}
    for response in responses:
        totals["correct" if response["correct"] else "incorrect"].update(s["type"] for s in response["sentences"])
    intervals = (
        share_intervals(responses, resamples=config.bootstrap_resamples, seed=config.bootstrap_seed)
        if config.bootstrap_resamples
        else None
    )
    figures = {}
    example = _pick_example(responses, config.example)
    if example is not None:
        plot_provenance_example(example, folder / "example.png")
        figures["example"] = str(folder / "example.png")
    plot_provenance_positions(analysis, folder / "positions.png", config.min_samples)
    figures["positions"] = str(folder / "positions.png")
    summary: ProvenanceSummary = {
        "stage": "provenance",
        "output": str(folder / "provenance.jsonl"),
        "outputs": str(outputs),
        "models": {role: getattr(config, role).model for role in MODELS},
        "alpha": config.alpha,
        "beta": config.beta,
        "space": config.space,
        "min_samples": config.min_samples,
        "responses": {
            "analysed": len(responses),
            "correct": sum(r["correct"] for r in responses),
            "incorrect": sum(not r["correct"] for r in responses),
            "skipped": dict(reasons),
            "empty": len(records) - len(scored),
        },
        "sentences": {group: {kind: totals[group][kind] for kind in PROVENANCE_CLASSES} for group in totals},
        "share": {
            group: {
                kind: (totals[group][kind] / sum(totals[group].values()) if sum(totals[group].values()) else None)
                for kind in PROVENANCE_CLASSES
            }
            for group in totals
        },
        "delta": analysis["delta"],
        "share_interval": intervals,
        "bootstrap": {"resamples": config.bootstrap_resamples, "unit": "question", "level": 0.95},
        "positions_used": len(analysis["positions"]),
        "by_position": analysis,
        "example": example["id"] if example else None,
        "figures": figures,
    }
    write_summary(folder, summary)
    print(format_summary(f"dasd provenance -> {folder}", provenance_rows(summary)), file=sys.stdout, flush=True)
    return summary


def extra_arguments(parser) -> None:
    parser.add_argument("--outputs", help="same as outputs=…")
    for role in MODELS:
        parser.add_argument(f"--{role}", metavar="MODEL", help=f"same as {role}.model=…")


def handle_extra(args) -> bool:
    if getattr(args, "outputs", None):
        args.overrides = [*args.overrides, f"outputs={args.outputs}"]
    for role in MODELS:
        if getattr(args, role, None):
            args.overrides = [*args.overrides, f"{role}.model={getattr(args, role)}"]
    return False
