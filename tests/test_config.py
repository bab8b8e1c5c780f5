"""Configs: YAML + overrides, unknown keys rejected, help text complete, every shipped YAML loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from dasd.cli import STAGES, build_parser, parse_arguments
from dasd.config import describe_config, load_config
from dasd.errors import ConfigError
from dasd.stages.sample import SampleConfig

REPO = Path(__file__).resolve().parents[1]


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("input: q.jsonl\noutput: out.jsonl\nbackend: {model: m, batch_size: 4}\n")
    config = load_config(
        SampleConfig,
        str(path),
        ["backend.batch_size=2", "schedule=[{temperature: 1.0, n: 3}]", "system_prompt=Be careful."],
    )
    assert config.backend.batch_size == 2 and config.backend.model == "m"
    assert [(s.temperature, s.n) for s in config.schedule] == [(1.0, 3)]
    assert config.system_prompt == "Be careful."
    # defaults from the report
    default = load_config(SampleConfig, str(path))
    assert [(s.temperature, s.n) for s in default.schedule] == [(0.6, 4), (1.0, 8)]
    assert default.top_k == 0 and default.top_p == 1.0


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["input=q", "output=o", "backend.model=m", "backend.batch_sise=3"], "field 'backend.batch_sise': unknown key"),
        (["input=q", "output=o", "backend.model=m", "temperature=0.6"], "field 'temperature': unknown key"),
        (["input=q", "output=o"], "field 'backend': required"),
        (["input=q", "output=o", "backend.model=m", "backend.batch_size=many"], "field 'backend.batch_size'"),
        (
            ["input=q", "output=o", "backend.model=m", "schedule=[{temperature: -1, n: 2}]"],
            "field 'schedule.0.temperature'",
        ),
        (["input=q", "output=o", "backend.model=m", "shard=2"], "field 'shard'"),
        (["novalue"], "expected key=value"),
    ],
)
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
    # a mapping of named sections lists its keys: `dasd run --help` explains every arm setting
    from dasd.pipeline.arms import KINDS
    from dasd.pipeline.config import PipelineConfig

    pipeline_help = "\n".join(describe_config(PipelineConfig))
    for kind, model in KINDS.items():  # … of every kind of arm
        assert f"  arms.<name> of kind {kind}: " in pipeline_help
        for name in model.model_fields:
            assert f"  arms.<name>.{name} (" in pipeline_help


def test_overrides_after_a_flag_are_overrides_and_anything_else_is_still_refused(capsys):
    # the README's probe command puts `schedule=…` after `--suggest-temperatures`; argparse alone rejected it
    parser = build_parser()
    argv = ["sample", "input=q.jsonl", "--suggest-temperatures", "schedule=[{temperature: 0.3, n: 2}]", "limit=3"]
    args = parse_arguments(parser, argv)
    assert args.suggest_temperatures and args.overrides == argv[1:2] + argv[3:]
    config = load_config(SampleConfig, None, [*args.overrides, "output=r.jsonl", "backend.model=m"])
    assert [entry.temperature for entry in config.schedule] == [0.3] and config.limit == 3
    for argv, refused in (
        (["sample", "a=1", "--suggest-temperatures", "nonsense"], "nonsense"),
        (["sample", "a=1", "--nope", "b=2"], "--nope"),
    ):
        with pytest.raises(SystemExit):
            parse_arguments(build_parser(), argv)
        assert capsys.readouterr().err.endswith(f"unrecognized arguments: {refused}\n")


def test_every_shipped_yaml_loads():
    shipped = sorted((REPO / "configs").glob("*.yaml"))
    assert shipped, "configs/ should hold example configs"
    for path in shipped:
        # configs are named STAGE.yaml or PREFIX-STAGE.yaml
        stage = next(
            name
            for name in sorted(STAGES, key=len, reverse=True)
            if path.stem == name or path.stem.endswith("-" + name)
        )
        _, config_class = STAGES[stage].load()
        load_config(config_class, str(path))


def _fields(config_class, prefix="", in_help=True):
    """(dotted key, field, whether --help lists it by key) of every field of a config class, nested
    sections included (the items of a list of sections are described by the list's own help line)."""
    from pydantic import BaseModel

    for name, field in config_class.model_fields.items():
        yield prefix + name, field, in_help
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from _fields(annotation, f"{prefix}{name}.", in_help)
        for inner in getattr(annotation, "__args__", ()):
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                yield from _fields(inner, f"{prefix}{name}[].", False)


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_config_field_of_every_stage_is_described(stage):
    """`dasd STAGE --help` is generated from these descriptions: each must say what the key does."""
    _, config_class = STAGES[stage].load()
    fields = list(_fields(config_class))
    assert fields
    for key, field, _ in fields:
        description = (field.description or "").strip()
        assert len(description) >= 10, f"{stage}: {key} has no real description ({description!r})"
        assert "DESIGN §" not in description, f"{stage}: {key} cites a document outside the repo"
    help_text = "\n".join(describe_config(config_class))
    missing = [
        key for key, _, listed in fields if listed and f"  {key} (" not in help_text and f"  {key}.*" not in help_text
    ]
    assert not missing, f"{stage}: --help does not list {missing}"


@pytest.mark.parametrize("stage", ["sample", "score", "filter", "mix", "select", "build-sft"])
def test_a_compressed_record_output_is_a_one_line_config_error(stage, tmp_path):
    """Outputs are appended to and resumed by id: `*.jsonl.gz` is refused with the config, before any work
    (it used to be a ValueError traceback from the writer, or — for whole-file outputs — plain text named .gz)."""
    _, config_class = STAGES[stage].load()
    output = tmp_path / "out" / "records.jsonl.gz"
    with pytest.raises(ConfigError, match=r"field 'output': .*plain \.jsonl or \.parquet") as error:
        load_config(config_class, None, ["input=questions.jsonl", f"output={output}"])
    assert "\n" not in str(error.value) and not output.parent.exists()


@pytest.mark.parametrize(
    "cls, overrides, message",
    [
        (
            SampleConfig,
            ["backend.batch_sise=3"],
            "field 'backend.batch_sise': unknown key; did you mean 'backend.batch_size'?",
        ),
        (SampleConfig, ["shedule=[]"], "field 'shedule': unknown key; did you mean 'schedule'?"),
        (SampleConfig, ["backend.modle=m"], "did you mean 'backend.model'?"),  # two letters swapped: not `mode`
        (SampleConfig, ["schedule=[{temperature: 1.0, n: 2, top_q: 0.9}]"], "did you mean 'schedule.0.top_p'?"),
        (SampleConfig, ["zzzz=1"], "field 'zzzz': unknown key (see --help"),  # nothing close: no guess
        ("pipeline", ["trian={epochs: 1}"], "field 'trian': unknown key; did you mean 'train'?"),
        ("pipeline", ["arms={a: {selct: {}}}"], "field 'arms.a.selct': unknown key; did you mean 'arms.a.select'?"),
        ("pipeline", ["executor.slurm.partiton=x"], "did you mean 'executor.slurm.partition'?"),
    ],
)
def test_a_misspelt_key_names_the_closest_valid_one(cls, overrides, message):
    if cls == "pipeline":
        from dasd.pipeline.config import PipelineConfig

        cls, base = PipelineConfig, ["workdir=w", "questions=q.jsonl", "teacher.model=t", "student.model=s"]
    else:
        base = ["input=q", "output=o", "backend.model=m"]
    with pytest.raises(ConfigError) as error:
        load_config(cls, None, [*base, *overrides])
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize(
    "override, read_as",
    [
        ("system_prompt=User: solve it", "the value was read as a mapping {User: solve it}"),  # YAML: a mapping
        ("system_prompt=User: solve: it", "the value is not valid YAML (mapping values are not allowed here)"),
        ("system_prompt=[note] be brief", "the value is not valid YAML"),
        ("model_name=1.5", "the value was read as float 1.5"),
    ],
)
def test_an_override_yaml_reads_as_something_else_says_how_to_quote_it(override, read_as):
    key, text = override.split("=", 1)
    with pytest.raises(ConfigError) as error:
        load_config(SampleConfig, None, ["input=q", "output=o", "backend.model=m", override])
    message = str(error.value)
    assert read_as in message and "\n" not in message
    quoted = f"'{key}=\"{text}\"'"  # what to type: double quotes for YAML, single quotes around it for the shell
    assert f"override values are read as YAML: quote a text value, e.g. {quoted}" in message
    # …and the quoted form is what the shell hands over: it loads as the text
    config = load_config(SampleConfig, None, ["input=q", "output=o", "backend.model=m", quoted[1:-1]])
    assert getattr(config, key) == text
