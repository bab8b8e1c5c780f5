"""The demo world's questions: held-out evaluation means held out from everything the models saw."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest

from dasd import demo_world

SHIPPED = Path(str(resources.files("dasd").joinpath("data", demo_world.COMPACT_DIR)))


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


@pytest.mark.parametrize(("model", "tokenizer"), [("teacher", "qwen3"), ("student", "smollm2")])
def test_every_prompt_token_is_in_the_fitted_vocabulary(model, tokenizer):
    """The models were fitted on a closed vocabulary; a split whose prompts use other tokens would be
    out of the world (their rows are zero)."""
    from safetensors.torch import load_file

    from dasd.assets import load_tokenizer

    fitted = set(load_file(str(SHIPPED / model / "model.safetensors"))["dasd.row_ids"].tolist())
    text_tokenizer = load_tokenizer(tokenizer)
    for name, _, _ in demo_world.SPLITS:
        with open(SHIPPED / f"{name}.jsonl", encoding="utf-8") as handle:
            for line in handle:
                question = json.loads(line)
                ids = set(text_tokenizer(question["messages"][0]["content"], add_special_tokens=False)["input_ids"])
                assert ids <= fitted, f"{name} {question['id']}: tokens outside the {model}'s world"
