"""`dasd provenance`: where the distilled model's sentences come from — teacher, student, shared or boosted.

    dasd provenance --outputs runs/demo/eval/high_temp --teacher T --student S --distilled D
    dasd provenance outputs=runs/x/eval/high_temp teacher.name=openai teacher.model=gpt-oss-120b \\
        teacher.tokenizer=o200k_harmony teacher.prompt_format=harmony student.model=Qwen3-4B distilled.model=runs/x/train/das/high_temp/final

The report's analysis behind DAS. The distilled model's answers on test questions (a `dasd eval`
output folder, one benchmark folder of it, or a samples file) are split into sentences
(`dasd.sentences`), and every sentence is scored under three models — the teacher (T), the original
student (S) and the distilled model (D) — each with its own tokenizer and chat template, teacher-forced
on exactly the same text, as in `dasd score`: a sentence's probability is the geometric mean of its
token probabilities. Classes, with d(a, b) = p_a - p_b (or log p_a - log p_b with `space=logratio`):

* shared — |d(S, D)| <= alpha and |d(T, D)| <= alpha and |d(T, S)| <= alpha: all three agree;
* teacher — otherwise, d(T, S) > beta;  student — d(T, S) < -beta;
* boosted — otherwise (T and S agree within beta, but D moved away from them by more than alpha).

Per sentence position (the i-th sentence of a response), the fraction of each class among correct and
among incorrect answers (graded as `dasd eval` does; its `results.jsonl` is reused when present), over
the positions where both groups have at least `min_samples` responses; Δ is the signed area between the
two curves (the mean over those positions of correct minus incorrect). Outputs in `output_dir`:
`provenance.jsonl` (each response's sentences with the three log-probs, class and correctness),
`summary.json`, `example.png` (one response's three probability lines over class-coloured sentences:
the report's Figure 5) and `positions.png` (Figure 6).

Models run one at a time (`hf`: local transformers; `openai`: a server that returns prompt log-probs
through `/v1/completions` with `echo` — vLLM does — with the text rendered locally in the model's chat
template, or in harmony for gpt-oss with `prompt_format=harmony`). Each model's token log-probs are
kept in `logprobs.<role>.jsonl` as they are computed, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import math
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from ..backends.base import BackendConfig
from ..config import StageConfig, dump_config
from ..errors import ConfigError, InputError
from ..io import ErrorLog, RecordWriter, batched, iter_records, write_json_atomic
from ..progress import Progress, format_summary
from ..render import StudentText, completion_part_logprobs, render_student, with_system_prompt
from ..scoring import sentence_scores_by_model

CLASSES = ("teacher", "student", "shared", "boosted")
ROLES = ("teacher", "student", "distilled")
COLOURS = {"teacher": "#4c72b0", "student": "#dd8452", "shared": "#b0b0b0", "boosted": "#55a868"}
HARMONY_FINAL = "<|end|><|start|>assistant<|channel|>final<|message|>"


class ScorerConfig(BackendConfig):
    """One of the three models: how to load or reach it and how it sees a conversation."""

    system_prompt: str | None = Field(None, description="system prompt this model sees: null keeps the records' own messages, \"\" removes theirs, text replaces it")
    chat_template_kwargs: dict[str, Any] = Field(default_factory=dict, description="extra variables for this model's chat template (harmony: reasoning_effort)")
    prompt_format: Literal["chat_template", "harmony"] = Field("chat_template", description="chat_template: `<think>` text in the model's template; harmony: gpt-oss analysis/final channels (openai backend)")


class ProvenanceConfig(StageConfig):
    outputs: str = Field(..., description="the distilled model's answers: a `dasd eval` output folder, one benchmark folder of it, or a samples JSONL")
    teacher: ScorerConfig = Field(..., description="the teacher (T)")
    student: ScorerConfig = Field(..., description="the original student, before distillation (S)")
    distilled: ScorerConfig = Field(..., description="the distilled model whose answers these are (D)")
    output_dir: str | None = Field(None, description="where to write (default: <outputs folder>/provenance)")
    alpha: float = Field(0.1, ge=0, description="shared when all three pairwise differences are within alpha; boosted when D moved by more")
    beta: float = Field(0.1, ge=0, description="teacher / student sentence when d(T, S) is above beta / below -beta")
    space: Literal["prob", "logratio"] = Field("prob", description="differences of probabilities (the report's) or of log-probabilities")
    min_samples: int = Field(20, ge=1, description="a sentence position is used when both correct and incorrect answers have at least this many responses reaching it")
    max_positions: int = Field(200, ge=1, description="look at most at this many sentence positions")
    example: str | None = Field(None, description="id of the response drawn in example.png (default: a correct one with the most classes)")
    limit: int | None = Field(None, ge=1, description="analyse only the first N responses")
    tokens_per_batch: int = Field(16384, ge=256, description="hf: tokens per forward pass")
    batching: Literal["auto", "packed", "padded", "single"] = Field("auto", description="hf: as in `dasd score`")
    chunk_records: int = Field(256, ge=1, description="responses scored and written per round")


# --- classes --------------------------------------------------------------------------------------

def _difference(a: float, b: float, space: str) -> float:
    return math.exp(a) - math.exp(b) if space == "prob" else a - b


def classify_provenance(teacher: float, student: float, distilled: float, *, alpha: float = 0.1, beta: float = 0.1,
                        space: str = "prob") -> str:
    """The class of one sentence from its three mean token log-probs (see the module docstring)."""
    if space not in ("prob", "logratio"):
        raise ValueError(f"unknown space {space!r} (prob or logratio)")
    t_s = _difference(teacher, student, space)
    if abs(_difference(student, distilled, space)) <= alpha and abs(_difference(teacher, distilled, space)) <= alpha and abs(t_s) <= alpha:
        return "shared"
    if t_s > beta:
        return "teacher"
    if t_s < -beta:
        return "student"
    return "boosted"


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
    used = [p for p in range(max_positions) if reaching["correct"][p] >= min_samples and reaching["incorrect"][p] >= min_samples]
    fractions = {group: {kind: [counts[group][p][kind] / reaching[group][p] for p in used] for kind in CLASSES} for group in counts}
    delta = {kind: (sum(c - i for c, i in zip(fractions["correct"][kind], fractions["incorrect"][kind])) / len(used) if used else None)
             for kind in CLASSES}
    return {"positions": used, "responses_reaching": {group: [reaching[group][p] for p in used] for group in reaching},
            "fractions": fractions, "delta": delta}


# --- rendering and scoring ------------------------------------------------------------------------

def render_harmony_response(messages: list[dict[str, str]], reasoning: str, content: str, *, reasoning_effort: str = "medium") -> StudentText:
    """A finished gpt-oss answer as token ids: the harmony prompt, the analysis message holding the
    reasoning, then the final message holding the answer — with each text token's span in
    `reasoning + HARMONY_FINAL + content` (the form `completion_part_logprobs` reads)."""
    from .. import harmony
    from ..assets import load_tokenizer

    encoding = harmony.encoding()
    tokenizer = load_tokenizer("o200k_harmony")
    prompt_ids = harmony.render_prompt_ids(messages, reasoning_effort=reasoning_effort) + list(
        encoding.encode("<|channel|>analysis<|message|>", allowed_special="all"))
    ids: list[int] = []
    spans: list[tuple[int, int]] = []

    def text_tokens(text: str, offset: int) -> None:
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids.extend(encoded["input_ids"])
        spans.extend((offset + start, offset + end) for start, end in encoded["offset_mapping"])

    text_tokens(reasoning, 0)
    position = len(reasoning)
    for token in encoding.encode(HARMONY_FINAL, allowed_special="all"):
        piece = encoding.decode([token])
        ids.append(token)
        spans.append((position, position + len(piece)))
        position += len(piece)
    text_tokens(content, position)
    completion = reasoning + HARMONY_FINAL + content
    return StudentText(prompt_ids, ids, spans, completion, 0, len(reasoning) + len(HARMONY_FINAL), False)


def _hf_logprobs(config: ScorerConfig, records: list[dict[str, Any]], settings: ProvenanceConfig):
    from ..backends.hf import load_model
    from .score import make_scorer, model_part_logprobs

    if config.prompt_format == "harmony":
        raise ConfigError("prompt_format=harmony is for gpt-oss behind a server: use name=openai")
    model, tokenizer, device = load_model(config)
    scorer, _ = make_scorer(model, tokenizer, settings.batching, settings.tokens_per_batch)
    max_length = getattr(model.config, "max_position_embeddings", None) or 1 << 30
    try:
        for chunk in batched(iter(records), settings.chunk_records):
            for record, parts, length in model_part_logprobs(scorer, tokenizer, chunk, system_prompt=config.system_prompt,
                                                             chat_template_kwargs=config.chat_template_kwargs, max_length=max_length):
                yield record["id"], parts, None if parts is not None else f"too_long: {length} tokens > {max_length}", length
    finally:
        del model


def _openai_logprobs(config: ScorerConfig, records: list[dict[str, Any]], settings: ProvenanceConfig):
    from ..backends.base import GenerationRequest
    from ..backends.openai_compat import OpenAIBackend

    if config.prompt_format == "chat_template" and not config.tokenizer:
        raise ConfigError("an openai scorer renders the text locally: set its tokenizer (or prompt_format=harmony)")
    backend = OpenAIBackend(config, chat_template_kwargs=config.chat_template_kwargs, prompt_format=config.prompt_format)
    try:
        for chunk in batched(iter(records), settings.chunk_records):
            texts, requests = {}, []
            for record in chunk:
                messages = with_system_prompt(record["messages"], config.system_prompt)
                reasoning, content = record.get("reasoning") or "", record.get("content") or ""
                if config.prompt_format == "harmony":
                    effort = str(config.chat_template_kwargs.get("reasoning_effort", "medium"))
                    text = render_harmony_response(messages, reasoning, content, reasoning_effort=effort)
                else:
                    text = render_student(backend.tokenizer, messages, reasoning, content, system_prompt=None,
                                          chat_template_kwargs=config.chat_template_kwargs)
                texts[record["id"]] = (record, text)
                requests.append(GenerationRequest(id=record["id"], messages=messages, temperature=0.0,
                                                  score_token_ids=text.prompt_ids + text.completion_ids))
            for result in backend.generate(requests):
                record, text = texts[result.id]
                if result.error:
                    yield result.id, None, result.error, 0
                    continue
                logprobs = result.token_logprobs[len(text.prompt_ids):]
                parts = completion_part_logprobs(text, record.get("reasoning") or "", record.get("content") or "", logprobs)
                yield result.id, parts, None, len(text.completion_ids)
    finally:
        backend.close()


def score_role(role: str, config: ScorerConfig, records: list[dict[str, Any]], settings: ProvenanceConfig, folder: Path,
               errors: ErrorLog) -> dict[str, dict]:
    """`{id: parts}` of one model's token log-probs; resumes from and appends to `logprobs.<role>.jsonl`."""
    writer = RecordWriter(folder / f"logprobs.{role}.jsonl")
    todo = [record for record in records if record["id"] not in writer.done]
    if config.name == "vllm":
        raise ConfigError(f"{role}.name=vllm: score with hf, or through a vLLM server with name=openai")
    if todo:
        progress = Progress(len(todo), f"provenance: {role} [{config.name}]", unit="resp")
        source = _hf_logprobs if config.name == "hf" else _openai_logprobs
        try:
            for record_id, parts, error, length in source(config, todo, settings):
                if parts is None:
                    errors.log(record_id, f"{role}: {error}")
                else:
                    writer.write({"id": record_id, "parts": parts})
                progress.update(1, length)
        finally:
            progress.close()
            writer.finish()
    return {str(record["id"]): record["parts"] for _, record in iter_records(writer.path)} if writer.path.exists() else {}


def sentence_provenance(record: dict[str, Any], parts: dict[str, dict[str, dict]], settings: ProvenanceConfig) -> tuple[list[dict], str | None]:
    """The record's sentences with the three mean log-probs and their class, or an error."""
    scored, error = sentence_scores_by_model(record, {role: parts[role] for role in ROLES})
    if error:
        return [], error
    return [{"part": part, "start": start, "end": end, **{f"{role}_logprob": means[role] for role in ROLES},
             "type": classify_provenance(means["teacher"], means["student"], means["distilled"], alpha=settings.alpha,
                                         beta=settings.beta, space=settings.space)}
            for part, start, end, means in scored], None


# --- inputs ---------------------------------------------------------------------------------------

def _sample_files(outputs: Path) -> list[Path]:
    if outputs.is_file():
        return [outputs]
    if (outputs / "samples.jsonl").exists():
        return [outputs / "samples.jsonl"]
    found = sorted(outputs.glob("*/samples.jsonl"))
    if not found:
        raise InputError(str(outputs), None, "outputs", "no samples.jsonl here or in its subfolders (a `dasd eval` output folder?)")
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
            for field in ("id", "messages"):
                if field not in record:
                    raise InputError(str(path), line, field, "missing (expected `dasd eval` / `dasd sample` records)")
            records.append({**record, "id": str(record["id"]), "benchmark": benchmark, "correct": graded.get(str(record["id"]))})
            if limit and len(records) >= limit:
                break
        if limit and len(records) >= limit:
            break
    ungraded = [r for r in records if r["correct"] is None]
    if ungraded:
        from ..answers import BoundedVerifier, grade_many

        with BoundedVerifier() as verifier:
            grades = grade_many([(r.get("content") or "", str(r.get("answer")), r.get("domain"), r.get("choices")) for r in ungraded], verifier)
        for record, grade in zip(ungraded, grades):
            record["correct"] = bool(grade.correct) and record.get("finish_reason") != "length"
    return records


# --- figures --------------------------------------------------------------------------------------

def plot_example(response: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    sentences = response["sentences"]
    xs = list(range(1, len(sentences) + 1))
    figure, axis = plt.subplots(figsize=(max(6.4, 0.32 * len(xs) + 2), 3.8), dpi=110)
    for x, sentence in zip(xs, sentences):
        axis.axvspan(x - 0.5, x + 0.5, color=COLOURS[sentence["type"]], alpha=0.28, linewidth=0)
    for role, style in (("teacher", "-"), ("student", "--"), ("distilled", "-.")):
        axis.plot(xs, [math.exp(s[f"{role}_logprob"]) for s in sentences], style, marker="o", markersize=3, linewidth=1.4,
                  label=f"p_{role[0].upper()} ({role})", color={"teacher": "#1f3f73", "student": "#a0522d", "distilled": "#222222"}[role])
    handles, labels = axis.get_legend_handles_labels()
    handles += [Patch(color=COLOURS[kind], alpha=0.4) for kind in CLASSES]
    labels += [f"{kind} sentence" for kind in CLASSES]
    axis.legend(handles, labels, fontsize=7, ncol=2, loc="lower left")
    axis.set_ylim(-0.02, 1.05)
    axis.set_xlabel("sentence")
    axis.set_ylabel("sentence probability (geometric mean)")
    axis.set_title(f"{response['id']} ({'correct' if response['correct'] else 'incorrect'})", fontsize=10)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def plot_positions(analysis: dict[str, Any], path: Path, min_samples: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 2, figsize=(9, 6), dpi=110, sharex=True)
    positions = [p + 1 for p in analysis["positions"]]
    for axis, kind in zip(axes.flat, CLASSES):
        if positions:
            axis.plot(positions, analysis["fractions"]["correct"][kind], color=COLOURS[kind], linewidth=1.6, label="correct")
            axis.plot(positions, analysis["fractions"]["incorrect"][kind], color=COLOURS[kind], linewidth=1.6, linestyle="--", label="incorrect")
            axis.fill_between(positions, analysis["fractions"]["correct"][kind], analysis["fractions"]["incorrect"][kind],
                              color=COLOURS[kind], alpha=0.15)
        delta = analysis["delta"][kind]
        axis.set_title(f"{kind} sentences  (Δ = {delta:+.3f})" if delta is not None else f"{kind} sentences", fontsize=10)
        axis.set_ylabel("fraction at this position")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    for axis in axes[1]:
        axis.set_xlabel("sentence position")
    figure.suptitle(f"sentence classes by position, correct vs incorrect answers (positions with ≥ {min_samples} answers in each group)",
                    fontsize=10)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def _pick_example(responses: list[dict[str, Any]], wanted: str | None) -> dict[str, Any] | None:
    if wanted is not None:
        for response in responses:
            if response["id"] == wanted:
                return response
        raise ConfigError(f"example: no analysed response has id {wanted!r}")
    if not responses:
        return None
    return max(responses, key=lambda r: (len({s["type"] for s in r["sentences"]}), r["correct"], -abs(len(r["sentences"]) - 12)))


# --- the stage ------------------------------------------------------------------------------------

def run(config: ProvenanceConfig) -> dict[str, Any]:
    outputs = Path(config.outputs)
    if not outputs.exists():
        raise InputError(config.outputs, None, "outputs", "does not exist")
    records = load_graded(outputs, config.limit)
    if not records:
        raise InputError(config.outputs, None, "outputs", "no answers to analyse (empty)")
    folder = Path(config.output_dir) if config.output_dir else (outputs.parent if outputs.is_file() else outputs) / "provenance"
    folder.mkdir(parents=True, exist_ok=True)
    dump_config(config, folder / "provenance.config.yaml")
    errors = ErrorLog(folder / "errors.jsonl")
    errors.reset()
    scored = [r for r in records if (r.get("reasoning") or "").strip() or (r.get("content") or "").strip()]
    logprobs = {}
    try:
        for role in ROLES:
            logprobs[role] = score_role(role, getattr(config, role), scored, config, folder, errors)
    finally:
        errors.close()

    responses, reasons = [], Counter()
    for record in scored:
        if any(record["id"] not in logprobs[role] for role in ROLES):
            reasons["not_scored"] += 1
            continue
        sentences, error = sentence_provenance(record, {role: logprobs[role][record["id"]] for role in ROLES}, config)
        if error:
            reasons[error.split(":")[0]] += 1
            continue
        if sentences:
            responses.append({"id": record["id"], "question_id": record.get("question_id"), "benchmark": record["benchmark"],
                              "correct": record["correct"], "finish_reason": record.get("finish_reason"), "sentences": sentences})
    temporary = folder / "provenance.jsonl.tmp"
    from ..io import dumps_record

    temporary.write_text("".join(dumps_record(r) + "\n" for r in responses), encoding="utf-8")
    temporary.replace(folder / "provenance.jsonl")

    analysis = position_fractions(responses, min_samples=config.min_samples, max_positions=config.max_positions)
    totals = {group: Counter() for group in ("correct", "incorrect")}
    for response in responses:
        totals["correct" if response["correct"] else "incorrect"].update(s["type"] for s in response["sentences"])
    figures = {}
    example = _pick_example(responses, config.example)
    if example is not None:
        plot_example(example, folder / "example.png")
        figures["example"] = str(folder / "example.png")
    plot_positions(analysis, folder / "positions.png", config.min_samples)
    figures["positions"] = str(folder / "positions.png")
    summary = {
        "stage": "provenance", "output": str(folder / "provenance.jsonl"), "outputs": str(outputs),
        "models": {role: getattr(config, role).model for role in ROLES},
        "alpha": config.alpha, "beta": config.beta, "space": config.space, "min_samples": config.min_samples,
        "responses": {"analysed": len(responses), "correct": sum(r["correct"] for r in responses),
                      "incorrect": sum(not r["correct"] for r in responses), "skipped": dict(reasons),
                      "empty": len(records) - len(scored)},
        "sentences": {group: {kind: totals[group][kind] for kind in CLASSES} for group in totals},
        "share": {group: {kind: (totals[group][kind] / sum(totals[group].values()) if sum(totals[group].values()) else None) for kind in CLASSES}
                  for group in totals},
        "delta": analysis["delta"], "positions_used": len(analysis["positions"]),
        "by_position": analysis, "example": example["id"] if example else None, "figures": figures,
    }
    write_json_atomic(folder / "summary.json", summary)
    rows = [("responses analysed", f"{len(responses)} ({summary['responses']['correct']} correct, {summary['responses']['incorrect']} incorrect)"),
            *((f"  skipped: {reason}", count) for reason, count in sorted(reasons.items())),
            ("positions used", f"{len(analysis['positions'])} (≥ {config.min_samples} answers in each group)")]
    for kind in CLASSES:
        share = {group: summary["share"][group][kind] for group in totals}
        delta = analysis["delta"][kind]
        rows.append((f"{kind} sentences", f"correct {_pct(share['correct'])}  incorrect {_pct(share['incorrect'])}  "
                                          f"Δ {'-' if delta is None else f'{delta:+.3f}'}"))
    print(format_summary(f"dasd provenance -> {folder}", rows), file=sys.stdout, flush=True)
    return summary


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:5.1f}%"


def extra_arguments(parser) -> None:
    parser.add_argument("--outputs", help="same as outputs=…")
    for role in ROLES:
        parser.add_argument(f"--{role}", metavar="MODEL", help=f"same as {role}.model=…")


def handle_extra(args) -> bool:
    if getattr(args, "outputs", None):
        args.overrides = [*args.overrides, f"outputs={args.outputs}"]
    for role in ROLES:
        if getattr(args, role, None):
            args.overrides = [*args.overrides, f"{role}.model={getattr(args, role)}"]
    return False
