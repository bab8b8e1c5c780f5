"""The schema of `dasd run`'s PIPELINE.yaml: the pipeline, its ablation arms and claims, and where it runs.

    config = load_config(PipelineConfig, "configs/gpt-oss-qwen3-4b-run.yaml", ["train.epochs=3"])

`executor:` says where the steps run (`local`, or `slurm` with resources per step: README "Running on a
cluster"). Every stage's own settings stay free-form dicts here (`sample:`, `train:`, …): each becomes that
stage's config, validated by the stage's own class when the plan is checked, before any step runs.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, PrivateAttr, model_validator

from ..backends.base import BackendConfig
from ..config import StageConfig
from ..errors import ConfigError
from ..models.loading import ModelConfig
from ..naming import EVAL_MODELS, RunLayout
from .arms import ArmConfig

SHARDABLE = ("sample", "score", "eval")  # record stages with shard=i/n and a merging run without it
# --time of a job whose step gives no time_min. submitit's own default is 5 minutes (submitit/slurm/slurm.py:
# `_make_sbatch_string(time=5)`), which would kill every such step after 5 minutes and count it as a failure;
# 24 h fits a sample/score/eval shard and most partitions' MaxTime; a partition allowing less refuses the job at
# sbatch (EnforcePartLimits) or keeps it pending (reason PartitionTimeLimit): set time_min for it.
DEFAULT_TIME_MIN = 1440


PUSHABLE = ("responses", "scored", "filtered", "selected", "sft", "mixed", "model")
STEPS = ("sample", "score", "filter", "select", "build_sft", "train", "mix", "train_mixed", "eval", "provenance")


class SlurmResources(StageConfig):
    tasks: int | None = Field(
        None, ge=1, description="shard tasks (sample, score, eval: an N-task job array; other steps: 1)"
    )
    nodes: int | None = Field(None, ge=1, description="nodes of one job (training: accelerate launch on each)")
    gpus_per_node: int | None = Field(None, ge=0, description="GPUs per node (--gpus-per-node)")
    cpus_per_task: int | None = Field(None, ge=1, description="CPUs per task (--cpus-per-task)")
    mem_gb: float | None = Field(None, gt=0, description="memory per node in GB (--mem); default: the cluster's")
    time_min: int | None = Field(
        None,
        ge=1,
        description=f"time limit per job in minutes (--time); default {DEFAULT_TIME_MIN} (24 h), not submitit's 5: "
        "long enough for a shard, within most partitions' MaxTime; set it for longer training or shorter partitions",
    )
    partition: str | None = Field(None, description="partition (--partition)")
    account: str | None = Field(None, description="account (--account)")
    max_parallel: int | None = Field(None, ge=1, description="array tasks running at once (--array=…%N)")
    sbatch: dict[str, Any] = Field(
        default_factory=dict, description="more sbatch options, e.g. {qos: high, constraint: h100, exclusive: true}"
    )
    setup: list[str] | None = Field(
        None, description="shell lines run before each task (module load …, source …/activate, export …)"
    )


class ExecutorConfig(StageConfig):
    name: Literal["local", "slurm"] = Field("local", description="local: here, in order; slurm: jobs on a cluster")
    slurm: SlurmResources = Field(
        default_factory=SlurmResources, description="resources of every job (the steps' entries override them)"
    )
    steps: dict[str, SlurmResources] = Field(
        default_factory=dict,
        description="resources per stage (sample, score, filter, select, build-sft, train, mix, eval, provenance) "
        "or per step name (eval_teacher, recipe.s1.train), the step name winning",
    )
    folder: str | None = Field(
        None, description="job scripts and logs (default: <workdir>/.dasd/slurm); on a filesystem every node sees"
    )
    poll_s: float = Field(10.0, gt=0, description="seconds between two looks at the queue")
    wait: bool = Field(
        True, description="wait for the jobs and print progress; false: submit and return (rerun to collect)"
    )
    accelerate_config: str | None = Field(
        None, description="accelerate config file for multi-GPU training (ZeRO-3/FSDP: configs/accelerate/)"
    )

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value  # `executor: slurm`

    def resources(self, stage: str, step: str) -> SlurmResources:
        """The defaults, then the stage's entry, then the step's."""
        merged = self.slurm.model_dump(exclude_none=True)
        for key in (stage, step):
            if key in self.steps:
                merged.update(self.steps[key].model_dump(exclude_none=True))
        resources = SlurmResources.model_validate(merged)
        if (resources.tasks or 1) > 1 and stage not in SHARDABLE:
            raise ConfigError(f"executor.steps: {step} ({stage}) cannot run as several tasks (only {SHARDABLE})")
        return resources


class ClaimConfig(StageConfig):
    name: str = Field(..., description="the claim, e.g. '0.6 → 1.0 beats 0.6 only'")
    better: str = Field(..., description="the arm (or evaluated model: student, teacher, …) the report finds better")
    worse: str = Field(..., description="the arm or model it is compared with")
    source: str = Field("", description="where the report makes the claim, e.g. 'Table 1'")


class CostSettings(StageConfig):
    """The `cost:` section: what `dry_run`'s cost table (`dasd.pipeline.cost`) cannot read from the config itself."""

    questions: int | None = Field(
        None,
        ge=1,
        description="number of questions, when the questions file is not here to count (or to price another size)",
    )
    response_tokens: dict[float, float] | None = Field(
        None,
        description="expected mean teacher answer length per temperature, e.g. {0.6: 13760, 1.0: 17480}; default: "
        "sample.max_new_tokens (an upper bound); a finished sample step (here or in `pilot`) gives the measured one",
    )
    pilot: str | None = Field(
        None,
        description="workdir of a finished smaller run of the same recipe: its summaries give the measured averages "
        "per record (tokens per response, share kept, answer lengths); default: this run's own workdir",
    )
    train_gpus: int = Field(
        16, ge=1, description="GPUs one training job shards its state over (ZeRO-3): for the memory per GPU"
    )


class PipelineConfig(StageConfig):
    workdir: str = Field(..., description="folder of the run; every stage writes into its own subfolder")
    questions: str = Field(
        ..., description="training questions (`dasd.data.records.Question` records, or the released format)"
    )
    teacher: BackendConfig = Field(..., description="the teacher (sampling and mixed-policy continuations)")
    student: ModelConfig = Field(..., description="the student to distil into")
    eval_benchmarks: list[str] = Field(
        default_factory=lambda: ["aime24", "aime25"],
        description="benchmarks for the final evaluation (names or question files)",
    )
    eval_models: list[str] = Field(
        default_factory=lambda: list(EVAL_MODELS),
        description=f"which models to evaluate, among {', '.join(EVAL_MODELS)}",
    )
    rs_baseline: bool = Field(
        True, description="also select by random sampling (same budget) and train that student, for comparison"
    )
    stages: dict[str, bool] = Field(
        default_factory=dict, description=f"switch stages off, e.g. {{mix: false}}; steps: {', '.join(STEPS)}"
    )
    sample: dict[str, Any] = Field(
        default_factory=dict, description="`dasd sample` settings (input/output/backend are filled in)"
    )
    score: dict[str, Any] = Field(default_factory=dict, description="`dasd score` settings")
    filter: dict[str, Any] = Field(default_factory=dict, description="`dasd filter` settings")
    select: dict[str, Any] = Field(
        default_factory=dict, description="`dasd select` settings (strategy is set per branch)"
    )
    build_sft: dict[str, Any] = Field(default_factory=dict, description="`dasd build-sft` settings")
    train: dict[str, Any] = Field(default_factory=dict, description="`dasd train` settings for the low/high stages")
    mix: dict[str, Any] = Field(default_factory=dict, description="`dasd mix` settings (student/teacher are filled in)")
    train_mixed: dict[str, Any] = Field(
        default_factory=lambda: {"epochs": 1},
        description="settings of the mixed_policy training stage (on top of `train`)",
    )
    eval: dict[str, Any] = Field(
        default_factory=dict,
        description="`dasd eval` settings (benchmarks and the model are filled in; `backend:` settings such as "
        "batch_size apply to every evaluated model; a `teacher:` sub-section overrides them for the teacher)",
    )
    provenance: dict[str, Any] = Field(
        default_factory=dict,
        description="`dasd provenance` settings for the answers of one evaluated model (`model:`, default "
        "high_temp); the three models are filled in",
    )
    arms: dict[str, ArmConfig] = Field(
        default_factory=dict,
        description="named ablation arms: they share sample/score/filter and differ in selection, schedule and "
        "training; each arm × seed is a cached step (README: ablations)",
    )
    seeds: list[int] = Field(
        default_factory=lambda: [42], min_length=1, description="training seeds of every arm (one model per seed)"
    )
    claims: list[ClaimConfig] = Field(
        default_factory=list,
        description="comparisons to report with paired statistics: {name, better, worse, source}",
    )
    executor: ExecutorConfig = Field(
        default_factory=ExecutorConfig,
        description="where the steps run: local (here, in order) or slurm (jobs; resources per step, README: "
        "running on a cluster)",
    )
    record_format: Literal["jsonl", "parquet"] = Field(
        "parquet",
        description="files of the record steps that carry teacher log-probs (sample, score, filter and its rejected "
        "file, select): parquet (folders of parts, log-probs as float32 list columns: ~11 B per teacher token "
        "against ~40 as JSONL), or jsonl (README: running on a cluster); a workdir whose sample/responses.jsonl "
        "exists (made before parquet was the default) keeps jsonl unless this is set",
    )

    _made_before_parquet: bool = PrivateAttr(False)

    @model_validator(mode="after")
    def _keep_an_existing_runs_format(self) -> PipelineConfig:
        # A workdir sampled before Parquet became the default holds responses.jsonl: without an explicit
        # record_format it keeps JSONL, so upgrading never re-samples (hours of a teacher's server) into .parquet.
        # Its score step keeps scoring every response too (see plan's skip_unfinished): a setting that moved since
        # would change the step's fingerprint, and a changed step is redone from scratch.
        # (A run that asks for jsonl itself is a run of this version whatever its files: it is left as it is.)
        self._made_before_parquet = (
            "record_format" not in self.model_fields_set and RunLayout(self.workdir).record("sample").exists()
        )
        if self._made_before_parquet:  # set without validate_assignment, which would run this validator again
            object.__setattr__(self, "record_format", "jsonl")
        return self

    threads: int | None = Field(
        None,
        ge=1,
        description="torch CPU threads for every step (float reductions depend on it: pin it for runs that must "
        "be identical); default: torch's, recorded in the summary",
    )
    dry_run: bool = Field(
        False,
        description="check every step's config and print what would run, resume, be reused or be stale (and what "
        "the run will cost), without running anything",
    )
    rerun: Literal["none", "stale"] = Field(
        "none",
        description="what to do with a stale step (its settings or inputs changed since it ran, and its outputs are "
        "there): none = stop, naming the step and what changed, before any work; stale = move its outputs (and "
        "those of the stale steps after it) to <workdir>/stale/<step>-<old fingerprint>/ and run it again. "
        "Nothing is ever deleted",
    )
    push_to_hub: dict[str, Any] = Field(
        default_factory=dict,
        description="publish on the Hub as the last steps (`dasd push`): OWNER/NAME per artefact among "
        f"{', '.join(PUSHABLE)} (model: the mixed-policy model if trained, else high_temp, with its evals in the "
        "card), plus private, license, dry_run",
    )
    cost: CostSettings = Field(
        default_factory=CostSettings,
        description="what dry_run's cost table cannot read from the config: the number of questions, the expected "
        "answer length, a pilot run to measure from (README: what a run will cost)",
    )
