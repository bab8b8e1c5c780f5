"""Parts of `dasd train`: tokenized examples with their loss masks, padding-free packing, a weighted loss.

Training itself is TRL's `SFTTrainer`; dasd prepares the data so that:

* the loss covers the assistant turn only, with any chat template: the prompt is rendered with the
  student's template (`add_generation_prompt=True`) and the completion — the think-tagged response
  and the end-of-turn token — is tokenized on its own (`dasd.text.render.render_completion`), so the
  label mask is exact without `{% generation %}` tags;
* the mixed-policy mask variant puts no loss on the first `loss_mask_prefix_chars` characters of the
  assistant text (the student-written prefix) when `mask_student_prefix` is on;
* a sample longer than `max_length` is dropped and counted, or is an error — never truncated;
* a stage's samples are tokenized once, by worker processes, into a memory-mapped Arrow dataset cached by
  content that every rank maps (`dasd.training.data`, which `prepare_examples` shares its per-record logic with);
* packing is TRL's best-fit-decreasing `pack_dataset`, padding-free: each packed row carries its
  sequence lengths, the collator flattens rows into one sequence with `position_ids` restarting per
  sample — flash-attention's varlen kernels on GPU, and on CPU the block-diagonal mask transformers
  builds from `position_ids` when no attention mask and no cache are given (TRL turns caching off);
* per-sample `weight`s become per-token weights that `WeightedSFTTrainer` multiplies into the loss, times
  the weight of the `loss_weight_spans` span (build-sft's `sentence_weights`) a token starts in;
* the final save holds the full weights on every distributed path (`save_full_model`), and a stage is
  done only when its saved folder loads as a model (`saved_model_problem`);
* no stage is a silent no-op: its optimizer steps and the learning rate of each are known before the model is
  loaded (`planned_schedule`, the Trainer's own step count and scheduler), the rate of every step taken is
  recorded (`learning_rate_recorder`), and its saved weights are compared with its start by digest (`weight_digests`).
"""

from __future__ import annotations

import hashlib
import math
import os
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .data import tokenize_record


@dataclass
class PreparedData:
    examples: list[dict[str, Any]]
    dropped: Counter = field(default_factory=Counter)
    tokens: int = 0
    trained_tokens: int = 0
    weighted: bool = False
    weighting: str = "none"  # none | per-sample | per-token (loss_weight_spans): what the loss was weighted by


def prepare_examples(
    records: list[tuple[int, dict[str, Any]]],
    tokenizer,
    *,
    max_length: int,
    mask_student_prefix: bool,
    too_long: str = "drop",
    path: str = "<input>",
    chat_template_kwargs: dict | None = None,
) -> PreparedData:
    """SFT records -> `{input_ids, labels[, token_weights]}` (labels -100 outside the trained part), in memory.

    `dasd train` streams the same samples (`tokenize_record`) into a cached Arrow dataset instead
    (`dasd.training.data.prepare_stage_data`); this list form is for small sets and tests."""
    prepared = PreparedData([])
    weights_seen = set()
    for line, record in records:
        made = tokenize_record(
            line,
            record,
            tokenizer,
            max_length=max_length,
            mask_student_prefix=mask_student_prefix,
            too_long=too_long,
            path=path,
            chat_template_kwargs=chat_template_kwargs,
        )
        if made is None:
            prepared.dropped["too_long"] += 1
            continue
        example, prompt_length = made
        weights_seen.update(example["token_weights"][prompt_length:])
        prepared.examples.append(example)
        prepared.tokens += len(example["input_ids"])
        prepared.trained_tokens += sum(1 for label in example["labels"] if label != -100)
    prepared.weighted = weights_seen != {1.0} and bool(weights_seen)
    if prepared.weighted:
        by_spans = any(record.get("loss_weight_spans") for _, record in records)
        prepared.weighting = "per-token" if by_spans else "per-sample"
    for example in prepared.examples:
        if not prepared.weighted:
            del example["token_weights"]
    return prepared


@dataclass
class PaddingFreeCollator:
    """Flattens a batch of (packed) rows into one sequence with per-sample `position_ids`.

    Like TRL's padding-free collator, plus `token_weights`, and it counts real vs padding tokens (none
    in padding-free mode; `padding_free=False` pads rows instead, for comparison).
    """

    pad_token_id: int
    padding_free: bool = True
    real_tokens: int = 0
    padded_tokens: int = 0

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        positions = []
        for example in examples:
            lengths = example.get("seq_lengths") or [len(example["input_ids"])]
            positions.append(torch.cat([torch.arange(length) for length in lengths]))
        ids = [torch.tensor(example["input_ids"]) for example in examples]
        labels = [torch.tensor(example["labels"]) for example in examples]
        weights = (
            [torch.tensor(example["token_weights"], dtype=torch.float32) for example in examples]
            if "token_weights" in examples[0]
            else None
        )
        self.real_tokens += sum(len(x) for x in ids)
        if self.padding_free:
            batch = {
                "input_ids": torch.cat(ids)[None],
                "labels": torch.cat(labels)[None],
                "position_ids": torch.cat(positions)[None],
            }
            # the first token of every sample has no previous token of its own sample to be predicted from
            batch["labels"][batch["position_ids"] == 0] = -100
            if weights is not None:
                batch["token_weights"] = torch.cat(weights)[None]
            return batch
        width = max(len(x) for x in ids)
        self.padded_tokens += width * len(ids) - sum(len(x) for x in ids)

        def pad(tensors, value):
            return torch.stack([torch.cat([t, torch.full((width - len(t),), value, dtype=t.dtype)]) for t in tensors])

        batch = {
            "input_ids": pad(ids, self.pad_token_id),
            "labels": pad(labels, -100),
            "attention_mask": pad([torch.ones(len(x), dtype=torch.long) for x in ids], 0),
        }
        if weights is not None:
            batch["token_weights"] = pad(weights, 0.0)
        return batch

    @property
    def padding_fraction(self) -> float:
        total = self.real_tokens + self.padded_tokens
        return self.padded_tokens / total if total else 0.0


def weighted_token_loss(log_probs: torch.Tensor, weights: torch.Tensor | None, num_tokens) -> torch.Tensor:
    """Sum of -log p over trained tokens (weighted) / number of trained tokens, as TRL normalises."""
    per_token = -log_probs
    if weights is not None:
        per_token = per_token * weights.to(per_token.dtype)
    return per_token.sum() / torch.as_tensor(num_tokens).clamp(min=1)


def make_weighted_trainer_class():
    """`SFTTrainer` with per-token weights: imported lazily (TRL is heavy) and built once."""
    from trl import SFTTrainer

    class WeightedSFTTrainer(SFTTrainer):
        """Multiplies TRL's per-token loss by `token_weights` when a batch carries them.

        Without weights it is TRL's own `compute_loss`. With weights it takes TRL's fused-LM-head path
        (`fused_lm_head=True`: per-token log-probs of the next-token labels, no full logits), weights
        each token, normalises by the trained-token count exactly as TRL does, and keeps TRL's metrics.
        """

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            weights = inputs.pop("token_weights", None)
            if weights is None or return_outputs:
                return super().compute_loss(
                    model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
                )
            mode = "train" if self.model.training else "eval"
            inputs["use_cache"] = False
            outputs = model(**inputs, fused_lm_head=True)
            num_tokens = outputs.label_mask.sum() if num_items_in_batch is None else num_items_in_batch
            loss = weighted_token_loss(outputs.log_probs, weights[:, 1:], num_tokens)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * self.accelerator.num_processes
            num_valid = self.accelerator.gather_for_metrics(outputs.label_mask.sum()).sum()
            if outputs.entropy is not None:
                entropy = self.accelerator.gather_for_metrics(outputs.entropy.detach().sum()).sum()
                self._metrics[mode]["entropy"].append((entropy / num_valid).item() if num_valid > 0 else 0.0)
            if outputs.is_top1 is not None:
                correct = self.accelerator.gather_for_metrics(outputs.is_top1.sum()).sum()
                self._metrics[mode]["mean_token_accuracy"].append(
                    (correct / num_valid).item() if num_valid > 0 else 0.0
                )
            return loss

    return WeightedSFTTrainer


def save_full_model(trainer, output_dir: str) -> None:
    """`trainer.save_model(output_dir)` that writes the full weights under FSDP too (call it on every process).

    transformers' `Trainer.save_model` saves an FSDP model only when the plugin's state dict type is
    FULL_STATE_DICT; with SHARDED_STATE_DICT (accelerate's default for FSDP2, and
    configs/accelerate/fsdp2.yaml's, which keeps checkpoints fast) it writes nothing at all
    (transformers 5.24 `trainer.py`, `save_model`). So, as accelerate's
    `FullyShardedDataParallelPlugin.set_state_dict_type` intends ("user trains with sharded, but final save
    is with full"), the final save switches to the full state dict: accelerate's `get_state_dict` gathers it
    over the processes (FSDP2: `get_model_state_dict(full_state_dict=True, cpu_offload=True)`) and process 0
    writes it. The plugin is put back afterwards: it is the process's shared accelerate state.
    """
    plugin = getattr(trainer.accelerator.state, "fsdp_plugin", None) if trainer.is_fsdp_enabled else None
    if plugin is None or "FULL_STATE_DICT" in str(plugin.state_dict_type):
        trainer.save_model(output_dir)
        return
    kept = (plugin.state_dict_type, plugin.state_dict_config, plugin.optim_state_dict_config)
    plugin.state_dict_config = plugin.optim_state_dict_config = None  # set_state_dict_type fills the full ones
    plugin.set_state_dict_type("FULL_STATE_DICT")
    try:
        trainer.save_model(output_dir)
    finally:
        plugin.state_dict_type, plugin.state_dict_config, plugin.optim_state_dict_config = kept


def saved_model_problem(folder: str | Path) -> str | None:
    """Why `folder` does not load as a causal LM with all its weights, or None when it does.

    transformers' own loader does the check, on the meta device: it reads the config and the weight files'
    headers (names, shapes), not the weights, and applies the model's key mapping and tied weights as a
    real load would; a missing or mis-shaped tensor would otherwise be silently re-initialised at load time.
    """
    from transformers import AutoModelForCausalLM
    from transformers.integrations import deepspeed

    folder = Path(folder)
    if not (folder / "config.json").exists():
        return f"no model in {folder} (no config.json)"
    # Under ZeRO-3 the Trainer's arguments register their DeepSpeed config process-wide, and from_pretrained
    # would then build the model inside `deepspeed.zero.Init` (collectives that only process 0 enters here)
    # and refuse a device_map: the check loads as a plain process would, the config set back afterwards.
    registered = deepspeed._hf_deepspeed_config_weak_ref
    deepspeed.unset_hf_deepspeed_config()
    try:
        _, info = AutoModelForCausalLM.from_pretrained(
            str(folder), device_map="meta", output_loading_info=True, ignore_mismatched_sizes=True
        )
    except (OSError, ValueError) as exc:
        return str(exc).strip().splitlines()[0]
    finally:
        deepspeed._hf_deepspeed_config_weak_ref = registered
    missing = sorted(info["missing_keys"])
    if missing:
        return f"{len(missing)} weight(s) missing from {folder} (first: {missing[0]})"
    mismatched = sorted(info["mismatched_keys"])
    if mismatched:
        name, saved, expected = mismatched[0]
        return (
            f"{len(mismatched)} weight(s) of the wrong shape in {folder} "
            f"(first: {name} {list(saved)}, expected {list(expected)})"
        )
    return None


def cosine_with_floor(step: int, *, total_steps: int, warmup_steps: int, peak: float, floor: float) -> float:
    """The learning rate of optimizer step `step` (0-based) under transformers' `cosine_with_min_lr`:
    linear warmup from 0, then a half cosine from `peak` down to `floor` at the last step."""
    if step < warmup_steps:
        return peak * step / max(1, warmup_steps)
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    factor = 0.5 * (1.0 + math.cos(math.pi * progress))
    return peak * (factor * (1 - floor / peak) + floor / peak)


@dataclass(frozen=True)
class Schedule:
    """A stage's optimizer steps and the learning rate of each, as the Trainer will run them."""

    steps: int
    steps_per_epoch: int
    warmup_steps: int
    learning_rates: list[float]  # of optimizer step 0, 1, …: the rate the optimizer steps with

    @property
    def peak(self) -> float:
        """The highest rate any step that happens runs at (0.0 without steps)."""
        return max(self.learning_rates, default=0.0)


def planned_schedule(args, *, rows: int, processes: int) -> Schedule:
    """The optimizer steps `Trainer.train` will take on `rows` dataset rows, and each one's learning rate.

    The step count is the Trainer's (transformers 5.24 `set_initial_training_values`): each process's dataloader
    has ceil(rows / (per-device batch × processes)) batches (accelerate shards them evenly; dasd never sets
    `dataloader_drop_last`), an epoch is ceil(batches / gradient accumulation) steps (at least 1), and the run
    `max_steps`, or ceil(epochs × steps per epoch). The rates come from the scheduler the Trainer builds
    (`create_scheduler`: `get_scheduler` with `args.get_warmup_steps`), so they are exact: step k runs at
    peak × lambda(k) — the optimizer steps before the scheduler does — which in a linear warmup of W steps is
    peak × k / W, 0 at the first step.
    """
    from transformers import get_scheduler

    batches = math.ceil(rows / (args.per_device_train_batch_size * processes))
    per_epoch = max(math.ceil(batches / args.gradient_accumulation_steps), 1)
    steps = args.max_steps if args.max_steps > 0 else math.ceil(args.num_train_epochs * per_epoch)
    warmup = args.get_warmup_steps(steps)
    if args.learning_rate <= 0 or steps <= 0:  # (cosine_with_min_lr divides by the peak)
        return Schedule(max(steps, 0), per_epoch, warmup, [0.0] * max(steps, 0))
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=args.learning_rate)
    scheduler = get_scheduler(
        args.lr_scheduler_type,
        optimizer=optimizer,
        num_warmup_steps=warmup,
        num_training_steps=steps,
        scheduler_specific_kwargs=args.lr_scheduler_kwargs,
    )
    rates = [args.learning_rate * scheduler.lr_lambdas[0](step) for step in range(steps)]
    return Schedule(steps, per_epoch, warmup, rates)


def learning_rate_recorder():
    """A TrainerCallback that keeps the learning rate of every optimizer step it sees in `.rates`: the scheduler's
    last rate right after the optimizer stepped, before the scheduler steps — what the Trainer logs, at every step
    whatever `logging_steps` is."""
    from transformers import TrainerCallback

    class LearningRates(TrainerCallback):
        def __init__(self):
            self.rates: list[float] = []

        def on_optimizer_step(self, args, state, control, lr_scheduler=None, **kwargs):
            if lr_scheduler is not None:
                rate = lr_scheduler.get_last_lr()[0]
                self.rates.append(float(rate.item() if torch.is_tensor(rate) else rate))

    return LearningRates()


def tensor_digest(tensor: torch.Tensor) -> str:
    """sha256 of a tensor's shape and values, floating point as float32 (a bfloat16 save of float32 weights that
    were bfloat16 at the start digests as the start did)."""
    tensor = tensor.detach()
    if tensor.is_floating_point():
        tensor = tensor.to(torch.float32)
    digest = hashlib.sha256(str(tuple(tensor.shape)).encode())
    digest.update(tensor.cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def weight_digests(tensors: Iterable[tuple[str, torch.Tensor]]) -> dict[str, str]:
    """`{name: tensor_digest}`, hashed in threads (hashlib releases the GIL) while the next tensors are read; at
    most a few tensors are held beyond those the caller already holds."""
    workers = max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1))
    digests: dict[str, str] = {}
    with ThreadPoolExecutor(workers) as pool:
        pending: deque = deque()
        for name, tensor in tensors:
            pending.append((name, pool.submit(tensor_digest, tensor)))
            while len(pending) > 2 * workers:
                name, future = pending.popleft()
                digests[name] = future.result()
        for name, future in pending:
            digests[name] = future.result()
    return digests


def _saved_tensors(files: list[Path]) -> Iterator[tuple[str, torch.Tensor]]:
    from safetensors import safe_open

    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for name in handle.keys():
                yield name, handle.get_tensor(name)


def saved_weight_digests(folder: str | Path) -> dict[str, str]:
    """`weight_digests` of a saved model folder's safetensors files, read one tensor at a time."""
    return weight_digests(_saved_tensors(sorted(Path(folder).glob("*.safetensors"))))


def start_weight_digests(model, init: str, revision: str | None = None) -> dict[str, str] | None:
    """The digests of the weights a stage starts from: of the loaded model when it holds them (one process, DDP,
    FSDP before sharding), else — a model that ZeRO-3 partitioned at load — of the safetensors files it was loaded
    from (a folder, or a Hub id's cached snapshot); None when neither is available (the check is then skipped)."""
    if not any(hasattr(p, "ds_id") or p.numel() == 0 or p.is_meta for p in model.parameters()):
        return weight_digests(model.state_dict().items())
    folder = Path(init)
    if not folder.is_dir():
        try:
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(init, revision=revision or "main", local_files_only=True))
        except Exception:  # a .gguf file, an asset, a snapshot not cached: nothing to compare with
            return None
    return saved_weight_digests(folder) if list(folder.glob("*.safetensors")) else None


def changed_weights(start: dict[str, str], saved: dict[str, str]) -> tuple[int, int]:
    """(tensors changed, tensors compared): those of both, by name (a tied head is saved once; a fused layout
    transformers converts at load time is saved under other names and is not compared)."""
    names = start.keys() & saved.keys()
    return sum(start[name] != saved[name] for name in names), len(names)


def resolve_trackers(names: list[str]) -> list[str] | str:
    """The `report_to` the Trainer gets: `none`, `all`, or the named trackers — each checked to be installed,
    so a missing one is a one-line error before any work rather than a stack trace after loading the model.

    >>> resolve_trackers(["none"])
    'none'
    """
    from transformers.integrations import is_tensorboard_available, is_trackio_available, is_wandb_available

    from ..errors import ConfigError

    chosen = [name for name in names if name != "none"]
    if not chosen:
        return "none"
    if "all" in chosen:
        return "all"
    installed = {
        "tensorboard": (is_tensorboard_available, "tensorboard (or tensorboardX)"),
        "trackio": (is_trackio_available, "trackio"),
        "wandb": (is_wandb_available, "wandb"),
    }
    for name in chosen:
        available, package = installed[name]
        if not available():
            raise ConfigError(f"report_to={name} needs {package}: pip install {package.split()[0]}")
    return chosen
