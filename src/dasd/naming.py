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


# --- the run folder of `dasd run` (built here, and parsed by the same rules) -----------------------------------
# <workdir>/<step kind>/…        sample, score, filter, select, sft, train, mix, eval, provenance
# <workdir>/train/<branch>/<stage>/final/dasd_stage.json      a finished training stage
# <workdir>/eval/<model label>/summary.json                   an evaluated model
# <workdir>/arms/<arm>/seed<seed>/…                           ablation arms
# <workdir>/.dasd/<step>.json                                 each step's marker (fingerprint, status)

STATE_DIR = ".dasd"
STALE_DIR = "stale"  # where `dasd run rerun=stale` moves a stale step's outputs: <workdir>/stale/<step>-<fingerprint>/
RUN_SUMMARY = "run.summary.json"
STAGE_MARKER = "dasd_stage.json"  # in a trained stage's final/: its metrics, written last
EVAL_SUMMARY = "summary.json"  # in an eval folder


def final_dir(train_dir: str | os.PathLike, stage: str) -> Path:
    """Where `dasd train` leaves a stage's weights.

    >>> str(final_dir("runs/x/train/das", "high_temp"))
    'runs/x/train/das/high_temp/final'
    """
    return Path(train_dir) / stage / "final"


def train_dir_of(final: str | os.PathLike) -> Path:
    """The training run folder (`output_dir`) a stage's `final/` belongs to: `final_dir` read backwards.

    >>> str(train_dir_of("runs/x/train/das/high_temp/final"))
    'runs/x/train/das'
    """
    return Path(final).parent.parent


def is_final_dir(path: str | os.PathLike) -> bool:
    """Whether `path` names a training stage's `final/` folder (what later stages start from).

    >>> is_final_dir("runs/x/train/das/low_temp/final"), is_final_dir("Qwen/Qwen3-4B")
    (True, False)
    """
    return Path(path).name == "final"


def eval_dir(workdir: str | os.PathLike, label: str) -> Path:
    """A model's evaluation folder in a run.

    >>> str(eval_dir("runs/x", "teacher"))
    'runs/x/eval/teacher'
    """
    return Path(workdir) / "eval" / label


def arm_dir(workdir: str | os.PathLike, arm: str) -> Path:
    """An ablation arm's folder; its trainings are `seed<N>/` inside.

    >>> str(arm_dir("runs/x", "recipe"))
    'runs/x/arms/recipe'
    """
    return Path(workdir) / "arms" / arm


def seed_dir(workdir: str | os.PathLike, arm: str, seed: int) -> Path:
    """One training seed of an arm.

    >>> str(seed_dir("runs/x", "recipe", 2))
    'runs/x/arms/recipe/seed2'
    """
    return arm_dir(workdir, arm) / f"seed{seed}"


class RunLayout:
    """Every path of a `dasd run` workdir, in one place (`dasd.pipeline` plans with it; `dasd report` reads by it).

    >>> run = RunLayout("runs/x", record_format="parquet")
    >>> str(run.record("filter")), str(run.select("das")), str(run.sft("rs")), str(run.final("das", "high_temp"))
    ('runs/x/filter/filtered.parquet', 'runs/x/select/das.parquet', 'runs/x/sft/rs/sft.jsonl', \
'runs/x/train/das/high_temp/final')
    >>> str(run.seed("rs", 2)), str(run.arm_select("rs", 2)), str(run.arm_sft("oracle")), str(run.seed_eval("rs", 2))
    ('runs/x/arms/rs/seed2', 'runs/x/arms/rs/seed2/select.parquet', 'runs/x/arms/oracle/sft/sft.jsonl', \
'runs/x/arms/rs/seed2/eval')
    """

    RECORD_FILES = {"sample": "responses", "score": "scored", "filter": "filtered"}

    def __init__(self, workdir: str | os.PathLike, *, record_format: str = "jsonl") -> None:
        self.work = Path(workdir)
        self.ext = record_format

    def record(self, step: str) -> Path:
        """The record file of a big record step (sample, score, filter), in the run's record format."""
        return self.work / step / f"{self.RECORD_FILES[step]}.{self.ext}"

    def select(self, branch: str) -> Path:
        return self.work / "select" / f"{branch}.{self.ext}"

    def sft(self, branch: str) -> Path:
        return self.work / "sft" / branch / "sft.jsonl"

    def train(self, branch: str) -> Path:
        return self.work / "train" / branch

    def final(self, branch: str, stage: str) -> Path:
        return final_dir(self.train(branch), stage)

    @property
    def mix(self) -> Path:
        return self.work / "mix" / "mixed.jsonl"

    def eval(self, label: str) -> Path:
        return eval_dir(self.work, label)

    @property
    def provenance(self) -> Path:
        return self.work / "provenance"

    @property
    def state(self) -> Path:
        return self.work / STATE_DIR

    @property
    def resolved_config(self) -> Path:
        return self.work / "pipeline.config.yaml"

    @property
    def summary(self) -> Path:
        return self.work / RUN_SUMMARY

    def arm(self, arm: str) -> Path:
        return arm_dir(self.work, arm)

    def seed(self, arm: str, seed: int) -> Path:
        return seed_dir(self.work, arm, seed)

    def _arm_or_seed(self, arm: str, seed: int | None) -> Path:
        return self.arm(arm) if seed is None else self.seed(arm, seed)

    def arm_select(self, arm: str, seed: int | None = None) -> Path:
        """An arm's selection: once for the arm, or (a random selection, redrawn) once per training seed."""
        return self._arm_or_seed(arm, seed) / f"select.{self.ext}"

    def arm_sft(self, arm: str, seed: int | None = None) -> Path:
        return self._arm_or_seed(arm, seed) / "sft" / "sft.jsonl"

    def arm_record(self, arm: str, step: str, seed: int | None = None) -> Path:
        """An arm's own record file of a record step: its rescoring, its student's rollouts and their filtering."""
        name = {"sample": "rollouts"}.get(step) or self.RECORD_FILES[step]
        return self._arm_or_seed(arm, seed) / step / f"{name}.{self.ext}"

    def arm_mix(self, arm: str, seed: int) -> Path:
        return self.seed(arm, seed) / "mix" / "mixed.jsonl"

    def arm_final(self, arm: str, seed: int, stage: str) -> Path:
        return final_dir(self.seed(arm, seed), stage)

    def seed_eval(self, arm: str, seed: int) -> Path:
        return self.seed(arm, seed) / "eval"


def step_marker(state_dir: str | os.PathLike, step: str) -> Path:
    """The marker `dasd run` keeps for a step (the same for the local and the Slurm executor)."""
    return Path(state_dir) / f"{step}.json"


# --- the files a stage writes beside its output (built here, and parsed by the same rule) -----------------------
# <name>.jsonl  →  <name>.config.yaml, <name>.summary.json, <name>.errors.jsonl, <name>.rejected.jsonl, …

RECORD_EXTENSIONS = (".jsonl.gz", ".jsonl", ".json", ".parquet")
TRAIN_SUMMARY = "train.summary.json"  # in `dasd train`'s output_dir


def output_stem(output: str | os.PathLike) -> str:
    """An output's name without its record extension: what its sidecars are named after.

    >>> output_stem("runs/x/responses.jsonl.gz"), output_stem("runs/x/scored.parquet"), output_stem("runs/x/final")
    ('responses', 'scored', 'final')
    """
    name = Path(output).name
    for ext in RECORD_EXTENSIONS:
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def sidecar(output: str | os.PathLike, kind: str, suffix: str) -> Path:
    """A file a stage writes beside its output (errors, config, summary, rejected records, …).

    >>> str(sidecar("runs/x/responses.jsonl", "summary", ".json"))
    'runs/x/responses.summary.json'
    """
    output = Path(output)
    return output.with_name(f"{output_stem(output)}.{kind}{suffix}")


def summary_file(output: str | os.PathLike, stage: str) -> Path:
    """Where a stage keeps its summary: `<name>.summary.json` beside a record output; inside the folder of a stage
    whose output is one (`train.summary.json` in `dasd train`'s output_dir, `summary.json` in `dasd eval`'s and
    `dasd provenance`'s).

    >>> str(summary_file("runs/x/select/das.jsonl", "select")), str(summary_file("runs/x/eval/teacher", "eval"))
    ('runs/x/select/das.summary.json', 'runs/x/eval/teacher/summary.json')
    """
    if stage == "train":
        return Path(output) / TRAIN_SUMMARY
    if stage in ("eval", "provenance"):
        return Path(output) / EVAL_SUMMARY
    return sidecar(output, "summary", ".json")


def outputs_describing(path: str | os.PathLike) -> list[Path]:
    """The stage outputs whose sidecars may describe a record file, itself first: a file written beside an output
    under a longer name (`dasd build-sft`'s per-stage `sft.low_temp.jsonl`) is described by that output's.

    >>> [p.name for p in outputs_describing("runs/x/sft/sft.low_temp.jsonl")]
    ['sft.low_temp.jsonl', 'sft.jsonl']
    """
    path = Path(path)
    stem = output_stem(path)
    ext = path.name[len(stem) :]
    parts = stem.split(".")
    return [path.with_name(".".join(parts[:cut]) + ext) for cut in range(len(parts), 0, -1)]
