"""The cost table against a finished run: estimated vs actual records, tokens and disk per step.

    .venv/bin/python benchmarks/cost_check.py runs/demo            # after `make demo`

Two estimates per step: **bound**, from the config alone (the summaries are hidden: `cost.pilot` is an empty
folder), and **measured**, from the run's own summaries (what `dry_run` prints on a finished run — its records
and tokens are the run's by construction, so its disk column tests the bytes-per-token figures) or, with
`--pilot DIR`, from a smaller run's summaries (an out-of-sample check of the per-record averages):

    .venv/bin/python benchmarks/cost_check.py runs/demo --pilot runs/pilot    # a reduced `dasd demo` as the pilot
Actual: records and tokens from each step's summary, disk from `du` of the step's outputs (`Step.outputs`).
Ratios are estimate / actual.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from dasd.config import load_config  # noqa: E402
from dasd.naming import summary_file  # noqa: E402
from dasd.pipeline.config import PipelineConfig  # noqa: E402
from dasd.pipeline.cost import estimate  # noqa: E402
from dasd.pipeline.plan import plan  # noqa: E402
from dasd.stages import STAGES  # noqa: E402


def resolved(steps) -> dict:
    """Each step's config as its stage validates it (what `dasd run`'s jobs hold)."""
    return {
        step.name: STAGES[step.stage].load()[1].model_validate(step.config).model_dump(mode="json") for step in steps
    }


def actual(step, trained: set) -> dict:
    """Records out, tokens out and bytes on disk of a finished step, from its summary and `du` (`trained`: the
    (folder, stage) pairs earlier train steps made, which `dasd train` skips)."""
    output = step.config.get("output") or step.config.get("output_dir")
    summary = {}
    if output and (path := summary_file(output, step.stage)).exists():
        summary = json.loads(path.read_text())
    records = tokens = None
    if step.stage == "sample":
        records, tokens = summary.get("responses_written"), summary.get("completion_tokens")
    elif step.stage == "score":
        records = summary.get("records_scored", 0) + summary.get("unscored_unfinished", 0)
        tokens = summary.get("student_tokens_scored")
    elif step.stage == "filter":
        records = summary.get("kept")
    elif step.stage == "select":
        records = summary.get("selected")
    elif step.stage == "build-sft":
        records = summary.get("records")
    elif step.stage == "mix":
        records = summary.get("kept", 0) + summary.get("off_policy", 0) if summary else None
    elif step.stage == "eval":
        benchmarks = summary.get("benchmarks", {}).values()
        records = sum(b["samples"] for b in benchmarks) or None
        tokens = sum(b["samples"] * (b.get("mean_completion_tokens") or 0) for b in benchmarks) or None
    elif step.stage == "train":
        path = Path(step.config["output_dir"]) / "train.summary.json"
        stages = json.loads(path.read_text())["stages"] if path.exists() else []
        names = {stage["name"] for stage in step.config["stages"]} - {
            name for folder, name in trained if folder == path.parent
        }
        trained |= {(path.parent, name) for name in names}
        tokens = sum(s["tokens_per_epoch"] * s["epochs"] for s in stages if s["stage"] in names) or None
    disk = 0
    for path in step.outputs:
        if Path(path).exists():
            disk += int(subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True).stdout.split()[0])
    return {"records": records, "tokens": tokens, "disk": disk}


def ratio(estimated, measured) -> str:
    return f"{estimated / measured:.2f}" if estimated and measured else "—"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workdir", type=Path)
    parser.add_argument(
        "--pilot", type=Path, help="price the middle column from this smaller run's summaries instead of the run's own"
    )
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    pipeline = args.workdir / "pipeline.yaml"
    config = load_config(PipelineConfig, str(pipeline), [f"workdir={args.workdir}"])
    steps = plan(config)
    with tempfile.TemporaryDirectory() as empty:
        hidden = load_config(PipelineConfig, str(pipeline), [f"workdir={args.workdir}", f"cost.pilot={empty}"])
        bound, _ = estimate(hidden, plan(hidden), resolved(steps))
    if args.pilot:
        config = load_config(PipelineConfig, str(pipeline), [f"workdir={args.workdir}", f"cost.pilot={args.pilot}"])
    measured, _ = estimate(config, steps, resolved(steps))
    print(
        f"{'step':18} {'records: bound/meas./actual':30} {'tokens out: bound/meas./actual':34} "
        f"{'disk kB: bound/meas./actual':30} ratios meas./actual (records, tokens, disk)"
    )
    trained: set = set()
    for step, b, m in zip(steps, bound, measured, strict=True):
        a = actual(step, trained)
        disk_b, disk_m = sum(s for _, s in b.disk), sum(s for _, s in m.disk)
        tokens_b = b.tokens_out if b.tokens_out is not None else b.tokens_in
        tokens_m = m.tokens_out if m.tokens_out is not None else m.tokens_in

        def cell(*values):
            return "/".join("—" if v is None else f"{v:,.0f}" for v in values)

        print(
            f"{step.name:18} {cell(b.records_out, m.records_out, a['records']):30} "
            f"{cell(tokens_b, tokens_m, a['tokens']):34} "
            f"{cell(disk_b / 1e3, disk_m / 1e3, a['disk'] / 1e3):30} "
            f"{ratio(m.records_out, a['records'])}, {ratio(tokens_m, a['tokens'])}, {ratio(disk_m, a['disk'])}"
        )


if __name__ == "__main__":
    main()
