"""`dasd sample --suggest-temperatures` (issue 29 item 4): the temperature pair from measured densities, on the
demo world's real teacher (the shipped model, raw log-probs from dasd's own sampling path)."""

from __future__ import annotations

import json

import pytest

from dasd.cli import main
from dasd.models.demo_world import world_dir
from dasd.sampling.temperature_probe import suggest_pair

TEMPERATURES = (0.3, 0.6, 1.0, 1.6)


@pytest.mark.integration  # samples the demo world's teacher at four temperatures (~20 s alone)
def test_a_probe_over_temperatures_measures_the_densities_and_suggests_a_pair(tmp_path, capsys):
    output = tmp_path / "probe" / "responses.jsonl"
    schedule = "[" + ", ".join(f"{{temperature: {t}, n: 2}}" for t in TEMPERATURES) + "]"
    code = main(
        [
            "sample",
            f"input={world_dir() / 'dev_questions.jsonl'}",
            f"output={output}",
            f"backend.model={world_dir() / 'teacher'}",
            "limit=8",
            "max_new_tokens=256",
            f"schedule={schedule}",
            "--suggest-temperatures",
        ]
    )
    assert code == 0
    report = json.loads((tmp_path / "probe" / "responses.temperatures.json").read_text())
    stats = report["temperatures"]
    assert list(stats) == [str(t) for t in TEMPERATURES]
    for temperature, row in stats.items():
        assert row["responses"] == 16 and sum(row["density"]) == pytest.approx(1.0, abs=1e-4)
        assert report["overlap"][temperature][temperature] == pytest.approx(1.0, abs=1e-4)
        assert 0.0 <= row["accuracy"] <= 1.0  # the world's questions have answers: graded
    # a hotter sample is less likely under the teacher, token for token (raw log-probs, not tempered ones)
    means = [stats[str(t)]["mean_logprob"] for t in TEMPERATURES]
    assert means[0] > means[-1]
    assert report["overlap"]["0.3"]["1.6"] < report["overlap"]["0.3"]["0.6"]
    suggestion = report["suggestion"]
    assert suggestion["reasons"] and (
        suggestion["low"] is None or suggestion["high"] is None or suggestion["low"] < suggestion["high"]
    )
    out = capsys.readouterr().out
    assert "suggested pair:" in out and "overlap with the others" in out
    summary = json.loads((tmp_path / "probe" / "responses.summary.json").read_text())
    assert summary["temperature_suggestion"] == suggestion


def test_the_suggestion_skips_collapsed_and_broken_temperatures():
    stats = {
        0.2: {
            "stop_share": 1.0,
            "distinct_share": 0.25,
            "accuracy": 0.9,
            "graded": 200,
        },  # every sample the same: nothing to select
        0.5: {"stop_share": 1.0, "distinct_share": 0.75, "accuracy": 0.88, "graded": 200},
        0.9: {"stop_share": 0.95, "distinct_share": 1.0, "accuracy": 0.85, "graded": 200},
        1.1: {"stop_share": 0.95, "distinct_share": 1.0, "accuracy": 0.84, "graded": 200},
        1.5: {"stop_share": 0.6, "distinct_share": 1.0, "accuracy": 0.3, "graded": 200},  # runs on: not eligible
    }
    overlaps = {0.5: {0.9: 0.31, 1.1: 0.30, 1.5: 0.01}}
    pair = suggest_pair(stats, overlaps)
    # 1.1 overlaps least but 0.9 is within the tolerance: the lower, safer one
    assert (pair["low"], pair["high"]) == (0.5, 0.9)
    assert any("T=1.5: not eligible" in reason for reason in pair["reasons"])
    assert any("T=0.2: eligible but only 25% distinct" in reason for reason in pair["reasons"])
    assert suggest_pair(stats, overlaps, overlap_tolerance=0.0)["high"] == 1.1
