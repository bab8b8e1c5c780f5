"""Dataset and model cards from a real run's sidecars, checked with huggingface_hub's card classes, and `dasd push`
up to the network: the repository it would create and the commit operations it would send (HfApi's two calls
are recorded instead of sent; conftest refuses any remote connection besides)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from huggingface_hub import DatasetCard, HfApi, ModelCard

from dasd.config import load_config
from dasd.stages import push, select, train

from .conftest import read_jsonl, write_jsonl
from .test_score import _sample_then_score
from .test_train import _config, sft_records


@pytest.fixture(scope="module")
def selected_run(tmp_path_factory, taught_teacher):
    """sample -> score -> select (DAS) with the real stages: the sidecars a card is made from."""
    folder = tmp_path_factory.mktemp("run")
    _sample_then_score(folder, taught_teacher, sample_overrides=["schedule=[{temperature: 0.6, n: 2}]"])
    select.run(
        load_config(
            select.SelectConfig,
            None,
            [f"input={folder / 'scored.jsonl'}", f"output={folder / 'das.jsonl'}", "strategy=count", "k=1"],
        )
    )
    return folder


class RecordingApi:
    """HfApi's network calls, recorded: what `dasd push` would send."""

    def __init__(self, monkeypatch):
        self.calls: list[tuple[str, tuple, dict]] = []
        for name in ("create_repo", "create_commit", "upload_folder"):
            monkeypatch.setattr(HfApi, name, self._recorder(name))

    def _recorder(self, name):
        def record(api, *args, **kwargs):
            self.calls.append((name, args, kwargs))
            return f"https://huggingface.co/{args[0] if args else kwargs.get('repo_id')}"

        return record


def test_a_selected_file_becomes_a_dataset_folder_whose_card_carries_its_lineage(selected_run, monkeypatch):
    api = RecordingApi(monkeypatch)
    summary = push.run(
        load_config(
            push.PushConfig,
            None,
            [f"path={selected_run / 'das.jsonl'}", "repo_id=me/das-selected", "private=true", "license=apache-2.0"],
        )
    )
    folder = selected_run / "das.hf"
    assert summary["folder"] == str(folder) and summary["uploaded"]
    # the repository, then one commit with exactly the folder's files
    assert [call[0] for call in api.calls] == ["create_repo", "create_commit"]
    _, args, kwargs = api.calls[0]
    assert args == ("me/das-selected",) and kwargs == {"repo_type": "dataset", "private": True, "exist_ok": True}
    _, args, kwargs = api.calls[1]
    operations = args[1]
    assert sorted(op.path_in_repo for op in operations) == ["README.md", "data/train-00000-of-00001.parquet"]
    assert kwargs["repo_type"] == "dataset"
    # the data: every selected record, field for field, readable by `datasets` from the card's config
    from datasets import load_dataset

    loaded = load_dataset(str(folder), split="train")
    selected = read_jsonl(selected_run / "das.jsonl")
    assert len(loaded) == len(selected) > 0
    assert {row["id"]: row["sentences"] for row in loaded} == {row["id"]: row["sentences"] for row in selected}
    # the card, read back by huggingface_hub
    card = DatasetCard.load(folder / "README.md")
    meta = card.data.to_dict()
    assert meta["license"] == "apache-2.0" and meta["task_categories"] == ["text-generation"]
    assert meta["configs"][0]["data_files"][0]["path"] == "data/train-*.parquet"
    assert meta["dataset_info"]["splits"] == [{"name": "train", "num_examples": len(selected)}]
    assert {feature["name"] for feature in meta["dataset_info"]["features"]} >= {"id", "sentences", "teacher_logprobs"}
    assert {"dasd-sample", "dasd-score", "dasd-select"} <= set(meta["tags"])
    text = card.text
    order = [text.index(f"`dasd {stage}`") for stage in ("sample", "score", "select")]
    assert order == sorted(order)  # the stages from the questions on
    assert "T=0.6 × 2" in text and "top_k 0 (sent explicitly)" in text
    assert "β = 0.1, difference in `prob` space" in text
    scored = json.loads((selected_run / "scored.summary.json").read_text())
    for kind in ("teacher", "student", "shared"):  # score's summary rows, as `dasd score` printed them
        assert f"- {kind} sentences: {scored['sentences'].get(kind, 0):,} (" in text
    assert "DAS (most teacher sentences), k = 1" in text and "histogram" in text
    assert "<summary>resolved config and summary of <code>score</code></summary>" in text


def test_dry_run_writes_the_folder_and_sends_nothing(selected_run, monkeypatch, capsys):
    api = RecordingApi(monkeypatch)
    out = selected_run / "elsewhere.hf"
    summary = push.run(
        load_config(
            push.PushConfig,
            None,
            [f"path={selected_run / 'scored.jsonl'}", "repo_id=me/scored", "dry_run=true", f"folder={out}"],
        )
    )
    assert api.calls == [] and not summary["uploaded"]
    assert (out / "README.md").exists() and "dry run: nothing uploaded" in capsys.readouterr().out


def test_a_trained_model_gets_a_model_card_with_its_stages_data_and_evals(tmp_path, tiny_llama_smollm2, monkeypatch):
    """The card `dasd train` writes, `dasd eval` of the model updates and `dasd push` publishes: stages, data lineage,
    the eval table and the Hub's `model-index` — and no path of the folder the run was made in (issue 38)."""
    from dasd.stages import eval as eval_stage

    low = write_jsonl(tmp_path / "low.jsonl", sft_records(6))
    high = write_jsonl(tmp_path / "high.jsonl", sft_records(6, start=6, stage="high_temp"))
    train.run(
        _config(
            tmp_path,
            tiny_llama_smollm2,
            [{"name": "low_temp", "data": str(low)}, {"name": "high_temp", "data": str(high)}],
            "epochs=1",
            "warmup_ratio=0",  # one optimizer step per stage: inside warmup it would run at learning rate 0
        )
    )
    final = tmp_path / "run" / "high_temp" / "final"
    card = ModelCard.load(final / "README.md")  # dasd train wrote it
    assert "| low_temp | `low.jsonl` |" in card.text and "| high_temp | `high.jsonl` |" in card.text
    assert "Not evaluated yet" in card.text
    tokens = json.loads((final / "dasd_stage.json").read_text())["tokens_seen"]
    assert f"| {int(tokens):,} |" in card.text and f"{tokens}." not in card.text  # a count, as an integer
    # `dasd eval` of the trained model (as the pipeline runs it) puts its results in the card
    questions = write_jsonl(
        tmp_path / "q.jsonl", [{"id": f"q{i}", "prompt": f"{i} + {i}?", "answer": "2"} for i in (1, 2)]
    )
    evaluated = eval_stage.run(
        load_config(
            eval_stage.EvalConfig,
            None,
            [f"output_dir={tmp_path / 'eval' / 'mine'}", f"backend.model={final}", f"benchmarks=[{questions}]", "n=2"]
            + ["max_new_tokens=8", "cache=off"],
        )
    )
    card = ModelCard.load(final / "README.md")
    result = evaluated["benchmarks"]["q"]
    assert "Not evaluated yet" not in card.text
    assert f"| q | {100 * result['avg_at_k']:.2f} ± {100 * result['standard_error']:.2f} | 2 | 2 |" in card.text
    (index,) = card.data.to_dict()["model-index"]
    assert index["results"][0]["metrics"][0]["value"] == round(100 * result["avg_at_k"], 2)
    # an eval folder given to push joins them
    eval_dir = tmp_path / "eval" / "other"
    eval_dir.mkdir()
    (eval_dir / "summary.json").write_text(
        json.dumps(
            {
                "stage": "eval",
                "model": str(final),
                "temperature": 1.0,
                "top_p": 1.0,
                "benchmarks": {"aime24": {"questions": 30, "n": 4, "avg_at_k": 0.25, "standard_error": 0.05}},
            }
        )
    )
    api = RecordingApi(monkeypatch)
    push.run(load_config(push.PushConfig, None, [f"path={final}", "repo_id=me/student", f"eval=[{eval_dir}]"]))
    card = ModelCard.load(final / "README.md")
    assert card.data.to_dict()["pipeline_tag"] == "text-generation" and "dasd" in card.data.to_dict()["tags"]
    assert "| aime24 | 25.00 ± 5.00 | 4 | 30 |" in card.text and "| q |" in card.text
    assert "arXiv:2601.09088" in card.text
    # fit to publish: nothing names where the run was made; the local student is named by its folder and content
    text = (final / "README.md").read_text()
    assert str(tmp_path) not in text and str(tmp_path.resolve()) not in text
    assert f"Student `{Path(tiny_llama_smollm2).name} (content " in text
    ((name, args, kwargs),) = [call for call in api.calls if call[0] == "create_commit"]
    files = {op.path_in_repo for op in args[1]}
    assert {"README.md", "config.json", "model.safetensors", "tokenizer.json"} <= files
    assert kwargs["repo_type"] == "model"


def test_push_refuses_what_it_cannot_publish(tmp_path):
    from dasd.errors import ConfigError, InputError

    with pytest.raises(InputError, match="not found"):
        push.run(load_config(push.PushConfig, None, [f"path={tmp_path / 'nothing.jsonl'}", "repo_id=me/x"]))
    data = write_jsonl(tmp_path / "a.jsonl", [{"id": "a"}])
    with pytest.raises(ConfigError, match="expected OWNER/NAME"):
        push.run(load_config(push.PushConfig, None, [f"path={data}", "repo_id=just-a-name"]))
    assert not Path(tmp_path / "a.hf").exists()


def test_push_to_hub_in_a_pipeline_plans_each_push_after_what_it_publishes(tmp_path):
    from dasd.errors import ConfigError
    from dasd.stages import demo
    from dasd.stages import run as pipeline_run

    spec = demo.pipeline(load_config(demo.DemoConfig, None, [f"workdir={tmp_path / 'run'}"]), tmp_path / "world")
    spec["push_to_hub"] = {"selected": "me/selected", "model": "me/student", "private": True}
    steps = pipeline_run.plan(pipeline_run.PipelineConfig.model_validate(spec))
    names = [step.name for step in steps]
    by_name = {step.name: step for step in steps}
    selected = by_name["push_selected"]
    assert selected.depends == ["select_das"] and selected.config["path"] == by_name["select_das"].config["output"]
    assert selected.config["private"] is True and selected.config["repo_id"] == "me/selected"
    model = by_name["push_model"]
    assert model.config["path"].endswith("train/das/mixed_policy/final")
    assert model.config["eval"] == [by_name["eval_mixed_policy"].config["output_dir"]]
    assert names.index("push_model") > names.index("eval_mixed_policy") > names.index("train_mixed")
    for step in steps:
        if step.stage == "push":
            push.PushConfig.model_validate(step.config)  # what the runner will hand the stage
    spec["push_to_hub"] = {"weights": "me/x"}
    with pytest.raises(ConfigError, match=r"push_to_hub: unknown artefact\(s\) \['weights'\]"):
        pipeline_run.plan(pipeline_run.PipelineConfig.model_validate(spec))


def test_the_dataset_export_is_sharded_by_bytes_and_holds_every_row(tmp_path):
    """A record file larger than `bytes_per_shard` becomes several Parquet shards (memory: one batch of rows, not a
    shard), named train-i-of-n, that `datasets` reads back whole and in order; a `{}` field becomes null."""
    from datasets import load_dataset

    from dasd.reporting.cards import export_dataset

    source = tmp_path / "records.jsonl"
    rows = [{"id": f"r{i}", "text": "x" * 40_000, "meta": {}, "logprobs": [-0.5] * 500} for i in range(120)]
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    folder = export_dataset(source, tmp_path / "records.hf", bytes_per_shard=1 << 20)
    shards = sorted(path.name for path in (folder / "data").glob("*.parquet"))
    assert len(shards) >= 3 and shards[0] == f"train-00000-of-{len(shards):05d}.parquet"
    loaded = load_dataset(str(folder), split="train")
    assert [row["id"] for row in loaded] == [row["id"] for row in rows]
    assert loaded[7]["meta"] is None and len(loaded[7]["text"]) == 40_000
