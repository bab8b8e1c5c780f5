"""Teachers that write no think block: `reasoning_format: none` through the recipe, and `dasd sample`'s warnings.

The real case (issue 36): SmolLM2-135M-Instruct, an instruct model that writes no `<think>` block, as the teacher
on a user's own questions. Sampled as `think` every response has empty reasoning, and the run must say so; sampled
as `none` its answer is the chain of thought, and score, filter, select and build-sft work on it.
"""

from __future__ import annotations

from collections import Counter

import pytest

from dasd.config import load_config
from dasd.sampling import response_checks
from dasd.stages import build_sft, sample, score, select
from dasd.stages import filter as filter_stage

from .conftest import read_jsonl, write_jsonl

# A user's own questions: no ids, some without a domain (both are defaulted, and counted).
OWN_QUESTIONS = [
    {"prompt": "What is 12 + 30? Think step by step.", "answer": "42"},
    {"prompt": "Tom has 3 apples and buys 4 more. How many apples does he have?", "answer": "7", "domain": "math"},
]


def _sample(tmp_path, model: str, name: str, *overrides: str, questions=OWN_QUESTIONS):
    path = write_jsonl(tmp_path / "questions.jsonl", questions)
    output = tmp_path / name / "responses.jsonl"
    settings = [f"input={path}", f"output={output}", f"backend.model={model}", "schedule=[{temperature: 0.6, n: 2}]"]
    return output, sample.run(load_config(sample.SampleConfig, None, [*settings, *overrides]))


def test_a_think_run_of_a_teacher_without_think_blocks_warns_with_counts(tmp_path, tiny_llama_smollm2, capsys):
    output, summary = _sample(tmp_path, str(tiny_llama_smollm2), "think", "max_new_tokens=6")
    records = read_jsonl(output)
    assert {record["reasoning_format"] for record in records} == {"think"}  # the records carry their format
    assert all(record["reasoning"] == "" and record["content"] for record in records)
    assert summary["missing_parts"]["checked"] == 4 and summary["missing_parts"]["no_reasoning"] == 4
    warning = (
        "4 of 4 responses have no reasoning: the teacher writes no <think> block; set reasoning_format=none (the "
        "chain of thought is then the answer) or a chat template that opens one"
    )
    assert len(summary["warnings"]) == 1 and summary["warnings"][0].startswith(warning)
    out, err = capsys.readouterr()
    assert f"warning: {warning}" in err
    assert "no reasoning" in out
    # the questions without an id / a domain, counted and shown
    assert summary["questions_defaulted"] == {"id": 2, "domain": 1}
    assert "input questions without an id     2 (given the hash of their prompt)" in out
    assert "input questions without a domain  1 (given domain other)" in out


def test_a_template_that_opens_think_for_a_teacher_that_never_closes_it_warns(
    tmp_path, tiny_llama_smollm2, smollm2_tokenizer, capsys
):
    """A chat template that opens `<think>` in its generation prompt (as Qwen3-*-Thinking-2507's do) for a teacher
    that never writes `</think>`: every response is reasoning without an answer."""
    import copy

    tokenizer = copy.deepcopy(smollm2_tokenizer)
    tokenizer.chat_template = (
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n<think>\\n' }}{% endif %}"
    )
    tokenizer.save_pretrained(tmp_path / "opens-think")
    output, summary = _sample(
        tmp_path, str(tiny_llama_smollm2), "opened", "max_new_tokens=6", f"backend.tokenizer={tmp_path / 'opens-think'}"
    )
    assert all(record["reasoning"] and not record["content"] for record in read_jsonl(output))
    assert summary["missing_parts"] == {
        "checked": 4,
        "empty": 0,
        "no_reasoning": 0,
        "unclosed": 4,
        "unclosed_at_length": 4,
        "no_extractable_answer": 0,
    }
    assert summary["warnings"] == [
        "4 of 4 responses have reasoning but no answer: the <think> block never closed; 4 reached max_new_tokens first "
        "(finish=length): raise max_new_tokens"
    ]
    assert f"warning: {summary['warnings'][0]}" in capsys.readouterr().err


def test_the_warnings_name_the_cause_of_each_missing_part():
    stopped = response_checks.missing_part_warnings(10, Counter(unclosed=9, unclosed_at_length=2), "think")
    assert stopped == [
        "9 of 10 responses have reasoning but no answer: the <think> block never closed; 7 ended inside it "
        "(finish=stop): the teacher does not close a think block (one its chat template opened?); set "
        "reasoning_format=none and a template that opens none; 2 reached max_new_tokens first (finish=length): "
        "raise max_new_tokens"
    ]
    assert response_checks.missing_part_warnings(10, Counter(no_reasoning=5), "think") == []  # half is not most
    assert response_checks.missing_part_warnings(4, Counter(no_reasoning=4), "none") == []  # what none expects
    harmony = response_checks.missing_part_warnings(4, Counter(no_reasoning=3), "harmony")
    assert harmony[0].startswith("3 of 4 responses have no reasoning: the teacher writes no analysis channel")
    answers = response_checks.missing_part_warnings(3, Counter(no_extractable_answer=2), "none")
    assert answers[0].startswith("2 of 3 responses have no extractable answer")
    record = {"reasoning": "", "content": "Maybe.", "answer": "C", "domain": "science", "finish_reason": "stop"}
    assert response_checks.missing_parts(record) == ["no_reasoning", "no_extractable_answer"]
    assert response_checks.missing_parts({**record, "content": "The answer is (C)."}) == ["no_reasoning"]


@pytest.mark.slow  # the real SmolLM2 (loaded twice: ~15 s each on 2 cores)
def test_the_real_smollm2_as_a_none_teacher_goes_through_the_recipe_and_as_think_is_warned_about(
    tmp_path, tiny_llama_smollm2, smollm2_tokenizer, capsys
):
    # As `think`: the instruct model writes no think block, and sample says so with counts and the fix.
    _, think = _sample(tmp_path, "smollm2", "think", "max_new_tokens=12")
    assert think["missing_parts"]["no_reasoning"] == 4, think["missing_parts"]
    assert think["warnings"] and think["warnings"][0].startswith("4 of 4 responses have no reasoning")
    assert "set reasoning_format=none" in capsys.readouterr().err

    # As `none`: the answer is the chain of thought, through score → filter → select → build-sft.
    responses, sampled = _sample(tmp_path, "smollm2", "none", "reasoning_format=none", "max_new_tokens=16")
    assert sampled["warnings"] == [] and sampled["reasoning_format"] == "none"
    records = read_jsonl(responses)
    assert all(r["reasoning"] == "" and r["content"] and r["reasoning_format"] == "none" for r in records)
    assert all(r["teacher_logprobs"]["content"]["offsets"] for r in records)

    run = responses.parent
    scored = score.run(
        load_config(
            score.ScoreConfig,
            None,
            [f"input={responses}", f"output={run / 'scored.jsonl'}", f"student.model={tiny_llama_smollm2}"],
        )
    )
    assert scored["records_scored"] == 4 == scored["answer_only_scored"] and scored["records_failed"] == 0
    for record in read_jsonl(run / "scored.jsonl"):
        assert record["das"]["n"] >= 1 and {s["part"] for s in record["sentences"]} == {"content"}

    filtered = filter_stage.run(
        load_config(
            filter_stage.FilterConfig,
            None,
            [
                f"input={run / 'scored.jsonl'}",
                f"output={run / 'filtered.jsonl'}",
                "student_tokenizer=smollm2",
                "structure.require_stop=false",  # 16 tokens: most are cut at max_new_tokens
                "repetition.enabled=false",  # a 135M model may loop; not what this test is about
                "correctness.enabled=false",  # nor whether a 135M model gets 12 + 30 right in 16 tokens
                "workers=1",
            ],
        )
    )
    assert "empty_reasoning" not in filtered["reasons"] and filtered["kept"] == filtered["answer_only_kept"] >= 1

    select.run(
        load_config(select.SelectConfig, None, [f"input={run / 'filtered.jsonl'}", f"output={run / 'sel.jsonl'}"])
    )
    selected = read_jsonl(run / "sel.jsonl")
    assert {r["question_id"] for r in selected} == {r["question_id"] for r in read_jsonl(run / "filtered.jsonl")}

    built = build_sft.run(
        load_config(
            build_sft.BuildSFTConfig,
            None,
            [f"input={run / 'sel.jsonl'}", f"output={run / 'sft' / 'sft.jsonl'}", "student_tokenizer=smollm2"],
        )
    )
    assert built["answer_only"] == len(selected) and built["template_check"] == {"ok": len(selected)}
    by_id = {r["id"]: r for r in selected}
    for sft in read_jsonl(run / "sft" / "sft.jsonl"):
        assistant = sft["messages"][-1]
        assert assistant["role"] == "assistant" and "<think>" not in assistant["content"]
        assert assistant["content"] == by_id[sft["id"]]["content"].strip()  # the answer alone: no empty think block
    assert "None" not in capsys.readouterr().out
