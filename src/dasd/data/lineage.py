"""The stages that made a record file, read back from the files each stage writes beside its output.

    steps = lineage("runs/x/select/das.jsonl")   # [select, score, sample]: newest first

Every stage writes `<name>.config.yaml` (its resolved config, which names its `input`) and `<name>.summary.json`
beside its output (`dasd.naming.sidecar`); `lineage` follows the `input` links from a file back to the questions.
The cards (`dasd.reporting.cards`) are made from what it finds — never from what the user says they did.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from typing_extensions import TypedDict

from ..naming import outputs_describing, sidecar
from .io import read_summary
from .summaries import StageSummary


class LineageStep(TypedDict):
    stage: str  # the summary's stage; "?" when the stage wrote no summary
    file: str
    config: dict[str, Any]
    summary: StageSummary | dict[str, Any]  # {} when the stage wrote no summary


def _sidecars(path: Path) -> tuple[Path, Path] | None:
    """(`<name>.config.yaml`, `<name>.summary.json`) of the stage output that describes `path`: the file itself, or
    the output a file beside it belongs to (`sft.low_temp.jsonl`: build-sft writes one config for all its files).

    >>> _sidecars(Path("/nonexistent/scored.jsonl")) is None
    True
    """
    for output in outputs_describing(path):
        config = sidecar(output, "config", ".yaml")
        if config.exists():
            return config, sidecar(output, "summary", ".json")
    return None


def resolve_recorded(reference: str, near: Path) -> Path | None:
    """A path a config recorded (relative to where that command ran): as is, or below an ancestor of `near`."""
    candidate = Path(reference)
    if candidate.exists():
        return candidate
    for ancestor in near.resolve().parents:
        if (ancestor / reference).exists():
            return ancestor / reference
    return None


def lineage(path: str | Path) -> list[LineageStep]:
    """The stages behind a record file, newest first: `[{stage, file, config, summary}]`."""
    import yaml

    steps: list[LineageStep] = []
    current: Path | None = Path(path)
    seen: set[Path] = set()
    while current is not None and current.resolve() not in seen:
        seen.add(current.resolve())
        sidecars = _sidecars(current)
        if sidecars is None:
            break
        config = yaml.safe_load(sidecars[0].read_text()) or {}
        summary = read_summary(sidecars[1]) or {}
        steps.append({"stage": summary.get("stage", "?"), "file": str(current), "config": config, "summary": summary})
        reference = config.get("input")
        current = resolve_recorded(str(reference), current) if reference else None
    return steps
