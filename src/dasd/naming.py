"""Names that several stages must agree on: training stages, SFT file names, evaluated models.

    stage_for_temperature(0.6, low_temperature_max=0.8)   # 'low_temp'
    sft_stage_file("runs/x/sft/sft.jsonl", "high_temp")    # Path('runs/x/sft/sft.high_temp.jsonl')

`dasd build-sft` writes one SFT file per training stage beside its output, `dasd train` and
`dasd run` read them by the same names, `dasd mix` tags its records `mixed_policy`, and `dasd run`
and `dasd report` list the evaluated models in the same order.
"""

from __future__ import annotations

import os
from pathlib import Path

# Temperature-scheduled SFT (the report's two stages), then mixed-policy distillation.
LOW_TEMP_STAGE = "low_temp"
HIGH_TEMP_STAGE = "high_temp"
MIXED_POLICY_STAGE = "mixed_policy"
SFT_STAGES = (LOW_TEMP_STAGE, HIGH_TEMP_STAGE)

# The models `dasd run` evaluates, in table order: the student before training, after each stage of
# the DAS branch, the RS-trained baseline after stage 2, and the teacher.
EVAL_MODELS = ("student", LOW_TEMP_STAGE, HIGH_TEMP_STAGE, MIXED_POLICY_STAGE, f"rs_{HIGH_TEMP_STAGE}", "teacher")


def stage_for_temperature(temperature: float, *, low_temperature_max: float) -> str:
    """The SFT stage of a response sampled at `temperature`.

    >>> stage_for_temperature(0.6, low_temperature_max=0.8), stage_for_temperature(1.0, low_temperature_max=0.8)
    ('low_temp', 'high_temp')
    """
    return LOW_TEMP_STAGE if float(temperature) <= low_temperature_max else HIGH_TEMP_STAGE


def sft_stage_file(sft_output: str | os.PathLike, stage: str) -> Path:
    """Where `dasd build-sft` writes one stage's records, beside its `output`.

    >>> str(sft_stage_file("runs/x/sft/sft.jsonl", "low_temp"))
    'runs/x/sft/sft.low_temp.jsonl'
    """
    path = Path(sft_output)
    stem = path.name[: -len(".jsonl")] if path.name.endswith(".jsonl") else path.stem
    return path.with_name(f"{stem}.{stage}.jsonl")
