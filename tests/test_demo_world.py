"""The demo world's questions: held-out evaluation means held out from everything the models saw.

The questions are drawn by the world's builder, `scripts/build_demo_world.py` (a development tool outside the
package); the package ships what it built and only loads it (`dasd.models.demo_world`).
"""

from __future__ import annotations

import doctest
import json
import sys
from pathlib import Path

import pytest

from dasd.errors import DasdError
from dasd.models import demo_world as shipped_world

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import build_demo_world as demo_world  # noqa: E402  (scripts/ is not a package)

SHIPPED = shipped_world.shipped_world()


def _expressions(name: str) -> list[str]:
    with open(SHIPPED / f"{name}.jsonl", encoding="utf-8") as handle:
        return [json.loads(line)["meta"]["expression"] for line in handle]


def test_shipped_splits_are_the_ones_the_code_draws():
    drawn = demo_world.split_questions()
    for name, _, per_task in demo_world.SPLITS:
        assert [q["meta"]["expression"] for q in drawn[name]] == _expressions(name)
        assert len(drawn[name]) == per_task * len(demo_world.TASKS)


def test_splits_are_disjoint_from_each_other_and_from_the_fitting_corpora():
    """reasoning-gym's items of nearby seeds coincide; v3's splits shared 218 of 286 evaluation expressions
    with the training split and its corpora held almost all of them."""
    corpora = {
        model: {q["meta"]["expression"] for q in demo_world.corpus_questions(model)} for model in ("teacher", "student")
    }
    splits = {name: _expressions(name) for name, _, _ in demo_world.SPLITS}
    for name, expressions in splits.items():
        assert len(set(expressions)) == len(expressions), f"{name} repeats an expression"
        for model, corpus in corpora.items():
            assert not corpus & set(expressions), f"{name} shares expressions with the {model}'s corpus"
    names = list(splits)
    for position, first in enumerate(names):
        for second in names[position + 1 :]:
            assert not set(splits[first]) & set(splits[second]), f"{first} and {second} share expressions"


@pytest.mark.parametrize(
    ("world", "model", "tokenizer"),
    [
        ("v6", "teacher", "qwen3"),
        ("v6", "student", "smollm2"),
        ("v7", "teacher", "qwen3"),
        ("v7", "student", "smollm2"),
        ("v7", "twin", "smollm2"),
    ],
)
def test_every_prompt_token_is_in_the_fitted_vocabulary(world, model, tokenizer):
    """The models were fitted on a closed vocabulary; a split whose prompts use other tokens would be
    out of the world (their rows are zero)."""
    from safetensors.torch import load_file

    from dasd.models.assets import load_tokenizer

    shipped = shipped_world.shipped_world(world)
    fitted = set(load_file(str(shipped / model / "model.safetensors"))["dasd.row_ids"].tolist())
    text_tokenizer = load_tokenizer(tokenizer)
    for name, _, _ in demo_world.SPLITS if world == "v6" else demo_world.V7_SPLITS:
        with open(shipped / f"{name}.jsonl", encoding="utf-8") as handle:
            for line in handle:
                question = json.loads(line)
                ids = set(text_tokenizer(question["messages"][0]["content"], add_special_tokens=False)["input_ids"])
                assert ids <= fitted, f"{name} {question['id']}: tokens outside the {world} {model}'s world"


def test_the_builders_docstring_examples_hold():
    """The builder left the package, whose docstring examples tests/test_layout.py runs: run its own here."""
    result = doctest.testmod(demo_world, optionflags=doctest.ELLIPSIS)
    assert result.attempted and result.failed == 0


def test_the_split_files_the_builder_writes_are_the_ones_the_loader_copies():
    assert {f"{name}.jsonl" for name, _, _ in demo_world.SPLITS} | {"world.json"} == set(shipped_world.WORLD_FILES)


def test_without_its_shipped_files_the_world_is_a_one_line_error_not_a_46_minute_build(tmp_path, monkeypatch):
    monkeypatch.setenv("DASD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(shipped_world, "shipped_world", lambda world="v6": tmp_path / "empty")
    with pytest.raises(DasdError, match="scripts/build_demo_world.py --export") as error:
        shipped_world.world_dir()
    assert "\n" not in str(error.value) and not (tmp_path / "cache").exists()


@pytest.mark.integration  # restores real models into a fresh cache (~10 s each): make test, not test-unit
def test_a_cache_restored_from_other_shipped_files_is_restored_anew(tmp_path, monkeypatch):
    # The cache folder is named by the world's version; a rebuild shipped under the same version (as during
    # development) must not be served the old models (world v6's first tuning run was).
    monkeypatch.setenv("DASD_CACHE", str(tmp_path / "cache"))
    stale = tmp_path / "cache" / shipped_world.WORLD_VERSION
    (stale / "student").mkdir(parents=True)
    (stale / "world.json").write_text('{"version": "an older build"}')
    (stale / "student" / "model.safetensors").write_text("old weights")
    root = shipped_world.world_dir()
    assert (root / "world.json").read_bytes() == (SHIPPED / "world.json").read_bytes()
    assert (root / "student" / "model.safetensors").read_bytes() != b"old weights"


SHIPPED_V7 = shipped_world.shipped_world("v7")


def test_world_v7s_splits_are_fresh_drawn_by_the_code_and_disjoint_from_v6s():
    """World v7 (issue 37) draws its splits from unused item-seed ranges: v6's held-out split helped choose three
    worlds, so none of its expressions (nor of v6's other splits) may be in v7's."""
    drawn = demo_world.split_questions_v7()
    v6 = {expression for name, _, _ in demo_world.SPLITS for expression in _expressions(name)}
    seen: set[str] = set()
    for name, _, per_task in demo_world.V7_SPLITS:
        with open(SHIPPED_V7 / f"{name}.jsonl", encoding="utf-8") as handle:
            shipped = [json.loads(line)["meta"]["expression"] for line in handle]
        assert [q["meta"]["expression"] for q in drawn[name]] == shipped
        assert len(shipped) == per_task * len(demo_world.TASKS) == len(set(shipped))
        assert not set(shipped) & v6 and not set(shipped) & seen
        seen |= set(shipped)


@pytest.mark.integration  # restores real models into a fresh cache (~10 s each): make test, not test-unit
def test_world_v7_and_its_twin_restore_one_teacher_two_students_and_the_skill_labels(tmp_path, monkeypatch):
    monkeypatch.setenv("DASD_CACHE", str(tmp_path / "cache"))
    v7, twin = shipped_world.world_dir("v7"), shipped_world.world_dir("v7-twin")
    assert v7 != twin and (v7 / "eval_questions.jsonl").read_bytes() == (twin / "eval_questions.jsonl").read_bytes()
    assert (v7 / "teacher" / "model.safetensors").read_bytes() == (twin / "teacher" / "model.safetensors").read_bytes()
    assert (v7 / "student" / "model.safetensors").read_bytes() != (twin / "student" / "model.safetensors").read_bytes()
    assert shipped_world.world_skill_sentences(v7) == list(demo_world.V7_SKILL_SENTENCES)
    # the shipped models are the builder's current design (build 1 is in git history and RESULTS)
    assert json.loads((SHIPPED_V7 / "world.json").read_text())["build"] == demo_world.V7_BUILD
    assert shipped_world.world_skill_sentences(shipped_world.world_dir()) == []  # v6 has no labels
    with pytest.raises(DasdError, match="no demo world 'v8'"):
        shipped_world.world_dir("v8")
