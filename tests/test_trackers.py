"""`dasd train report_to=tensorboard`: real TensorBoard event files (tensorboardX's writer, the one transformers
uses without TensorFlow), one run per stage, read back record by record and compared with the loss log."""

from __future__ import annotations

import json
import struct

import pytest

from dasd.errors import ConfigError
from dasd.stages import train

from .conftest import write_jsonl
from .test_train import _config, sft_records


def read_scalars(event_file) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value)]} from a TensorBoard event file (TFRecord framing: length, crc, data, crc)."""
    from tensorboardX.proto import event_pb2

    scalars: dict[str, list[tuple[int, float]]] = {}
    data = event_file.read_bytes()
    offset = 0
    while offset < len(data):
        (length,) = struct.unpack("<Q", data[offset : offset + 8])
        payload = data[offset + 12 : offset + 12 + length]
        offset += 12 + length + 4
        event = event_pb2.Event()
        event.ParseFromString(payload)
        for value in event.summary.value:
            if value.HasField("simple_value"):
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def test_tensorboard_gets_one_run_per_stage_with_the_logged_losses(tmp_path, tiny_llama_smollm2):
    low = write_jsonl(tmp_path / "low.jsonl", sft_records(8))
    high = write_jsonl(tmp_path / "high.jsonl", sft_records(8, start=8, stage="high_temp"))
    config = _config(
        tmp_path,
        tiny_llama_smollm2,
        [{"name": "low_temp", "data": str(low)}, {"name": "high_temp", "data": str(high)}],
        "epochs=1",
        "report_to=tensorboard",
        "run_name=exp1",
    )
    assert config.report_to == ["tensorboard"]
    train.run(config)
    for stage in ("low_temp", "high_temp"):
        events = list((tmp_path / "run" / stage / "runs").rglob("events.out.tfevents.*"))
        assert len(events) == 1, events
        scalars = read_scalars(events[0])
        history = json.loads((tmp_path / "run" / stage / "log_history.json").read_text())
        logged = [(entry["step"], entry["loss"]) for entry in history if "loss" in entry]
        assert logged and [step for step, _ in scalars["train/loss"]] == [step for step, _ in logged]
        assert all(abs(a - b) < 1e-4 for (_, a), (_, b) in zip(scalars["train/loss"], logged))
        assert "train/learning_rate" in scalars
        # the run name the trackers see: <run_name>-<stage>
        arguments = json.loads((tmp_path / "run" / stage / "final" / "dasd_stage.json").read_text())
        assert arguments.get("run_name") == f"exp1-{stage}"


def test_a_tracker_that_is_not_installed_is_a_one_line_error(tmp_path, tiny_llama_smollm2):
    import importlib.util

    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here")
    data = write_jsonl(tmp_path / "low.jsonl", sft_records(2))
    config = _config(tmp_path, tiny_llama_smollm2, [{"name": "low_temp", "data": str(data)}], "report_to=wandb")
    with pytest.raises(ConfigError, match="report_to=wandb needs wandb: pip install wandb"):
        train.run(config)
    assert not (tmp_path / "run" / "low_temp" / "final").exists()
