"""The stages: one module per `dasd` command, registered once here (the CLI and `dasd run` read this).

A stage module reads top to bottom — config → parts → loop → write — and provides:

* a pydantic config class (`StageConfig`) with a description on every field (the `--help` text);
* `run(config) -> dict`: does the work and returns its summary (also written as `<name>.summary.json`);
* optionally `extra_arguments(parser)` and `handle_extra(args) -> bool`: flags of its own
  (`dasd eval --compare A B`, `dasd provenance --teacher T`); `handle_extra` returns True when it
  handled the command itself, else it may add `key=value` overrides to `args.overrides`.

A stage never imports another stage; shared code lives in the parts (`dasd.*`). Only the pipeline
runner (`run`) and `demo` (which writes a pipeline and runs it) reach into other stages, through this
registry.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType


@dataclass(frozen=True)
class Stage:
    module: str
    config_class: str
    summary: str
    # What a first argument without '=' is: "config" (the config file: `dasd run PIPELINE.yaml`), or the
    # config key it sets (`dasd report RUN_DIR` sets run_dir).
    positional: str = "config"

    def load(self) -> tuple[ModuleType, type]:
        """(the stage module, its config class)."""
        module = importlib.import_module(self.module)
        return module, getattr(module, self.config_class)


STAGES: dict[str, Stage] = {
    "sample": Stage(
        "dasd.stages.sample", "SampleConfig", "temperature-scheduled teacher sampling with raw log-probs (resumable)"
    ),
    "score": Stage(
        "dasd.stages.score",
        "ScoreConfig",
        "sentence-level teacher vs student probabilities and classes (cross-tokenizer)",
    ),
    "filter": Stage(
        "dasd.stages.filter",
        "FilterConfig",
        "quality filters (structure, length, repetition, correctness, duplicates) with counts per reason",
    ),
    "select": Stage(
        "dasd.stages.select",
        "SelectConfig",
        "keep per question the responses richest in teacher sentences (DAS), or random (RS)",
    ),
    "build-sft": Stage(
        "dasd.stages.build_sft",
        "BuildSFTConfig",
        "selected responses -> SFT records per stage, with TRL and LLaMA-Factory exports",
    ),
    "train": Stage(
        "dasd.stages.train",
        "TrainConfig",
        "temperature-scheduled multi-stage SFT on TRL (packing, ZeRO-3 ready, resumable)",
    ),
    "mix": Stage(
        "dasd.stages.mix",
        "MixConfig",
        "mixed-policy distillation: student prefixes cut at a sentence, teacher continuations",
    ),
    "eval": Stage(
        "dasd.stages.eval",
        "EvalConfig",
        "avg@k / pass@k evaluation with answer verification (AIME, reasoning-gym, your files)",
    ),
    "provenance": Stage(
        "dasd.stages.provenance",
        "ProvenanceConfig",
        "teacher / student / shared / boosted sentences of a distilled model's answers, by position",
    ),
    "run": Stage("dasd.stages.run", "PipelineConfig", "the whole recipe from one PIPELINE.yaml, cached and resumable"),
    "demo": Stage(
        "dasd.stages.demo", "DemoConfig", "the full recipe on an embedded world of tiny models, on CPU, offline"
    ),
    "report": Stage(
        "dasd.stages.report",
        "ReportConfig",
        "one self-contained HTML page with the figures and tables of a run folder",
        positional="run_dir",
    ),
    "serve": Stage(
        "dasd.stages.serve",
        "ServeConfig",
        "serve a teacher (a folder, a Hub id, or a GGUF restored as one) with vLLM, raw log-probs, on CPU or GPU",
        positional="model",
    ),
    "push": Stage(
        "dasd.stages.push",
        "PushConfig",
        "publish a record file (as a Parquet dataset) or a trained model on the Hugging Face Hub, with a lineage card",
        positional="path",
    ),
}
