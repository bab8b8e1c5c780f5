"""`dasd report`'s sections, each on a small hand-built run folder (the whole page is tested end to end
in test_pipeline.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from dasd.errors import InputError
from dasd.stages import report
from dasd.stages.report import Page, ReportConfig

from .conftest import write_jsonl


def _summary(path: Path, payload: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload))
    return path


def _page(run_dir: Path, run_summary: dict | None = None) -> Page:
    return Page(run_dir, run_dir / "report", report._summaries(run_dir), run_summary)


def _cells(html: str) -> list[list[str]]:
    """The body rows of the tables in a section, as text cells."""
    return [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in re.findall(r"<tr>(<td.*?)</tr>", html)]


def _eval(n_correct: list[int], n: int, *, complete: bool = True) -> dict:
    avg = sum(n_correct) / (len(n_correct) * n)
    return {
        "stage": "eval",
        "model": "m",
        "benchmarks": {
            "aime24": {
                "questions": len(n_correct),
                "n": n,
                "complete": complete,
                "avg_at_k": avg,
                "standard_error": 0.0421,
                "pass_at_k": {"1": avg, "4": 0.9},
                "truncation_rate": 0.125,
                "mean_completion_tokens": 812.4,
            }
        },
    }


def test_evaluation_rows_follow_the_pipeline_order_and_mark_incomplete_runs(tmp_path):
    for label in ("teacher", "high_temp", "student"):
        _summary(tmp_path / "eval" / label / "summary.json", _eval([3, 2], 4, complete=label != "high_temp"))
    (html,) = report.section_evaluation(_page(tmp_path))
    rows = _cells(html)
    assert [row[0] for row in rows] == ["eval/student", "eval/high_temp", "eval/teacher"]  # EVAL_MODELS order
    assert rows[0][1:8] == ["aime24", "2", "4", "62.5 ± 4.2", "90.0 (k=4)", "12.5", "812"]
    assert [row[8] for row in rows] == ["", "incomplete", ""]


def test_missing_outputs_are_said_not_errors(tmp_path):
    _summary(
        tmp_path / "filter" / "filtered.summary.json",
        {"stage": "filter", "records": 10, "kept": 7, "rejected": 3, "reasons": {"too_long": 1, "wrong_answer": 2}},
    )
    page = _page(tmp_path)
    assert report.section_pipeline(page) == []
    for section, text in (
        (report.section_evaluation, "no `dasd eval` output"),
        (report.section_response_probability, "no sampled responses"),
        (report.section_training_loss, "no `dasd train` output"),
        (report.section_sentence_types, "no `dasd score` output"),
        (report.section_mixed_policy, "no `dasd mix` output"),
    ):
        (html,) = section(page)
        assert 'class="missing"' in html and text in html
    (html,) = report.section_filtering(page)
    assert _cells(html) == [["filter", "10", "7", "3", "wrong_answer 2, too_long 1"]]
    assert page.figures == {}


def test_pipeline_steps_table(tmp_path):
    run_summary = {
        "seconds": 412.3,
        "steps": [
            {"step": "sample", "status": "ran", "seconds": 165.24, "result": "responses 12"},
            {"step": "score", "status": "cached", "seconds": 12.8},
        ],
    }
    (html,) = report.section_pipeline(_page(tmp_path, run_summary))
    assert "412 s in the last" in html
    assert _cells(html) == [["sample", "ran", "165.2", "responses 12"], ["score", "cached", "12.8", ""]]


def test_response_probability_per_temperature(tmp_path):
    def response(rid, temperature, logprobs):
        return {
            "id": rid,
            "temperature": temperature,
            "finish_reason": "stop",
            "teacher_logprobs": {
                "reasoning": {"offsets": [[0, 1]] * len(logprobs), "logprobs": logprobs},
                "content": {"offsets": [], "logprobs": []},
            },
        }

    responses = write_jsonl(
        tmp_path / "sample" / "responses.jsonl",
        [
            response("a", 0.6, [-0.1, -0.3]),
            response("b", 0.6, [-0.2]),
            response("c", 1.0, [-1.0, -2.0]),
            {"id": "d", "temperature": 1.0, "finish_reason": "length", "teacher_logprobs": None},
        ],
    )
    _summary(tmp_path / "sample" / "responses.summary.json", {"stage": "sample", "output": str(responses)})
    page = _page(tmp_path)
    (html,) = report.section_response_probability(page)
    rows = _cells(html)
    assert rows == [["0.6", "2", "-0.2000", "-0.2000", "stop 2"], ["1", "1", "-1.5000", "-1.5000", "stop 1, length 1"]]
    assert Path(page.figures["response_probability"]).stat().st_size > 1000 and "data:image/png;base64," in html


def test_training_loss_stages_back_to_back_and_stages_finished_earlier(tmp_path):
    train = tmp_path / "train" / "das"
    for stage, losses in (("low_temp", [2.0, 1.5]), ("high_temp", [1.4, 1.1])):
        history = [{"step": step + 1, "loss": loss} for step, loss in enumerate(losses)]
        _summary(train / stage / "log_history.json", history)
        _summary(
            train / stage / "metrics.json",
            {
                "stage": stage,
                "samples": 10,
                "optimizer_steps": 2,
                "first_loss": losses[0],
                "final_loss": losses[-1],
                "seconds": 3.5,
            },
        )
    _summary(
        train / "train.summary.json",
        {
            "stage": "train",
            "stages": [
                {"stage": "low_temp", "skipped": True},  # finished by an earlier `dasd train`: read from metrics.json
                {
                    "stage": "high_temp",
                    "samples": 10,
                    "optimizer_steps": 2,
                    "first_loss": 1.4,
                    "final_loss": 1.1,
                    "seconds": 3.5,
                },
            ],
        },
    )
    page = _page(tmp_path)
    (html,) = report.section_training_loss(page)
    assert _cells(html) == [
        ["train/das", "low_temp", "10", "2", "2.0000", "1.5000", "3.5"],
        ["train/das", "high_temp", "10", "2", "1.4000", "1.1000", "3.5"],
    ]
    assert "training_loss" in page.figures


def test_sentence_types_per_temperature_and_per_selection(tmp_path):
    def scored(rid, temperature, teacher, student, shared):
        return {
            "id": rid,
            "temperature": temperature,
            "das": {"teacher": teacher, "student": student, "shared": shared, "n": teacher + student + shared},
        }

    scored_path = write_jsonl(
        tmp_path / "score" / "scored.jsonl",
        [scored("a", 0.6, 2, 1, 7), scored("b", 1.0, 6, 0, 4), scored("c", 1.0, 0, 2, 8)],
    )
    _summary(tmp_path / "score" / "scored.summary.json", {"stage": "score", "output": str(scored_path)})
    for branch, strategy, records in (
        ("das", "count", [scored("b", 1.0, 6, 0, 4)]),
        ("rs", "random", [scored("c", 1.0, 0, 2, 8)]),
    ):
        path = write_jsonl(tmp_path / "select" / f"{branch}.jsonl", records)
        _summary(
            tmp_path / "select" / f"{branch}.summary.json",
            {"stage": "select", "strategy": strategy, "output": str(path)},
        )
    page = _page(tmp_path)
    (html,) = report.section_sentence_types(page)
    assert _cells(html) == [
        ["T=0.6", "1", "2", "1", "7", "20.0"],
        ["T=1", "2", "6", "2", "12", "30.0"],
        ["DAS", "1", "6", "0", "4", "60.0"],
        ["RS", "1", "0", "2", "8", "0.0"],
    ]
    assert "sentence_types" in page.figures


def test_mixed_policy_reads_its_cap_and_cutoff_points(tmp_path):
    output = tmp_path / "mix" / "mixed.jsonl"
    write_jsonl(
        output.with_name("mixed.cutoff.jsonl"),
        [
            {
                "question_id": "q1",
                "teacher_tokens": 100,
                "budget": 120,
                "student_tokens": 120,
                "ratio": 1.2,
                "truncated": True,
            },
            {
                "question_id": "q2",
                "teacher_tokens": 80,
                "budget": 96,
                "student_tokens": 40,
                "ratio": 0.5,
                "truncated": False,
            },
        ],
    )
    output.with_name("mixed.config.yaml").write_text("budget_factor: 1.2\n")
    _summary(
        output.with_name("mixed.summary.json"),
        {
            "stage": "mix",
            "output": str(output),
            "rollouts": 2,
            "truncated": 1,
            "cut": 1,
            "continued": 1,
            "kept": 1,
            "off_policy": 3,
            "drop_reasons": {"finished_within_budget": 1},
        },
    )
    page = _page(tmp_path)
    (html,) = report.section_mixed_policy(page)
    assert "capped at 1.2× the teacher" in html
    assert _cells(html) == [["2", "1", "1", "1", "1", "3", "finished_within_budget 1"]]
    assert "cutoff_ratio" in page.figures


def test_provenance_shares_and_deltas(tmp_path):
    _summary(
        tmp_path / "provenance" / "summary.json",
        {
            "stage": "provenance",
            "alpha": 0.1,
            "beta": 0.1,
            "min_samples": 20,
            "positions_used": 5,
            "responses": {"analysed": 240, "correct": 162, "incorrect": 78},
            "share": {
                "correct": {"teacher": 0.251, "student": 0.011, "shared": 0.723, "boosted": 0.015},
                "incorrect": {"teacher": 0.239, "student": 0.145, "shared": 0.514, "boosted": None},
            },
            "delta": {"teacher": -0.002, "student": -0.121, "shared": 0.201, "boosted": None},
            "share_interval": {
                "correct": {"teacher": [0.2, 0.3]},
                "incorrect": {"teacher": [0.19, 0.29]},
                "difference": {"teacher": [-0.05, 0.074]},
            },
        },
    )
    (html,) = report.section_provenance(_page(tmp_path))
    assert "240 answers (162 correct)" in html
    assert _cells(html) == [
        ["teacher", "25.1 [20.0, 30.0]", "23.9 [19.0, 29.0]", "[-5.0, 7.4]", "-0.002"],
        ["student", "1.1", "14.5", "-", "-0.121"],
        ["shared", "72.3", "51.4", "-", "+0.201"],
        ["boosted", "1.5", "-", "-", "-"],
    ]


def test_a_folder_without_dasd_outputs_is_a_one_line_error(tmp_path):
    (tmp_path / "notes.json").write_text("{}")
    with pytest.raises(InputError, match="holds no dasd outputs"):
        report.build(ReportConfig(run_dir=str(tmp_path)))
    with pytest.raises(InputError, match="not a folder"):
        report.build(ReportConfig(run_dir=str(tmp_path / "missing")))


def test_a_selection_compared_with_another_students_shows_its_overlap(tmp_path):
    overlap = {
        "compare_with": str(tmp_path / "filter" / "filtered.jsonl"),
        "candidates_in_both": 40,
        "selected_here": 8,
        "selected_there": 8,
        "selected_both": 4,
        "jaccard": 1 / 3,
        "jaccard_per_temperature": {"0.6": 0.5, "1.0": 0.2},
        "sentences": {"compared": 400, "agreement": 0.25, "same_class_share": {"teacher": 0.9, "shared": 0.05}},
    }
    _summary(tmp_path / "arms" / "b" / "select.summary.json", {"stage": "select", "output": "x", "overlap": overlap})
    _summary(tmp_path / "arms" / "a" / "select.summary.json", {"stage": "select", "output": "y"})
    html = report._selection_overlaps(_page(tmp_path))
    assert "transfer across students" in html
    assert _cells(html) == [
        [
            "arms/b",
            "filter/filtered.jsonl",
            "0.333",
            "T=0.6: 0.500, T=1.0: 0.200",
            "4 / 8 / 8",
            "0.250",
            "teacher 0.900, shared 0.050",
        ]
    ]


def test_every_stage_summary_is_shown_as_the_rows_its_stage_printed(tmp_path):
    """The last section: each summary's rows (`dasd.reporting.summary_rows`), folded, detail rows indented — a new
    summary field reaches the page through its row, with no section of its own."""
    _summary(
        tmp_path / "filter" / "filtered.summary.json",
        {"stage": "filter", "records": 10, "kept": 7, "rejected": 3, "reasons": {"wrong_answer": 2, "too_long": 1}},
    )
    _summary(tmp_path / "mix" / "mixed.summary.json", {"stage": "mix", "kept": 0, "off_policy": 6})
    _summary(tmp_path / "train" / "train.summary.json", {"stage": "train", "stages": []})  # a table: its own section
    (html,) = report.section_stage_summaries(_page(tmp_path))
    assert html.index("filter/filtered.summary.json") < html.index("mix/mixed.summary.json")  # pipeline order
    assert _cells(html) == [
        ["records", "10"],
        ["kept", "7"],
        ["rejected", "3"],
        ["\u2003wrong_answer", "2"],
        ["\u2003too_long", "1"],
        ["already done (skipped)", "None"],
        ["records/s", "None"],
        ["off_policy", "6"],
    ]
    assert "train.summary.json" not in html
    assert report.section_stage_summaries(_page(tmp_path / "train")) == []
