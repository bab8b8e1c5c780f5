"""`dasd eval`: estimators, grading of real-looking outputs, an end-to-end run, resume, bad files, compare."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from dasd.cli import main
from dasd.config import load_config
from dasd.data.benchmarks import load_benchmark
from dasd.errors import ConfigError
from dasd.grading.answers import BoundedVerifier, grade_many
from dasd.reporting.metrics import avg_at_k, compare, mean_pass_at_k, pass_at_k, standard_error
from dasd.stages import eval as eval_stage
from dasd.text.reasoning import parse_response

from .conftest import kill_when, line_count, read_jsonl, write_jsonl


def test_estimators_on_hand_computed_cases():
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(1 - 3 / 6)  # 1 - C(3,2)/C(4,2)
    assert pass_at_k(4, 2, 2) == pytest.approx(1 - 1 / 6)
    assert pass_at_k(4, 1, 4) == 1.0 and pass_at_k(4, 0, 4) == 0.0
    assert pass_at_k(64, 8, 16) == pytest.approx(1 - math.comb(56, 16) / math.comb(64, 16))
    with pytest.raises(ValueError):
        pass_at_k(2, 1, 3)
    samples = [[True, False, False, False], [True, True, False, False]]
    assert avg_at_k(samples) == pytest.approx(0.375)
    assert standard_error(samples) == pytest.approx(math.sqrt(((0.25 - 0.375) ** 2 + (0.5 - 0.375) ** 2) / 1 / 2))
    assert mean_pass_at_k(samples, 2) == pytest.approx((0.5 + (1 - 1 / 6)) / 2)
    rows = compare(
        {"x": {"avg_at_k": 0.5, "standard_error": 0.01}, "y": {"avg_at_k": 0.5, "standard_error": 0.1}},
        {"x": {"avg_at_k": 0.55, "standard_error": 0.01}, "y": {"avg_at_k": 0.6, "standard_error": 0.1}},
    )
    assert [(r["benchmark"], r["significant"]) for r in rows] == [("x", True), ("y", False)]


OUTPUTS = [
    # (raw model output, reasoning format, reference, correct)
    ("<think>\nAdd them.\n</think>\n\nThe answer is \\boxed{42}.", "think", "42", True),
    ("<think>\nAdd them.\n</think>\n\nSo the total is **42**.", "think", "42", True),
    ("<think>\nx\n</think>\n\nThe answer is 42.", "think", "42", True),
    ("<think>\nx\n</think>\n\nEither \\boxed{41} or, after checking, \\boxed{42}.", "think", "42", True),
    ("<think>\nx\n</think>\n\nI am not able to decide.", "think", "42", False),
    ("<think>\nIs it \\boxed{40}? No, I made an error.\n</think>\n\nFinal: \\boxed{42}", "think", "42", True),
    ("<think>\nThe answer is \\boxed{42} surely.\n</think>\n\nThe answer is \\boxed{40}.", "think", "42", False),
    (
        "<|channel|>analysis<|message|>Try \\boxed{7}. Hmm, "
        "no.<|end|><|start|>assistant<|channel|>final<|message|>It is **42**.<|return|>",
        "harmony",
        "42",
        True,
    ),
    ("<think>\nThe options...\n</think>\n\nThe correct option is \\boxed{C}.", "think", "C", True),
    ("<think>\nhalf\n</think>\n\n\\boxed{\\frac{1}{2}}", "think", "0.5", True),
]


@pytest.fixture(scope="module")
def verifier():
    with BoundedVerifier(workers=2, timeout_s=3.0) as bounded:
        yield bounded


def test_grading_real_looking_outputs_grades_only_the_final_answer(verifier):
    items = []
    for raw, fmt, reference, _ in OUTPUTS:
        parsed = parse_response(raw, fmt, finish_reason="stop")
        items.append((parsed.content, reference, "math", None))
    grades = grade_many(items, verifier)
    assert [grade.correct for grade in grades] == [expected for *_, expected in OUTPUTS]


def test_end_to_end_on_a_reasoning_gym_set_and_a_file(tmp_path, taught_teacher):
    questions = write_jsonl(
        tmp_path / "add.jsonl",
        [
            {"id": f"q{a}{b}", "prompt": f"What is {a} + {b}?", "answer": str(a + b)}
            for a in range(2, 6)
            for b in range(3, 5)
        ],
    )
    choices = write_jsonl(
        tmp_path / "mc.jsonl", [{"id": "m1", "prompt": "What is 2 + 3?", "choices": ["4", "5", "6"], "answer": "5"}]
    )
    config = load_config(
        eval_stage.EvalConfig,
        None,
        [
            f"output_dir={tmp_path / 'eval'}",
            f"backend.model={taught_teacher}",
            f"benchmarks=[{questions}, {choices}, 'rg:basic_arithmetic:4']",
            "n=4",
            "max_new_tokens=40",
            "system_prompt=null",
            "math_prompt_suffix=null",
        ],
    )
    summary = eval_stage.run(config)
    add = summary["benchmarks"]["add"]
    assert add["questions"] == 8 and add["samples"] == 32 and add["complete"]
    assert 0 < add["avg_at_k"] <= add["pass_at_k"]["4"] <= 1  # the taught teacher gets some right
    results = read_jsonl(tmp_path / "eval" / "add" / "results.jsonl")
    assert len(results) == 32 and all(r["correct"] is False for r in results if r["truncated"])
    assert add["truncation_rate"] == pytest.approx(sum(r["truncated"] for r in results) / 32)
    # multiple choice: the answer text became its letter, the options were shown
    mc = read_jsonl(tmp_path / "eval" / "mc" / "samples.jsonl")[0]
    assert mc["answer"] == "B" and "B. 5" in mc["messages"][-1]["content"]
    rg = summary["benchmarks"]["rg_basic_arithmetic"]
    assert rg["reasoning_gym"]["agreement_with_ours"] == 1.0
    assert (tmp_path / "eval" / "summary.md").read_text().count("|") > 20
    # a rerun generates nothing new and gives the same numbers
    assert eval_stage.run(config)["benchmarks"]["add"] == add


@pytest.mark.slow  # a long integration test: `make test-slow` (CI runs it)
def test_resume_after_kill(tmp_path, tiny_llama_smollm2):
    questions = write_jsonl(
        tmp_path / "q.jsonl", [{"id": f"q{i}", "prompt": f"Count to {i}.", "answer": str(i)} for i in range(12)]
    )
    command = [
        sys.executable,
        "-m",
        "dasd",
        "eval",
        f"output_dir={tmp_path / 'eval'}",
        f"backend.model={tiny_llama_smollm2}",
        f"benchmarks=[{questions}]",
        "n=6",
        "max_new_tokens=48",
        "backend.batch_size=1",
        "cache=off",  # generated, not read from an earlier session's evaluation cache, so there is something to kill
    ]
    samples = tmp_path / "eval" / "q" / "samples.jsonl"
    kill_when(command, lambda: line_count(samples) >= 10)
    assert samples.read_bytes().count(b"\n") < 72
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
    ids = [record["id"] for record in read_jsonl(samples)]
    assert len(ids) == len(set(ids)) == 72
    assert json.loads((tmp_path / "eval" / "summary.json").read_text())["benchmarks"]["q"]["samples"] == 72


def test_shards_generate_and_the_run_without_shard_merges_and_grades(tmp_path, tiny_llama_smollm2):
    """Two shard tasks write their own samples files and grade nothing; the run without shard merges them
    (each sample once), generates nothing more, and grades the same samples an unsharded run would."""
    questions = write_jsonl(
        tmp_path / "q.jsonl", [{"id": f"q{i}", "prompt": f"Count to {i}.", "answer": str(i)} for i in range(8)]
    )
    settings = [
        f"backend.model={tiny_llama_smollm2}",
        f"benchmarks=[{questions}]",
        "n=2",
        "max_new_tokens=8",
        "cache=off",  # the whole run generates its samples, not reading an earlier session's from the cache
    ]

    def evaluate(folder, *extra):
        return eval_stage.run(load_config(eval_stage.EvalConfig, None, [f"output_dir={folder}", *settings, *extra]))

    shards = [evaluate(tmp_path / "sharded", f"shard={index}/2") for index in (0, 1)]
    assert all("avg_at_k" not in summary["benchmarks"]["q"] for summary in shards)
    files = sorted((tmp_path / "sharded" / "q").glob("samples.shard-*-of-2.jsonl"))
    assert len(files) == 2 and not (tmp_path / "sharded" / "summary.json").exists()
    merged = evaluate(tmp_path / "sharded")["benchmarks"]["q"]
    whole = evaluate(tmp_path / "whole")["benchmarks"]["q"]
    ids = [record["id"] for record in read_jsonl(tmp_path / "sharded" / "q" / "samples.jsonl")]
    assert len(ids) == len(set(ids)) == 16 and not list((tmp_path / "sharded" / "q").glob("samples.shard-*"))
    assert merged["samples"] == whole["samples"] == 16 and merged["avg_at_k"] == whole["avg_at_k"]
    by_id = {r["id"]: r["content"] for r in read_jsonl(tmp_path / "whole" / "q" / "samples.jsonl")}
    assert all(by_id[r["id"]] == r["content"] for r in read_jsonl(tmp_path / "sharded" / "q" / "samples.jsonl"))


@pytest.mark.parametrize(
    "content, error",
    [
        ('{"id": "a", "prompt": "x", "answer": "1"}\n{"id": "b", "prompt": \n', "bad.jsonl:2: invalid JSON"),
        ('{"id": "a", "prompt": "x"}\n', "field 'answer': question a: a benchmark question needs a reference answer"),
        (
            '{"id": "a", "prompt": "x", "choices": ["1", "2"], "answer": "7"}\n',
            "field 'answer': question a: '7' is neither a letter",
        ),
    ],
)
def test_bad_benchmark_files_are_one_line_errors(tmp_path, content, error, capsys, tiny_llama_smollm2):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    assert (
        main(["eval", f"output_dir={tmp_path / 'eval'}", f"backend.model={tiny_llama_smollm2}", f"benchmarks=[{path}]"])
        == 2
    )
    message = capsys.readouterr().err.strip()
    assert error in message and len(message.splitlines()) == 1
    with pytest.raises(ConfigError, match="not a shipped benchmark"):
        load_benchmark(str(tmp_path / "missing.jsonl"))
    with pytest.raises(ConfigError, match="expected rg:<task>"):
        load_benchmark("rg:")


def test_compare_prints_the_difference_and_its_significance(tmp_path, capsys):
    for name, value in (("a", 0.40), ("b", 0.55)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(
            json.dumps(
                {
                    "model": name,
                    "benchmarks": {
                        "aime24": {"avg_at_k": value, "standard_error": 0.02},
                        "aime25": {"avg_at_k": value, "standard_error": 0.2},
                    },
                }
            )
        )
    assert main(["eval", "--compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "aime24" in out and "+15.00" in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("aime")}
    assert lines["aime24"].split()[5] == "yes" and lines["aime25"].split()[5] == "no"
    assert "unpaired (no results.jsonl)" in lines["aime24"]


def test_shipped_aime_sets():
    for name, first_answer, last_answer in (("aime24", "204", "315"), ("aime25", "70", "240")):
        benchmark = load_benchmark(name)
        assert len(benchmark.questions) == 30 and len({q["id"] for q in benchmark.questions}) == 30
        assert all(q["answer"].isdigit() and 0 <= int(q["answer"]) <= 999 for q in benchmark.questions)
        assert (benchmark.questions[0]["answer"], benchmark.questions[-1]["answer"]) == (first_answer, last_answer)
        assert benchmark.questions[0]["messages"][-1]["content"].endswith("within \\boxed{}.")


def test_compare_is_paired_over_the_same_questions_and_sample_seeds(tmp_path, capsys):
    """B - A per question over the samples both runs drew with the same seeds; the standard error is the
    paired one (hand-computed: differences 0, .5, .5, .5 -> mean .375, s.e. .125), not the summaries'."""
    outcomes = {"a": [[1, 1], [0, 0], [1, 0], [0, 0]], "b": [[1, 1], [1, 0], [1, 1], [0, 1]]}
    for run, per_question in outcomes.items():
        results = [
            {"id": f"q{q}:t1:{k}", "question_id": f"q{q}", "correct": bool(c)}
            for q, samples in enumerate(per_question)
            for k, c in enumerate(samples)
        ]
        write_jsonl(tmp_path / run / "aime24" / "results.jsonl", results)
        accuracy = sum(map(sum, per_question)) / 8
        (tmp_path / run / "summary.json").write_text(
            json.dumps({"model": run, "benchmarks": {"aime24": {"avg_at_k": accuracy, "standard_error": 0.21}}})
        )
    rows, _, _ = eval_stage.compare_runs(tmp_path / "a", tmp_path / "b")
    (row,) = rows
    assert row["paired"] and (row["questions"], row["samples"]) == (4, 8)
    assert (row["a"], row["b"], row["difference"]) == (0.375, 0.75, 0.375)
    assert abs(row["standard_error"] - 0.125) < 1e-12 and abs(row["unpaired_standard_error"] - 0.21 * 2**0.5) < 1e-12
    # 0.375 > 2 x 0.125, but with 4 questions the 95% t interval is 0.375 ± t(0.975, 3) x 0.125 = ± 0.398: it holds 0
    assert row["degrees_of_freedom"] == 3 and abs(row["t"] - 3.182) < 1e-3
    assert row["interval"][0] < 0 < row["interval"][1] and not row["significant"]
    assert main(["eval", "--compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    assert "+37.50    12.50  no " in capsys.readouterr().out
