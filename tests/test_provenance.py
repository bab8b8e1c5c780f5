"""`dasd provenance`: four sentence classes from three models, by position, correct vs incorrect."""

from __future__ import annotations

import json
import math

import pytest

from dasd.cli import main
from dasd.config import load_config
from dasd.stages import provenance
from dasd.stages.provenance import classify_provenance, position_fractions
from dasd.text.harmony import HARMONY_FINAL, render_harmony_response
from dasd.text.render import completion_part_logprobs

from .conftest import read_jsonl, write_jsonl

LOG = math.log


@pytest.mark.parametrize(
    "t, s, d, expected",
    [
        # log-ratio space, alpha = 0.25, beta = 0.5: every difference below is exact in binary floating point
        (-1.0, -1.0, -1.0, "shared"),
        (-1.0, -1.25, -1.0, "shared"),  # |t-s| = alpha and |s-d| = alpha: still shared (<=)
        (-1.0, -1.25, -1.5, "boosted"),  # |t-d| = 0.5 > alpha, while |t-s| = 0.25 <= beta
        (-1.0, -1.0, -0.5, "boosted"),  # T and S agree, D was pushed up
        (-0.5, -1.0, -0.75, "boosted"),  # t-s = beta exactly: not a teacher sentence
        (-0.5, -1.0625, -0.75, "teacher"),  # t-s just above beta
        (-1.0625, -0.5, -0.75, "student"),
        (-1.0, -0.5, -1.0, "boosted"),  # s-t = beta exactly: not a student sentence
    ],
)
def test_boundary_classes_in_log_ratio_space(t, s, d, expected):
    assert classify_provenance(t, s, d, alpha=0.25, beta=0.5, space="logratio") == expected


@pytest.mark.parametrize(
    "pt, ps, pd, expected",
    [
        (0.5, 0.5, 0.5, "shared"),
        (0.5, 0.5 + 0.1 - 1e-9, 0.5, "shared"),  # just inside alpha
        (0.5, 0.5, 0.6 + 1e-9, "boosted"),  # D just outside alpha, T and S identical
        (0.7 + 1e-9, 0.6, 0.65, "teacher"),  # d(T, S) just above beta
        (0.6, 0.7 + 1e-9, 0.65, "student"),
        (0.9, 0.2, 0.9, "teacher"),  # D learned the teacher's sentence
        (0.2, 0.9, 0.2, "student"),
        (0.3, 0.35, 0.95, "boosted"),  # neither model liked it; D does
    ],
)
def test_boundary_classes_in_probability_space(pt, ps, pd, expected):
    assert classify_provenance(LOG(pt), LOG(ps), LOG(pd), alpha=0.1, beta=0.1) == expected


def test_position_fractions_use_only_positions_with_enough_samples_and_delta_is_the_mean_difference():
    def response(correct, kinds):
        return {"correct": correct, "sentences": [{"type": kind} for kind in kinds]}

    responses = [
        response(True, ["teacher", "shared", "shared"]),
        response(True, ["teacher", "teacher"]),
        response(False, ["student", "shared", "boosted"]),
        response(False, ["teacher", "student"]),
    ]
    analysis = position_fractions(responses, min_samples=2, max_positions=10)
    assert analysis["positions"] == [0, 1]  # position 2 has one answer in each group
    assert analysis["fractions"]["correct"]["teacher"] == [1.0, 0.5]
    assert analysis["fractions"]["incorrect"]["teacher"] == [0.5, 0.0]
    assert analysis["delta"]["teacher"] == pytest.approx(((1.0 - 0.5) + (0.5 - 0.0)) / 2)
    assert analysis["delta"]["student"] == pytest.approx(((0 - 0.5) + (0 - 0.5)) / 2)
    assert position_fractions(responses, min_samples=3, max_positions=10)["delta"]["teacher"] is None


def _answers(tmp_path, count: int = 8):
    """Graded-looking answers in a `dasd eval` benchmark folder: half right, half wrong, no results file."""
    records = []
    for index in range(count):
        a, b = 2 + index % 4, 3 + index % 2
        answer = a + b if index % 2 == 0 else a + b + 1
        records.append(
            {
                "id": f"q{index}:t1:0",
                "question_id": f"q{index}",
                "answer": str(a + b),
                "domain": "math",
                "messages": [{"role": "user", "content": f"What is {a} + {b}?"}],
                "reasoning": f"I add {a} and {b}. That gives {answer}. Done.",
                "content": f"{answer}",
                "finish_reason": "stop",
            }
        )
    write_jsonl(tmp_path / "eval" / "bench" / "samples.jsonl", records)
    return tmp_path / "eval"


def test_same_model_in_all_three_roles_makes_every_sentence_shared(tmp_path, taught_teacher, capsys):
    outputs = _answers(tmp_path)
    model = str(taught_teacher)
    assert (
        main(
            [
                "provenance",
                "--outputs",
                str(outputs),
                "--teacher",
                model,
                "--student",
                model,
                "--distilled",
                model,
                "min_samples=1",
            ]
        )
        == 0
    )
    folder = outputs / "provenance"
    summary = json.loads((folder / "summary.json").read_text())
    assert (
        summary["responses"]["analysed"] == 8 and summary["responses"]["correct"] == 4
    )  # graded here, as dasd eval grades
    for group in ("correct", "incorrect"):
        counts = summary["sentences"][group]
        assert counts["shared"] > 0 and counts["teacher"] == counts["student"] == counts["boosted"] == 0
    for record in read_jsonl(folder / "provenance.jsonl"):
        assert [s["type"] for s in record["sentences"]] == ["shared"] * 4  # 3 reasoning sentences + the answer
        for sentence in record["sentences"]:
            assert sentence["teacher_logprob"] == pytest.approx(sentence["distilled_logprob"], abs=1e-5)
    assert summary["delta"]["shared"] == pytest.approx(0.0) and summary["delta"]["teacher"] == pytest.approx(0.0)
    assert (folder / "example.png").read_bytes()[:4] == b"\x89PNG" and (folder / "positions.png").read_bytes()[
        :4
    ] == b"\x89PNG"
    assert "dasd provenance" in capsys.readouterr().out


def test_different_models_give_other_classes_and_a_rerun_reuses_the_scores(
    tmp_path, taught_teacher, tiny_qwen3, tiny_llama_smollm2
):
    outputs = _answers(tmp_path)
    overrides = [
        f"outputs={outputs}",
        f"teacher.model={taught_teacher}",
        f"student.model={tiny_llama_smollm2}",
        f"distilled.model={tiny_qwen3}",
        "min_samples=1",
    ]
    summary = provenance.run(load_config(provenance.ProvenanceConfig, None, overrides))
    counts = summary["sentences"]["correct"]
    # the taught teacher is sure of its own kind of text; the random-init student is not
    assert counts["teacher"] > 0 and summary["models"]["distilled"] == str(tiny_qwen3)
    # each share comes with a cluster-bootstrap interval (questions resampled) that holds the share itself
    assert summary["bootstrap"] == {"resamples": 1000, "unit": "question", "level": 0.95}
    for group in ("correct", "incorrect"):
        for kind, share in summary["share"][group].items():
            if share is not None:
                low, high = summary["share_interval"][group][kind]
                assert low <= share <= high, (group, kind)
    correct, incorrect = summary["share"]["correct"]["teacher"], summary["share"]["incorrect"]["teacher"]
    if correct is not None and incorrect is not None:
        low, high = summary["share_interval"]["difference"]["teacher"]
        assert low <= correct - incorrect <= high
    folder = outputs / "provenance"
    before = {
        role: (folder / f"logprobs.{role}.jsonl").stat().st_mtime_ns for role in ("teacher", "student", "distilled")
    }
    again = provenance.run(load_config(provenance.ProvenanceConfig, None, overrides + ["alpha=0.3"]))
    assert all(
        (folder / f"logprobs.{role}.jsonl").stat().st_mtime_ns == before[role] for role in before
    )  # nothing rescored
    assert again["alpha"] == 0.3 and again["responses"]["analysed"] == 8


def test_bad_outputs_folder_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert (
        main(
            ["provenance", "--outputs", str(tmp_path / "empty"), "--teacher", "t", "--student", "s", "--distilled", "d"]
        )
        == 2
    )
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "no samples.jsonl" in error


def test_harmony_rendering_maps_every_text_token_back_to_reasoning_or_content():
    from dasd.text.harmony import decode

    messages = [{"role": "user", "content": "What is 2 + 3?"}]
    reasoning, content = "We add 2 and 3. That is 5.", "The answer is 5."
    text = render_harmony_response(messages, reasoning, content, reasoning_effort="high")
    rendered = decode(text.prompt_ids + text.completion_ids)
    assert rendered.endswith("<|channel|>analysis<|message|>" + reasoning + HARMONY_FINAL + content)
    assert "Reasoning: high" in rendered
    parts = completion_part_logprobs(text, reasoning, content, [-0.5] * len(text.completion_ids))
    for part, value in (("reasoning", reasoning), ("content", content)):
        offsets = parts[part]["offsets"]
        assert "".join(value[start:end] for start, end in offsets) == value  # every character, once, in order
