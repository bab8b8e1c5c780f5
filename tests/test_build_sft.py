"""`dasd build-sft`: SFT records per stage, and exports that TRL's and LLaMA-Factory's formats accept."""

from __future__ import annotations

import copy
import json
import math

import pytest
import yaml

from dasd.cli import main
from dasd.config import fingerprint_view, load_config
from dasd.data.summaries import BuildSFTSummary
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


ALL_EXPORTS = "exports=[trl_messages, trl_prompt_completion, sharegpt]"


@pytest.fixture
def built(tmp_path):
    path = write_jsonl(tmp_path / "selected.jsonl", _selected())
    output = tmp_path / "sft" / "sft.jsonl"
    args = [f"input={path}", f"output={output}", "student_tokenizer=qwen3", ALL_EXPORTS]
    summary = build_sft.run(load_config(build_sft.BuildSFTConfig, None, args))
    return output, summary


def test_by_default_only_what_train_and_mix_read_is_written(tmp_path):
    from dasd.naming import SFT_STAGES, sft_stage_file

    path = write_jsonl(tmp_path / "selected.jsonl", _selected())
    output = tmp_path / "sft" / "sft.jsonl"
    summary = build_sft.run(load_config(build_sft.BuildSFTConfig, None, [f"input={path}", f"output={output}"]))
    # the records (dasd mix's curated set) and one file per stage (dasd train's and dasd run's data), no export
    assert summary["files"] == [sft_stage_file(output, stage).name for stage in sorted(SFT_STAGES)]
    assert {p.name for p in output.parent.iterdir()} == {
        "sft.jsonl",
        "sft.high_temp.jsonl",
        "sft.low_temp.jsonl",
        "sft.config.yaml",
        "sft.summary.json",
    }
    assert yaml.safe_load((tmp_path / "sft" / "sft.config.yaml").read_text())["exports"] == []
    # one export asked for: that one, for all stages and each stage, and nothing of the others
    build_sft.run(
        load_config(build_sft.BuildSFTConfig, None, [f"input={path}", f"output={output}", "exports=[sharegpt]"])
    )
    assert {p.name for p in output.parent.iterdir()} >= {
        "sft.sharegpt.jsonl",
        "sft.low_temp.sharegpt.jsonl",
        "sft.high_temp.sharegpt.jsonl",
        "dataset_info.json",
    }
    assert not any("trl_" in p.name for p in output.parent.iterdir())


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


# weight_by: two questions × three candidates. q0's three were sampled at T=1.0 (stage high_temp); q1's two at
# T=1.0 and one at T=0.6 (a stage of its own: a lone candidate).
def _candidates():
    ln2 = math.log(2)
    # mean teacher log-prob per token, reasoning and content tokens together: q0 -1, -1 - ln2, -1 - ln4 (c1's
    # reasoning tokens alone average -1 - 1.5 ln2: a mean of the parts' means would be -1 - 0.75 ln2); q1 -0.5 each
    teacher = [
        ([-1.0, -1.0], [-1.0]),
        ([-1.0 - 1.5 * ln2, -1.0 - 1.5 * ln2], [-1.0]),
        ([-1.0 - 2 * ln2], [-1.0 - 2 * ln2]),
        ([-0.5], [-0.5]),
        ([-0.25, -0.75], [-0.5]),
        ([-3.0], [-3.0]),
    ]
    teacher_sentences = [1, 2, 3, 0, 4, 5]
    records = []
    for index, ((reasoning, content), count) in enumerate(zip(teacher, teacher_sentences)):
        question, temperature = ("q0", 1.0) if index < 3 else ("q1", 0.6 if index == 5 else 1.0)
        record = {
            **_selected()[0],
            "id": f"{question}:c{index}",
            "question_id": question,
            "temperature": temperature,
            "teacher_logprobs": {
                "reasoning": {"offsets": [[i, i + 1] for i in range(len(reasoning))], "logprobs": reasoning},
                "content": {"offsets": [[i, i + 1] for i in range(len(content))], "logprobs": content},
            },
            "das": {"teacher": count, "student": 1, "shared": 1, "n": count + 2},
        }
        records.append(record)
    return records


def _weights(tmp_path, *overrides):
    path = write_jsonl(tmp_path / "selected.jsonl", _candidates())
    output = tmp_path / "sft" / "sft.jsonl"
    summary = build_sft.run(
        load_config(build_sft.BuildSFTConfig, None, [f"input={path}", f"output={output}", *overrides])
    )
    return {record["id"]: record["weight"] for record in read_jsonl(output)}, summary


def test_weight_by_teacher_seq_logprob(tmp_path, capsys):
    weights, summary = _weights(tmp_path, "weight_by=teacher_seq_logprob", "weight=2")
    # high_temp: softmax within q0 of (-1, -1 - ln2, -1 - ln4) ∝ 1 : 1/2 : 1/4 = 4/7, 2/7, 1/7; within q1's two
    # equal means 1/2, 1/2; the stage's five sum to 2, mean 2/5, so × 5/2 → 10/7, 5/7, 5/14, 5/4, 5/4; × weight 2.
    # low_temp: q1's lone candidate gets 1 → mean 1 → × 2.
    expected = {
        "q0:c0": 20 / 7,
        "q0:c1": 10 / 7,
        "q0:c2": 5 / 7,
        "q1:c3": 5 / 2,
        "q1:c4": 5 / 2,
        "q1:c5": 2.0,
    }
    assert weights == pytest.approx(expected, rel=1e-9)
    assert summary["weight_by"] == "teacher_seq_logprob" and summary["weight_temperature"] == 1.0
    declared = BuildSFTSummary.__required_keys__ | BuildSFTSummary.__optional_keys__
    assert set(summary) <= declared
    assert summary["weights"] == {
        "high_temp": {"min": round(5 / 7, 6), "mean": 2.0, "max": round(20 / 7, 6)},
        "low_temp": {"min": 2.0, "mean": 2.0, "max": 2.0},
    }
    # the per-stage files `dasd train` reads carry them too
    low = read_jsonl(tmp_path / "sft" / "sft.high_temp.jsonl")
    assert {record["id"]: record["weight"] for record in low} == pytest.approx(
        {key: value for key, value in expected.items() if key != "q1:c5"}, rel=1e-9
    )
    # temperature 2 halves the log-prob gaps: q0 ∝ 1 : 2^-1/2 : 1/2 (sum s), q1 1/2, 1/2; × 5/2 (the stage sums to 2)
    weights, _ = _weights(tmp_path, "weight_by=teacher_seq_logprob", "weight_temperature=2")
    capsys.readouterr()
    s = 1 + 2**-0.5 + 0.5
    assert weights == pytest.approx(
        {
            "q0:c0": 2.5 / s,
            "q0:c1": 2.5 * 2**-0.5 / s,
            "q0:c2": 1.25 / s,
            "q1:c3": 1.25,
            "q1:c4": 1.25,
            "q1:c5": 1.0,
        },
        rel=1e-9,
    )
    assert "warning" not in capsys.readouterr().err
    # one record per question and stage (select k=1): nothing to weigh within a question, and the run says so
    write_jsonl(tmp_path / "selected.jsonl", [_candidates()[i] for i in (0, 3, 5)])
    build_sft.run(
        load_config(
            build_sft.BuildSFTConfig,
            None,
            [
                f"input={tmp_path / 'selected.jsonl'}",
                f"output={tmp_path / 'one.jsonl'}",
                "weight_by=teacher_seq_logprob",
            ],
        )
    )
    assert {record["weight"] for record in read_jsonl(tmp_path / "one.jsonl")} == {1.0}
    assert "every question has one record per stage here: every weight is 1" in capsys.readouterr().err


def test_weight_by_teacher_sentences(tmp_path):
    from dasd.reporting.cards import stage_facts

    weights, summary = _weights(tmp_path, "weight_by=teacher_sentences", "weight=2")
    # das.teacher, as dasd select counts: high_temp 1, 2, 3, 0, 4 (sum 10, mean 2) → /2 → 0.5, 1, 1.5, 0, 2;
    # low_temp 5 alone → 1; all × weight 2
    assert weights == {"q0:c0": 1.0, "q0:c1": 2.0, "q0:c2": 3.0, "q1:c3": 0.0, "q1:c4": 4.0, "q1:c5": 2.0}
    assert summary["weight_by"] == "teacher_sentences" and "weight_temperature" not in summary
    assert summary["weights"]["high_temp"] == {"min": 0.0, "mean": 2.0, "max": 4.0}
    config = yaml.safe_load((tmp_path / "sft" / "sft.config.yaml").read_text())
    facts = stage_facts({"stage": "build-sft", "file": "sft.jsonl", "config": config, "summary": summary})
    # the config's fact, then the summary's rows as `dasd build-sft` printed them
    assert "- per-record loss weights by teacher_sentences, each stage scaled to mean 2.0" in facts
    assert "  - weight high_temp: min 0, mean 2, max 4" in facts


def test_weight_by_none_is_the_constant_weight_and_leaves_every_file_as_before(tmp_path):
    weights, summary = _weights(tmp_path, "weight=0.5")
    assert set(weights.values()) == {0.5}
    assert not {"weight_by", "weight_temperature", "weights"} & set(summary)
    config = yaml.safe_load((tmp_path / "sft" / "sft.config.yaml").read_text())
    # the resolved config lists every field; `dasd run`'s fingerprint of the step is the one made before weight_by
    # existed (ADDED fields at their default are left out of it)
    view = fingerprint_view(build_sft.BuildSFTConfig.model_validate(config))
    assert config["weight_by"] == "none" and not {"weight_by", "weight_temperature"} & set(view)
    assert view["weight"] == 0.5
    files = {path.name: path.read_bytes() for path in (tmp_path / "sft").iterdir()}
    _weights(tmp_path, "weight=0.5", "weight_by=none")
    assert {path.name: path.read_bytes() for path in (tmp_path / "sft").iterdir()} == files


@pytest.mark.parametrize(
    ("weight_by", "drop", "field"),
    [("teacher_seq_logprob", "teacher_logprobs", "teacher_logprobs"), ("teacher_sentences", "das", "das")],
)
def test_weight_by_needs_its_field(tmp_path, capsys, weight_by, drop, field):
    records = _candidates()
    del records[1][drop]
    bad = write_jsonl(tmp_path / "bad.jsonl", records)
    output = tmp_path / "out" / "sft.jsonl"
    assert main(["build-sft", f"input={bad}", f"output={output}", f"weight_by={weight_by}"]) == 2
    err = capsys.readouterr().err
    assert f"bad.jsonl:2: field '{field}': missing: weight_by={weight_by} needs" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


# sentence_weights: the sentences as `dasd score` splits them (dasd.text.sentences), classed in turn
def _scored(reasoning_prefix: str = "  "):
    from dasd.text.sentences import split_sentences

    kinds = ["teacher", "shared", "student"]
    records = []
    for record in _selected():
        record = {**record, "reasoning": reasoning_prefix + record["reasoning"] + "\n"}
        sentences = []
        for part in ("reasoning", "content"):
            for start, end in split_sentences(record[part]):
                kind = kinds[len(sentences) % 3]
                sentences.append({"part": part, "start": start, "end": end, "type": kind})
        records.append({**record, "sentences": sentences})
    return records


def test_sentence_weights_mark_each_sentence_of_the_assistant_turn(tmp_path):
    records = _scored()
    path = write_jsonl(tmp_path / "scored.jsonl", records)
    output = tmp_path / "sft" / "sft.jsonl"
    summary = build_sft.run(
        load_config(
            build_sft.BuildSFTConfig,
            None,
            [f"input={path}", f"output={output}", "sentence_weights={teacher: 2, student: 0.5}"],
        )
    )
    written = read_jsonl(output)
    chars = {stage: {"teacher": 0, "shared": 0, "student": 0} for stage in ("low_temp", "high_temp")}
    for source, record in zip(records, written):
        assistant = record["messages"][-1]["content"]
        spans = record["loss_weight_spans"]
        assert len(spans) == len(source["sentences"])
        for (start, end, weight), sentence in zip(spans, source["sentences"]):
            # each span is its sentence's text in the assistant turn (the reasoning was stripped of its spaces)
            text = source[sentence["part"]][sentence["start"] : sentence["end"]].strip()
            assert assistant[start:end].strip() == text and text
            chars[record["stage"]][sentence["type"]] += end - start
            assert weight == pytest.approx(summary["sentence_weights"][record["stage"]]["weight"][sentence["type"]])
    for stage, stats in summary["sentence_weights"].items():
        weight, count = stats["weight"], chars[stage]
        assert weight["teacher"] == pytest.approx(4 * weight["student"], abs=1e-5)
        assert weight["shared"] == pytest.approx(2 * weight["student"], abs=1e-5)
        # the stage's sentence characters weigh 1 on average: the loss moves between classes, its scale stays
        total = sum(count.values())
        assert sum(weight[kind] * count[kind] for kind in count) / total == pytest.approx(1.0, abs=1e-5)
        assert stats["char_share"]["teacher"] == pytest.approx(count["teacher"] / total, abs=1e-6)
    assert {record["weight"] for record in written} == {1.0}
    config = yaml.safe_load((tmp_path / "sft" / "sft.config.yaml").read_text())
    assert config["sentence_weights"] == {"teacher": 2.0, "student": 0.5}
    facts = build_sft_card_facts(config, summary)
    assert any("DAS class of each sentence" in fact for fact in facts)
    assert any(fact.startswith("  - sentence weights high_temp: teacher 1.96 (26%)") for fact in facts)


def build_sft_card_facts(config, summary):
    from dasd.reporting import cards

    return cards._build_sft_facts(config, summary)


def test_sentence_weights_need_scored_records_and_stay_out_of_a_default_config(tmp_path, capsys):
    path = write_jsonl(tmp_path / "selected.jsonl", _selected())
    output = tmp_path / "sft.jsonl"
    assert main(["build-sft", f"input={path}", f"output={output}", "sentence_weights={teacher: 2}"]) == 2
    assert "selected.jsonl:1: field 'sentences': missing: sentence_weights needs scored records" in (
        capsys.readouterr().err
    )
    assert not output.exists()
    assert main(["build-sft", f"input={path}", f"output={output}", "sentence_weights={teachr: 2}"]) == 2
    assert "sentence_weights" in capsys.readouterr().err
    assert main(["build-sft", f"input={path}", f"output={output}"]) == 0
    resolved = yaml.safe_load((tmp_path / "sft.config.yaml").read_text())
    assert "sentence_weights" not in fingerprint_view(build_sft.BuildSFTConfig.model_validate(resolved))
    assert all("loss_weight_spans" not in record for record in read_jsonl(output))


def test_stage_by_rank_splits_one_temperature_into_two_stages(tmp_path, capsys):
    """The schedule control: select's rank 0 of a question trains in stage 1, its rank 1 in stage 2."""
    records = [
        {**record, "select": {"strategy": "count", "rank": index % 2, "score": 1.0}, "temperature": 0.6}
        for index, record in enumerate(_selected())
    ]
    path = write_jsonl(tmp_path / "selected.jsonl", records)
    output = tmp_path / "sft" / "sft.jsonl"
    summary = build_sft.run(
        load_config(build_sft.BuildSFTConfig, None, [f"input={path}", f"output={output}", "stage_by=rank"])
    )
    assert summary["per_stage"] == {"low_temp": 3, "high_temp": 3}
    stages = {record["id"]: record["stage"] for record in read_jsonl(output)}
    assert all(stages[r["id"]] == ("low_temp" if r["select"]["rank"] == 0 else "high_temp") for r in records)
    unselected = write_jsonl(tmp_path / "plain.jsonl", _selected())
    assert main(["build-sft", f"input={unselected}", f"output={tmp_path / 'x.jsonl'}", "stage_by=rank"]) == 2
    assert "plain.jsonl:1: field 'select': missing: stage_by=rank needs dasd select's output" in capsys.readouterr().err


def _answer_only():
    """Responses of a teacher that writes no think block, sampled with reasoning_format none and scored."""
    from dasd.text.sentences import split_sentences

    records = []
    for record in _selected():
        content = f"I add the two numbers. {record['content']}"
        sentences = [
            {"part": "content", "start": start, "end": end, "type": "teacher"}
            for start, end in split_sentences(content)
        ]
        das = {"teacher": len(sentences), "student": 0, "shared": 0, "n": len(sentences)}
        records.append(
            {
                **record,
                "reasoning": "",
                "content": content,
                "reasoning_format": "none",
                "sentences": sentences,
                "das": das,
            }
        )
    return records


def test_an_answer_only_response_trains_on_its_answer_without_an_empty_think_block(tmp_path, capsys):
    path = write_jsonl(tmp_path / "selected.jsonl", _answer_only())
    output = tmp_path / "sft" / "sft.jsonl"
    args = [f"input={path}", f"output={output}", "student_tokenizer=smollm2", "sentence_weights={teacher: 2}"]
    summary = build_sft.run(load_config(build_sft.BuildSFTConfig, None, [*args, "weight_by=teacher_sentences"]))
    assert summary["answer_only"] == 6 and summary["template_check"] == {"ok": 6}
    assert "  6 (reasoning_format none: the answer alone, no think block)" in capsys.readouterr().out
    for source, record in zip(_answer_only(), read_jsonl(output)):
        assistant = record["messages"][-1]
        assert assistant == {"role": "assistant", "content": source["content"]}
        # the sentence spans index the answer itself
        assert [assistant["content"][start:end] for start, end, _ in record["loss_weight_spans"]] == [
            source["content"][s["start"] : s["end"]] for s in source["sentences"]
        ]


@pytest.mark.parametrize(
    "changes, cause",
    [
        (
            {"reasoning": ""},  # a think-format response (no reasoning_format: think) without reasoning
            "field 'reasoning': empty: the teacher wrote no reasoning (no think block); sample with "
            "reasoning_format=none",
        ),
        (
            {"content": "", "finish_reason": "stop", "filter": {"keep": True, "reason": None}},
            "field 'content': empty: the reasoning has no answer after it: the think block never closed (a teacher "
            "that does not close the block its template opened: sample with reasoning_format=none and a template "
            "that opens none); dasd filter kept it: its structure filter was off",
        ),
        (
            {"content": "", "finish_reason": "length"},
            "field 'content': empty: the reasoning has no answer after it: max_new_tokens cut the response inside its "
            "think block; dasd filter's structure filter drops such responses",
        ),
        (
            {"reasoning": "", "content": "", "reasoning_format": "none"},
            "field 'content': empty: the response is empty (no reasoning, no answer)",
        ),
    ],
)
def test_an_empty_part_is_refused_with_its_real_cause(tmp_path, capsys, changes, cause):
    bad = write_jsonl(tmp_path / "selected.jsonl", [{**_selected()[0], **changes}])
    assert main(["build-sft", f"input={bad}", f"output={tmp_path / 'out' / 'sft.jsonl'}"]) == 2
    err = capsys.readouterr().err
    assert f"selected.jsonl:1: {cause}" in err and "run dasd filter first" not in err
    assert not (tmp_path / "out").exists()


def test_stage_by_draw_trains_each_fresh_draw_in_its_own_stage(tmp_path, capsys):
    """The clean schedule control: select draw_size=8 draws=[0, 1] at T=1.0, draw 0's best in stage 1, draw 1's in
    stage 2 (each a best-of-8 of its own samples, not the runner-up of the same 8)."""
    from dasd.stages import select

    sampled = [
        {
            **record,
            "id": f"{record['question_id']}:t1:{index}",
            "temperature": 1.0,
            "sample_index": index,
            "das": {"teacher": (index * 5) % 16, "student": 0, "shared": 1, "n": 17},
        }
        for record in _selected()
        if record["temperature"] == 0.6
        for index in range(16)
    ]
    scored = write_jsonl(tmp_path / "scored.jsonl", sampled)
    selected = tmp_path / "selected.jsonl"
    select.run(
        load_config(
            select.SelectConfig,
            None,
            [f"input={scored}", f"output={selected}", "temperatures=[1.0]", "draw_size=8", "draws=[0, 1]"],
        )
    )
    output = tmp_path / "sft" / "sft.jsonl"
    summary = build_sft.run(
        load_config(build_sft.BuildSFTConfig, None, [f"input={selected}", f"output={output}", "stage_by=draw"])
    )
    assert summary["per_stage"] == {"low_temp": 3, "high_temp": 3}
    draws = {record["id"]: record["select"]["draw"] for record in read_jsonl(selected)}
    stages = {record["id"]: record["stage"] for record in read_jsonl(output)}
    assert stages == {i: ("low_temp", "high_temp")[draw] for i, draw in draws.items()}
    assert all(int(i.rsplit(":", 1)[1]) // 8 == draw for i, draw in draws.items())
    assert [r["id"] for r in read_jsonl(tmp_path / "sft" / "sft.high_temp.jsonl")] == [
        i for i, draw in draws.items() if draw == 1
    ]
    # a draw past the second, and records select wrote without draws: one line each
    third = write_jsonl(tmp_path / "third.jsonl", [{**sampled[0], "select": {"rank": 0, "draw": 2}}])
    assert main(["build-sft", f"input={third}", f"output={tmp_path / 'x.jsonl'}", "stage_by=draw"]) == 2
    err = capsys.readouterr().err.strip()
    assert "third.jsonl:1: field 'select.draw': draw 2: stage_by=draw trains draw 0 in stage 1 (low_temp)" in err
    assert len(err.splitlines()) == 1
    ranked = write_jsonl(tmp_path / "ranked.jsonl", [{**sampled[0], "select": {"rank": 0}}])
    assert main(["build-sft", f"input={ranked}", f"output={tmp_path / 'x.jsonl'}", "stage_by=draw"]) == 2
    assert "ranked.jsonl:1: field 'select.draw': missing: stage_by=draw needs" in capsys.readouterr().err
