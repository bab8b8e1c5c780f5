"""`dasd filter`: each filter on crafted cases, tricky answers, a bounded math-verify, a 1,000-record run."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from dasd.config import fingerprint_view, load_config
from dasd.grading.answers import BoundedVerifier, extract_choice, extract_final_answer, grade_many
from dasd.selection.filters import (
    DedupeConfig,
    Deduper,
    RepetitionConfig,
    StructureConfig,
    repetition_reason,
    structure_filter,
    student_length,
)
from dasd.stages import filter as filter_stage

from .conftest import read_jsonl, write_jsonl


def healthy_cot(steps: int = 600) -> str:
    """A long, healthy chain of thought (~20K tokens) that restates its formula and re-checks itself."""
    lines = []
    for i in range(steps):
        a, b = (i * 7) % 97 + 3, (i * 13) % 89 + 5
        lines.append(f"Step {i + 1}: we compute {a} * {b} = {a * b}, then add {i} to get {a * b + i}.")
        if i % 25 == 0:
            lines.append("Wait, let me double-check that.")
        if i % 40 == 0:
            lines.append("$$x^2 + 2x + 1 = (x+1)^2$$")
        if i % 10 == 9:
            lines.append("")
    return "\n".join(lines)


def _record(
    rid="r", question="q", reasoning="I add 2 and 3. That gives 5.", content="The answer is $\\boxed{5}$.", **extra
):
    return {
        "id": rid,
        "question_id": question,
        "messages": [{"role": "user", "content": "What is 2 + 3?"}],
        "reasoning": reasoning,
        "content": content,
        "finish_reason": "stop",
        "answer": "5",
        "domain": "math",
        **extra,
    }


# --- structure --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes, reason",
    [
        ({}, None),
        ({"finish_reason": "length"}, "finish_length"),
        ({"finish_reason": "tool_call"}, "tool_call"),
        ({"reasoning": "  "}, "empty_reasoning"),
        ({"content": ""}, "empty_content"),
        ({"content": '<tool_call>\n{"name": "calc", "arguments": {"x": 1}}\n</tool_call>'}, "tool_call"),
        ({"content": '{"name": "search", "arguments": {"q": "2+3"}}'}, "tool_call"),
        ({"content": "The answer is 5.</think> really"}, "stray_think_tag"),
        # a teacher that writes no think block, sampled as such: its chain of thought is its answer
        ({"reasoning": "", "reasoning_format": "none"}, None),
        ({"reasoning": "", "reasoning_format": "think"}, "empty_reasoning"),
        ({"reasoning": "", "content": " ", "reasoning_format": "none"}, "empty_content"),
    ],
)
def test_structure(changes, reason):
    verdict = structure_filter(_record(**changes), StructureConfig())
    assert verdict is True if reason is None else verdict == (False, reason)


# --- length -----------------------------------------------------------------------------------


def test_length_counts_the_whole_training_text_in_student_tokens(smollm2_tokenizer, qwen3_tokenizer):
    record = _record(reasoning="word " * 300)
    for tokenizer in (smollm2_tokenizer, qwen3_tokenizer):
        length = student_length(tokenizer, record, system_prompt="You are a helpful assistant.")
        text = tokenizer.apply_chat_template(
            [{"role": "system", "content": "You are a helpful assistant."}] + record["messages"],
            tokenize=False,
            add_generation_prompt=True,
        )
        prompt_tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        assert length > prompt_tokens + 300  # prompt + ~300 words + tags + end token
    config = load_config(filter_stage.FilterConfig, None, ["input=x", "output=y", "length.max_length=100"])
    from dasd.selection.filters import length_filter

    assert length_filter(100, config.length) is True and length_filter(101, config.length) == (False, "too_long")


def test_the_length_of_an_answer_only_response_is_that_of_the_text_build_sft_writes(tmp_path, smollm2_tokenizer):
    """No reasoning (reasoning_format none): the training text is the answer alone, without an empty think block."""
    from dasd.stages import build_sft

    record = _record(reasoning="", content="2 and 3 make 5. The answer is 5.", reasoning_format="none")
    length = student_length(smollm2_tokenizer, record, system_prompt="You are a helpful assistant.")
    sft = build_sft.sft_record(record, load_config(build_sft.BuildSFTConfig, None, ["input=x", "output=y"]))
    assert sft["messages"][-1]["content"] == record["content"]
    prompt = smollm2_tokenizer.apply_chat_template(sft["messages"][:-1], tokenize=False, add_generation_prompt=True)
    expected = smollm2_tokenizer(prompt + record["content"], add_special_tokens=False)["input_ids"]
    assert length == len(expected) + 1  # + the end token
    with_think = student_length(smollm2_tokenizer, {**record, "reasoning": "So."}, system_prompt=None)
    assert with_think > length  # the tags count where there is reasoning


def test_answer_only_responses_pass_the_stage_in_worker_processes_too(tmp_path, capsys):
    """The workers get the fields the filters read: `reasoning_format` among them."""
    records = [_record(f"r{i}", f"q{i}", reasoning="", reasoning_format="none") for i in range(3)]
    records.append(_record("think", "q9", reasoning=""))
    path = write_jsonl(tmp_path / "in.jsonl", records)
    summaries = {}
    for workers in (1, 2):
        output = tmp_path / f"w{workers}" / "kept.jsonl"
        overrides = [
            f"input={path}",
            f"output={output}",
            "length.enabled=false",
            f"workers={workers}",
            "chunk_records=2",
        ]
        summaries[workers] = filter_stage.run(load_config(filter_stage.FilterConfig, None, overrides))
    for summary in summaries.values():
        assert summary["kept"] == 3 == summary["answer_only_kept"] and summary["reasons"] == {"empty_reasoning": 1}
    err = capsys.readouterr().err
    assert "warning: 1 rejected as empty_reasoning: the teacher wrote no think block; to train on its answer" in err


# --- repetition -------------------------------------------------------------------------------


def test_a_healthy_long_chain_of_thought_survives(qwen3_tokenizer):
    text = healthy_cot()
    assert len(qwen3_tokenizer(text)["input_ids"]) > 20_000
    assert repetition_reason(text, RepetitionConfig()) is None


@pytest.mark.parametrize(
    "text, reason",
    [
        (
            healthy_cot(40)
            + "\n\n"
            + "\n\n".join(
                [
                    "We now consider the case where the remainder is odd and carry the extra unit into the "
                    "next column of the sum."
                ]
                * 3
            ),
            "repeated_paragraph",
        ),
        (
            healthy_cot(40) + "\nI need to check this again carefully.\nI need to check this again carefully.\nI need "
            "to check this again carefully.",
            "sentence_loop",
        ),
        (
            healthy_cot(5) + "\n" + " ".join(f"Option {c} gives a value that is too large." for c in "ABCD" * 6),
            "repeated_sentences",
        ),
        (
            " ".join(
                f"and then we add the same amount again to the running total of the sum {i // 40}" for i in range(200)
            ),
            "ngram_repetition",
        ),
        (healthy_cot(200) + " and so " + "x = x + 1, " * 60, "looping_tail"),
    ],
)
def test_degenerate_text_is_caught(text, reason):
    assert repetition_reason(text, RepetitionConfig()) == reason


# --- correctness ------------------------------------------------------------------------------


def test_final_answer_extraction():
    assert extract_final_answer("First \\boxed{5}, then \\boxed{\\frac{1}{2}}.") == "\\frac{1}{2}"
    assert extract_final_answer("Lots of work.\n\nSo the total is **73**.") == "73"
    assert extract_final_answer("Thinking...\nThe final answer is 42.") == "42"
    assert extract_final_answer("") is None
    assert extract_choice("Therefore the answer is \\boxed{C}.") == "C"
    assert extract_choice("Answer: B") == "B"
    assert extract_choice("I pick **D**") == "D"
    assert extract_choice("It must be (A).") == "A"
    assert extract_choice("No letter here at all") is None


@pytest.fixture(scope="module")
def verifier():
    with BoundedVerifier(workers=2, timeout_s=3.0) as bounded:
        yield bounded


@pytest.mark.parametrize(
    "content, reference, domain, correct",
    [
        ("The answer is \\boxed{\\frac{1}{2}}.", "0.5", "math", True),
        ("The answer is \\boxed{0.5}.", "\\frac{1}{2}", "math", True),
        ("So we get **73**.", "73", "math", True),
        ("The length is \\boxed{10 \\text{ cm}}.", "10", "math", True),
        ("So the total is 73 apples.", "73", "math", True),
        ("First \\boxed{5}, wait, no: \\boxed{12}.", "12", "math", True),  # several boxed: the last one counts
        ("First \\boxed{12}, wait, no: \\boxed{5}.", "12", "math", False),
        ("The answer is \\boxed{7}.", "12", "math", False),
        ("\\boxed{}", "12", "math", False),  # unparsable: wrong, not a crash
        ("Hmm, I am not sure.", "12", "math", False),
        ("Thus \\boxed{B}.", "B", "science", True),
        ("Thus \\boxed{C}.", "B", "science", False),
        ("The capital is Paris.", "Paris", "other", True),
    ],
)
def test_tricky_answers(verifier, content, reference, domain, correct):
    assert grade_many([(content, reference, domain, None)], verifier)[0].correct is correct


def test_a_math_verify_call_that_would_hang_is_bounded(verifier):
    import time

    started = time.monotonic()
    grades = grade_many([("\\boxed{9^{9^{9^{9}}}}", "1", "math", None), ("\\boxed{5}", "5", "math", None)], verifier)
    assert time.monotonic() - started < 10
    assert (grades[0].correct, grades[0].reason) == (False, "verify_timeout")
    assert grades[1].correct  # the other worker, and the replacement, keep working
    assert grade_many([("\\boxed{3}", "3", "math", None)], verifier)[0].correct


def test_a_checks_time_limit_does_not_pay_for_its_workers_start():
    """A worker's start (the interpreter, math-verify and sympy: seconds, far more on a loaded machine) is not part
    of any check's limit: a first check once paid for it and, with the cores saturated, 9 of 16 right answers were
    graded `verify_timeout` (each replacement worker paid again). A limit far below the start time still grades a
    trivial check right — also the first after a timeout, on its freshly started replacement."""
    with BoundedVerifier(workers=1, timeout_s=0.5) as bounded:
        assert bounded.verify_many([("1", "1"), ("2", "3")]) == [(True, None), (False, None)]
        hanging = grade_many([("\\boxed{9^{9^{9^{9}}}}", "1", "math", None)], bounded)[0]
        assert (hanging.correct, hanging.reason) == (False, "verify_timeout")
        assert bounded.verify_many([("4", "4")]) == [(True, None)]


# --- dedupe -----------------------------------------------------------------------------------


def test_dedupe_per_question():
    dedupe = Deduper()
    first, same, spaced, other_question = (
        _record("a"),
        _record("b"),
        _record("c", reasoning="I add 2 and 3.  That gives 5. "),
        _record("d", question="q2"),
    )
    assert dedupe(first) is True
    dedupe.add(first)
    assert dedupe(same) == (False, "duplicate") and dedupe(spaced) == (False, "duplicate")
    assert dedupe(other_question) is True
    assert DedupeConfig().enabled


# --- the stage on 1,000 mixed records ----------------------------------------------------------


def _mixed_records(count: int = 1000):
    rng = random.Random(0)
    kinds = [
        "good",
        "wrong",
        "truncated",
        "no_reasoning",
        "loop",
        "tool",
        "duplicate",
        "long",
        "no_reference",
        "no_answer",
    ]
    records = []
    for index in range(count):
        kind = kinds[index % len(kinds)]
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        record = _record(
            f"r{index:04d}",
            f"q{index // 10}",
            reasoning=f"I add {a} and {b}. That gives {a + b}.",
            content=f"The answer is $\\boxed{{{a + b}}}$.",
            answer=str(a + b),
        )
        if kind == "wrong":
            record["content"] = f"The answer is $\\boxed{{{a + b + 1}}}$."
        elif kind == "truncated":
            record["finish_reason"] = "length"
        elif kind == "no_reasoning":
            record["reasoning"] = ""
        elif kind == "loop":
            record["reasoning"] += " Let me recompute it once more." * 5
        elif kind == "tool":
            record["content"] = '<tool_call>{"name": "add"}</tool_call>'
        elif kind == "duplicate":
            previous = records[-6]  # the "good" record of the same question
            record["reasoning"], record["content"], record["answer"] = (
                previous["reasoning"],
                previous["content"],
                previous["answer"],
            )
        elif kind == "long":
            record["reasoning"] = " ".join(f"Step {k}: {k} plus {k} is {2 * k}." for k in range(60))
        elif kind == "no_reference":
            record["answer"] = None
            record["content"] = "Anything goes here."
        elif kind == "no_answer":
            record["content"] = "I could not finish."
        records.append(record)
    return records


def test_a_thousand_mixed_records_are_all_accounted_for(tmp_path):
    records = _mixed_records()
    path = write_jsonl(tmp_path / "responses.jsonl", records)
    output = tmp_path / "filtered.jsonl"
    args = [
        f"input={path}",
        f"output={output}",
        "student_tokenizer=smollm2",
        "length.max_length=300",
        "correctness.workers=2",
    ]
    summary = filter_stage.run(load_config(filter_stage.FilterConfig, None, args))
    kept, rejected = read_jsonl(output), read_jsonl(tmp_path / "filtered.rejected.jsonl")
    ids = [r["id"] for r in kept] + [r["id"] for r in rejected]
    assert sorted(ids) == sorted(r["id"] for r in records) and len(ids) == len(set(ids))
    assert summary["kept"] + summary["rejected"] == 1000 == sum(summary["reasons"].values()) + summary["kept"]
    reasons = Counter(r["filter"]["reason"] for r in rejected)
    assert reasons == Counter(
        {
            "wrong_answer": 100,
            "finish_length": 100,
            "empty_reasoning": 100,
            "sentence_loop": 100,
            "tool_call": 100,
            "duplicate": 100,
            "too_long": 100,
            "unparsable_answer": 100,
        }
    )
    assert all(r["filter"] == {"keep": True, "reason": None} for r in kept) and len(kept) == 200
    again = filter_stage.run(load_config(filter_stage.FilterConfig, None, args))
    assert again["already_done"] == 1000 and again["kept"] == again["rejected"] == 0


def test_length_filter_needs_the_student_tokenizer(tmp_path):
    from dasd.errors import ConfigError

    path = write_jsonl(tmp_path / "r.jsonl", [_record()])
    with pytest.raises(ConfigError, match="student_tokenizer"):
        filter_stage.run(
            load_config(filter_stage.FilterConfig, None, [f"input={path}", f"output={tmp_path / 'o.jsonl'}"])
        )


# --- worker processes: the same outputs, record for record --------------------------------------------------------


def _records_for_workers():
    """Every rejection reason, duplicates in and across chunks and worker tasks (chunk_records=8 -> tasks of 4), a
    duplicate of a wrong answer (dedupe saw it: `duplicate`), and a copy of a truncated response that finished
    (structure rejected the first, so dedupe never saw it: kept)."""
    records = _mixed_records(120)
    wrong = next(r for r in records if r["content"] != f"The answer is $\\boxed{{{r['answer']}}}$." and r["answer"])
    truncated = next(r for r in records if r["finish_reason"] == "length")
    good = records[0]
    extras = [
        {**wrong, "id": "x-dup-of-wrong"},
        {**truncated, "id": "x-finished-copy-of-truncated", "finish_reason": "stop"},
        {**good, "id": "x-dup-of-first", "reasoning": good["reasoning"] + "  "},
        {**good, "id": "x-same-text-other-question", "question_id": "elsewhere"},
    ]
    return records[:60] + extras[:2] + records[60:] + extras[2:]


def _filter_outputs(tmp_path, name, records, workers, *extra):
    path = write_jsonl(tmp_path / f"{name}.input.jsonl", records)
    output = tmp_path / f"{name}.jsonl"
    args = [
        f"input={path}",
        f"output={output}",
        "student_tokenizer=smollm2",
        "length.max_length=300",
        "correctness.workers=1",
        "chunk_records=8",
        f"workers={workers}",
        *extra,
    ]
    summary = filter_stage.run(load_config(filter_stage.FilterConfig, None, args))
    for key in ("seconds", "records_per_s", "output"):
        summary.pop(key)
    return read_jsonl(output), read_jsonl(tmp_path / f"{name}.rejected.jsonl"), summary


@pytest.mark.integration  # two filter worker processes and a merge (5-9 s): make test, not test-unit
def test_two_workers_write_what_one_writes_record_for_record(tmp_path):
    records = _records_for_workers()
    one = _filter_outputs(tmp_path, "one", records, 1)
    two = _filter_outputs(tmp_path, "two", records, 2)
    assert one == two
    kept, rejected, summary = two
    assert [r["id"] for r in kept + rejected] != [] and sorted(r["id"] for r in kept + rejected) == sorted(
        r["id"] for r in records
    )
    verdicts = {r["id"]: r["filter"]["reason"] for r in kept + rejected}
    assert verdicts["x-dup-of-wrong"] == "duplicate" and verdicts["x-dup-of-first"] == "duplicate"
    assert verdicts["x-finished-copy-of-truncated"] is None and verdicts["x-same-text-other-question"] is None
    assert set(summary["reasons"]) == {
        "wrong_answer",
        "finish_length",
        "empty_reasoning",
        "sentence_loop",
        "tool_call",
        "duplicate",
        "too_long",
        "unparsable_answer",
    }
    assert summary["student_tokens"]["max"] > 300


@pytest.mark.integration  # two filter worker processes, killed and rerun (5-9 s): make test, not test-unit
def test_two_workers_resume_as_one_does(tmp_path):
    records = _records_for_workers()
    for name, workers in (("one", 1), ("two", 2)):
        _filter_outputs(tmp_path, name, records[:50], workers)  # a run cut after 50 records
    one = _filter_outputs(tmp_path, "one", records, 1)
    two = _filter_outputs(tmp_path, "two", records, 2)
    assert one == two and one[2]["already_done"] == 50


def test_a_parquet_output_gets_a_parquet_rejected_file(tmp_path):
    from dasd.data.io import iter_records

    records = _records_for_workers()
    path = write_jsonl(tmp_path / "responses.jsonl", records)
    args = [f"input={path}", "student_tokenizer=smollm2", "length.max_length=300", "correctness.workers=1"]
    for kind in ("jsonl", "parquet"):
        output = tmp_path / kind / f"kept.{kind}"
        filter_stage.run(load_config(filter_stage.FilterConfig, None, [*args, f"output={output}"]))
    assert (tmp_path / "parquet" / "kept.rejected.parquet").is_dir()
    assert not (tmp_path / "parquet" / "kept.rejected.jsonl").exists()
    for side in ("kept", "kept.rejected"):
        jsonl = [(r["id"], r["filter"]) for _, r in iter_records(tmp_path / "jsonl" / f"{side}.jsonl")]
        parquet = [(r["id"], r["filter"]) for _, r in iter_records(tmp_path / "parquet" / f"{side}.parquet")]
        assert parquet == jsonl and jsonl


def test_workers_auto_and_out_of_the_fingerprint(monkeypatch):
    config = load_config(filter_stage.FilterConfig, None, ["input=x.jsonl", "output=y.jsonl", "chunk_records=4"])
    assert config.workers == 0 and "workers" not in fingerprint_view(config) and "workers" in config.model_dump()
    monkeypatch.setattr(filter_stage, "usable_cpus", lambda: 16)
    workers, records = filter_stage.worker_count(config, iter(range(4)))
    assert workers == 1 and list(records) == [0, 1, 2, 3]  # one chunk: not worth starting workers
    workers, records = filter_stage.worker_count(config, iter(range(9)))
    assert workers == filter_stage.AUTO_WORKERS_MAX and list(records) == list(range(9))
    monkeypatch.setattr(filter_stage, "usable_cpus", lambda: 2)
    assert filter_stage.worker_count(config, iter(range(9)))[0] == 1
    explicit = config.model_copy(update={"workers": 3})
    assert filter_stage.worker_count(explicit, iter(range(2)))[0] == 3
    assert fingerprint_view(explicit) == fingerprint_view(config)


def test_a_worker_that_cannot_start_stops_the_run_with_one_line(tmp_path, capsys):
    from dasd.cli import main

    path = write_jsonl(tmp_path / "responses.jsonl", _mixed_records(20))
    output = tmp_path / "out" / "kept.jsonl"
    args = ["filter", f"input={path}", f"output={output}", "student_tokenizer=no-such-tokenizer", "workers=2"]
    assert main(args) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "tokenizer 'no-such-tokenizer' is not a local folder" in error
    assert not output.exists() and not (tmp_path / "out" / "kept.rejected.jsonl").exists()
