"""Stage summaries (issue 27): each stage writes its `<name>.summary.json` through `dasd.data.io.write_summary` where
`dasd.naming.summary_file` says, with exactly the fields of its TypedDict in `dasd.data.records`; `read_summary`, the
lineage of the cards and `dasd run`'s table read them back by their stage. Real stages on hand-made records."""

from __future__ import annotations

import pytest

from dasd.config import load_config
from dasd.data.io import read_summary
from dasd.data.lineage import lineage
from dasd.data.summaries import BuildSFTSummary, FilterSummary, SelectSummary
from dasd.errors import InputError
from dasd.naming import sidecar, summary_file
from dasd.pipeline.summary import headline
from dasd.stages import build_sft, select
from dasd.stages import filter as filter_stage

from .conftest import write_jsonl


def _scored(count: int) -> list[dict]:
    return [
        {
            "id": f"q{index // 2}:t0.6:{index % 2}",
            "question_id": f"q{index // 2}",
            "messages": [{"role": "user", "content": f"What is {index} + 1?"}],
            "answer": str(index + 1),
            "domain": "math",
            "temperature": 0.6,
            "reasoning": f"{index} plus one is {index + 1}.",
            "content": f"The answer is {index + 1}.",
            "finish_reason": "stop",
            "das": {"teacher": index % 3, "student": 1, "shared": 2, "n": 3 + index % 3},
        }
        for index in range(count)
    ]


@pytest.fixture
def stages_run(tmp_path):
    scored = write_jsonl(tmp_path / "scored.jsonl", _scored(8))
    off = ["length.enabled=false", "correctness.enabled=false", "structure.enabled=false"]
    outputs = {
        "filter": (tmp_path / "filtered.jsonl", FilterSummary),
        "select": (tmp_path / "das.jsonl", SelectSummary),
        "build-sft": (tmp_path / "sft" / "sft.jsonl", BuildSFTSummary),
    }
    returned = {
        "filter": filter_stage.run(
            load_config(filter_stage.FilterConfig, None, [f"input={scored}", f"output={outputs['filter'][0]}", *off])
        ),
        "select": select.run(
            load_config(select.SelectConfig, None, [f"input={outputs['filter'][0]}", f"output={outputs['select'][0]}"])
        ),
        "build-sft": build_sft.run(
            load_config(
                build_sft.BuildSFTConfig, None, [f"input={outputs['select'][0]}", f"output={outputs['build-sft'][0]}"]
            )
        ),
    }
    return outputs, returned


def test_each_stage_writes_its_typed_summary_where_naming_says_and_reads_it_back(stages_run):
    outputs, returned = stages_run
    for stage, (output, kind) in outputs.items():
        path = summary_file(output, stage)
        assert path == sidecar(output, "summary", ".json")
        summary = read_summary(path)
        assert summary == returned[stage] and summary["stage"] == stage
        # the TypedDict is what is written: every required key, and no key it does not declare (the optional ones,
        # such as select's per-temperature budgets, only when set)
        assert kind.__required_keys__ <= set(summary) <= kind.__required_keys__ | kind.__optional_keys__


def test_lineage_reads_the_summaries_of_a_build_sft_stage_file_by_the_sidecar_rule(stages_run):
    outputs, returned = stages_run
    stage_file = outputs["build-sft"][0].with_name("sft.low_temp.jsonl")  # described by sft.jsonl's sidecars
    steps = lineage(stage_file)
    assert [step["stage"] for step in steps] == ["build-sft", "select", "filter"]
    assert [step["summary"] for step in steps] == [returned["build-sft"], returned["select"], returned["filter"]]


def test_read_summary_tells_a_stage_summary_from_other_files(tmp_path):
    (tmp_path / "other.summary.json").write_text('{"rows": 3}')
    (tmp_path / "torn.summary.json").write_text('{"stage": "sel')
    assert read_summary(tmp_path / "other.summary.json") is None  # another tool's file
    assert read_summary(tmp_path / "missing.summary.json") is None
    with pytest.raises(InputError, match=r"torn\.summary\.json: cannot read summary"):
        read_summary(tmp_path / "torn.summary.json")


def test_the_run_table_reads_each_step_by_its_stage_not_by_guessing_from_its_keys(stages_run):
    _, returned = stages_run
    assert headline("filter", returned["filter"]) == f"kept {returned['filter']['kept']}"
    chosen = returned["select"]
    expected = f"selected {chosen['selected']} of {chosen['candidates']} ({chosen['strategy']})"
    assert headline("select", chosen) == expected
    # build-sft's records, even when its summary also had a field another stage's headline reads
    assert headline("build-sft", {**returned["build-sft"], "kept": 1}) == f"records {returned['build-sft']['records']}"
    # `dasd train` returns its stages without a `stage` key: the step's stage says what it is
    stages = [{"stage": "low_temp", "first_loss": 2.0, "final_loss": 1.25}, {"stage": "x", "skipped": True}]
    assert headline("train", {"stages": stages}) == "low_temp loss 2.00→1.25"
    assert headline("sample", {}) == "" and headline("push", {"stage": "push", "files": []}) == ""


def test_each_printout_is_its_written_summarys_rows_and_the_card_lists_them(tmp_path, capsys):
    """One `summary_rows` per summary type (`dasd.reporting.summary_rows`): what a stage prints is the rows of the
    summary it wrote (plus what the summary does not keep: filter's workers, build-sft's exports), and its card lists
    the same rows, less the ones about how the run went."""
    from dasd.progress import format_summary
    from dasd.reporting.cards import stage_facts
    from dasd.reporting.summary_rows import RUN_ROWS, build_sft_rows, filter_rows, row_value, summary_rows

    scored = write_jsonl(tmp_path / "scored.jsonl", _scored(8))
    off = ["length.enabled=false", "correctness.enabled=false", "structure.enabled=false"]
    filtered, selected, sft = tmp_path / "filtered.jsonl", tmp_path / "das.jsonl", tmp_path / "sft" / "sft.jsonl"
    capsys.readouterr()
    filter_stage.run(load_config(filter_stage.FilterConfig, None, [f"input={scored}", f"output={filtered}", *off]))
    summary = read_summary(summary_file(filtered, "filter"))
    rows = filter_rows(summary, workers="none (this process)")
    assert capsys.readouterr().out.strip() == format_summary(f"dasd filter -> {filtered}", rows)
    select.run(
        load_config(
            select.SelectConfig, None, [f"input={filtered}", f"output={selected}", "k_per_temperature={0.6: 2}"]
        )
    )
    summary = read_summary(summary_file(selected, "select"))
    printed = capsys.readouterr().out.strip()
    assert printed == format_summary(f"dasd select (count, k=1) -> {selected}", summary_rows(summary))
    assert "k per temperature" in printed  # a setting the summary keeps is a row, printed and carded alike
    facts = stage_facts({"stage": "select", "file": str(selected), "config": {"strategy": "count"}, "summary": summary})
    rows = [row for row in summary_rows(summary) if row[0].strip() not in RUN_ROWS]
    assert facts[1:] == [
        f"{'  ' if label.startswith('  ') else ''}- {label.strip()}: {row_value(value)}" for label, value in rows
    ]
    build_sft.run(load_config(build_sft.BuildSFTConfig, None, [f"input={selected}", f"output={sft}"]))
    summary = read_summary(summary_file(sft, "build-sft"))
    assert capsys.readouterr().out.strip() == format_summary(
        f"dasd build-sft -> {sft}", build_sft_rows(summary, exports=[])
    )
