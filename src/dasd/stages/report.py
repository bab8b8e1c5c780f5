"""`dasd report RUN_DIR`: one self-contained HTML page (plus its PNGs) about a run folder.

    dasd report runs/demo                       # writes runs/demo/report/index.html and the PNGs
    dasd report runs/demo output=/tmp/r/index.html
    dasd report runs/world_a --interaction runs/world_b --claim "recipe>rs"   # one claim in two runs, and stop

Works on any folder that holds dasd outputs — a `dasd run`/`dasd demo` workdir or a folder of
stages run by hand: every stage writes `<name>.summary.json` with its `stage`, and the report reads
what it finds (a missing section is listed as such, never an error):

* the steps of the pipeline with their status and time (`run.summary.json`);
* the evaluation table: avg@k ± one standard error, pass@k, truncation (`dasd eval` summaries);
* the teacher's response-probability density per sampling temperature (the report's Figure 3a):
  the mean raw log-probability per token of each sampled response;
* the training loss per SFT stage, stages back to back (Figure 3b);
* sentence types (teacher / student / shared) per temperature, and what DAS and RS selected;
* filtering: kept and rejected, with the reasons;
* the mixed-policy cut-off ratio (student length / teacher length) against the teacher's length
  (Figure 7);
* `dasd provenance` results found in the folder: class shares, Δ, Figures 5 and 6;
* every stage summary's rows, as the stage printed them (`dasd.reporting.summary_rows`), folded.

The PNGs are written beside the HTML and also embedded in it (data URIs), so the HTML alone can be
mailed or attached to an experiment tracker.

`--interaction RUN_Y` prints, instead of writing the page, the interaction of the claims that RUN_DIR and RUN_Y
(two `dasd run` workdirs, e.g. the same ablation on two twin worlds) both checked: (better − worse in RUN_DIR) −
(better − worse in RUN_Y), with s.e. sqrt(s.e.x² + s.e.y²), a t interval (Welch–Satterthwaite df) and a verdict
(`dasd.reporting.ablation.interaction`); `--claim` picks one claim by its name or as `BETTER>WORSE`.
"""

from __future__ import annotations

import base64
import html
import json
import math
import statistics
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

from pydantic import Field

from ..config import StageConfig, load_config
from ..data.io import iter_records, read_summary, write_text_atomic
from ..data.records import PROVENANCE_CLASSES, SENTENCE_TYPES
from ..data.summaries import (
    EvalSummary,
    FilterSummary,
    MixSummary,
    ProvenanceSummary,
    SampleSummary,
    ScoreSummary,
    SelectSummary,
    StageSummary,
    TrainSummary,
)
from ..errors import DasdError, InputError
from ..naming import EVAL_MODELS, RUN_SUMMARY, STALE_DIR, eval_dir, seed_dir, sidecar
from ..reporting.ablation import claim_results, interaction_rows, interaction_table, with_t_interval
from ..reporting.figures import plot_cutoff, plot_response_probability, plot_sentence_types, plot_training_loss
from ..reporting.summary_rows import SUMMARY_ROWS, row_value, summary_rows

S = TypeVar("S")


class ReportConfig(StageConfig):
    run_dir: str = Field(..., description="the run folder (a `dasd run` workdir, or any folder holding stage outputs)")
    output: str | None = Field(
        None, description="the HTML file to write (default: <run_dir>/report/index.html); the PNGs go beside it"
    )
    max_records: int = Field(
        200000,
        ge=1,
        description="read at most this many records of each large file (sampled responses, scored records)",
    )
    title: str | None = Field(None, description="page title (default: the run folder's name)")


def _summaries(run_dir: Path) -> dict[str, list[tuple[Path, StageSummary]]]:
    """Every stage summary under the folder (`read_summary`), grouped by stage."""
    found: dict[str, list[tuple[Path, StageSummary]]] = defaultdict(list)
    for path in sorted(run_dir.rglob("*summary.json")):
        if path.relative_to(run_dir).parts[:1] in (("report",), (STALE_DIR,)) or ".shard-" in path.name:
            # the report's own files; outputs `dasd run` moved aside (rerun=stale); one task's part of a sharded step
            # (the merged summary counts)
            continue
        try:
            summary = read_summary(path)
        except InputError:
            continue  # unreadable: the report shows what it can
        if summary is not None:
            found[summary["stage"]].append((path, summary))
    return found


def _label(path: Path, run_dir: Path) -> str:
    relative = path.parent.relative_to(run_dir)
    return str(relative) if str(relative) != "." else run_dir.name


def _records(path: Path, limit: int):
    if not path.exists():
        return
    for count, (_, record) in enumerate(iter_records(path)):
        if count >= limit:
            return
        yield record


def _mean_token_logprob(record: dict[str, Any]) -> float | None:
    teacher = record.get("teacher_logprobs")
    if not isinstance(teacher, dict):
        return None
    values = [value for part in ("reasoning", "content") for value in ((teacher.get(part) or {}).get("logprobs") or [])]
    return sum(values) / len(values) if values else None


def _embed(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(cell))}</th>" for cell in header)
    body = "".join(
        "<tr>"
        + "".join(f"<td{'' if _numeric(cell) else ' class=text'}>{html.escape(str(cell))}</td>" for cell in row)
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _numeric(cell: Any) -> bool:
    text = str(cell).split(" ")[0]
    try:
        float(text)
        return True
    except ValueError:
        return text == "-"


def _percent(value: float | None) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}"


STYLE = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2em auto; max-width: 980px; color: #222; }
h1 { font-size: 1.6em; margin-bottom: 0.1em; }
h2 { font-size: 1.2em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
.meta { color: #666; font-size: 0.9em; } .note { color: #555; font-size: 0.9em; max-width: 46em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right; } th { background: #f4f4f4; }
td:first-child, th:first-child, td.text { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.4em 0; }
.missing { color: #999; font-style: italic; }
"""


@dataclass
class Page:
    """What every section reads: the run folder, its stage summaries, and where the PNGs go."""

    run_dir: Path
    folder: Path  # beside the HTML: the PNGs are written here
    summaries: dict[str, list[tuple[Path, StageSummary]]]
    run_summary: dict[str, Any] | None = None
    max_records: int = 200000
    figures: dict[str, str] = field(default_factory=dict)  # name -> PNG path, of the figures drawn

    def label(self, path: Path) -> str:
        return _label(path, self.run_dir)

    def records(self, path: str | Path):
        return _records(Path(path), self.max_records)

    def of(self, stage: str, kind: type[S]) -> list[tuple[Path, S]]:
        """The summaries of one stage, as its TypedDict (`kind`: `dasd.data.records`), in path order."""
        return cast("list[tuple[Path, S]]", self.summaries.get(stage, []))

    def figure(self, name: str, path: Path) -> str:
        """Remember a drawn PNG and return its embedded `<img>`."""
        self.figures[name] = str(path)
        return _embed(path)


def _missing(text: str) -> str:
    return f'<p class="missing">{html.escape(text)}</p>'


def section_pipeline(page: Page) -> list[str]:
    """The steps of `dasd run` with their status, time and headline (`run.summary.json`)."""
    if not page.run_summary:
        return []
    rows = [
        [step["step"], step["status"], f"{step['seconds']:.1f}", step.get("result", "")]
        for step in page.run_summary["steps"]
    ]
    return [
        f"<h2>Pipeline</h2><p class='meta'>{page.run_summary['seconds']:.0f} s in the last `dasd run`</p>"
        + _table(["step", "status", "seconds", "result"], rows)
    ]


def section_evaluation(page: Page) -> list[str]:
    """avg@k ± s.e., pass@k, truncation and length of every `dasd eval` found, models in pipeline order."""
    evals = sorted(page.of("eval", EvalSummary), key=lambda item: _eval_order(item[0], page.run_dir))
    if not evals:
        return ["<h2>Evaluation</h2>" + _missing("no `dasd eval` output in this folder")]
    rows = []
    for path, payload in evals:
        for benchmark, metrics in payload.get("benchmarks", {}).items():
            pass_at = metrics.get("pass_at_k") or {}
            best = max(pass_at, key=int) if pass_at else None
            rows.append(
                [
                    page.label(path),
                    benchmark,
                    metrics.get("questions"),
                    metrics.get("n"),
                    f"{_percent(metrics.get('avg_at_k'))} ± {_percent(metrics.get('standard_error'))}",
                    f"{_percent(pass_at[best])} (k={best})" if best else "-",
                    _percent(metrics.get("truncation_rate")),
                    f"{metrics.get('mean_completion_tokens') or 0:.0f}",
                    "" if metrics.get("complete", True) else "incomplete",
                ]
            )
    header = ["model", "benchmark", "questions", "k", "avg@k % ± s.e.", "pass@k %", "truncated %", "mean tokens", ""]
    return [
        "<h2>Evaluation</h2>"
        + _table(header, rows)
        + "<p class='note'>avg@k: mean accuracy over k samples per question; ± one standard error over questions. "
        "pass@k: the unbiased estimator.</p>"
    ]


def section_claims(page: Page) -> list[str]:
    """The report's claims with paired statistics, and each ablation arm over its seeds (`dasd run`)."""
    summary = page.run_summary or {}
    if not summary.get("claims") and not summary.get("arms"):
        return []
    blocks = ["<h2>The report's claims, checked here</h2>"]
    rows = []
    for row in map(with_t_interval, summary.get("claims", [])):
        if row.get("benchmark") is None:
            rows.append(
                [
                    row["name"],
                    row.get("source", ""),
                    f"{row['better']} > {row['worse']}",
                    "-",
                    "-",
                    "-",
                    "-",
                    row["verdict"],
                ]
            )
            continue
        low, high = row["interval"]
        degrees_of_freedom = row.get("degrees_of_freedom")
        rows.append(
            [
                row["name"],
                row.get("source", ""),
                f"{row['better']} > {row['worse']}",
                row["benchmark"],
                f"{100 * row['difference']:+.2f} ± {100 * row['standard_error']:.2f}",
                "-" if degrees_of_freedom is None else f"{degrees_of_freedom:.1f}",
                f"[{100 * low:+.2f}, {100 * high:+.2f}]",
                row["verdict"],
            ]
        )
    if rows:
        blocks.append(
            _table(
                ["claim", "report", "direction", "benchmark", "difference ± s.e.", "df", "95% t interval", "verdict"],
                rows,
            )
            + "<p class='note'>Accuracy points, better − worse: per question over the samples (and training seeds) "
            "both sides drew with the same per-sample seeds, then the mean over questions with its standard "
            "error (with several training seeds it also counts their spread). 95% t interval: ± t(0.975, df) "
            "s.e., df = questions − 1 for one model against one, or Welch–Satterthwaite over the question term "
            "(questions − 1) and the seed term (seeds − 1) — with 3 seeds t is up to 4.3, not 1.96. agrees / "
            "opposite: the interval excludes 0 on the report's side / the other side. A row with no df was written "
            "before t intervals: its interval is ± 1.96 s.e.</p>"
        )
    arm_rows = []
    seeds = summary.get("seeds", [])
    for arm, info in summary.get("arms", {}).items():
        for benchmark, values in info["benchmarks"].items():
            per_seed = ", ".join(f"{100 * value:.2f}" for value in values["per_seed"].values())
            arm_rows.append([arm, info.get("description", ""), benchmark, f"{100 * values['mean']:.2f}", per_seed])
    if arm_rows:
        blocks.append(
            "<h3>Ablation arms</h3>"
            + _table(
                ["arm", "what it is", "benchmark", "avg@k % (mean)", f"per seed ({', '.join(map(str, seeds))})"],
                arm_rows,
            )
        )
    return ["".join(blocks)]


def section_response_probability(page: Page) -> list[str]:
    """Figure 3a: the density of each sampled response's mean raw log-prob per token, per temperature."""
    title = "<h2>Teacher responses by temperature (Figure 3a)</h2>"
    responses: dict[float, list[float]] = defaultdict(list)
    finish: dict[float, Counter] = defaultdict(Counter)
    for _, payload in page.of("sample", SampleSummary):
        for record in page.records(payload["output"]):
            temperature = float(record.get("temperature", float("nan")))
            finish[temperature][record.get("finish_reason", "?")] += 1
            value = _mean_token_logprob(record)
            if value is not None:
                responses[temperature].append(value)
    if not responses:
        return [title + _missing("no sampled responses with log-probs")]
    image = page.figure(
        "response_probability", plot_response_probability(page.folder / "response_probability.png", responses)
    )
    rows = [
        [
            f"{t:g}",
            len(v),
            f"{statistics.fmean(v):.4f}",
            f"{statistics.median(v):.4f}",
            ", ".join(f"{k} {n}" for k, n in finish[t].most_common()),
        ]
        for t, v in sorted(responses.items())
    ]
    return [
        title
        + image
        + _table(["temperature", "responses", "mean log-prob/token", "median", "finish reasons"], rows)
        + "<p class='note'>Lower temperatures concentrate on the teacher's high-probability modes; "
        "higher ones reach its tail (log-probs are raw, i.e. under temperature 1).</p>"
    ]


def section_training_loss(page: Page) -> list[str]:
    """Figure 3b: the loss of each training branch, its stages back to back, and a row per stage."""
    title = "<h2>Training loss per stage (Figure 3b)</h2>"
    branches: dict[str, list[tuple[str, list[tuple[int, float]]]]] = {}
    rows = []
    for path, payload in page.of("train", TrainSummary):
        stages = []
        for stage in payload.get("stages", []):
            history_path = path.parent / stage["stage"] / "log_history.json"
            history = json.loads(history_path.read_text()) if history_path.exists() else []
            stages.append(
                (
                    stage["stage"],
                    [(entry["step"], entry["loss"]) for entry in history if "loss" in entry and "step" in entry],
                )
            )
            metrics_path = path.parent / stage["stage"] / "metrics.json"
            if stage.get("skipped") and metrics_path.exists():  # finished by an earlier call of `dasd train`
                stage = {**json.loads(metrics_path.read_text()), "skipped": False}
            if not stage.get("skipped"):
                rows.append(
                    [
                        page.label(path),
                        stage["stage"],
                        stage.get("samples"),
                        stage.get("optimizer_steps"),
                        _fmt(stage.get("first_loss")),
                        _fmt(stage.get("final_loss")),
                        stage.get("seconds"),
                    ]
                )
        if any(points for _, points in stages):
            branches[page.label(path)] = stages
    if not branches:
        return [title + _missing("no `dasd train` output with a loss history")]
    image = page.figure("training_loss", plot_training_loss(page.folder / "training_loss.png", branches))
    return [
        title
        + image
        + _table(["run", "stage", "samples", "optimizer steps", "first loss", "final loss", "seconds"], rows)
    ]


def _sentence_counts(records) -> Counter:
    counts: Counter = Counter()
    for record in records:
        das = record.get("das") or {}
        counts["responses"] += 1
        for kind in SENTENCE_TYPES:
            counts[kind] += das.get(kind, 0)
    return counts


def section_sentence_types(page: Page) -> list[str]:
    """Teacher / student / shared sentences per sampling temperature, and in what DAS and RS selected."""
    title = "<h2>Sentence types and selection</h2>"
    by_temperature: dict[float, list[dict]] = defaultdict(list)
    for _, payload in page.of("score", ScoreSummary):
        for record in page.records(payload["output"]):
            if record.get("unscored"):  # passed through unscored (score skip_unfinished): no sentences to count
                continue
            by_temperature[float(record.get("temperature", float("nan")))].append({"das": record.get("das")})
    per_temperature = {temperature: _sentence_counts(records) for temperature, records in by_temperature.items()}
    selections: dict[str, Counter] = {}
    for _, payload in page.of("select", SelectSummary):
        name = {"count": "DAS", "random": "RS"}.get(payload.get("strategy"), payload.get("strategy", "?"))
        if name in selections:
            name = f"{name} ({Path(payload['output']).stem})"
        selections[name] = _sentence_counts(page.records(payload["output"]))
    if not per_temperature:
        return [title + _missing("no `dasd score` output")]
    image = page.figure(
        "sentence_types", plot_sentence_types(page.folder / "sentence_types.png", per_temperature, selections)
    )
    groups = [(f"T={t:g}", c) for t, c in sorted(per_temperature.items())] + list(selections.items())
    rows = [[name, c["responses"], c["teacher"], c["student"], c["shared"], _share(c)] for name, c in groups]
    return [
        title
        + image
        + _table(["set", "responses", "teacher sentences", "student sentences", "shared", "teacher share %"], rows)
        + "<p class='note'>teacher sentence: the teacher is much more confident than the student; student "
        "sentence: the reverse; shared: both agree. DAS keeps the responses richest in teacher sentences, RS "
        "picks at random with the same budget.</p>" + _selection_overlaps(page)
    ]


def _relative(path: Path, run_dir: Path) -> str:
    """`path` from the run's folder when it is inside it (a file, where `Page.label` names folders).

    >>> _relative(Path("/runs/x/filter/filtered.jsonl"), Path("/runs/x")), _relative(Path("/data/a.jsonl"), Path("/r"))
    ('filter/filtered.jsonl', '/data/a.jsonl')
    """
    try:
        return str(path.resolve().relative_to(run_dir.resolve()))
    except ValueError:
        return str(path)


def _selection_overlaps(page: Page) -> str:
    """`dasd select compare_with=…`: how a selection made with one student's scores overlaps another's."""
    rows = []
    for path, payload in page.of("select", SelectSummary):
        overlap = payload.get("overlap")
        if not overlap:
            continue
        agreement = overlap["sentences"]
        rows.append(
            [
                page.label(path),
                _relative(Path(overlap["compare_with"]), page.run_dir),
                f"{overlap['jaccard']:.3f}",
                ", ".join(f"T={t}: {j:.3f}" for t, j in overlap["jaccard_per_temperature"].items()),
                f"{overlap['selected_both']} / {overlap['selected_here']} / {overlap['selected_there']}",
                "—" if agreement["agreement"] is None else f"{agreement['agreement']:.3f}",
                ", ".join(f"{kind} {share:.3f}" for kind, share in agreement["same_class_share"].items()),
            ]
        )
    if not rows:
        return ""
    return (
        "<h3>Does a DAS selection transfer across students?</h3>"
        + _table(
            [
                "selection",
                "compared with",
                "Jaccard",
                "per temperature",
                "kept by both / here / there",
                "same sentence class",
                "same class, by class here",
            ],
            rows,
        )
        + "<p class='note'>The same candidates scored by two students and selected with the same settings: the "
        "Jaccard index of the kept ids (1: the same selection), and the share of sentences both scorings put in "
        "the same class.</p>"
    )


def section_filtering(page: Page) -> list[str]:
    """Kept and rejected records of each `dasd filter`, with the reasons."""
    filters = page.of("filter", FilterSummary)
    if not filters:
        return []
    rows = []
    for path, payload in filters:
        reasons = payload.get("reasons") or {}
        rows.append(
            [
                page.label(path),
                payload.get("records"),
                payload.get("kept"),
                payload.get("rejected"),
                ", ".join(f"{k} {v}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1])) or "-",
            ]
        )
    return ["<h2>Quality filtering</h2>" + _table(["output", "records", "kept", "rejected", "reasons"], rows)]


def section_mixed_policy(page: Page) -> list[str]:
    """Figure 7: the student rollouts' length over the teacher's, and what mixed-policy distillation kept."""
    title = "<h2>Mixed-policy distillation: cut-off ratio (Figure 7)</h2>"
    mixes = page.of("mix", MixSummary)
    if not mixes:
        return [title + _missing("no `dasd mix` output")]
    parts = []
    factor = 1.5
    for _, payload in mixes:
        points = list(page.records(sidecar(payload["output"], "cutoff", ".jsonl")))
        factor = _mix_factor(Path(payload["output"]))
        row = [
            payload.get("rollouts"),
            payload.get("truncated"),
            payload.get("cut"),
            payload.get("continued"),
            payload.get("kept"),
            payload.get("off_policy"),
            ", ".join(f"{k} {v}" for k, v in (payload.get("drop_reasons") or {}).items()) or "-",
        ]
        parts.append(
            _table(
                [
                    "rollouts",
                    "cut off at the cap",
                    "cut at a sentence",
                    "continued by the teacher",
                    "kept",
                    "off-policy",
                    "dropped",
                ],
                [row],
            )
        )
        if points:
            parts.insert(0, page.figure("cutoff_ratio", plot_cutoff(points, page.folder / "cutoff_ratio.png", factor)))
    return [
        title
        + "".join(parts)
        + f"<p class='note'>Student rollouts are capped at {factor:g}× the teacher's length; those that reach the "
        "cap are cut at a sentence boundary and continued by the teacher.</p>"
    ]


def section_provenance(page: Page) -> list[str]:
    """Figures 5 and 6 of each `dasd provenance` found: class shares in correct vs incorrect answers, Δ."""
    sections = []
    for path, payload in page.of("provenance", ProvenanceSummary):
        parts = [
            page.figure(f"{page.label(path)}/{name}", path.parent / f"{name}.png")
            for name in ("positions", "example")
            if (path.parent / f"{name}.png").exists()
        ]
        intervals = payload.get("share_interval") or {}

        def bounds(group: str, kind: str, intervals=intervals) -> str:
            interval = intervals.get(group, {}).get(kind)
            return "" if not interval else f" [{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]"

        rows = [
            [
                kind,
                _percent(payload["share"]["correct"].get(kind)) + bounds("correct", kind),
                _percent(payload["share"]["incorrect"].get(kind)) + bounds("incorrect", kind),
                (bounds("difference", kind).strip() or "-"),
                "-" if payload["delta"].get(kind) is None else f"{payload['delta'][kind]:+.3f}",
            ]
            for kind in PROVENANCE_CLASSES
        ]
        responses = payload["responses"]
        sections.append(
            f"<h2>Sentence provenance: {html.escape(page.label(path))} (Figures 5 and 6)</h2>"
            f"<p class='meta'>{responses['analysed']} answers ({responses['correct']} correct), alpha "
            f"{payload['alpha']}, "
            f"beta {payload['beta']}, {payload['positions_used']} positions with ≥ {payload['min_samples']} answers in "
            "each group</p>"
            + _table(
                [
                    "class",
                    "share in correct % [95%]",
                    "share in incorrect % [95%]",
                    "correct − incorrect, 95% (points)",
                    "Δ by position (correct − incorrect)",
                ],
                rows,
            )
            + "<p class='note'>Intervals: a cluster bootstrap over questions (a question's answers drawn "
            "together).</p>" + "".join(parts)
        )
    return sections


def section_stage_summaries(page: Page) -> list[str]:
    """Each stage summary's rows (`dasd.reporting.summary_rows`: what the stage printed at its end), folded, in the
    order of the pipeline; a detail row indented under the one above it."""
    blocks = []
    for stage in SUMMARY_ROWS:
        for path, payload in page.of(stage, dict):
            rows = [
                [("\u2003" + label.strip()) if label.startswith("  ") else label, row_value(value)]
                for label, value in summary_rows(payload)
            ]
            blocks.append(
                f"<details><summary><code>dasd {html.escape(stage)}</code> → "
                f"{html.escape(_relative(path, page.run_dir))}</summary>" + _table(["", ""], rows) + "</details>"
            )
    if not blocks:
        return []
    return ["<h2>Stage summaries</h2>" + "".join(blocks)]


SECTIONS = (
    section_pipeline,
    section_evaluation,
    section_claims,
    section_response_probability,
    section_training_loss,
    section_sentence_types,
    section_filtering,
    section_mixed_policy,
    section_provenance,
    section_stage_summaries,
)


def build(config: ReportConfig) -> dict[str, Any]:
    run_dir = Path(config.run_dir)
    if not run_dir.is_dir():
        raise InputError(config.run_dir, None, "run_dir", "not a folder")
    output = Path(config.output) if config.output else run_dir / "report" / "index.html"
    summaries = _summaries(run_dir)
    run_summary_path = run_dir / RUN_SUMMARY
    run_summary = json.loads(run_summary_path.read_text()) if run_summary_path.exists() else None
    if not summaries and run_summary is None:
        raise InputError(
            config.run_dir, None, "run_dir", "holds no dasd outputs (no <name>.summary.json with a 'stage')"
        )
    page = Page(run_dir, output.parent, summaries, run_summary, config.max_records)
    sections = [html_block for section in SECTIONS for html_block in section(page)]
    title = config.title or f"dasd report — {run_dir.resolve().name}"
    write_text_atomic(
        output,
        (
            f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<p class='meta'>{html.escape(str(run_dir))} · written {time.strftime('%Y-%m-%d %H:%M')}</p>"
            + "".join(sections)
            + "</body></html>"
        ),
    )
    return {"stage": "report", "output": str(output), "figures": page.figures, "sections": len(sections)}


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}"


def _share(counts: Counter) -> str:
    total = counts["teacher"] + counts["student"] + counts["shared"]
    return f"{100 * counts['teacher'] / total:.1f}" if total else "-"


def _mix_factor(output: Path) -> float:
    import yaml

    config_path = sidecar(output, "config", ".yaml")
    if config_path.exists():
        loaded = yaml.safe_load(config_path.read_text()) or {}
        if isinstance(loaded.get("budget_factor"), (int, float)):
            return float(loaded["budget_factor"])
    return 1.5


def _eval_order(path: Path, run_dir: Path) -> tuple[int, str]:
    label = _label(path, run_dir)
    name = Path(label).name
    return (EVAL_MODELS.index(name) if name in EVAL_MODELS else len(EVAL_MODELS), label)


# --- `dasd report RUN_X --interaction RUN_Y` ---------------------------------------------------------------


def extra_arguments(parser) -> None:
    parser.add_argument(
        "--interaction",
        metavar="RUN_Y",
        help="print, instead of writing the page, each claim that RUN_DIR and RUN_Y (two `dasd run` workdirs, e.g. "
        "one ablation on two twin worlds) both checked as (better − worse in RUN_DIR) − (better − worse in RUN_Y) "
        "with its t interval and verdict, and stop",
    )
    parser.add_argument(
        "--claim",
        metavar="NAME|BETTER>WORSE",
        help="with --interaction: only this claim (its name, or its arms as BETTER>WORSE, e.g. 'recipe>rs')",
    )


def run_claims(run_dir: Path) -> list[dict[str, Any]]:
    """The claim rows of a `dasd run` workdir (`run.summary.json`). Rows that lack what a t interval needs (the
    question standard error and the per-run differences) are recomputed from the run's eval folders with
    `claim_results`, laid out as `dasd run` writes them (arms over the summary's seeds, the evaluated models)."""
    path = run_dir / RUN_SUMMARY
    if not path.exists():
        raise InputError(str(path), None, None, "no run summary here (a `dasd run` workdir with claims is needed)")
    summary = json.loads(path.read_text())
    rows = summary.get("claims") or []
    if not rows:
        raise InputError(str(path), None, "claims", "this run checked no claims")
    checked = [with_t_interval(row) for row in rows]
    if all(row.get("benchmark") is None or row.get("degrees_of_freedom") is not None for row in checked):
        return checked
    claims: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for row in rows:
        claim = {key: row.get(key, "") for key in ("name", "better", "worse", "source")}
        claims.setdefault((claim["name"], claim["better"], claim["worse"], claim["source"]), claim)
    seeds = summary.get("seeds") or []
    model_runs: dict[str, dict[str, Path]] = {}
    for claim in claims.values():
        for side in (claim["better"], claim["worse"]):
            if side in summary.get("arms", {}) or (run_dir / "arms" / side).is_dir():
                model_runs[side] = {str(seed): seed_dir(run_dir, side, seed) / "eval" for seed in seeds}
            elif side in EVAL_MODELS:
                model_runs[side] = {"-": eval_dir(run_dir, side)}
    return claim_results(list(claims.values()), model_runs)


def handle_extra(args) -> bool:
    if not getattr(args, "interaction", None):
        if getattr(args, "claim", None):
            raise DasdError("--claim picks a claim for --interaction RUN_Y; give that too")
        return False
    overrides = list(args.overrides)
    if overrides and "=" not in overrides[0]:
        overrides[0] = f"run_dir={overrides[0]}"
    config = load_config(ReportConfig, args.config, overrides)
    run_x, run_y = Path(config.run_dir), Path(args.interaction)
    rows = interaction_rows(run_claims(run_x), run_claims(run_y), args.claim)
    if not rows:
        asked = f"claim {args.claim!r}" if args.claim else "claim"
        raise DasdError(f"no {asked} with results on the same benchmark in both {run_x} and {run_y}")
    print(f"X = {run_x}\nY = {run_y}")
    print("\n".join(interaction_table(rows)))
    return True


def run(config: ReportConfig) -> dict[str, Any]:
    import sys

    result = build(config)
    print(f"dasd report: wrote {result['output']} ({len(result['figures'])} figures)", file=sys.stderr)
    return result
