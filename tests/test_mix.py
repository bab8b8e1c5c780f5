"""`dasd mix`: budgets in student tokens, cuts at sentence ends, exact prefix + continuation, resume."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import yaml

from dasd.config import fingerprint_view, load_config
from dasd.sampling.mixing import CuratedSet, cut_position
from dasd.stages import mix, train
from dasd.text.prompts import render_chat_prompt
from dasd.text.render import think_text
from dasd.text.sentences import split_sentences

from .conftest import kill_when, line_count, read_jsonl, write_jsonl


def curated(count: int = 8):
    """Curated SFT records with short teacher answers, so the (verbose) student runs past 1.5x."""
    records = []
    pairs = [(a, b) for a in range(2, 6) for b in range(3, 5)]
    for a, b in (pairs * 4)[:count]:
        records.append(
            {
                "id": f"q{a}{b}-{len(records)}:t0.6:0",
                "question_id": f"q{a}{b}-{len(records)}",
                "answer": str(a + b),
                "domain": "math",
                "stage": "low_temp",
                "messages": [
                    {"role": "system", "content": "You are a helpful assistant."},
                    {"role": "user", "content": f"What is {a} + {b}?"},
                    {"role": "assistant", "content": f"<think>\nSum.\n</think>\n\n{a + b}"},
                ],
            }
        )
    return records


def _run(tmp_path, student, teacher, *overrides, count: int = 8):
    path = write_jsonl(tmp_path / "curated.jsonl", curated(count))
    output = tmp_path / "mix" / "mixed.jsonl"
    config = load_config(
        mix.MixConfig,
        None,
        [
            f"input={path}",
            f"output={output}",
            f"student.model={student}",
            f"teacher.model={teacher}",
            "teacher_max_new_tokens=24",
            "system_prompt=null",
            *overrides,
        ],
    )
    return output, mix.run(config)


def test_cut_positions_are_sentence_ends_in_the_second_half_and_seeded():
    text = " ".join(f"Sentence number {i} is here." for i in range(40))
    ends = {end for _, end in split_sentences(text)}
    cuts = [cut_position(text, seed=seed, key="q") for seed in range(20)]
    assert all(cut in ends and len(text) / 2 <= cut < len(text) for cut in cuts)
    assert len(set(cuts)) > 5  # uniform over the second half, not a fixed point
    assert cut_position(text, seed=3, key="q") == cut_position(text, seed=3, key="q")
    assert cut_position("One long sentence without any end", seed=0, key="q") is None


def test_two_tokenizers_budget_cut_and_exact_join(
    tmp_path, taught_teacher, tiny_qwen3, smollm2_tokenizer, qwen3_tokenizer
):
    # student: the taught model (SmolLM2 tokenizer); teacher: a Qwen3-architecture model with the Qwen3 tokenizer
    output, summary = _run(tmp_path, taught_teacher, tiny_qwen3, "off_policy=2")
    folder = output.parent
    cutoff = {p["question_id"]: p for p in read_jsonl(folder / "mixed.cutoff.jsonl")}
    rollouts = {r["question_id"]: r for r in read_jsonl(folder / "mixed.rollouts.jsonl")}
    assert len(rollouts) == 8 and summary["rollouts"] == 8 and summary["truncated"] >= 4
    for record in curated(8):
        reasoning, content = "Sum.", record["answer"]
        teacher_tokens = len(
            smollm2_tokenizer(think_text(reasoning, content)[0], add_special_tokens=False)["input_ids"]
        )
        point = cutoff[record["question_id"]]
        # the budget is 1.5x the teacher response counted in *student* tokens
        assert point["teacher_tokens"] == teacher_tokens and point["budget"] == math.ceil(1.5 * teacher_tokens)
        rollout = rollouts[record["question_id"]]
        assert rollout["usage"]["completion_tokens"] <= point["budget"]
        if point["truncated"]:
            assert rollout["usage"]["completion_tokens"] == point["budget"]
    continuations = read_jsonl(folder / "mixed.continuations.jsonl")
    assert continuations and summary["continued"] == len(continuations)
    for item in continuations:
        student_text = rollouts[item["question_id"]]["reasoning"]
        cut = item["cut"]
        assert item["prefix"] == student_text[:cut]  # exactly the student's text up to the cut
        assert len(student_text) / 2 <= cut < len(student_text)
        assert cut in {end for _, end in split_sentences(student_text)}
        # what the teacher saw: its own chat template, its own tokenizer, the turn opened with the prefix
        ids, _ = render_chat_prompt(
            qwen3_tokenizer,
            [{"role": "user", "content": rollouts[item["question_id"]]["messages"][-1]["content"]}],
            assistant_prefix="<think>\n" + item["prefix"],
        )
        rendered = qwen3_tokenizer.decode(ids)
        assert rendered.startswith("<|im_start|>user\n") and rendered.endswith(
            "<|im_start|>assistant\n<think>\n" + item["prefix"]
        )
    records = {
        r["id"]: r
        for r in read_jsonl(output) + read_jsonl(folder / "mixed.rejected.jsonl")
        if r["source"] == "mixed_policy"
    }
    assert len(records) == len(continuations)
    for item in continuations:
        record = records[item["id"]]
        assistant = record["messages"][-1]["content"]
        assert assistant == "<think>\n" + item["prefix"] + item["continuation"]  # exactly prefix + continuation
        assert record["loss_mask_prefix_chars"] == len("<think>\n" + item["prefix"])
        assert record["stage"] == "mixed_policy"
    assert len([r for r in read_jsonl(output) if r["source"] == "off_policy"]) == 2
    assert (folder / "mixed.cutoff.png").stat().st_size > 1000


def test_kept_records_train_as_the_mixed_policy_stage(tmp_path, taught_teacher):
    output, summary = _run(tmp_path, taught_teacher, taught_teacher, "teacher_temperature=0", count=16)
    assert summary["kept"] >= 1, summary
    kept = [r for r in read_jsonl(output) if r["source"] == "mixed_policy"]
    assert all(r["filter"]["keep"] for r in kept)
    config = load_config(
        train.TrainConfig,
        None,
        [
            f"output_dir={tmp_path / 'train'}",
            f"student.model={taught_teacher}",
            f"stages=[{{name: mixed_policy, data: {output}, epochs: 1}}]",
            "global_batch_size=1",
            "max_length=256",
            "mask_student_prefix=true",
            "learning_rate=1e-4",
            "warmup_ratio=0",  # a few records, one optimizer step: inside warmup it would run at learning rate 0
        ],
    )
    metrics = train.run(config)["stages"][0]
    assert metrics["mask_student_prefix"] is True and metrics["optimizer_steps"] >= 1
    # with the mask variant only the teacher-written part is trained on
    assert metrics["trained_tokens_per_epoch"] < metrics["tokens_per_epoch"]


@pytest.mark.integration
def test_kill_and_rerun_loses_and_duplicates_nothing(tmp_path, taught_teacher):
    path = write_jsonl(tmp_path / "curated.jsonl", curated(32))
    output = tmp_path / "mix" / "mixed.jsonl"
    command = [
        sys.executable,
        "-m",
        "dasd",
        "mix",
        f"input={path}",
        f"output={output}",
        f"student.model={taught_teacher}",
        f"teacher.model={taught_teacher}",
        "teacher_max_new_tokens=24",
        "system_prompt=null",
        "student.batch_size=1",
        "teacher.batch_size=1",
    ]
    rollouts = output.parent / "mixed.rollouts.jsonl"
    kill_when(command, lambda: line_count(rollouts) >= 8)
    assert rollouts.read_bytes().count(b"\n") < 32
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
    ids = [r["id"] for r in read_jsonl(rollouts)]
    assert len(ids) == len(set(ids)) == 32
    continuations = [r["id"] for r in read_jsonl(output.parent / "mixed.continuations.jsonl")]
    assert len(continuations) == len(set(continuations))
    summary = json.loads((output.parent / "mixed.summary.json").read_text())
    assert summary["continued"] == len(continuations) == summary["cut"]
    assert summary["kept"] + sum(summary["drop_reasons"].values()) == summary["rollouts"]


def test_the_off_policy_control_is_as_large_as_the_mixed_file_and_starts_with_its_extras(tmp_path):
    path = write_jsonl(tmp_path / "curated.jsonl", curated(16))
    records = read_jsonl(path)
    # a mixed file of the same seed: 3 mixed records and 2 off-policy extras
    mixed_config = load_config(
        mix.MixConfig,
        None,
        [f"input={path}", f"output={tmp_path / 'mixed.jsonl'}", "student.model=x", "teacher.model=x", "off_policy=2"],
    )
    mixed_questions = {records[i]["question_id"] for i in (0, 1, 2)}
    extras = list(mix.off_policy_extras(mixed_config, CuratedSet(path), mixed_questions))
    mixed = [{"id": f"{q}:mixed", "question_id": q, "source": "mixed_policy"} for q in sorted(mixed_questions)]
    write_jsonl(tmp_path / "mixed.jsonl", mixed + extras)
    output = tmp_path / "control" / "control.jsonl"
    summary = mix.run(
        load_config(
            mix.MixConfig,
            None,
            [
                f"input={path}",
                f"output={output}",
                "student.model=not-loaded",
                "teacher.model=not-loaded",
                f"equal_size_as={tmp_path / 'mixed.jsonl'}",
            ],
        )
    )
    control = read_jsonl(output)
    assert summary["off_policy"] == len(control) == 5 and all(r["source"] == "off_policy" for r in control)
    assert [r["question_id"] for r in control] == [r["question_id"] for r in mixed + extras]  # same questions
    assert [r["id"] for r in control[3:]] == [r["id"] for r in extras]  # its off-policy records as they are
    by_question = {r["question_id"]: r for r in records}
    for replaced in control[:3]:  # each mixed record → the teacher's curated record of that question
        assert replaced["messages"] == by_question[replaced["question_id"]]["messages"]
    assert len({r["id"] for r in control}) == 5


def test_several_continuations_per_cut_and_a_shaped_cut(tmp_path, taught_teacher):
    """Issue 29 item 5: `continuations_per_cut` continues each cut prefix several times (its own seed each), the
    first keeping the id it always had; `cut_shape` moves the cut within the range; both stay out of a default
    config (so existing runs keep their fingerprints)."""
    output, summary = _run(tmp_path, taught_teacher, taught_teacher, "continuations_per_cut=3", "cut_shape=[5, 1]")
    continuations = read_jsonl(output.parent / "mixed.continuations.jsonl")
    by_question: dict[str, list] = {}
    for item in continuations:
        by_question.setdefault(item["question_id"], []).append(item)
    assert by_question and summary["continued"] == len(continuations) == 3 * len(by_question)
    for question_id, items in by_question.items():
        assert sorted(item["id"] for item in items) == [
            f"{question_id}:mixed",
            f"{question_id}:mixed:1",
            f"{question_id}:mixed:2",
        ]
        assert len({item["prefix"] for item in items}) == 1  # one cut, three continuations of it
    texts = [item["continuation"] for item in continuations]
    assert len(set(texts)) > len(by_question)  # seeded per continuation: not all the same
    config = (output.parent / "mixed.config.yaml").read_text()
    assert "continuations_per_cut: 3" in config and "cut_shape" in config
    # the dataset card says how the data was cut and continued
    from dasd.reporting.cards import stage_facts

    settings = yaml.safe_load(config)
    facts = "\n".join(stage_facts({"stage": "mix", "config": settings, "summary": summary}))
    assert "cut within [0.5, 1.0] of the rollout, Beta(5, 1); 3 teacher continuation(s) per cut" in facts
    # the off-policy control of such a file holds one curated copy per mixed record, ids unique. The file is the
    # continuations as if all had reached the right answer: how many do varies with the CPU's float arithmetic
    # (0 of 9 on one machine), and the control needs several records of one question to be tested
    as_if_kept = write_jsonl(
        tmp_path / "as_if_kept.jsonl",
        [{"id": item["id"], "question_id": item["question_id"], "source": "mixed"} for item in continuations],
    )
    write_jsonl(tmp_path / "curated.jsonl", curated(8))
    control_out = tmp_path / "control" / "control.jsonl"
    mix.run(
        load_config(
            mix.MixConfig,
            None,
            [
                f"input={tmp_path / 'curated.jsonl'}",
                f"output={control_out}",
                "student.model=x",
                "teacher.model=x",
                f"equal_size_as={as_if_kept}",
            ],
        )
    )
    control = read_jsonl(control_out)
    assert len(control) == len(continuations) and len({r["id"] for r in control}) == len(control)
    assert len({r["question_id"] for r in control}) == len(by_question)  # three copies of each question's record
    _, plain = _run(tmp_path / "plain", taught_teacher, taught_teacher)
    plain_config = (tmp_path / "plain" / "mix" / "mixed.config.yaml").read_text()
    view = fingerprint_view(mix.MixConfig.model_validate(yaml.safe_load(plain_config)))
    assert "continuations_per_cut" not in view and "cut_shape" not in view  # at their defaults: old fingerprints
    facts = "\n".join(stage_facts({"stage": "mix", "config": yaml.safe_load(plain_config), "summary": {}}))
    assert "uniform; 1 teacher continuation(s) per cut" in facts


def test_on_policy_keeps_the_students_correct_finished_rollouts_whole(tmp_path):
    """on_policy=true (the report's §6.4, on-policy rejection sampling): a rollout the student finished within its cap
    that passes the filters is kept whole as `source: on_policy`; a wrong one is rejected, a truncated one is only
    ever cut and continued. The rollouts are written beforehand (mix resumes by id), so no model runs."""
    records = curated(8)
    rollouts = []
    for index, record in enumerate(records):
        answer = int(record["answer"])
        finish, reasoning = "stop", f"I add the two numbers. That makes {answer}."
        content = f"The answer is \\boxed{{{answer if index % 4 else answer + 1}}}."  # 0 and 4: wrong
        if index in (6, 7):
            finish, reasoning, content = "length", "", "I think"  # truncated, no reasoning: never cut
        rollouts.append(
            {
                "id": f"{record['question_id']}:rollout",
                "question_id": record["question_id"],
                "messages": record["messages"][1:2],
                "reasoning": reasoning,
                "content": content,
                "finish_reason": finish,
                "usage": {"completion_tokens": 12},
                "answer": record["answer"],
                "domain": "math",
            }
        )
    for folder in (tmp_path, tmp_path / "plain"):
        write_jsonl(folder / "mix" / "mixed.rollouts.jsonl", rollouts)
    output, summary = _run(tmp_path, "smollm2", "not-loaded", "on_policy=true", "off_policy=2")
    assert summary["rollouts"] == 8 and summary["truncated"] == 2 and summary["cut"] == summary["kept"] == 0
    assert summary["on_policy_finished"] == 6 and summary["on_policy"] == 4
    assert summary["on_policy_drop_reasons"] == {"wrong_answer": 2}
    written = read_jsonl(output)
    on_policy = [r for r in written if r["source"] == "on_policy"]
    assert sorted(r["question_id"] for r in on_policy) == sorted(records[i]["question_id"] for i in (1, 2, 3, 5))
    for record in on_policy:
        rollout = next(r for r in rollouts if r["question_id"] == record["question_id"])
        assert record["messages"][-1]["content"] == think_text(rollout["reasoning"], rollout["content"])[0]
        assert record["stage"] == "mixed_policy" and "loss_mask_prefix_chars" not in record
        assert record["id"] == f"{record['question_id']}:on_policy" and record["filter"]["keep"]
    # the off-policy extras go to questions with no record of their own
    extras = [r for r in written if r["source"] == "off_policy"]
    assert len(extras) == 2 and not {r["question_id"] for r in extras} & {r["question_id"] for r in on_policy}
    rejected = [r for r in read_jsonl(output.parent / "mixed.rejected.jsonl") if r["source"] == "on_policy"]
    assert len(rejected) == 2
    # its equal-size control replaces each on-policy record by the teacher's curated one
    control_out = tmp_path / "control" / "control.jsonl"
    control = mix.run(
        load_config(
            mix.MixConfig,
            None,
            [
                f"input={tmp_path / 'curated.jsonl'}",
                f"output={control_out}",
                "student.model=x",
                "teacher.model=x",
                f"equal_size_as={output}",
            ],
        )
    )
    assert control["off_policy"] == len(written) == 6
    # off by default: the same rollouts, no on-policy records, and the summary as before
    plain_output, plain = _run(tmp_path / "plain", "smollm2", "not-loaded", "off_policy=2")
    assert "on_policy" not in plain and plain["off_policy"] == 2
    assert [r["source"] for r in read_jsonl(plain_output)] == ["off_policy"] * 2
    settings = yaml.safe_load((plain_output.parent / "mixed.config.yaml").read_text())
    assert "on_policy" not in fingerprint_view(mix.MixConfig.model_validate(settings))  # old fingerprints kept
