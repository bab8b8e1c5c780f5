"""`dasd select`: DAS strategies, the RS baseline with the same budget, filtering, determinism."""

from __future__ import annotations

import json
import math

import pytest

from dasd.cli import main
from dasd.config import load_config
from dasd.stages import select

from .conftest import read_jsonl, write_jsonl


def _record(question: str, index: int, teacher: int, n: int, temperature: float = 0.6, length: int = 10, keep=None):
    record = {
        "id": f"{question}:t{temperature:g}:{index}",
        "question_id": question,
        "temperature": temperature,
        "reasoning": "x" * length,
        "content": "y",
        "das": {"teacher": teacher, "student": 0, "shared": n - teacher, "n": n},
    }
    if keep is not None:
        record["filter"] = {"keep": keep, "reason": None if keep else "structure"}
    return record


RECORDS = [
    _record("q1", 0, teacher=2, n=10, length=50),
    _record("q1", 1, teacher=5, n=20, length=10),
    _record("q1", 2, teacher=3, n=4, length=30),
    _record("q1", 0, teacher=9, n=10, temperature=1.0),
    _record("q1", 1, teacher=1, n=10, temperature=1.0),
    _record("q2", 0, teacher=7, n=8, keep=False),
    _record("q2", 1, teacher=4, n=8, keep=True),
    _record("q2", 2, teacher=0, n=8, keep=True),
]


def _run(tmp_path, *overrides, records=RECORDS):
    path = write_jsonl(tmp_path / "scored.jsonl", records)
    output = tmp_path / "selected.jsonl"
    summary = select.run(load_config(select.SelectConfig, None, [f"input={path}", f"output={output}", *overrides]))
    return [r["id"] for r in read_jsonl(output)], summary


@pytest.mark.parametrize(
    "strategy, expected",
    [
        ("count", {"q1:t0.6:1", "q1:t1:0", "q2:t0.6:1"}),  # most teacher sentences; q2's best was filtered out
        ("ratio", {"q1:t0.6:2", "q1:t1:0", "q2:t0.6:1"}),  # 3/4 beats 5/20
        ("longest", {"q1:t0.6:0"}),  # the 50-character reasoning; the other groups are ties
    ],
)
def test_strategies_pick_the_expected_response(tmp_path, strategy, expected):
    ids, summary = _run(tmp_path, f"strategy={strategy}")
    assert len(ids) == 3 and summary["excluded_by_filter"] == 1
    assert expected <= set(ids) and (strategy == "longest" or set(ids) == expected)


def test_random_baseline_has_the_same_budget_and_is_seeded(tmp_path):
    das, _ = _run(tmp_path, "strategy=count", "k=2")
    rs, _ = _run(tmp_path, "strategy=random", "k=2", "seed=3")
    rs_again, _ = _run(tmp_path, "strategy=random", "k=2", "seed=3")
    assert len(rs) == len(das) == 6 and rs == rs_again
    seeds = {tuple(_run(tmp_path, "strategy=random", "k=1", f"seed={seed}")[0]) for seed in range(12)}
    assert len(seeds) > 1  # different seeds, different picks


def test_global_budget_and_pooled_temperatures(tmp_path):
    ids, summary = _run(tmp_path, "budget=2")
    assert ids == ["q1:t1:0", "q1:t0.6:1"] or set(ids) == {"q1:t1:0", "q1:t0.6:1"}  # the two highest counts (9, 5)
    pooled, _ = _run(tmp_path, "per_temperature=false")
    assert set(pooled) == {"q1:t1:0", "q2:t0.6:1"}
    assert summary["per_temperature"]["0.6"]["kept"]["count"] == 1


def test_summary_histograms_kept_vs_dropped(tmp_path):
    _, summary = _run(tmp_path)
    low = summary["per_temperature"]["0.6"]
    assert low["kept"]["count"] == 2 and low["dropped"]["count"] == 3
    assert low["kept"]["mean_teacher_sentences"] == 4.5
    assert sum(low["dropped"]["histogram"].values()) == 3
    saved = json.loads((tmp_path / "selected.summary.json").read_text())
    assert saved["selected"] == 3


def test_count_strategy_needs_scored_records(tmp_path, capsys):
    path = write_jsonl(tmp_path / "raw.jsonl", [{"id": "a", "question_id": "q"}])
    status = main(["select", f"input={path}", f"output={tmp_path / 'out.jsonl'}"])
    assert status == 2 and "raw.jsonl:1: field 'das': missing" in capsys.readouterr().err
    assert not (tmp_path / "out.jsonl").exists()
    # random needs no scores
    ids, _ = _run(
        tmp_path, "strategy=random", records=[{"id": "a", "question_id": "q"}, {"id": "b", "question_id": "q"}]
    )
    assert len(ids) == 1


def test_a_single_temperature_arm_selects_only_at_that_temperature(tmp_path):
    ids, summary = _run(tmp_path, "temperatures=[1.0]", "k=2")
    assert set(ids) == {"q1:t1:0", "q1:t1:1"} and summary["candidates"] == 2


def test_a_threshold_sweep_reclassifies_from_the_stored_log_probs(tmp_path):
    def scored(index: int, ratios: list[float]) -> dict:
        # sentences with p_T / p_S = each ratio (p_S fixed at 0.1)
        sentences = [
            {
                "part": "reasoning",
                "start": 0,
                "end": 1,
                "teacher_logprob": math.log(0.1 * r),
                "student_logprob": math.log(0.1),
                "type": "shared",
            }
            for r in ratios
        ]
        return {**_record("q1", index, teacher=0, n=len(ratios)), "sentences": sentences}

    records = [scored(0, [1.8, 1.8, 1.8]), scored(1, [4.0, 1.1, 1.1])]
    # ratio cut-off 1.5: three teacher sentences beat one; cut-off 3: only the 4x sentence counts
    low, _ = _run(tmp_path, "space=logratio", f"beta={math.log(1.5)}", records=records)
    high, _ = _run(tmp_path, "space=logratio", f"beta={math.log(3.0)}", records=records)
    assert low == ["q1:t0.6:0"] and high == ["q1:t0.6:1"]
    selected = read_jsonl(tmp_path / "selected.jsonl")[0]
    assert selected["das"] == {"teacher": 1, "student": 0, "shared": 2, "n": 3}
    assert [s["type"] for s in selected["sentences"]] == ["teacher", "shared", "shared"]


def test_per_temperature_k_and_budgets_keep_the_best_of_each_temperature_and_domain(tmp_path):
    """The report's stages kept different amounts at T=0.6 and T=1.0 (105K vs 330K, other domain mixes): k and
    the budget per temperature (and per domain), each keeping the most teacher sentences."""
    records = []
    for q in range(6):
        domain = "math" if q % 2 else "code"
        for index, teacher in enumerate((q, q + 10, q + 20)):
            records.append({**_record(f"q{q}", index, teacher=teacher, n=40, temperature=0.6), "domain": domain})
            records.append({**_record(f"q{q}", index, teacher=teacher, n=40, temperature=1.0), "domain": domain})
    ids, summary = _run(tmp_path, "k_per_temperature={0.6: 1, 1.0: 2}", records=records)
    assert sum(":t0.6:" in i for i in ids) == 6 and sum(":t1:" in i for i in ids) == 12
    assert all(i.endswith(":2") for i in ids if ":t0.6:" in i)  # k=1 at 0.6: each question's best
    assert summary["k_per_temperature"] == {"0.6": 1, "1.0": 2}
    ids, summary = _run(
        tmp_path,
        "k_per_temperature={0.6: 1, 1.0: 2}",
        "budget_per_temperature={0.6: 2, 1.0: {math: 3, code: 1}}",
        records=records,
    )
    low = [i for i in ids if ":t0.6:" in i]
    high = {i for i in ids if ":t1:" in i}
    assert sorted(low) == ["q4:t0.6:2", "q5:t0.6:2"]  # the two highest counts (24, 25)
    # math questions are q1, q3, q5: their three best at T=1.0 have 25, 23, 21 teacher sentences; code: q4's 24
    assert high == {"q5:t1:2", "q3:t1:2", "q1:t1:2", "q4:t1:2"}
    assert summary["budget_per_temperature"] == {"0.6": 2, "1.0": {"math": 3, "code": 1}}
    assert summary["selected"] == 6
    # the dataset card says which budgets made the data
    from dasd.reporting.cards import stage_facts

    facts = "\n".join(stage_facts({"stage": "select", "config": {"strategy": "count", "k": 1}, "summary": summary}))
    assert "k per temperature: {'0.6': 1, '1.0': 2}" in facts
    assert "budget per temperature: {'0.6': 2, '1.0': {'math': 3, 'code': 1}}" in facts  # per domain at T=1.0
    # a temperature without a cap is untouched; k per temperature needs per-temperature grouping
    ids, _ = _run(tmp_path, "budget_per_temperature={1.0: 1}", records=records)
    assert sum(":t0.6:" in i for i in ids) == 6 and sum(":t1:" in i for i in ids) == 1
    with pytest.raises(Exception, match="k_per_temperature needs per_temperature=true"):
        _run(tmp_path, "k_per_temperature={0.6: 1}", "per_temperature=false", records=records)


def _sentences(kinds: str) -> list[dict]:
    names = {"t": "teacher", "s": "shared", "u": "student"}
    return [{"part": "reasoning", "start": 2 * i, "end": 2 * i + 1, "type": names[k]} for i, k in enumerate(kinds)]


def _scored_by(kinds_by_id: dict[str, str]) -> list[dict]:
    """The same candidates (two questions, two temperatures) as one student scored them: each its sentence classes."""
    records = []
    for record_id, kinds in kinds_by_id.items():
        question, temperature, index = record_id.split(":")
        teacher = kinds.count("t")
        record = _record(question, int(index), teacher=teacher, n=len(kinds), temperature=float(temperature[1:]))
        records.append({**record, "sentences": _sentences(kinds)})
    return records


def test_compare_with_reports_the_overlap_of_two_students_selections(tmp_path, capsys):
    # student A and student B disagree on q1 at T=0.6 (so the selections differ there) and on one sentence of q2
    here = _scored_by({"q1:t0.6:0": "tts", "q1:t0.6:1": "tss", "q1:t1:0": "ttt", "q1:t1:1": "sss", "q2:t0.6:0": "tsu"})
    there = _scored_by({"q1:t0.6:0": "sss", "q1:t0.6:1": "tts", "q1:t1:0": "ttt", "q1:t1:1": "sss", "q2:t0.6:0": "tsu"})
    other = write_jsonl(tmp_path / "other.jsonl", there)
    ids, summary = _run(tmp_path, f"compare_with={other}", records=here)
    assert ids == ["q1:t0.6:0", "q1:t1:0", "q2:t0.6:0"]  # the selection is still this student's
    overlap = summary["overlap"]
    # here {q1 t0.6 0, q1 t1 0, q2 0}, there {q1 t0.6 1, q1 t1 0, q2 0}: 2 shared of 4
    assert overlap["jaccard"] == 0.5 and overlap["selected_both"] == 2
    assert overlap["jaccard_per_temperature"] == {"0.6": pytest.approx(1 / 3, abs=1e-6), "1.0": 1.0}
    sentences = overlap["sentences"]
    # 15 sentences; different: q1 t0.6 0 ("tts" vs "sss": 2), q1 t0.6 1 ("tss" vs "tts": 1)
    assert sentences["compared"] == 15 and sentences["agreement"] == pytest.approx(12 / 15, abs=1e-6)
    assert sentences["confusion"]["teacher"] == {"teacher": 5, "shared": 2, "student": 0}
    assert sentences["confusion"]["shared"] == {"teacher": 1, "shared": 6, "student": 0}
    assert sentences["same_class_share"] == pytest.approx({"teacher": 5 / 7, "shared": 6 / 7, "student": 1.0}, abs=1e-6)
    out = capsys.readouterr().out
    assert "selections' Jaccard" in out and "0.500" in out
    # without compare_with the summary is as before
    _, plain = _run(tmp_path, records=here)
    assert "overlap" not in plain


def test_compare_with_a_bad_file_is_one_line(tmp_path, capsys):
    path = write_jsonl(tmp_path / "scored.jsonl", RECORDS)
    other = write_jsonl(tmp_path / "unscored.jsonl", [{**RECORDS[0], "das": None}])
    code = main(["select", f"input={path}", f"output={tmp_path / 'out.jsonl'}", f"compare_with={other}"])
    assert code == 2
    assert "unscored.jsonl:1: field 'das': missing: strategy=count needs scored records" in capsys.readouterr().err
    assert not (tmp_path / "out.jsonl").exists()


def test_max_boosted_share_needs_the_distilled_scores(tmp_path, capsys):
    path = write_jsonl(tmp_path / "scored.jsonl", RECORDS)
    assert main(["select", f"input={path}", f"output={tmp_path / 'out.jsonl'}", "max_boosted_share=0.2"]) == 2
    assert "max_boosted_share needs boosted_scores" in capsys.readouterr().err
    assert not (tmp_path / "out.jsonl").exists()


def test_the_printed_summary_never_says_none(tmp_path, capsys):
    """What a missing mean means is printed instead: nothing dropped, no temperature, no shares, no sentences."""
    records = [_record("q1", 0, teacher=2, n=4), _record("q2", 0, teacher=1, n=4)]  # one candidate each: none dropped
    records.append({**_record("q3", 0, teacher=3, n=4), "temperature": None})  # e.g. the released data
    elsewhere = write_jsonl(tmp_path / "elsewhere.jsonl", [{**_record("q9", 0, teacher=1, n=1), "sentences": []}])
    _, summary = _run(tmp_path, f"boosted_scores={elsewhere}", f"compare_with={elsewhere}", records=records)
    assert summary["per_temperature"]["0.6"]["dropped"] == {"count": 0, "mean_teacher_sentences": None, "histogram": {}}
    out = capsys.readouterr().out
    assert "None" not in out, out
    assert "T=0.6 dropped" in out and "0 responses" in out
    assert "records without a temperature kept" in out
    assert "mean share kept n/a (none scored there)" in out and "none excluded (no max_boosted_share)" in out
    assert "no candidates in common to compare" in out and "no sentence spans in common to compare" in out


def test_anti_das_keeps_the_fewest_teacher_sentences_and_oracle_counts_labelled_sentences(tmp_path, capsys):
    """The controls that bound count: its mirror (fewest teacher sentences) and the oracle (sentences matching the
    world's own labels of skill, read through the stored sentence offsets)."""
    ids, _ = _run(tmp_path, "strategy=anti_das")
    assert set(ids) == {"q1:t0.6:0", "q1:t1:1", "q2:t0.6:2"}  # 2 of (2, 5, 3); 1 of (9, 1); 0 of (4, 0)

    def labelled(index: int, reasoning: str) -> dict:
        spans, start = [], 0
        for sentence in reasoning.split(". "):
            end = start + len(sentence.rstrip(".")) + 1
            spans.append({"part": "reasoning", "start": start, "end": end, "type": "shared"})
            start = end + 1
        return {**_record("q1", index, teacher=5 - index, n=len(spans)), "reasoning": reasoning, "sentences": spans}

    records = [
        labelled(0, "Add 3. Careful: 3 - 5 goes below zero. Then 4."),
        labelled(1, "Careful: 2 - 7 goes below zero. Careful: 1 - 9 too. Then 2."),
        labelled(2, "Add 3. Then 4. Then 2."),
    ]
    assert [records[1]["reasoning"][s["start"] : s["end"]] for s in records[1]["sentences"]][:2] == [
        "Careful: 2 - 7 goes below zero.",
        "Careful: 1 - 9 too.",
    ]
    ids, summary = _run(tmp_path, "strategy=oracle", "oracle_patterns=['^Careful:']", records=records)
    assert ids == ["q1:t0.6:1"] and summary["strategy"] == "oracle"
    assert read_jsonl(tmp_path / "selected.jsonl")[0]["select"]["score"] == 2.0
    count, _ = _run(tmp_path, records=records)
    assert count == ["q1:t0.6:0"]  # count would keep the one with most teacher sentences
    # oracle needs its patterns, and sentences
    path = write_jsonl(tmp_path / "scored.jsonl", records)
    for extra in ([], ["oracle_patterns=[]"], ["oracle_patterns=['(']"]):
        assert main(["select", f"input={path}", f"output={tmp_path / 'o.jsonl'}", "strategy=oracle", *extra]) == 2
        error = capsys.readouterr().err.strip()
        assert "oracle_patterns" in error and "\n" not in error
    unscored = write_jsonl(tmp_path / "unscored.jsonl", RECORDS)
    assert (
        main(
            ["select", f"input={unscored}", f"output={tmp_path / 'o.jsonl'}", "strategy=oracle", "oracle_patterns=[x]"]
        )
        == 2
    )
    assert "field 'sentences': missing: strategy=oracle" in capsys.readouterr().err


def test_budget_order_rank_spreads_a_budget_over_questions_and_max_per_question_caps_each(tmp_path):
    """Raw counts favour the question with long solutions: by score a budget of 3 at T=1.0 goes to q0's k=2 and
    q1's best; by rank every question's best comes first."""
    records = []
    for q, counts in enumerate([(40, 30, 1), (20, 2, 1), (10, 3, 1), (5, 4, 1)]):
        for index, teacher in enumerate(counts):
            records.append(_record(f"q{q}", index, teacher=teacher, n=50, temperature=1.0))
            records.append(_record(f"q{q}", index, teacher=teacher, n=50, temperature=0.6))
    by_score, summary = _run(tmp_path, "k=2", "budget_per_temperature={1.0: 3}", records=records)
    assert {i for i in by_score if ":t1:" in i} == {"q0:t1:0", "q0:t1:1", "q1:t1:0"}
    assert "budget_order" not in summary and "groups" not in summary  # as before the option existed
    by_rank, summary = _run(tmp_path, "k=2", "budget_per_temperature={1.0: 3}", "budget_order=rank", records=records)
    assert {i for i in by_rank if ":t1:" in i} == {"q0:t1:0", "q1:t1:0", "q2:t1:0"}  # ties by score: q3's 5 is out
    assert sum(":t0.6:" in i for i in by_rank) == 8 and summary["budget_order"] == "rank"
    # a global budget in rank order: the four bests of 0.6 and of 1.0 (8), then no second
    ranked, _ = _run(tmp_path, "k=2", "budget=8", "budget_order=rank", records=records)
    assert all(i.endswith(":0") for i in ranked) and len(ranked) == 8
    # at most 3 per question over both temperatures: by rank, both bests and the better second
    capped, summary = _run(tmp_path, "k=2", "max_per_question=3", "budget_order=rank", records=records)
    assert len(capped) == 12 and summary["max_per_question"] == 3
    for q in range(4):
        mine = [i for i in capped if i.startswith(f"q{q}:")]
        assert len(mine) == 3 and f"q{q}:t0.6:0" in mine and f"q{q}:t1:0" in mine
    # one per question, by score: a best of each (its two temperatures tie)
    capped, _ = _run(tmp_path, "k=2", "max_per_question=1", records=records)
    assert len(capped) == 4 and all(i.endswith(":0") for i in capped)


def test_groups_left_without_a_candidate_are_counted_from_the_filters_rejected_records(tmp_path, capsys):
    """With the filter's rejected file: the question × temperature groups whose every response was rejected, and
    what k per group would give (a student's own rollouts cover fewer groups than the teacher's)."""
    kept = [_record("q1", 0, 1, 2, keep=True), _record("q1", 1, 1, 2, temperature=1.0, keep=True)]
    rejected = [_record("q2", 0, 1, 2, keep=False), _record("q1", 2, 1, 2, temperature=1.0, keep=False)]
    write_jsonl(tmp_path / "filtered.jsonl", kept)
    write_jsonl(tmp_path / "filtered.rejected.jsonl", rejected)
    output = tmp_path / "selected.jsonl"
    settings = [f"output={output}", "strategy=random", "k_per_temperature={1.0: 2}"]
    summary = select.run(
        load_config(
            select.SelectConfig,
            None,
            [f"input={tmp_path / 'filtered.jsonl'}", f"rejected={tmp_path / 'filtered.rejected.jsonl'}", *settings],
        )
    )
    assert summary["selected"] == 2 and summary["excluded_by_filter"] == 2
    assert summary["groups"] == {"with_candidates": 2, "without_candidates": 1, "records_at_k": 4}
    assert "1 whose every response the filter rejected" in capsys.readouterr().out
    assert {r["id"] for r in read_jsonl(output)} == {r["id"] for r in kept}
    # the same from one input holding both (a glob over the two files)
    globbed = select.run(load_config(select.SelectConfig, None, [f"input={tmp_path / 'filtered*.jsonl'}", *settings]))
    assert globbed["groups"] == summary["groups"] and globbed["selected"] == 2


def _sampled(questions=("q1", "q2"), temperatures=(0.6, 1.0), n=16):
    """Scored responses as dasd sample writes them (with `sample_index`), teacher counts spread over the indices."""
    return [
        {
            **_record(q, index, teacher=(index * 7 + q_index * 3 + int(t * 10)) % 11, n=12, temperature=t),
            "sample_index": index,
        }
        for q_index, q in enumerate(questions)
        for t in temperatures
        for index in range(n)
    ]


def test_draws_keep_k_per_question_temperature_and_fresh_draw(tmp_path, capsys):
    """draw_size=8: indices 0-7 are draw 0, 8-15 draw 1; k is kept in each, and each kept record says its draw."""
    records = _sampled()
    ids, summary = _run(tmp_path, "draw_size=8", "k=2", records=records)
    kept = read_jsonl(tmp_path / "selected.jsonl")
    assert len(ids) == 2 * 2 * 2 * 2 and summary["selected"] == 16
    assert summary["draw_size"] == 8 and summary["draws"] == [0, 1] and summary["excluded_by_draw"] == 0
    assert "partial_draws" not in summary and "draws of 8" in capsys.readouterr().out
    assert all(r["select"]["draw"] == r["sample_index"] // 8 for r in kept)
    for group in {(r["question_id"], r["temperature"], r["select"]["draw"]) for r in kept}:
        mine = sorted(
            (r for r in kept if (r["question_id"], r["temperature"], r["select"]["draw"]) == group),
            key=lambda r: r["select"]["rank"],
        )
        assert [r["select"]["rank"] for r in mine] == [0, 1]
        counts = [
            r["das"]["teacher"]
            for r in records
            if (r["question_id"], r["temperature"], r["sample_index"] // 8) == group
        ]  # the draw's 8 candidates: the two best are kept, whatever the other draw holds
        assert [r["das"]["teacher"] for r in mine] == sorted(counts, reverse=True)[:2]
    # only draw 1: its candidates alone, the others counted as left out
    ids, summary = _run(tmp_path, "draw_size=8", "draws=[1]", records=records)
    assert len(ids) == 4 and all(int(i.rsplit(":", 1)[1]) >= 8 for i in ids)
    assert summary["draws"] == [1] and summary["excluded_by_draw"] == 32 and summary["candidates"] == 32
    # a default run is as before the option existed: no draw in the entries or the summary
    _, summary = _run(tmp_path, records=records)
    assert "draw_size" not in summary and all(
        "draw" not in r["select"] for r in read_jsonl(tmp_path / "selected.jsonl")
    )


@pytest.mark.parametrize(
    "settings",
    [
        ["strategy=count"],
        ["strategy=random", "seed=5"],
        ["strategy=count", "k=3", "budget_per_temperature={1.0: 3}", "budget_order=rank"],
        ["strategy=ratio", "k_per_temperature={0.6: 1, 1.0: 2}", "budget=5"],
    ],
)
def test_the_first_draw_of_16_keeps_exactly_what_8_sampled_keep(tmp_path, settings):
    """draw_size=8 draws=[0] on 16 candidates selects as a run that sampled 8 (each sample's seed derives from its
    index, so those 8 are the same records): the same ids, ranks and scores."""
    records = [
        {**r, "das": {**r["das"], "teacher": r["das"]["teacher"] + (5 if r["sample_index"] >= 8 else 0)}}
        for r in _sampled(questions=("q1", "q2", "q3"))
    ]  # the second draw is better: leaking it in would change the picks
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    drawn, summary = _run(tmp_path / "a", "draw_size=8", "draws=[0]", *settings, records=records)
    alone, _ = _run(tmp_path / "b", *settings, records=[r for r in records if r["sample_index"] < 8])
    assert drawn == alone and summary["excluded_by_draw"] == 48
    entries = [r["select"] for r in read_jsonl(tmp_path / "a" / "selected.jsonl")]
    assert entries == [{**r["select"], "draw": 0} for r in read_jsonl(tmp_path / "b" / "selected.jsonl")]


def test_draws_need_a_sample_index_a_size_and_records_in_every_listed_draw(tmp_path, capsys):
    records = _sampled(n=8)
    del records[3]["sample_index"]
    path = write_jsonl(tmp_path / "scored.jsonl", records)
    args = ["select", f"input={path}", f"output={tmp_path / 'o.jsonl'}"]
    assert main([*args, "draw_size=8"]) == 2
    err = capsys.readouterr().err.strip()
    assert "scored.jsonl:4: field 'sample_index': missing: draw_size splits responses into draws" in err
    assert len(err.splitlines()) == 1
    assert main([*args, "draws=[0]"]) == 2
    assert "draws needs draw_size" in capsys.readouterr().err
    path = write_jsonl(tmp_path / "scored.jsonl", _sampled(n=8))
    assert main([*args, "draw_size=8", "draws=[0, 1]"]) == 2
    assert "no records in draw 1 (sample indices 8-15): sample more" in capsys.readouterr().err
    # 12 sampled with draws of 8: draw 1 holds 4 — selected, with a warning
    _, summary = _run(tmp_path, "draw_size=8", records=_sampled(n=12))
    assert summary["partial_draws"] == {"0.6": 1, "1.0": 1} and "looks partial" in capsys.readouterr().err


def test_draws_count_the_groups_the_filter_emptied_per_draw(tmp_path):
    records = _sampled(questions=("q1",), temperatures=(1.0,), n=16)
    records = [{**r, "filter": {"keep": r["sample_index"] < 8, "reason": None}} for r in records]
    _, summary = _run(tmp_path, "draw_size=8", "k=2", records=records)
    assert summary["groups"] == {"with_candidates": 1, "without_candidates": 1, "records_at_k": 4}
    assert summary["selected"] == 2 and summary["excluded_by_filter"] == 8


def test_a_selection_with_no_candidate_fails_at_select_and_writes_nothing(tmp_path):
    """Every response rejected by the filter (e.g. a self-distillation arm whose student answered nothing right):
    select says so in one line, instead of writing an empty selection that build-sft would reject a step later."""
    from dasd.errors import InputError

    rejected = [_record("q1", index, teacher=1, n=4, keep=False) for index in range(3)]
    with pytest.raises(InputError, match="no candidate: dasd filter rejected all 3 responses"):
        _run(tmp_path, "strategy=random", records=rejected)
    assert not (tmp_path / "selected.jsonl").exists()
