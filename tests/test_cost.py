"""`dry_run`'s cost table (`dasd.pipeline.cost`): volumes that scale with the config, formats that weigh what they
weigh, measured averages from a finished step's summary, and the report-scale run priced in the report's range."""

from __future__ import annotations

from pathlib import Path

import pytest

from dasd.config import load_config
from dasd.pipeline.config import PipelineConfig
from dasd.pipeline.cost import H100, estimate, render_cost
from dasd.pipeline.plan import plan
from dasd.stages import STAGES, sample

REPORT_SCALE = Path(__file__).parents[1] / "configs" / "gpt-oss-qwen3-4b-report-scale-run.yaml"


def _report_scale(tmp_path: Path, *overrides: str) -> PipelineConfig:
    # an empty workdir: nothing is measured, every number comes from the config
    return load_config(PipelineConfig, str(REPORT_SCALE), [f"workdir={tmp_path / 'run'}", *overrides])


def _resolved(steps) -> dict:
    """Each step's config as its stage validates it (what `dasd run`'s jobs hold)."""
    return {
        step.name: STAGES[step.stage].load()[1].model_validate(step.config).model_dump(mode="json") for step in steps
    }


def _table(config: PipelineConfig) -> str:
    steps = plan(config)
    return render_cost(config, steps, _resolved(steps))


def _costs(config: PipelineConfig) -> dict:
    steps = plan(config)
    costs, _ = estimate(config, steps, _resolved(steps))
    return {cost.name: cost for cost in costs}


def _disk(cost) -> float:
    return sum(size for _, size in cost.disk)


def test_twice_the_questions_is_twice_the_tokens_disk_and_gpu_hours(tmp_path):
    # few enough questions that select's budgets do not cap anything: every data step is linear in the questions
    small = _costs(_report_scale(tmp_path, "cost.questions=1000"))
    large = _costs(_report_scale(tmp_path, "cost.questions=2000"))
    for name in ("sample", "score", "filter", "select_das", "build_sft_das", "train_das"):
        assert large[name].tokens_in or large[name].tokens_out, name
        for attribute in ("records_out", "tokens_in", "tokens_out"):
            before, after = getattr(small[name], attribute), getattr(large[name], attribute)
            if before is not None:
                assert after == pytest.approx(2 * before), (name, attribute)
        if name != "train_das":  # its disk is the weights, the same at any data size
            assert _disk(large[name]) == pytest.approx(2 * _disk(small[name]), rel=1e-9), name
    for name in ("sample", "score", "train_das"):
        assert small[name].gpu_hours > 0
        assert large[name].gpu_hours == pytest.approx(2 * small[name].gpu_hours), name
    # the evaluation does not depend on the training questions
    assert large["eval_teacher"].gpu_hours == pytest.approx(small["eval_teacher"].gpu_hours)


def test_parquet_records_weigh_less_than_jsonl(tmp_path):
    parquet = _costs(_report_scale(tmp_path, "record_format=parquet"))
    jsonl = _costs(_report_scale(tmp_path, "record_format=jsonl"))
    for name in ("sample", "score", "filter", "select_das"):
        assert parquet[name].tokens_out == jsonl[name].tokens_out
        # the measured bytes per token: 5.3-6.3 (Parquet) against 37-45 (JSONL)
        assert 4 < _disk(jsonl[name]) / _disk(parquet[name]) < 10, name
    assert "parquet" in parquet["sample"].disk[0][0] and "jsonl" in jsonl["sample"].disk[0][0]


def test_a_finished_steps_summary_replaces_the_config_bound(tmp_path, taught_teacher):
    """A real `dasd sample` run in the workdir: its measured tokens per response replace max_new_tokens, and a
    larger run priced with it as the pilot scales them by its own questions."""
    questions = tmp_path / "questions.jsonl"
    questions.write_text(
        "".join(
            f'{{"id": "q{a}{b}", "prompt": "What is {a} + {b}?", "answer": "{a + b}"}}\n' for a, b in [(2, 3), (4, 4)]
        )
    )
    work = tmp_path / "pilot"
    overrides = [
        f"workdir={work}",
        f"questions={questions}",
        "teacher.name=hf",
        f"teacher.model={taught_teacher}",
        "teacher.batch_size=4",
        "teacher.tokenizer=null",
        f"student.model={taught_teacher}",
        "sample.max_new_tokens=64",
        "sample.schedule=[{temperature: 0.6, n: 2}, {temperature: 1.0, n: 2}]",
        "sample.prompt_format=chat_template",
        "sample.reasoning_format=think",
        "sample.chat_template_kwargs={}",
        "eval_benchmarks=[aime24]",
    ]
    config = load_config(
        PipelineConfig, str(REPORT_SCALE), overrides + ["cost.questions=null", "cost.response_tokens=null"]
    )
    before = _costs(config)["sample"]
    assert before.basis == "bound" and before.tokens_out == 2 * 4 * 64  # 2 questions × 4 samples × max_new_tokens

    step = next(step for step in plan(config) if step.name == "sample")
    summary = sample.run(sample.SampleConfig.model_validate(step.config))
    assert summary["responses_written"] == 8 and summary["completion_tokens"] < 8 * 64  # the taught answers stop

    after = _costs(config)["sample"]
    assert after.basis == "measured"
    assert after.records_out == 8 and after.tokens_out == pytest.approx(summary["completion_tokens"])

    # a 50× larger run with this one as its pilot: measured tokens per response × its own responses
    bigger = load_config(
        PipelineConfig,
        str(REPORT_SCALE),
        overrides
        + [f"workdir={tmp_path / 'big'}", "cost.questions=100", f"cost.pilot={work}", "cost.response_tokens=null"],
    )
    priced = _costs(bigger)["sample"]
    assert priced.basis == "measured"
    assert priced.tokens_out == pytest.approx(50 * summary["completion_tokens"])
    table = _table(bigger)
    assert f"from finished steps in {work}" in table and "sample" in table


def test_the_report_scale_run_is_priced_in_the_reports_range(tmp_path):
    """From first principles: the pool is questions × (4 + 8) answers of Fig. 8's mean lengths; select keeps the
    report's 105K + 330K; training reads them 6 times; the kept tokens are Fig. 8's 7.2B to within 2×."""
    config = _report_scale(tmp_path)
    costs = _costs(config)
    settings = config.cost
    lengths = settings.response_tokens
    pool = settings.questions * (4 * lengths[0.6] + 8 * lengths[1.0])
    assert costs["sample"].records_out == settings.questions * 12
    assert costs["sample"].tokens_out == pytest.approx(pool)
    assert costs["select_das"].records_out == pytest.approx(104_900 + 329_800)
    kept_tokens = costs["select_das"].tokens_out
    assert 7.2e9 / 2 < kept_tokens < 7.2e9 * 2
    assert costs["train_das"].tokens_in == pytest.approx(6 * kept_tokens)
    # generating the pool at the served teacher's rate, and training at 6·N·tokens (plus attention) and the MFU
    rate = H100.teacher_decode.value * H100.long_answers.value
    assert costs["sample"].gpu_hours == pytest.approx(pool / rate / 3600)
    flops_floor = 6 * 4.02e9 * 6 * kept_tokens
    floor = flops_floor / (H100.peak_bf16_flops.value * H100.mfu.value) / 3600
    assert floor < costs["train_das"].gpu_hours < 2 * floor
    # disk: one Parquet copy of the pool at ~5-6 bytes per teacher token
    assert 4 * pool < _disk(costs["sample"]) < 7 * pool
    table = _table(config)
    lines = table.splitlines()
    assert any(line.startswith("total") for line in lines)
    assert "ASSUMED" in table and "measured" in table  # each figure says which it is
    for name in ("sample", "score", "train_das", "eval_teacher"):
        assert any(line.startswith(name) for line in lines), name


def test_a_question_file_that_is_not_here_says_how_to_price_the_run(tmp_path):
    config = _report_scale(tmp_path, "cost.questions=null")
    table = _table(config)
    assert "set cost.questions" in table.splitlines()[0]


@pytest.mark.parametrize("name", sorted(p.name for p in (REPORT_SCALE.parent).glob("*-run.yaml")))
def test_every_shipped_run_config_is_priced(tmp_path, name):
    """Arms, Slurm and the plain recipe alike: a table with a total line (GPU-hours and disk above zero) and a row
    for every step."""
    config = load_config(
        PipelineConfig, str(REPORT_SCALE.parent / name), [f"workdir={tmp_path}", "cost.questions=1000"]
    )
    table = _table(config)
    rows = {line.split()[0] for line in table.splitlines()[2:] if line and not line.startswith(" ")}
    assert {step.name for step in plan(config)} <= rows
    total = next(line for line in table.splitlines() if line.startswith("total"))
    assert " GPU 0 h" not in total and "disk 0 B" not in total
