"""The demo's studies as data (`dasd/data/studies/*.yaml`, `dasd.pipeline.studies`): every file loads and plans, an
unknown or broken study is a one-line error, the help lists them, and the `arms` study agrees with the shipped real
ablation config where the two should."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from dasd.config import describe_config, load_config
from dasd.errors import ConfigError
from dasd.pipeline import studies
from dasd.pipeline.config import PipelineConfig
from dasd.pipeline.plan import plan
from dasd.stages import demo

ROOT = Path(__file__).resolve().parents[1]
REAL_ABLATION = ROOT / "configs" / "gpt-oss-qwen3-4b-ablation-run.yaml"


def _world(tmp_path: Path) -> Path:
    """A world folder as far as planning reads it: world.json with the skill labels (v7's kind)."""
    world = tmp_path / "world"
    world.mkdir(exist_ok=True)
    (world / "world.json").write_text(json.dumps({"version": "demo-world-v7", "skill_sentences": ["^Careful: "]}))
    return world


def _demo_spec(tmp_path: Path, study: str) -> dict:
    config = load_config(demo.DemoConfig, None, [f"workdir={tmp_path / 'run'}", "world=v7", f"ablation={study}"])
    return demo.pipeline(config, _world(tmp_path))


@pytest.mark.parametrize("name", studies.study_names())
def test_every_study_loads_and_plans_its_arms_for_every_seed(tmp_path, name):
    """Planning checks the arms (`after`, `mix`, …) and that every claim compares arms or evaluated models."""
    spec = _demo_spec(tmp_path, name)
    steps = [step.name for step in plan(PipelineConfig.model_validate(spec))]
    assert steps[:3] == ["sample", "score", "filter"]
    study = studies.load_study(name)
    assert bool(spec.get("arms")) == study.has_arms and spec["claims"]
    for arm in spec.get("arms", {}):
        for seed in spec["seeds"]:
            assert f"{arm}.s{seed}.eval" in steps


def test_an_unknown_study_is_one_line_with_the_closest_name_and_every_study():
    with pytest.raises(ConfigError) as error:
        load_config(demo.DemoConfig, None, ["ablation=armz"])
    message = str(error.value)
    assert "\n" not in message and "field 'ablation'" in message and "did you mean 'arms'?" in message
    assert all(name in message for name in studies.study_names())


def test_the_help_explains_every_study():
    help_text = "\n".join(describe_config(demo.DemoConfig))
    for name in studies.study_names():
        assert f"{name}: {studies.load_study(name).description}" in help_text


def test_a_broken_study_file_is_one_line_naming_the_file_and_the_field(tmp_path, monkeypatch):
    monkeypatch.setattr(studies, "STUDIES", tmp_path)
    studies.load_study.cache_clear()
    try:
        (tmp_path / "typo.yaml").write_text("description: x\narms:\n  a: {selekt: {k: 2}}\n")
        (tmp_path / "loop.yaml").write_text("description: x\ninclude: {loop: [a]}\n")
        (tmp_path / "good.yaml").write_text("description: x\narms: {a: {select: {k: 2}}}\n")
        (tmp_path / "missing.yaml").write_text("description: x\ninclude: {good: [a, b]}\n")
        (tmp_path / "input.yaml").write_text("description: x\narms: {a: {select: {oracle_patterns: $nope}}}\n")
        with pytest.raises(ConfigError, match=r"typo\.yaml: field 'arms': .*arm a: field 'selekt': unknown key"):
            studies.resolve("typo")
        with pytest.raises(ConfigError, match=r"study loop: includes itself \(loop -> loop\)"):
            studies.resolve("loop")
        with pytest.raises(ConfigError, match="study missing: include: good has no arm b$"):
            studies.resolve("missing")
        with pytest.raises(ConfigError, match=r"study input: \$nope is not an input here"):
            studies.resolve("input", {"skill_sentences": list})
    finally:
        studies.load_study.cache_clear()


def test_every_study_the_makefile_runs_is_a_study_file():
    named = set(re.findall(r"^STUDY_WORKDIR\.([\w-]+) :=", (ROOT / "Makefile").read_text(), flags=re.MULTILINE))
    assert named and named <= set(studies.study_names())


def _disagreements(real: PipelineConfig, ours: PipelineConfig) -> list[str]:
    """Where the demo's `arms` study and the real ablation config differ in what they should share."""
    problems = []
    if list(real.arms) != list(ours.arms):
        problems.append(f"arm names: {list(real.arms)} vs {list(ours.arms)}")
    for name in real.arms.keys() & ours.arms.keys():
        theirs, mine = (arms[name].model_dump(exclude={"description"}) for arms in (real.arms, ours.arms))
        if theirs != mine:
            problems.append(f"arm {name}: {theirs} vs {mine}")
    for name, view in {
        "claims": lambda config: [(claim.name, claim.better, claim.worse) for claim in config.claims],
        "select": lambda config: config.select,
        "stages": lambda config: config.stages,
        "eval_models": lambda config: config.eval_models,
        "seeds": lambda config: config.seeds,
        "temperatures": lambda config: [entry["temperature"] for entry in config.sample["schedule"]],
    }.items():
        if view(real) != view(ours):
            problems.append(f"{name}: {view(real)} vs {view(ours)}")
    return problems


def test_the_real_ablation_config_runs_the_demos_arms_study(tmp_path):
    """configs/gpt-oss-qwen3-4b-ablation-run.yaml is `make ablation` on a real teacher and student, so the two must
    agree on the experiment and may differ only in its size and models. They agree on: the arms (the same names in
    the same order, and every setting of each but its description — selection over the pipeline's, stages, `after`,
    `mix`, `control_of`), the pipeline's own `select` the arms build on, the recipe's stages switched off, the models
    evaluated beside the arms, the seeds, the temperatures sampled, and the claims (name, better, worse; in order).
    They differ, by design, in the models, the questions and benchmarks, the samples per temperature, the training,
    mixing and evaluation settings, the arms' descriptions and the claims' sources (the demo calls its off-policy
    comparison a control stricter than Table 5)."""
    real = load_config(PipelineConfig, str(REAL_ABLATION))
    ours = PipelineConfig.model_validate(_demo_spec(tmp_path, "arms"))
    assert _disagreements(real, ours) == []
    # the check sees a changed arm setting, a claim's pair and a sampled temperature
    changed = ours.model_copy(deep=True)
    changed.arms["t06_only"].select["k"] = 1
    changed.claims[1].worse = "t10_only"
    changed.sample["schedule"] = changed.sample["schedule"][::-1]
    found = _disagreements(real, changed)
    assert [problem.split(":")[0] for problem in found] == ["arm t06_only", "claims", "temperatures"]
