"""Configs: YAML + overrides, unknown keys rejected, help text complete, every shipped YAML loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from dasd.cli import STAGES, build_parser
from dasd.config import describe_config, load_config
from dasd.errors import ConfigError
from dasd.stages.sample import SampleConfig

REPO = Path(__file__).resolve().parents[1]


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("input: q.jsonl\noutput: out.jsonl\nbackend: {model: m, batch_size: 4}\n")
    config = load_config(SampleConfig, str(path), ["backend.batch_size=2", "schedule=[{temperature: 1.0, n: 3}]", "system_prompt=Be careful."])
    assert config.backend.batch_size == 2 and config.backend.model == "m"
    assert [(s.temperature, s.n) for s in config.schedule] == [(1.0, 3)]
    assert config.system_prompt == "Be careful."
    # defaults from the report
    default = load_config(SampleConfig, str(path))
    assert [(s.temperature, s.n) for s in default.schedule] == [(0.6, 4), (1.0, 8)]
    assert default.top_k == 0 and default.top_p == 1.0


@pytest.mark.parametrize("overrides, message", [
    (["input=q", "output=o", "backend.model=m", "backend.batch_sise=3"], "field 'backend.batch_sise': unknown key"),
    (["input=q", "output=o", "backend.model=m", "temperature=0.6"], "field 'temperature': unknown key"),
    (["input=q", "output=o"], "field 'backend': required"),
    (["input=q", "output=o", "backend.model=m", "backend.batch_size=many"], "field 'backend.batch_size'"),
    (["input=q", "output=o", "backend.model=m", "schedule=[{temperature: -1, n: 2}]"], "field 'schedule.0.temperature'"),
    (["input=q", "output=o", "backend.model=m", "shard=2"], "field 'shard'"),
    (["novalue"], "expected key=value"),
])
def test_bad_configs_are_one_line_errors(overrides, message):
    with pytest.raises(ConfigError) as error:
        load_config(SampleConfig, None, overrides)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_bad_yaml_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("input: q\noutput: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+: invalid YAML"):
        load_config(SampleConfig, str(path))
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(SampleConfig, str(tmp_path / "nope.yaml"))


def test_help_lists_every_field():
    lines = "\n".join(describe_config(SampleConfig))
    for name in SampleConfig.model_fields:
        assert f"  {name}" in lines
    for name in SampleConfig.model_fields["backend"].annotation.model_fields:
        assert f"backend.{name} (" in lines
    for field in SampleConfig.model_fields.values():
        assert field.description, "every field needs a help string"
    parser = build_parser()
    assert set(STAGES) <= set(parser._subparsers._group_actions[0].choices)


def test_every_shipped_yaml_loads():
    from dasd.cli import STAGES
    import importlib

    shipped = sorted((REPO / "configs").glob("*.yaml"))
    assert shipped, "configs/ should hold example configs"
    for path in shipped:
        # configs are named STAGE.yaml or PREFIX-STAGE.yaml
        stage = next(name for name in sorted(STAGES, key=len, reverse=True) if path.stem == name or path.stem.endswith("-" + name))
        module_name, class_name, _ = STAGES[stage]
        config_class = getattr(importlib.import_module(module_name), class_name)
        load_config(config_class, str(path))
