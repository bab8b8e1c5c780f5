"""`dasd build-sft`: SFT records per stage, and exports that TRL's and LLaMA-Factory's formats accept."""

from __future__ import annotations

import copy
import json

import pytest

from dasd.cli import main
from dasd.config import load_config
from dasd.stages import build_sft

from .conftest import read_jsonl, write_jsonl


def _selected():
    return [
        {
            "id": f"q{i}:t{t:g}:0",
            "question_id": f"q{i}",
            "temperature": t,
            "messages": [
                {"role": "system", "content": "Old system prompt."},
                {"role": "user", "content": f"What is {i} + {i}?"},
            ],
            "reasoning": f"I add {i} and {i}.\nThat gives {2 * i}.",
            "content": f"The answer is $\\boxed{{{2 * i}}}$.",
            "finish_reason": "stop",
        }
        for i in range(3)
        for t in (0.6, 1.0)
    ]


@pytest.fixture
def built(tmp_path):
    path = write_jsonl(tmp_path / "selected.jsonl", _selected())
    output = tmp_path / "sft" / "sft.jsonl"
    summary = build_sft.run(
        load_config(build_sft.BuildSFTConfig, None, [f"input={path}", f"output={output}", "student_tokenizer=qwen3"])
    )
    return output, summary


def test_records_and_stages(built):
    output, summary = built
    records = read_jsonl(output)
    assert len(records) == 6 and summary["per_stage"] == {"high_temp": 3, "low_temp": 3}
    first = records[0]
    assert first["messages"][0] == {"role": "system", "content": "You are a helpful assistant."}
    assert [m["role"] for m in first["messages"]] == ["system", "user", "assistant"]
    assert (
        first["messages"][-1]["content"]
        == "<think>\nI add 0 and 0.\nThat gives 0.\n</think>\n\nThe answer is $\\boxed{0}$."
    )
    assert first["weight"] == 1.0 and first["source"] == "dasd"
    low = read_jsonl(output.with_name("sft.low_temp.jsonl"))
    assert {r["temperature"] for r in low} == {0.6} and all(r["stage"] == "low_temp" for r in low)
    assert summary["template_check"] == {"ok": 6}


def test_trl_files_pass_trls_own_data_utilities(built, qwen3_tokenizer):
    import datasets
    from trl.data_utils import apply_chat_template, is_conversational

    output, _ = built
    messages = datasets.load_dataset("json", data_files=str(output.with_name("sft.trl_messages.jsonl")), split="train")
    example = messages[0]
    assert is_conversational(example)
    rendered = apply_chat_template({"messages": example["messages"]}, qwen3_tokenizer)
    assert rendered["text"].count("I add 0 and 0.") == 1
    pairs = datasets.load_dataset(
        "json", data_files=str(output.with_name("sft.low_temp.trl_prompt_completion.jsonl")), split="train"
    )
    pair = pairs[0]
    assert is_conversational(pair)
    rendered = apply_chat_template({"prompt": pair["prompt"], "completion": pair["completion"]}, qwen3_tokenizer)
    assert rendered["prompt"].endswith("<|im_start|>assistant\n")
    assert rendered["completion"].startswith("<think>\nI add") and rendered["completion"].rstrip().endswith(
        "<|im_end|>"
    )


def test_sharegpt_export_matches_llamafactorys_schema(built):
    from trl.data_utils import is_conversational_from_value, maybe_convert_to_chatml

    output, _ = built
    info = json.loads(output.with_name("dataset_info.json").read_text())
    assert set(info) == {"dasd", "dasd_high_temp", "dasd_low_temp"}
    for entry in info.values():
        # LLaMA-Factory's documented sharegpt entry: file_name, formatting, columns, tags
        assert entry["formatting"] == "sharegpt"
        assert entry["columns"] == {"messages": "conversations", "system": "system"}
        assert {"role_tag", "content_tag", "user_tag", "assistant_tag"} <= set(entry["tags"])
        rows = read_jsonl(output.with_name(entry["file_name"]))
        assert rows
        for row in rows:
            turns = row[entry["columns"]["messages"]]
            roles = [turn[entry["tags"]["role_tag"]] for turn in turns]
            # user and assistant alternate, user first, assistant last (LLaMA-Factory's check)
            assert roles[0::2] == [entry["tags"]["user_tag"]] * len(roles[0::2])
            assert roles[1::2] == [entry["tags"]["assistant_tag"]] * len(roles[1::2]) and len(roles) % 2 == 0
            assert row["system"] == "You are a helpful assistant."
    row = read_jsonl(output.with_name("sft.sharegpt.jsonl"))[0]
    assert is_conversational_from_value(row)
    converted = maybe_convert_to_chatml(copy.deepcopy(row))
    assert converted["messages"][-1]["content"] == read_jsonl(output)[0]["messages"][-1]["content"]


def test_template_check_notices_a_template_that_drops_the_reasoning(qwen3_tokenizer):
    tokenizer = copy.deepcopy(qwen3_tokenizer)
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'].split('</think>')[-1] }}{% endfor %}"
    records = [
        build_sft.sft_record(r, load_config(build_sft.BuildSFTConfig, None, ["input=x", "output=y"]))
        for r in _selected()[:2]
    ]
    assert build_sft.template_check(tokenizer, records) == {"reasoning_missing": 2}
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}{{ m['content'] }}{% endfor %}"
    assert build_sft.template_check(tokenizer, records) == {"reasoning_repeated": 2}


def test_forced_stage_and_bad_input(tmp_path, capsys):
    path = write_jsonl(tmp_path / "selected.jsonl", _selected())
    summary = build_sft.run(
        load_config(
            build_sft.BuildSFTConfig,
            None,
            [f"input={path}", f"output={tmp_path / 'mixed.jsonl'}", "stage=mixed_policy", "exports=[]"],
        )
    )
    assert summary["per_stage"] == {"mixed_policy": 6}
    bad = write_jsonl(tmp_path / "bad.jsonl", [{**_selected()[0], "reasoning": ""}])
    assert main(["build-sft", f"input={bad}", f"output={tmp_path / 'out' / 'sft.jsonl'}"]) == 2
    assert "bad.jsonl:1: field 'reasoning': empty" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
