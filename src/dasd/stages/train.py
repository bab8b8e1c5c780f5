"""`dasd train`: temperature-scheduled multi-stage SFT on TRL, packed without cross-contamination.

    dasd train --config configs/train.yaml output_dir=runs/x/train student.model=path/to/student
    accelerate launch --config_file configs/accelerate/zero3.yaml -m dasd train --config configs/train.yaml

Stages run in order (default: `low_temp` on the low-temperature SFT file, then `high_temp` starting
from `low_temp`'s final weights; `dasd mix` adds `mixed_policy`). Each stage writes into its own folder
`<output_dir>/<stage>/`: checkpoints, `final/` (model + tokenizer), `metrics.json` and `loss.png`.
A finished stage (its `final/dasd_stage.json` exists) is skipped on rerun and its checkpoints are
deleted (`keep_checkpoints=true` keeps them); a killed stage resumes from its last checkpoint. `final/`
holds the full weights under FSDP2's sharded checkpoints too, and a stage is marked done (and its
checkpoints deleted) only once `final/` loads as the whole model; otherwise it stops with one line.
No stage is a silent no-op: one whose schedule runs every optimizer step at learning rate 0 (one step, inside
warmup) stops with one line before its model is loaded, and one whose saved weights equal its starting weights
(compared by a sha256 per tensor) is an error, its final/ and checkpoints removed; `metrics.json` and the summary
record the optimizer steps and the peak learning rate reached.

Defaults are the report's: lr 5e-5 cosine-decayed to a floor of 1e-5, warmup 0.1, AdamW (0.9,
0.95, 1e-8), weight decay 0.1, grad clip 1.0, global batch 64 (per-device batch × accumulation ×
processes), 6 epochs, max_length 65,536, bf16 compute over float32 master weights where supported,
gradient checkpointing on GPU. The loss covers the assistant turn only (`dasd.training.sft`); samples are
packed padding-free by default, and the global batch then counts packed rows of up to max_length
tokens, as the report's released LLaMA-Factory stage files did (`batch_unit=samples` counts samples).
A stage's data is tokenized and packed once, by the first process, in `data_workers` worker processes, into a
memory-mapped Arrow dataset cached by content (`$DASD_TRAIN_DATA_CACHE`, else `$DASD_CACHE/train-data`;
`dasd.training.data`) that every process maps: a rerun, or the same data with the same tokenizer and settings
in another run, reads it back.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator

from ..config import SPEED_ONLY, StageConfig, dump_config
from ..data.io import write_json_atomic, write_summary
from ..errors import ConfigError, DasdError, InputError
from ..models.loading import ModelConfig
from ..naming import SFT_STAGES, STAGE_MARKER, final_dir, sft_stage_file
from ..progress import format_summary
from ..reporting.summary_rows import train_table

if TYPE_CHECKING:
    from ..training.sft import Schedule


class TrainStage(StageConfig):
    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]+$", description="stage name (also its folder)")
    data: str = Field(..., description="SFT records of this stage (JSONL/Parquet/…; a glob reads several files)")
    init: str = Field(
        "previous",
        description="previous: the previous stage's final weights (the student for the first stage); "
        "student; or a model folder",
    )
    epochs: float | None = Field(None, gt=0, description="epochs for this stage (default: the run's)")
    learning_rate: float | None = Field(
        None, gt=0, description="peak learning rate for this stage (default: the run's)"
    )
    min_learning_rate: float | None = Field(
        None, ge=0, description="learning-rate floor for this stage (default: the run's)"
    )
    mask_student_prefix: bool | None = Field(
        None, description="no loss on `loss_mask_prefix_chars` (default: the run's)"
    )


class TrainConfig(StageConfig):
    output_dir: str = Field(..., description="folder of the run; each stage writes <output_dir>/<stage>/")
    student: ModelConfig = Field(..., description="the student model the first stage starts from")
    stages: list[TrainStage] = Field(
        default_factory=lambda: [
            TrainStage(name=stage, data=str(sft_stage_file("runs/sft/sft.jsonl", stage))) for stage in SFT_STAGES
        ],
        description="stages in order: list of {name, data[, init, epochs, learning_rate, min_learning_rate, "
        "mask_student_prefix]}",
    )
    learning_rate: float = Field(5e-5, gt=0, description="peak learning rate")
    min_learning_rate: float = Field(1e-5, ge=0, description="floor of the cosine decay")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="share of the steps spent warming up linearly")
    adam_beta1: float = Field(0.9, description="AdamW beta1")
    adam_beta2: float = Field(0.95, description="AdamW beta2")
    adam_epsilon: float = Field(1e-8, description="AdamW epsilon")
    weight_decay: float = Field(0.1, ge=0, description="AdamW weight decay")
    max_grad_norm: float = Field(1.0, gt=0, description="gradient clipping norm")
    global_batch_size: int = Field(
        64,
        ge=1,
        description="per optimizer step, over all processes, counted in batch_unit (default rows: with packing, "
        "64 packed rows of up to max_length tokens — as the report's LLaMA-Factory runs counted it)",
    )
    batch_unit: Literal["rows", "samples"] = Field(
        "rows",
        description="what global_batch_size counts: rows (packed rows when packing, as the released stage YAMLs: "
        "per-device batch 1 × accumulation 4 × 16 GPUs = 64 rows of 65,536 tokens), or samples (rows per step "
        "= global_batch_size / the stage's mean samples per packed row, rounded to whole steps)",
    )
    per_device_batch_size: int = Field(
        1, ge=1, description="samples (packed rows) per process per forward pass", json_schema_extra=SPEED_ONLY
    )
    epochs: float = Field(6.0, gt=0, description="epochs per stage")
    max_steps: int | None = Field(
        None, ge=1, description="stop each stage after this many optimizer steps (smoke tests)"
    )
    max_length: int = Field(65536, ge=16, description="longest sample in student tokens; also the packed row length")
    too_long: Literal["drop", "error"] = Field(
        "drop", description="a sample longer than max_length is dropped (and counted) or is an error; never truncated"
    )
    packing: bool = Field(
        True, description="padding-free best-fit-decreasing packing (position_ids restart per sample)"
    )
    data_workers: int = Field(
        0,
        ge=0,
        description="processes that tokenize a stage's data, once (then cached: $DASD_TRAIN_DATA_CACHE, else "
        "$DASD_CACHE/train-data); 0 = one per CPU core. Changes nothing trained",
        json_schema_extra=SPEED_ONLY,
    )
    bf16: Literal["auto", "true", "false"] = Field(
        "auto",
        description="bf16 compute (autocast / DeepSpeed / FSDP mixed precision) over float32 master weights; "
        "auto = on when the GPU supports it",
    )
    gradient_checkpointing: Literal["auto", "true", "false"] = Field(
        "auto",
        description="recompute activations; auto = on GPU",
        json_schema_extra=SPEED_ONLY,
    )
    liger: bool = Field(False, description="Liger kernels (GPU only; needs liger-kernel)")
    deepspeed: str | None = Field(
        None,
        description="DeepSpeed config JSON (e.g. configs/deepspeed/zero3.json); or use `accelerate launch "
        "--config_file configs/accelerate/zero3.yaml`",
    )
    mask_student_prefix: bool = Field(
        False, description="mixed-policy ablation: no loss on the student-written prefix (loss_mask_prefix_chars)"
    )
    chat_template_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="extra variables for the student's chat template"
    )
    seed: int = Field(42, description="training seed (data order, init of anything random)")
    logging_steps: int = Field(1, ge=1, description="log every N optimizer steps", json_schema_extra=SPEED_ONLY)
    report_to: list[Literal["none", "tensorboard", "trackio", "wandb", "all"]] = Field(
        ["none"],
        description="experiment trackers (one name or a list): tensorboard (event files under "
        "<output_dir>/<stage>/runs/; needs tensorboard or tensorboardX), trackio, wandb, all (every one installed), "
        "none",
        json_schema_extra=SPEED_ONLY,
    )
    run_name: str | None = Field(
        None,
        description="tracker run name; each stage is its own run, <run_name>-<stage> (default: the output folder's "
        "name, so dasd run's branches stay apart: das-low_temp, rs-high_temp, …)",
        json_schema_extra=SPEED_ONLY,
    )
    save_steps: int = Field(
        50,
        ge=1,
        description="checkpoint every N optimizer steps (resume point after a crash)",
        json_schema_extra=SPEED_ONLY,
    )
    save_total_limit: int = Field(
        2, ge=1, description="checkpoints kept per stage while it trains", json_schema_extra=SPEED_ONLY
    )
    keep_checkpoints: bool = Field(
        False,
        description="keep a finished stage's checkpoints (its model is in final/; they only serve resuming "
        "it, and hold the optimizer state: 3x the model)",
        json_schema_extra=SPEED_ONLY,
    )

    @field_validator("report_to", mode="before")
    @classmethod
    def _one_or_many(cls, value):
        return [part.strip() for part in value.split(",")] if isinstance(value, str) else value

    @field_validator("bf16", "gradient_checkpointing", mode="before")
    @classmethod
    def _yaml_booleans(cls, value):
        # `bf16=true` on the command line (or `bf16: true` in YAML) arrives as a boolean
        return str(value).lower() if isinstance(value, bool) else value


def last_complete_checkpoint(stage_dir: Path) -> str | None:
    """The newest `checkpoint-N` that was written whole (a kill during saving leaves a partial one).

    The trainer writes `trainer_state.json` after the weights and optimizer state, so a checkpoint
    without it is incomplete; such folders are removed so that they are neither resumed from nor
    counted by the checkpoint rotation.
    """
    if not stage_dir.exists():
        return None
    checkpoints = sorted(
        (p for p in stage_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
        key=lambda p: int(p.name.split("-")[-1]),
    )
    for checkpoint in reversed(checkpoints):
        if (checkpoint / "trainer_state.json").exists():
            return str(checkpoint)
        if int(os.environ.get("RANK", "0")) == 0:
            shutil.rmtree(checkpoint, ignore_errors=True)
    return None


def _flag(value: str, default: bool) -> bool:
    return default if value == "auto" else value == "true"


def _rows_per_step(config: TrainConfig, *, samples: int, rows: int, per_step: int) -> int:
    """Rows per optimizer step: `global_batch_size` itself when it counts rows (or samples are not packed);
    for `batch_unit=samples` with packing, as many rows as hold that many samples on average (at least
    one forward pass per process)."""
    if config.batch_unit == "rows" or not config.packing:
        return config.global_batch_size
    samples_per_row = samples / rows
    return max(per_step, round(config.global_batch_size / samples_per_row / per_step) * per_step)


def _stage_hyper(config: TrainConfig, stage: TrainStage) -> dict[str, Any]:
    return {
        "epochs": stage.epochs or config.epochs,
        "learning_rate": stage.learning_rate or config.learning_rate,
        "min_learning_rate": stage.min_learning_rate
        if stage.min_learning_rate is not None
        else config.min_learning_rate,
        "mask_student_prefix": stage.mask_student_prefix
        if stage.mask_student_prefix is not None
        else config.mask_student_prefix,
    }


def _idle_schedule(
    config: TrainConfig,
    stage: TrainStage,
    hyper: dict[str, Any],
    schedule: Schedule,
    *,
    samples: int,
    rows: int,
    accumulation: int,
    processes: int,
) -> str:
    """The one line for a stage whose planned learning rate is 0 at every optimizer step: the numbers, the fix."""
    peak = hyper["learning_rate"]
    unit = "packed rows" if config.packing else "rows"
    batch = config.per_device_batch_size * accumulation * processes
    length = f"max_steps={config.max_steps}" if config.max_steps else f"{hyper['epochs']:g} epoch(s)"
    made = (
        f"{samples} records ({rows} {unit}) at an effective batch of {batch} rows (per-device batch "
        f"{config.per_device_batch_size} × gradient accumulation {accumulation} × {processes} process(es)) over "
        f"{length} make {schedule.steps} optimizer step(s)"
    )
    more = "max_steps of 2 or more" if config.max_steps else f"epochs above {1 / schedule.steps_per_epoch:g}"
    counted = "samples" if config.batch_unit == "samples" else "rows"
    steps = f"at least 2 optimizer steps: {more}, more records, or a smaller global_batch_size (now "
    steps += f"{config.global_batch_size} {counted})"
    if schedule.steps <= 0:
        why, fix = "so nothing trains", "at least one optimizer step"
    elif peak <= 0:
        why, fix = f"at a learning rate of {peak:g}", "a learning_rate above 0"
    elif schedule.warmup_steps >= 1:
        why = (
            f"all inside warmup (warmup_ratio {config.warmup_ratio:g} → {schedule.warmup_steps} warmup step(s); step "
            f"k, from 0, runs at {peak:g} × k/{schedule.warmup_steps}), so every step runs at learning rate 0"
        )
        fix = f"warmup_ratio=0 (a single step then runs at {peak:g}), or {steps}"
    else:
        why, fix = "and the scheduler's learning rate is 0 at every one", steps
    return f"stage {stage.name} would not change the weights: {made}, {why}; fix: {fix}"


def run_stage(
    config: TrainConfig,
    stage: TrainStage,
    init: str,
    stage_dir: Path,
    *,
    world_size: int,
    is_main: bool,
    callbacks: list | None = None,
) -> dict[str, Any]:
    import torch
    from trl import SFTConfig

    from ..models.assets import load_tokenizer
    from ..models.attention import packed_attention
    from ..models.loading import load_causal_lm, load_model_config, resolve_attention
    from ..reporting.figures import plot_loss_curve
    from ..training.data import prepare_stage_data, require_records
    from ..training.sft import (
        PaddingFreeCollator,
        changed_weights,
        learning_rate_recorder,
        make_weighted_trainer_class,
        planned_schedule,
        resolve_trackers,
        save_full_model,
        saved_model_problem,
        saved_weight_digests,
        start_weight_digests,
    )

    hyper = _stage_hyper(config, stage)
    trackers = resolve_trackers(config.report_to)
    cuda = torch.cuda.is_available()
    bf16 = _flag(config.bf16, cuda and torch.cuda.is_bf16_supported())
    if config.liger and not cuda:
        raise ConfigError("liger=true needs a CUDA GPU (Liger kernels are Triton kernels); leave it off on CPU")
    if config.liger:
        try:
            import liger_kernel  # noqa: F401
        except ImportError:
            raise ConfigError("liger=true needs liger-kernel: pip install 'dasd[gpu]'") from None
    per_step = config.per_device_batch_size * world_size
    if config.global_batch_size % per_step and not (config.batch_unit == "samples" and config.packing):
        raise ConfigError(
            f"global_batch_size {config.global_batch_size} is not a multiple of per_device_batch_size "
            f"× processes = {per_step}"
        )

    require_records(stage.data)
    revision = config.student.revision if init == config.student.model else None  # a Hub id's, not a stage's
    tokenizer = load_tokenizer(
        config.student.tokenizer or init, revision=None if config.student.tokenizer else revision
    )
    # tokenized (and packed) once, by the first rank here, in worker processes; every rank maps the cached files
    prepared = prepare_stage_data(
        stage.data,
        tokenizer,
        max_length=config.max_length,
        mask_student_prefix=hyper["mask_student_prefix"],
        too_long=config.too_long,
        chat_template_kwargs=config.chat_template_kwargs,
        packing=config.packing,
        workers=config.data_workers,
    )
    if not prepared.samples:
        raise InputError(stage.data, None, None, f"no trainable samples (dropped: {prepared.dropped})")
    dataset, rows = prepared.dataset, prepared.rows
    rows_per_step = _rows_per_step(config, samples=prepared.samples, rows=rows, per_step=per_step)
    accumulation = rows_per_step // per_step

    args = SFTConfig(
        output_dir=str(stage_dir),
        per_device_train_batch_size=config.per_device_batch_size,
        gradient_accumulation_steps=accumulation,
        num_train_epochs=hyper["epochs"],
        max_steps=config.max_steps or -1,
        learning_rate=hyper["learning_rate"],
        lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr": hyper["min_learning_rate"]},
        warmup_steps=config.warmup_ratio,
        adam_beta1=config.adam_beta1,
        adam_beta2=config.adam_beta2,
        adam_epsilon=config.adam_epsilon,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        bf16=bf16,
        gradient_checkpointing=_flag(config.gradient_checkpointing, cuda),
        use_liger_kernel=config.liger,
        logging_steps=config.logging_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        report_to=trackers,
        run_name=f"{config.run_name or Path(config.output_dir).resolve().name}-{stage.name}",
        seed=config.seed,
        data_seed=config.seed,
        max_length=None,
        packing=False,
        padding_free=False,
        remove_unused_columns=False,
        dataset_kwargs={"skip_prepare_dataset": True},
        use_cpu=not cuda,
        deepspeed=config.deepspeed,
        disable_tqdm=not is_main,
    )
    # A schedule that cannot move the weights stops here, before the model is loaded: the Trainer's own step
    # count and scheduler say the rate of every step it will take (a single step inside warmup runs at 0)
    schedule = planned_schedule(args, rows=rows, processes=world_size)
    if schedule.peak <= 0:
        raise DasdError(
            _idle_schedule(
                config,
                stage,
                hyper,
                schedule,
                samples=prepared.samples,
                rows=rows,
                accumulation=accumulation,
                processes=world_size,
            )
        )
    device = "cuda" if cuda else "cpu"
    attention = resolve_attention(config.student.attn_implementation, device)
    if config.packing and config.student.attn_implementation == "auto":
        # padding-free rows under SDPA get a dense block-diagonal mask (width² per row); flash-attn or
        # dasd_packed compute nothing between the samples of a row (dasd.models.attention) — unless the student's
        # attention has what dasd_packed does not compute (sinks, soft-capping, a sliding window): then sdpa
        attention = packed_attention(device, load_model_config(init, revision=revision)) or attention
    # Master weights are float32 on every path (one process, DDP, FSDP2, ZeRO-3): an AdamW step moves a
    # weight by ~lr, 1e-5 of a norm weight near 1.0, which rounds away in bfloat16 (its spacing there is
    # 0.0078). bf16 is the compute precision: the Trainer's autocast, or ZeRO-3 / FSDP2 mixed precision,
    # which keep float32 masters of float32 weights. `student.dtype` applies to inference only.
    model = load_causal_lm(init, dtype=torch.float32, attention=attention, trainable=True, revision=revision)
    # what the final weights are compared with: a digest per tensor, not a second copy (4B float32 weights: 16 GB)
    start = start_weight_digests(model, init, revision) if is_main else None
    rates = learning_rate_recorder()
    collator = PaddingFreeCollator(
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0, padding_free=config.packing
    )
    trainer = make_weighted_trainer_class()(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        data_collator=collator,
        callbacks=[*(callbacks or []), rates],
    )
    resume = last_complete_checkpoint(stage_dir)
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume)
    seconds = time.perf_counter() - started

    final = final_dir(stage_dir.parent, stage.name)
    save_full_model(trainer, str(final))
    history = trainer.state.log_history
    # the rate of every step: those of this run as they happened, and the logged ones of a run resumed from
    peak = max([*rates.rates, *(entry["learning_rate"] for entry in history if "learning_rate" in entry)], default=0.0)
    # The stage is marked done, and its checkpoints deleted, only when final/ loads as the whole model:
    # otherwise the checkpoints may hold the only copy of the trained weights. And a stage whose saved weights
    # are its starting weights trained nothing: an error, not a result. Every process gets process 0's
    # verdicts, so that all of them stop together rather than wait for each other in the next stage.
    problem = saved_model_problem(final) if is_main else None
    changed = compared = None
    if is_main and not problem and start is not None:
        changed, compared = changed_weights(start, saved_weight_digests(final))
    if world_size > 1:
        from accelerate.utils import broadcast_object_list

        problem, changed, compared = broadcast_object_list([problem, changed, compared])
    if problem:
        raise DasdError(
            f"stage {stage.name}: the final save is not a loadable model ({problem}); the stage is not marked "
            f"done and its checkpoints are kept in {stage_dir}"
        )
    if compared and not changed:
        if is_main:  # they hold its starting weights: a rerun starts the stage afresh rather than resume them
            shutil.rmtree(final, ignore_errors=True)
            for checkpoint in stage_dir.glob("checkpoint-*"):
                shutil.rmtree(checkpoint, ignore_errors=True)
        raise DasdError(
            f"stage {stage.name}: training left the weights as they started ({compared} of {compared} tensors equal "
            f"to {init}'s) after {trainer.state.global_step} optimizer step(s) at a peak learning rate of {peak:.3g}; "
            "a rate too small to move float32 weights, or no loss to learn from (records of weight 0), trains "
            "nothing — raise learning_rate or check the records; the stage is not marked done"
        )
    losses = [entry["loss"] for entry in history if "loss" in entry]
    tokens_seen = next((entry["num_tokens"] for entry in reversed(history) if "num_tokens" in entry), None)
    metrics = {
        "stage": stage.name,
        "init": init,
        "data": stage.data,
        "samples": prepared.samples,
        "dropped": dict(prepared.dropped),
        "rows": rows,
        "packing": config.packing,
        "pack_fill": round(prepared.tokens / (rows * config.max_length), 4) if config.packing else None,
        "padding_fraction": round(collator.padding_fraction, 4),
        "tokens_per_epoch": prepared.tokens,
        "trained_tokens_per_epoch": prepared.trained_tokens,
        "loss_weights": prepared.weighting,
        "tokens_seen": tokens_seen,
        "tokens_per_s": round(tokens_seen / seconds, 1) if tokens_seen else None,
        "optimizer_steps": trainer.state.global_step,
        "warmup_steps": schedule.warmup_steps,
        "peak_learning_rate": peak,
        "changed_tensors": changed,
        "compared_tensors": compared,
        "resumed_from": resume,
        "final_loss": losses[-1] if losses else None,
        "first_loss": losses[0] if losses else None,
        "train_loss": result.training_loss,
        "seconds": round(seconds, 2),
        "gradient_accumulation_steps": accumulation,
        "batch_unit": config.batch_unit,
        "rows_per_step": rows_per_step,
        "samples_per_step": round(rows_per_step * prepared.samples / rows, 2),
        "processes": world_size,
        "bf16": bf16,
        "master_weights": "float32",
        "attention": attention,
        "liger": config.liger,
        "report_to": trackers,
        "run_name": args.run_name,
        **hyper,
    }
    if is_main:
        tokenizer.save_pretrained(str(final))
        write_json_atomic(stage_dir / "metrics.json", metrics)
        write_json_atomic(stage_dir / "log_history.json", history)
        plot_loss_curve(history, stage_dir / "loss.png", f"{stage.name}: training loss")
        write_json_atomic(final / STAGE_MARKER, metrics)  # written last: the stage is done
        try:  # the model card: base model, data lineage, stages (dasd push adds the eval table)
            from ..reporting.cards import write_model_card

            write_model_card(final)
        except Exception as exc:  # a card is documentation: never undo a finished stage for it
            print(f"dasd train: warning: no model card for {final}: {exc}", file=sys.stderr)
        if not config.keep_checkpoints:
            for checkpoint in stage_dir.glob("checkpoint-*"):
                shutil.rmtree(checkpoint, ignore_errors=True)
    return metrics


def run(config: TrainConfig, *, callbacks: list | None = None) -> dict[str, Any]:
    """Run the stages; `callbacks` (transformers TrainerCallbacks) are handed to every stage's trainer."""
    from ..training.sft import saved_model_problem

    if not config.stages:
        raise ConfigError("stages is empty")
    names = [stage.name for stage in config.stages]
    if len(names) != len(set(names)):
        raise ConfigError(f"stage names must be unique (got {names})")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    is_main = int(os.environ.get("RANK", "0")) == 0
    output_dir = Path(config.output_dir)
    if is_main:
        dump_config(config, output_dir / "train.config.yaml")

    report: list[dict[str, Any]] = []
    previous: str | None = None
    for stage in config.stages:
        stage_dir, final = output_dir / stage.name, final_dir(output_dir, stage.name)
        marker = final / STAGE_MARKER
        if marker.exists():
            problem = saved_model_problem(final)
            if problem:  # marked done by an older dasd whose FSDP2 final save held no weights
                raise DasdError(
                    f"stage {stage.name} is marked done but {problem}; delete {marker} to train it again "
                    "(it resumes from its last checkpoint if one is left)"
                )
            report.append({**json.loads(marker.read_text()), "skipped": True})
            previous = str(final)
            continue
        if stage.init == "previous":
            init = previous or config.student.model
        elif stage.init == "student":
            init = config.student.model
        else:
            init = stage.init
        report.append(
            run_stage(config, stage, init, stage_dir, world_size=world_size, is_main=is_main, callbacks=callbacks)
        )
        previous = str(final)

    if is_main:
        write_summary(output_dir, {"stage": "train", "stages": report})
        lines = train_table(report)
        print(format_summary(f"dasd train -> {output_dir}", []) + "\n" + "\n".join(lines), file=sys.stdout, flush=True)
    return {"stages": report}
