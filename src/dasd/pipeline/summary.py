"""What `dasd run` shows and keeps at the end: each step's row, the evaluated models, the arms and the claims.

    summary = {"workdir": ..., "seconds": ..., "steps": rows, "eval": collect_evals(work), **collect_ablation(config)}
    print(render_table(summary))

The same summary is written as `<workdir>/run.summary.json` (the report reads it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..naming import EVAL_MODELS, EVAL_SUMMARY, eval_dir, seed_dir
from ..reporting.ablation import arm_results, claim_results, claims_table
from .config import PipelineConfig

# The number in a step's row that says the stage did its work, by stage: a count of its summary (select's row also
# says of how many and by what rule)…
HEADLINE_COUNTS = {
    "sample": "responses_written",
    "score": "records_scored",
    "filter": "kept",
    "build-sft": "records",
    "mix": "kept",
}


def headline(stage: str, result: dict[str, Any]) -> str:
    """The `result` cell of a step that ran: what its stage's `run()` returned, read by that stage's fields (the
    step's `stage`: `dasd train` returns `{"stages": …}` without one). Empty when the stage ran elsewhere.

    >>> headline("select", {"stage": "select", "selected": 12, "candidates": 40, "strategy": "count"})
    'selected 12 of 40 (count)'
    >>> headline("select", {"selected": 8, "candidates": 32, "strategy": "oracle", "draws": [0, 1]})
    'selected 8 of 32 (oracle, draws 0, 1)'
    >>> headline("train", {"stages": [{"stage": "low_temp", "first_loss": 1.234, "final_loss": 0.5}]})
    'low_temp loss 1.23→0.50'
    >>> headline("train", {"stages": [{"stage": "low_temp", "first_loss": 1.234, "final_loss": 0.5,
    ...                                "optimizer_steps": 12, "peak_learning_rate": 5e-05}]})
    'low_temp loss 1.23→0.50 (12 steps, peak lr 5e-05)'
    """
    if stage == "select" and "selected" in result:  # of how many, by what rule: arms differ only in these
        how = [result["strategy"]] if "strategy" in result else []
        if result.get("draws") is not None:
            how.append(f"draws {', '.join(map(str, result['draws']))}")
        of = f" of {result['candidates']}" if "candidates" in result else ""
        return f"selected {result['selected']}{of}" + (f" ({', '.join(how)})" if how else "")
    if stage in HEADLINE_COUNTS:
        key = HEADLINE_COUNTS[stage]
        return f"{key.replace('_', ' ')} {result[key]}" if key in result else ""
    if stage == "train":  # …or the loss of each stage trained now, over how many steps at what peak rate
        return ", ".join(
            f"{s['stage']} loss {s['first_loss']:.2f}→{s['final_loss']:.2f}{_steps(s)}"
            for s in result.get("stages", [])
            if not s.get("skipped") and s.get("final_loss") is not None
        )
    if stage == "provenance":
        delta = result.get("delta") or {}
        return ", ".join(f"Δ {kind} {value:+.3f}" for kind, value in delta.items() if value is not None)
    if stage == "eval":
        return ", ".join(
            f"{b} {100 * m['avg_at_k']:.1f}" for b, m in result.get("benchmarks", {}).items() if "avg_at_k" in m
        )
    return ""


def _steps(stage: dict[str, Any]) -> str:
    """` (12 steps, peak lr 5e-05)`: a training stage's optimizer steps and the highest learning rate they ran at
    (a stage trained before dasd recorded them shows what it has)."""
    parts = []
    if stage.get("optimizer_steps") is not None:
        parts.append(f"{stage['optimizer_steps']} steps")
    if stage.get("peak_learning_rate") is not None:
        parts.append(f"peak lr {stage['peak_learning_rate']:.2g}")
    return f" ({', '.join(parts)})" if parts else ""


def collect_ablation(config: PipelineConfig) -> dict[str, Any]:
    """The arms' results over seeds and the claims' paired comparisons (empty without arms and claims)."""
    if not config.arms and not config.claims:
        return {}
    work = Path(config.workdir)
    seed_runs = {arm: {seed: seed_dir(work, arm, seed) / "eval" for seed in config.seeds} for arm in config.arms}
    model_runs = {arm: {str(seed): run for seed, run in runs.items()} for arm, runs in seed_runs.items()}
    for label in EVAL_MODELS:
        model_runs.setdefault(label, {"-": eval_dir(work, label)})
    return {
        "seeds": list(config.seeds),
        "arms": {
            arm: {
                "description": config.arms[arm].description,
                "after": getattr(config.arms[arm], "after", None),  # a continuing arm's start
                "benchmarks": values,
            }
            for arm, values in arm_results(seed_runs).items()
        },
        "claims": claim_results([claim.model_dump() for claim in config.claims], model_runs),
    }


def collect_evals(work: Path) -> dict[str, dict]:
    evals = {}
    for label in EVAL_MODELS:
        path = eval_dir(work, label) / EVAL_SUMMARY
        if path.exists():
            evals[label] = json.loads(path.read_text())["benchmarks"]
    return evals


def render_table(summary: dict[str, Any]) -> str:
    lines = [
        f"dasd run -> {summary['workdir']}  ({summary['seconds']:.0f} s)",
        "",
        f"{'step':22} {'status':34} {'seconds':>8}  result",
        "-" * 96,
    ]
    for item in summary["steps"]:
        lines.append(f"{item['step']:22} {item['status'][:34]:34} {item['seconds']:8.1f}  {item.get('result', '')}")
        if item.get("moved_aside"):
            lines.append(f"{'':22} (its stale outputs were moved to {item['moved_aside']})")
    if summary["eval"]:
        benchmarks = sorted({name for values in summary["eval"].values() for name in values})
        lines += [
            "",
            f"{'model':16} " + " ".join(f"{name[:22]:>24}" for name in benchmarks),
            "-" * (17 + 25 * len(benchmarks)),
        ]
        for label, values in summary["eval"].items():
            cells = [
                f"{100 * values[name]['avg_at_k']:6.2f} ± {100 * values[name]['standard_error']:5.2f} "
                f"(k={values[name]['n']})"
                if name in values
                else "-"
                for name in benchmarks
            ]
            lines.append(f"{label:16} " + " ".join(f"{cell:>24}" for cell in cells))
        lines.append("(avg@k in %, ± one standard error)")
    if summary.get("arms"):
        lines += ["", f"{'arm':20} {'benchmark':18} {'mean':>7}  per seed", "-" * 80]
        for arm, info in summary["arms"].items():
            for benchmark, values in info["benchmarks"].items():
                per_seed = ", ".join(f"s{seed} {100 * value:.2f}" for seed, value in values["per_seed"].items())
                lines.append(f"{arm[:20]:20} {benchmark[:18]:18} {100 * values['mean']:7.2f}  {per_seed}")
        lines.append("(avg@k in %, mean over the training seeds)")
    if summary.get("claims"):
        lines += [""] + claims_table(summary["claims"])
    return "\n".join(lines)
