"""Every figure dasd draws (matplotlib, Agg), with one palette for the sentence classes.

Each function takes the data and a PNG path, writes the PNG and returns the path:

* stage outputs — `plot_loss_curve` (`dasd train`, per stage), `plot_cutoff` (`dasd mix`, the
  report's Figure 7), `plot_provenance_example` / `plot_provenance_positions` (`dasd provenance`,
  Figures 5 and 6);
* the run report (`dasd report`) — `plot_response_probability` (Figure 3a), `plot_training_loss`
  (Figure 3b, stages back to back), `plot_sentence_types`.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from ..data.records import PROVENANCE_CLASSES

# One colour per sentence class, in every figure and on every page.
CLASS_COLOURS = {"teacher": "#4c72b0", "student": "#dd8452", "shared": "#8c8c8c", "boosted": "#55a868"}
MODEL_COLOURS = {"teacher": "#1f3f73", "student": "#a0522d", "distilled": "#222222"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: Path) -> Path:
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def plot_loss_curve(log_history: list[dict[str, Any]], path: Path, title: str) -> Path:
    plt = _pyplot()

    points = [(entry["step"], entry["loss"]) for entry in log_history if "loss" in entry and "step" in entry]
    figure, axis = plt.subplots(figsize=(6, 3.5), dpi=110)
    if points:
        steps, losses = zip(*points)
        axis.plot(steps, losses, marker="o" if len(points) < 40 else None, linewidth=1.5)
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("training loss")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    return _save(figure, path)


def plot_cutoff(points: list[dict[str, Any]], path: Path, factor: float) -> Path:
    plt = _pyplot()

    figure, axis = plt.subplots(figsize=(6, 3.8), dpi=110)
    for truncated, colour, label in ((False, "#4c72b0", "finished"), (True, "#dd8452", "cut off at the cap")):
        xs = [p["teacher_tokens"] for p in points if p["truncated"] is truncated]
        ys = [p["ratio"] for p in points if p["truncated"] is truncated]
        axis.scatter(xs, ys, s=12, alpha=0.7, color=colour, label=f"{label} ({len(xs)})")
    axis.axhline(factor, color="grey", linestyle="--", linewidth=1)
    axis.set_xlabel("teacher response length (student tokens)")
    axis.set_ylabel("student length / teacher length")
    axis.set_title("student rollouts against the teacher's length")
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    return _save(figure, path)


def plot_provenance_example(response: dict[str, Any], path: Path) -> Path:
    plt = _pyplot()
    from matplotlib.patches import Patch

    sentences = response["sentences"]
    xs = list(range(1, len(sentences) + 1))
    figure, axis = plt.subplots(figsize=(max(6.4, 0.32 * len(xs) + 2), 3.8), dpi=110)
    for x, sentence in zip(xs, sentences):
        axis.axvspan(x - 0.5, x + 0.5, color=CLASS_COLOURS[sentence["type"]], alpha=0.28, linewidth=0)
    for role, style in (("teacher", "-"), ("student", "--"), ("distilled", "-.")):
        axis.plot(
            xs,
            [math.exp(s[f"{role}_logprob"]) for s in sentences],
            style,
            marker="o",
            markersize=3,
            linewidth=1.4,
            label=f"p_{role[0].upper()} ({role})",
            color=MODEL_COLOURS[role],
        )
    handles, labels = axis.get_legend_handles_labels()
    handles += [Patch(color=CLASS_COLOURS[kind], alpha=0.4) for kind in PROVENANCE_CLASSES]
    labels += [f"{kind} sentence" for kind in PROVENANCE_CLASSES]
    axis.legend(handles, labels, fontsize=7, ncol=2, loc="lower left")
    axis.set_ylim(-0.02, 1.05)
    axis.set_xlabel("sentence")
    axis.set_ylabel("sentence probability (geometric mean)")
    axis.set_title(f"{response['id']} ({'correct' if response['correct'] else 'incorrect'})", fontsize=10)
    axis.grid(alpha=0.3)
    return _save(figure, path)


def plot_provenance_positions(analysis: dict[str, Any], path: Path, min_samples: int) -> Path:
    plt = _pyplot()

    figure, axes = plt.subplots(2, 2, figsize=(9, 6), dpi=110, sharex=True)
    positions = [p + 1 for p in analysis["positions"]]
    for axis, kind in zip(axes.flat, PROVENANCE_CLASSES):
        if positions:
            axis.plot(
                positions,
                analysis["fractions"]["correct"][kind],
                color=CLASS_COLOURS[kind],
                linewidth=1.6,
                label="correct",
            )
            axis.plot(
                positions,
                analysis["fractions"]["incorrect"][kind],
                color=CLASS_COLOURS[kind],
                linewidth=1.6,
                linestyle="--",
                label="incorrect",
            )
            axis.fill_between(
                positions,
                analysis["fractions"]["correct"][kind],
                analysis["fractions"]["incorrect"][kind],
                color=CLASS_COLOURS[kind],
                alpha=0.15,
            )
        delta = analysis["delta"][kind]
        axis.set_title(
            f"{kind} sentences  (Δ = {delta:+.3f})" if delta is not None else f"{kind} sentences", fontsize=10
        )
        axis.set_ylabel("fraction at this position")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    for axis in axes[1]:
        axis.set_xlabel("sentence position")
    figure.suptitle(
        "sentence classes by position, correct vs incorrect answers (positions with ≥ "
        f"{min_samples} answers in each group)",
        fontsize=10,
    )
    return _save(figure, path)


def plot_response_probability(path: Path, responses: dict[float, list[float]]) -> Path:
    plt = _pyplot()
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
        axis.hist(
            shown,
            bins=bins,
            density=True,
            histtype="step",
            linewidth=1.5,
            color=colour,
            label=f"T={temperature:g}  (n={len(values)}, mean {statistics.fmean(values):.3f})",
        )
    axis.set_xlabel("mean log-probability per token under the teacher (raw, T=1)")
    axis.set_ylabel("density")
    axis.set_title("teacher response probability by sampling temperature")
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    return _save(figure, path)


def plot_training_loss(path: Path, branches: dict[str, list[tuple[str, list[tuple[int, float]]]]]) -> Path:
    plt = _pyplot()
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
    return _save(figure, path)


def plot_sentence_types(path: Path, per_temperature: dict[float, Counter], selections: dict[str, Counter]) -> Path:
    plt = _pyplot()
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
            axis.bar(names, heights, bottom=bottoms, color=CLASS_COLOURS[kind], label=kind)
            bottoms = [b + h for b, h in zip(bottoms, heights)]
        axis.set_title(title, fontsize=10)
        axis.set_ylabel("sentences per response")
        axis.grid(alpha=0.3, axis="y")
        axis.legend(fontsize=8)
    return _save(figure, path)
