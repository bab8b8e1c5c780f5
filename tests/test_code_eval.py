"""Code benchmarks end to end on the grading side: `dasd eval`'s grading of the shipped code set and of a
LiveCodeBench-format file, and `dasd filter` dropping wrong code records — real sandboxed processes."""

from __future__ import annotations

import json

from dasd.config import load_config
from dasd.data.benchmarks import load_benchmark
from dasd.grading.answers import BoundedVerifier
from dasd.stages import eval as eval_stage
from dasd.stages import filter as filter_stage

from .conftest import read_jsonl, write_jsonl
from .test_code_data import STDIN_SOLUTIONS, _lcb_row

FUNCTIONAL = {
    "countPeaks": "class Solution:\n    def countPeaks(self, heights):\n"
    "        return sum(heights[i - 1] < heights[i] > heights[i + 1] for i in range(1, len(heights) - 1))",
    "rotateWords": "class Solution:\n    def rotateWords(self, sentence, k):\n        return sentence",  # wrong
}


def _answer(code: str) -> str:
    return f"<think>\nLet me write it.\n</think>\n\n```python\n{code}\n```"


def _samples(questions) -> list[dict]:
    samples = []
    for question in questions:
        func = question["meta"]["func_name"]
        code = STDIN_SOLUTIONS.get(question["id"]) if func is None else FUNCTIONAL.get(func)
        content = f"```python\n{code}\n```" if code else "I am not sure how to solve this."
        samples.append(
            {
                "id": f"{question['id']}:t1:0",
                "question_id": question["id"],
                "answer": None,
                "domain": "code",
                "finish_reason": "stop",
                "content": content,
                "meta": question["meta"],
                "usage": {"completion_tokens": 10},
            }
        )
    return samples


def test_eval_grades_the_shipped_code_set_with_outcomes():
    benchmark = load_benchmark("code")
    assert benchmark.kind == "code" and len(benchmark.questions) == 8
    assert not any("boxed" in q["messages"][-1]["content"] for q in benchmark.questions)  # no math suffix
    with BoundedVerifier(1) as verifier:
        results = eval_stage.grade_benchmark(benchmark, _samples(benchmark.questions), verifier)
    metrics = eval_stage.benchmark_metrics(results, 1, [q["id"] for q in benchmark.questions])
    assert metrics["code"]["outcomes"] == {"passed": 5, "wrong_answer": 1, "no_code": 2}
    assert metrics["avg_at_k"] == 5 / 8
    wrong = next(r for r in results if r["outcome"] == "wrong_answer")
    assert wrong["tests_total"] >= 4 and 0 <= wrong["tests_passed"] < wrong["tests_total"]
    assert 5 / 8 <= metrics["code"]["test_pass_fraction"] < 6 / 8


def test_a_livecodebench_file_with_a_window_is_evaluated_and_its_dates_reported(tmp_path):
    rows = [_lcb_row("early", "2024-09-01T00:00:00"), _lcb_row("late", "2025-03-01T00:00:00")]
    path = write_jsonl(tmp_path / "lcb.jsonl", rows)
    benchmark = load_benchmark(f"lcb:{path}:v6")
    assert benchmark.name == "lcb_lcb_v6" and [q["id"] for q in benchmark.questions] == ["late"]
    assert benchmark.questions[0]["meta"]["window"]["start"] == "2025-02-01"


def test_filter_drops_wrong_code_records_with_the_outcome(tmp_path):
    benchmark = load_benchmark("code")
    records = []
    for sample in _samples(benchmark.questions):
        records.append(
            {
                **sample,
                "messages": [{"role": "user", "content": "solve"}],
                "reasoning": "Let me write it.",
                "id": sample["id"],
            }
        )
    path = write_jsonl(tmp_path / "responses.jsonl", records)
    summary = filter_stage.run(
        load_config(
            filter_stage.FilterConfig,
            None,
            [f"input={path}", f"output={tmp_path / 'kept.jsonl'}", "length.enabled=false", "repetition.enabled=false"],
        )
    )
    assert summary["kept"] == 5 and summary["reasons"] == {"no_code": 2, "wrong_answer": 1}
    rejected = {r["id"]: r["filter"]["reason"] for r in read_jsonl(tmp_path / "kept.rejected.jsonl")}
    assert sorted(rejected.values()) == ["no_code", "no_code", "wrong_answer"]
    assert json.loads(json.dumps(summary))["kept"] == 5


def test_gpqa_runs_as_multiple_choice_with_the_options_shown(tmp_path):
    from .test_code_data import _gpqa_row, _write_gpqa

    path = _write_gpqa(tmp_path / "gpqa_diamond.csv", [_gpqa_row(number) for number in range(3)])
    benchmark = load_benchmark(f"gpqa:{path}", rg_seed=7)
    assert benchmark.name == "gpqa_diamond" and benchmark.kind == "choice" and len(benchmark.questions) == 3
    for question in benchmark.questions:
        prompt = question["messages"][-1]["content"]
        letter = question["answer"]
        number = question["id"][-1]
        assert f"{letter}. right {number}" in prompt and prompt.endswith("within \\boxed{}.")
    with BoundedVerifier(1) as verifier:
        samples = [
            {
                "id": f"{q['id']}:0",
                "question_id": q["id"],
                "answer": q["answer"],
                "domain": q["domain"],
                "choices": q["choices"],
                "finish_reason": "stop",
                "content": f"\\boxed{{{q['answer']}}}",
                "meta": {},
            }
            for q in benchmark.questions
        ]
        results = eval_stage.grade_benchmark(benchmark, samples, verifier)
    assert all(result["correct"] for result in results)


def test_dasd_eval_runs_code_benchmarks_end_to_end(tmp_path, taught_teacher):
    """The whole command on the shipped code set and a windowed LiveCodeBench file: generation, sandboxed
    grading, outcomes and the window's dates in the summary (the tiny teacher writes no code: no_code)."""
    rows = [_lcb_row("early", "2024-09-01T00:00:00"), _lcb_row("late", "2025-03-01T00:00:00")]
    path = write_jsonl(tmp_path / "lcb.jsonl", rows)
    config = load_config(
        eval_stage.EvalConfig,
        None,
        [
            f"output_dir={tmp_path / 'eval'}",
            f"backend.model={taught_teacher}",
            f"benchmarks=[code, 'lcb:{path}:v6']",
            "n=2",
            "max_new_tokens=24",
        ],
    )
    summary = eval_stage.run(config)["benchmarks"]
    code, lcb = summary["code"], summary["lcb_lcb_v6"]
    assert code["questions"] == 8 and code["samples"] == 16 and sum(code["code"]["outcomes"].values()) == 16
    assert lcb["questions"] == 1 and lcb["window"] == [
        {"name": "v6", "start": "2025-02-01", "end": "2025-05-01", "end_exclusive": True}
    ]
    results = read_jsonl(tmp_path / "eval" / "code" / "results.jsonl")
    assert all(r["correct"] == (r.get("outcome") == "passed") for r in results)
