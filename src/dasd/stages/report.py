"""`dasd report RUN_DIR`: one self-contained HTML page (plus its PNGs) about a run folder.

    dasd report runs/demo                       # writes runs/demo/report/index.html and the PNGs
    dasd report runs/demo output=/tmp/r/index.html

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
* `dasd provenance` results found in the folder: class shares, Δ, Figures 5 and 6.

The PNGs are written beside the HTML and also embedded in it (data URIs), so the HTML alone can be
mailed or attached to an experiment tracker.
"""

from __future__ import annotations

import base64
import html
import json
import math
import statistics
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from pydantic import Field

from ..config import StageConfig
from ..errors import InputError
from ..io import iter_records, sidecar, write_json_atomic

# The positional argument of `dasd report RUN_DIR` is this key (the CLI reads it so).
POSITIONAL_KEY = "run_dir"
PALETTE = {"teacher": "#4c72b0", "student": "#dd8452", "shared": "#8c8c8c", "boosted": "#55a868"}


class ReportConfig(StageConfig):
    run_dir: str = Field(..., description="the run folder (a `dasd run` workdir, or any folder holding stage outputs)")
    output: str | None = Field(None, description="the HTML file to write (default: <run_dir>/report/index.html); the PNGs go beside it")
    max_records: int = Field(200000, ge=1, description="read at most this many records of each large file (sampled responses, scored records)")
    title: str | None = Field(None, description="page title (default: the run folder's name)")


def _summaries(run_dir: Path) -> dict[str, list[tuple[Path, dict[str, Any]]]]:
    """Every `*summary.json` under the folder with a `stage` key, grouped by stage."""
    found: dict[str, list[tuple[Path, dict[str, Any]]]] = defaultdict(list)
    for path in sorted(run_dir.rglob("*summary.json")):
        if "report" in path.relative_to(run_dir).parts[:1]:
            continue
        try:
            payload = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(payload, dict) and isinstance(payload.get("stage"), str):
            found[payload["stage"]].append((path, payload))
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


class _Figures:
    """Makes the PNGs (matplotlib, Agg) and remembers them for the page."""

    def __init__(self, folder: Path):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        self.plt = plt
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)

    def save(self, figure, name: str) -> Path:
        path = self.folder / f"{name}.png"
        figure.tight_layout()
        figure.savefig(path)
        self.plt.close(figure)
        return path


def figure_probability_density(figures: _Figures, responses: dict[float, list[float]]) -> Path:
    plt = figures.plt
    figure, axis = plt.subplots(figsize=(6.4, 3.8), dpi=110)
    everything = sorted(value for values in responses.values() for value in values)
    # the range holds 99% of the responses: a few very unlikely ones would squeeze the rest into a bin
    low, high = everything[int(0.01 * (len(everything) - 1))], everything[-1]
    if high - low < 1e-9:
        low, high = low - 0.5, high + 0.5
    bins = [low + (high - low) * index / 40 for index in range(41)]
    colours = plt.get_cmap("coolwarm")
    temperatures = sorted(responses)
    for index, temperature in enumerate(temperatures):
        values = responses[temperature]
        colour = colours(index / max(1, len(temperatures) - 1))
        shown = [min(max(value, low), high) for value in values]  # the lowest 1% go into the first bin
        axis.hist(shown, bins=bins, density=True, histtype="stepfilled", alpha=0.35, color=colour)
        axis.hist(shown, bins=bins, density=True, histtype="step", linewidth=1.5, color=colour,
                  label=f"T={temperature:g}  (n={len(values)}, mean {statistics.fmean(values):.3f})")
    axis.set_xlabel("mean log-probability per token under the teacher (raw, T=1)")
    axis.set_ylabel("density")
    axis.set_title("teacher response probability by sampling temperature")
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    return figures.save(figure, "response_probability")


def figure_training_loss(figures: _Figures, branches: dict[str, list[tuple[str, list[tuple[int, float]]]]]) -> Path:
    plt = figures.plt
    figure, axes = plt.subplots(len(branches), 1, figsize=(6.4, 2.6 * len(branches) + 0.6), dpi=110, squeeze=False)
    stage_colours = plt.get_cmap("tab10")
    for axis, (branch, stages) in zip(axes[:, 0], branches.items()):
        offset = 0
        for index, (stage, points) in enumerate(stages):
            if not points:
                continue
            steps = [offset + step for step, _ in points]
            axis.plot(steps, [loss for _, loss in points], linewidth=1.4, color=stage_colours(index), label=stage)
            offset = steps[-1]
            axis.axvline(offset, color="grey", linewidth=0.6, linestyle=":")
        axis.set_title(branch, fontsize=10)
        axis.set_ylabel("training loss")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    axes[-1, 0].set_xlabel("optimizer step (stages back to back)")
    return figures.save(figure, "training_loss")


def figure_sentence_types(figures: _Figures, per_temperature: dict[float, Counter], selections: dict[str, Counter]) -> Path:
    plt = figures.plt
    panels = [("sampled responses, per temperature", {f"T={t:g}": c for t, c in sorted(per_temperature.items())})]
    if selections:
        panels.append(("selected for SFT", selections))
    figure, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels) + 1.2, 3.8), dpi=110, squeeze=False)
    for axis, (title, groups) in zip(axes[0], panels):
        names = list(groups)
        bottoms = [0.0] * len(names)
        for kind in ("teacher", "shared", "student"):
            heights = []
            for name in names:
                responses = groups[name].get("responses", 0) or 1
                heights.append(groups[name].get(kind, 0) / responses)
            axis.bar(names, heights, bottom=bottoms, color=PALETTE[kind], label=kind)
            bottoms = [b + h for b, h in zip(bottoms, heights)]
        axis.set_title(title, fontsize=10)
        axis.set_ylabel("sentences per response")
        axis.grid(alpha=0.3, axis="y")
        axis.legend(fontsize=8)
    return figures.save(figure, "sentence_types")


def figure_cutoff(figures: _Figures, points: list[dict[str, Any]], factor: float) -> Path:
    from .mix import plot_cutoff

    path = figures.folder / "cutoff_ratio.png"
    plot_cutoff(points, path, factor)
    return path


def _embed(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(cell))}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td{'' if _numeric(cell) else ' class=text'}>{html.escape(str(cell))}</td>" for cell in row) + "</tr>"
                   for row in rows)
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
h1 { font-size: 1.6em; margin-bottom: 0.1em; } h2 { font-size: 1.2em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
.meta { color: #666; font-size: 0.9em; } .note { color: #555; font-size: 0.9em; max-width: 46em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right; } th { background: #f4f4f4; }
td:first-child, th:first-child, td.text { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.4em 0; }
.missing { color: #999; font-style: italic; }
"""


def build(config: ReportConfig) -> dict[str, Any]:
    run_dir = Path(config.run_dir)
    if not run_dir.is_dir():
        raise InputError(config.run_dir, None, "run_dir", "not a folder")
    output = Path(config.output) if config.output else run_dir / "report" / "index.html"
    summaries = _summaries(run_dir)
    run_summary_path = run_dir / "run.summary.json"
    run_summary = json.loads(run_summary_path.read_text()) if run_summary_path.exists() else None
    if not summaries and run_summary is None:
        raise InputError(config.run_dir, None, "run_dir", "holds no dasd outputs (no <name>.summary.json with a 'stage')")
    figures = _Figures(output.parent)
    sections: list[str] = []
    made: dict[str, str] = {}

    def missing(text: str) -> str:
        return f'<p class="missing">{html.escape(text)}</p>'

    # -- steps of the pipeline
    if run_summary:
        rows = [[step["step"], step["status"], f"{step['seconds']:.1f}", step.get("result", "")] for step in run_summary["steps"]]
        sections.append(f"<h2>Pipeline</h2><p class='meta'>{run_summary['seconds']:.0f} s in the last `dasd run`</p>"
                        + _table(["step", "status", "seconds", "result"], rows))

    # -- evaluation
    evals = sorted(summaries.get("eval", []), key=lambda item: _eval_order(item[0], run_dir))
    if evals:
        rows = []
        for path, payload in evals:
            for benchmark, metrics in payload.get("benchmarks", {}).items():
                pass_at = metrics.get("pass_at_k") or {}
                best = max(pass_at, key=int) if pass_at else None
                rows.append([_label(path, run_dir), benchmark, metrics.get("questions"), metrics.get("n"),
                             f"{_percent(metrics.get('avg_at_k'))} ± {_percent(metrics.get('standard_error'))}",
                             f"{_percent(pass_at[best])} (k={best})" if best else "-",
                             _percent(metrics.get("truncation_rate")), f"{metrics.get('mean_completion_tokens', 0):.0f}",
                             "" if metrics.get("complete", True) else "incomplete"])
        sections.append("<h2>Evaluation</h2>" + _table(
            ["model", "benchmark", "questions", "k", "avg@k % ± s.e.", "pass@k %", "truncated %", "mean tokens", ""], rows)
            + "<p class='note'>avg@k: mean accuracy over k samples per question; ± one standard error over questions. "
              "pass@k: the unbiased estimator.</p>")
    else:
        sections.append("<h2>Evaluation</h2>" + missing("no `dasd eval` output in this folder"))

    # -- Figure 3a: response probability per temperature
    responses: dict[float, list[float]] = defaultdict(list)
    finish: dict[float, Counter] = defaultdict(Counter)
    for _, payload in summaries.get("sample", []):
        for record in _records(Path(payload["output"]), config.max_records):
            temperature = float(record.get("temperature", float("nan")))
            finish[temperature][record.get("finish_reason", "?")] += 1
            value = _mean_token_logprob(record)
            if value is not None:
                responses[temperature].append(value)
    if responses:
        made["response_probability"] = str(figure_probability_density(figures, responses))
        rows = [[f"{t:g}", len(v), f"{statistics.fmean(v):.4f}", f"{statistics.median(v):.4f}",
                 ", ".join(f"{k} {n}" for k, n in finish[t].most_common())] for t, v in sorted(responses.items())]
        sections.append("<h2>Teacher responses by temperature (Figure 3a)</h2>" + _embed(Path(made["response_probability"]))
                        + _table(["temperature", "responses", "mean log-prob/token", "median", "finish reasons"], rows)
                        + "<p class='note'>Lower temperatures concentrate on the teacher's high-probability modes; "
                          "higher ones reach its tail (log-probs are raw, i.e. under temperature 1).</p>")
    else:
        sections.append("<h2>Teacher responses by temperature (Figure 3a)</h2>" + missing("no sampled responses with log-probs"))

    # -- Figure 3b: training loss per stage
    branches: dict[str, list[tuple[str, list[tuple[int, float]]]]] = {}
    train_rows = []
    for path, payload in summaries.get("train", []):
        stages = []
        for stage in payload.get("stages", []):
            history_path = path.parent / stage["stage"] / "log_history.json"
            history = json.loads(history_path.read_text()) if history_path.exists() else []
            points = [(entry["step"], entry["loss"]) for entry in history if "loss" in entry and "step" in entry]
            stages.append((stage["stage"], points))
            metrics_path = path.parent / stage["stage"] / "metrics.json"
            if stage.get("skipped") and metrics_path.exists():  # finished by an earlier call of `dasd train`
                stage = {**json.loads(metrics_path.read_text()), "skipped": False}
            if not stage.get("skipped"):
                train_rows.append([_label(path, run_dir), stage["stage"], stage.get("samples"), stage.get("optimizer_steps"),
                                   _fmt(stage.get("first_loss")), _fmt(stage.get("final_loss")), stage.get("seconds")])
        if any(points for _, points in stages):
            branches[_label(path, run_dir)] = stages
    if branches:
        made["training_loss"] = str(figure_training_loss(figures, branches))
        sections.append("<h2>Training loss per stage (Figure 3b)</h2>" + _embed(Path(made["training_loss"]))
                        + _table(["run", "stage", "samples", "optimizer steps", "first loss", "final loss", "seconds"], train_rows))
    else:
        sections.append("<h2>Training loss per stage (Figure 3b)</h2>" + missing("no `dasd train` output with a loss history"))

    # -- sentence types and selection
    per_temperature: dict[float, Counter] = defaultdict(Counter)
    for _, payload in summaries.get("score", []):
        for record in _records(Path(payload["output"]), config.max_records):
            das = record.get("das") or {}
            counts = per_temperature[float(record.get("temperature", float("nan")))]
            counts["responses"] += 1
            for kind in ("teacher", "student", "shared"):
                counts[kind] += das.get(kind, 0)
    selections: dict[str, Counter] = {}
    for path, payload in summaries.get("select", []):
        counts = Counter()
        for record in _records(Path(payload["output"]), config.max_records):
            das = record.get("das") or {}
            counts["responses"] += 1
            for kind in ("teacher", "student", "shared"):
                counts[kind] += das.get(kind, 0)
        name = {"count": "DAS", "random": "RS"}.get(payload.get("strategy"), payload.get("strategy", "?"))
        selections[f"{name} ({Path(payload['output']).stem})" if name in selections else name] = counts
    if per_temperature:
        made["sentence_types"] = str(figure_sentence_types(figures, per_temperature, selections))
        rows = [[f"T={t:g}", c["responses"], c["teacher"], c["student"], c["shared"], _share(c)] for t, c in sorted(per_temperature.items())]
        rows += [[name, c["responses"], c["teacher"], c["student"], c["shared"], _share(c)] for name, c in selections.items()]
        sections.append("<h2>Sentence types and selection</h2>" + _embed(Path(made["sentence_types"]))
                        + _table(["set", "responses", "teacher sentences", "student sentences", "shared", "teacher share %"], rows)
                        + "<p class='note'>teacher sentence: the teacher is much more confident than the student; student sentence: "
                          "the reverse; shared: both agree. DAS keeps the responses richest in teacher sentences, RS picks at random "
                          "with the same budget.</p>")
    else:
        sections.append("<h2>Sentence types and selection</h2>" + missing("no `dasd score` output"))

    # -- filtering
    filters = summaries.get("filter", [])
    if filters:
        rows = []
        for path, payload in filters:
            reasons = payload.get("reasons") or {}
            rows.append([_label(path, run_dir), payload.get("records"), payload.get("kept"), payload.get("rejected"),
                         ", ".join(f"{k} {v}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1])) or "-"])
        sections.append("<h2>Quality filtering</h2>" + _table(["output", "records", "kept", "rejected", "reasons"], rows))

    # -- Figure 7: cut-off ratio
    mixes = summaries.get("mix", [])
    if mixes:
        parts = []
        for path, payload in mixes:
            points = list(_records(sidecar(payload["output"], "cutoff", ".jsonl"), config.max_records))
            factor = _mix_factor(Path(payload["output"]))
            row = [[payload.get("rollouts"), payload.get("truncated"), payload.get("cut"), payload.get("continued"), payload.get("kept"),
                    payload.get("off_policy"), ", ".join(f"{k} {v}" for k, v in (payload.get("drop_reasons") or {}).items()) or "-"]]
            parts.append(_table(["rollouts", "cut off at the cap", "cut at a sentence", "continued by the teacher", "kept", "off-policy", "dropped"], row))
            if points:
                made["cutoff_ratio"] = str(figure_cutoff(figures, points, factor))
                parts.insert(0, _embed(Path(made["cutoff_ratio"])))
        sections.append("<h2>Mixed-policy distillation: cut-off ratio (Figure 7)</h2>" + "".join(parts)
                        + f"<p class='note'>Student rollouts are capped at {factor:g}× the teacher's length; those that reach the cap "
                          "are cut at a sentence boundary and continued by the teacher.</p>")
    else:
        sections.append("<h2>Mixed-policy distillation: cut-off ratio (Figure 7)</h2>" + missing("no `dasd mix` output"))

    # -- provenance (Figures 5 and 6)
    for path, payload in summaries.get("provenance", []):
        parts = []
        for name in ("positions", "example"):
            figure = path.parent / f"{name}.png"
            if figure.exists():
                parts.append(_embed(figure))
                made[f"{_label(path, run_dir)}/{name}"] = str(figure)
        rows = [[kind, _percent(payload["share"]["correct"].get(kind)), _percent(payload["share"]["incorrect"].get(kind)),
                 "-" if payload["delta"].get(kind) is None else f"{payload['delta'][kind]:+.3f}"] for kind in ("teacher", "student", "shared", "boosted")]
        responses = payload["responses"]
        sections.append(f"<h2>Sentence provenance: {html.escape(_label(path, run_dir))} (Figures 5 and 6)</h2>"
                        f"<p class='meta'>{responses['analysed']} answers ({responses['correct']} correct), alpha {payload['alpha']}, "
                        f"beta {payload['beta']}, {payload['positions_used']} positions with ≥ {payload['min_samples']} answers in each group</p>"
                        + _table(["class", "share in correct %", "share in incorrect %", "Δ (correct − incorrect)"], rows) + "".join(parts))

    title = config.title or f"dasd report — {run_dir.resolve().name}"
    page = (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><p class='meta'>{html.escape(str(run_dir))} · written {time.strftime('%Y-%m-%d %H:%M')}</p>"
            + "".join(sections) + "</body></html>")
    write_json_atomic(output, page)
    return {"stage": "report", "output": str(output), "figures": made, "sections": len(sections)}


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
    from .run import EVAL_MODELS

    label = _label(path, run_dir)
    name = Path(label).name
    return (EVAL_MODELS.index(name) if name in EVAL_MODELS else len(EVAL_MODELS), label)


def run(config: ReportConfig) -> dict[str, Any]:
    import sys

    result = build(config)
    print(f"dasd report: wrote {result['output']} ({len(result['figures'])} figures)", file=sys.stderr)
    return result
