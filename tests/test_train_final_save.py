"""`dasd train`'s final save: full weights under FSDP2's sharded checkpoints, and a stage is done (its
checkpoints deleted) only when `final/` loads as the whole model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dasd.errors import DasdError
from dasd.stages import train
from dasd.training.sft import saved_model_problem

from .conftest import REPO, write_jsonl
from .test_train import _config, sft_records


def test_saved_model_problem_names_what_a_folder_lacks(tmp_path, tiny_llama_smollm2):
    from safetensors.torch import load_file, save_file

    assert saved_model_problem(tiny_llama_smollm2) is None
    folder = tmp_path / "m"
    shutil.copytree(tiny_llama_smollm2, folder)
    weights = load_file(str(folder / "model.safetensors"))

    del weights["model.norm.weight"]
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    assert saved_model_problem(folder) == f"1 weight(s) missing from {folder} (first: model.norm.weight)"

    weights = load_file(str(tiny_llama_smollm2 / "model.safetensors"))
    weights["model.layers.0.mlp.up_proj.weight"] = weights["model.layers.0.mlp.up_proj.weight"][:5]
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    problem = saved_model_problem(folder)
    assert problem.startswith("1 weight(s) of the wrong shape") and "model.layers.0.mlp.up_proj.weight" in problem

    (folder / "model.safetensors").unlink()  # what FSDP2 with SHARDED_STATE_DICT left: config, no weights
    assert "no file named model.safetensors" in saved_model_problem(folder)
    (folder / "config.json").unlink()
    assert saved_model_problem(folder) == f"no model in {folder} (no config.json)"


def test_a_final_save_without_weights_keeps_the_checkpoints_and_the_stage_not_done(
    tmp_path, tiny_llama_smollm2, monkeypatch
):
    """transformers' `Trainer.save_model` writes nothing for an FSDP model whose state dict type is not
    FULL_STATE_DICT (transformers 5.24 trainer.py, `save_model`); here the final save (the one call that is not
    the Trainer's own, for a checkpoint) writes nothing on the one-process path, so the rest — checkpoints,
    the check, the marker, the rerun — is the real `dasd train`."""
    from transformers import AutoModelForCausalLM, Trainer

    save_model = Trainer.save_model

    data = write_jsonl(tmp_path / "sft.jsonl", sft_records(8))
    config = _config(tmp_path, tiny_llama_smollm2, [{"name": "s", "data": str(data)}], "epochs=1", "save_steps=1")
    stage = tmp_path / "run" / "s"
    with monkeypatch.context() as patch:
        patch.setattr(
            Trainer,
            "save_model",
            lambda self, output_dir=None, _internal_call=False: (
                save_model(self, output_dir, _internal_call) if _internal_call else None
            ),
        )
        with pytest.raises(DasdError) as failure:
            train.run(config)
    message = str(failure.value)
    assert "\n" not in message and message.startswith("stage s: the final save is not a loadable model")
    assert "checkpoints are kept" in message
    assert not (stage / "final" / train.STAGE_MARKER).exists()
    checkpoints = sorted(stage.glob("checkpoint-*"))
    assert checkpoints and all((c / "trainer_state.json").exists() for c in checkpoints)

    # a final/ that an older dasd marked done without weights is not taken as a finished stage
    (stage / "final").mkdir(exist_ok=True)
    (stage / "final" / train.STAGE_MARKER).write_text("{}")
    with pytest.raises(DasdError, match=r"^stage s is marked done but .*delete .*dasd_stage\.json to train it again"):
        train.run(config)
    (stage / "final" / train.STAGE_MARKER).unlink()

    # with a save that writes the weights, the rerun resumes from the kept checkpoint and finishes the stage
    metrics = train.run(config)["stages"][0]
    assert metrics["resumed_from"] == str(checkpoints[-1])
    assert (stage / "final" / train.STAGE_MARKER).exists() and not list(stage.glob("checkpoint-*"))
    AutoModelForCausalLM.from_pretrained(str(stage / "final"))


@pytest.mark.slow  # two processes of FSDP2 over gloo: about 20 s on 2 cores
def test_fsdp2_with_sharded_checkpoints_saves_the_trained_weights_in_final(tmp_path, tiny_llama_smollm2):
    """The shipped configs/accelerate/fsdp2.yaml (FSDP2, SHARDED_STATE_DICT) on two CPU processes over gloo:
    final/ is a loadable model holding the trained weights, those of the last (sharded) checkpoint."""
    from safetensors.torch import load_file
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save
    from transformers import AutoModelForCausalLM

    data = write_jsonl(tmp_path / "sft.jsonl", sft_records(8))
    accelerate = Path(sys.executable).with_name("accelerate")
    command = [
        str(accelerate),
        "launch",
        "--config_file",
        str(REPO / "configs" / "accelerate" / "fsdp2.yaml"),
        "--num_processes",
        "2",
        "--mixed_precision",
        "no",
        str(REPO / "tests" / "fsdp2_on_cpu.py"),
        "train",
        f"output_dir={tmp_path / 'run'}",
        f"student.model={tiny_llama_smollm2}",
        f"stages=[{{name: s, data: {data}}}]",
        "global_batch_size=4",
        "max_length=256",
        "packing=false",
        "epochs=1",
        "learning_rate=1e-3",
        "save_steps=1",
        "keep_checkpoints=true",
    ]
    done = subprocess.run(
        command, env={**os.environ, "PYTHONUNBUFFERED": "1"}, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    stage = tmp_path / "run" / "s"
    last = max(stage.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    assert (last / "pytorch_model_fsdp_0" / ".metadata").exists()  # the checkpoints are FSDP2's sharded ones
    assert json.loads((stage / "metrics.json").read_text())["processes"] == 2

    final = stage / "final"
    assert saved_model_problem(final) is None
    model = AutoModelForCausalLM.from_pretrained(str(final), dtype=torch.float32)
    dcp_to_torch_save(last / "pytorch_model_fsdp_0", tmp_path / "last.pt")
    trained = torch.load(tmp_path / "last.pt", weights_only=True)["model"]
    saved = model.state_dict()
    assert set(trained) == set(saved)
    for name, tensor in trained.items():
        assert torch.equal(saved[name], tensor), name
    start = load_file(str(Path(tiny_llama_smollm2) / "model.safetensors"))
    assert max((saved[name] - start[name]).abs().max().item() for name in start) > 1e-4  # it trained
