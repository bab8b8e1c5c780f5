"""`dasd.training.data`: a stage's samples tokenized once, by worker processes, into a cached memory-mapped Arrow
dataset.

The dataset holds exactly the list path's samples (`prepare_examples`), packs into the same rows and trains the same
weights; a rerun reads it back; new data, another tokenizer or another setting gives another key; one of several
processes builds it; no process holds the samples in Python objects.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import tracemalloc

import pytest
import torch

from dasd.errors import InputError
from dasd.stages import train
from dasd.training import data as train_data
from dasd.training.data import load_stage_data, prepare_stage_data
from dasd.training.sft import prepare_examples

from .conftest import write_jsonl
from .test_train import _config, sft_records


def varied_records(count: int) -> list[dict]:
    """SFT records with everything that changes a sample: weights, weight spans, a student prefix, long ones."""
    records = sft_records(count)
    for index, record in enumerate(records):
        assistant = record["messages"][-1]["content"]
        if index % 3 == 1:
            record["weight"] = [0.5, 1 / 3, 2.0][index % 9 // 3]
        if index % 5 == 2:
            record["loss_weight_spans"] = [[assistant.index("I add"), assistant.index("</think>"), 0.1]]
        if index % 4 == 3:
            record["loss_mask_prefix_chars"] = assistant.index(" That")
        if index % 11 == 10:
            record["messages"][-1]["content"] = assistant + " Checking once more." * 40  # over max_length: dropped
    return records


SETTINGS = {"max_length": 160, "mask_student_prefix": True}


def _prepare(path, tokenizer, root, **kwargs):
    return prepare_stage_data(str(path), tokenizer, root=root, **{**SETTINGS, **kwargs})


def _rows(dataset) -> list[dict]:
    return [dict(row) for row in dataset]


def _same_samples(rows: list[dict], examples: list[dict]) -> None:
    """Equal as the collator sees them: the same ids and labels, the same float32 weights."""
    assert len(rows) == len(examples)
    for row, example in zip(rows, examples):
        assert set(row) == set(example)
        assert row["input_ids"] == example["input_ids"] and row["labels"] == example["labels"]
        if "token_weights" in example:
            assert torch.equal(
                torch.tensor(row["token_weights"], dtype=torch.float32),
                torch.tensor(example["token_weights"], dtype=torch.float32),
            )


@pytest.mark.parametrize("tokenizer_name", ["smollm2_tokenizer", "qwen3_tokenizer"])
def test_the_cached_dataset_holds_the_list_paths_samples(request, tokenizer_name, tmp_path, monkeypatch):
    from datasets import Dataset
    from trl.data_utils import pack_dataset

    tokenizer = request.getfixturevalue(tokenizer_name)
    monkeypatch.setattr(train_data, "CHUNK_RECORDS", 7)  # several chunks, tokenized by two worker processes
    records = varied_records(60)
    path = write_jsonl(tmp_path / "sft.jsonl", records)
    old = prepare_examples(list(enumerate(records, 1)), tokenizer, **SETTINGS)
    assert old.weighting == "per-token" and old.dropped["too_long"] == 5

    data = _prepare(path, tokenizer, tmp_path / "cache", packing=False, workers=2)
    assert data.built and data.info["built_by"]["workers"] == 2
    _same_samples(_rows(data.dataset), old.examples)
    assert (data.samples, data.dropped, data.tokens, data.trained_tokens, data.weighting) == (
        len(old.examples),
        dict(old.dropped),
        old.tokens,
        old.trained_tokens,
        old.weighting,
    )
    assert data.dataset.features["input_ids"].feature.dtype == "int32"  # 4 bytes a token, not Python lists

    packed = _prepare(path, tokenizer, tmp_path / "cache", workers=2)
    reference = pack_dataset(Dataset.from_list(old.examples), SETTINGS["max_length"], "bfd")
    assert packed.rows == len(reference) < packed.samples
    _same_samples(_rows(packed.dataset), _rows(reference))

    # all weights 1: no weight column, as the list path leaves it out (TRL's own loss)
    plain = write_jsonl(tmp_path / "plain.jsonl", sft_records(20))
    data = _prepare(plain, tokenizer, tmp_path / "cache", packing=False, workers=2)
    old = prepare_examples(list(enumerate(sft_records(20), 1)), tokenizer, **SETTINGS)
    assert data.weighting == old.weighting == "none" and data.dataset.column_names == ["input_ids", "labels"]
    _same_samples(_rows(data.dataset), old.examples)


def test_packing_batches_match_the_list_path_past_a_thousand_samples(smollm2_tokenizer, tmp_path):
    """TRL packs in map batches of 1,000 samples: the cached file packs the same batches into the same rows."""
    from datasets import Dataset
    from trl.data_utils import pack_dataset

    records = sft_records(2100)
    path = write_jsonl(tmp_path / "sft.jsonl", records)
    old = prepare_examples(list(enumerate(records, 1)), smollm2_tokenizer, max_length=512, mask_student_prefix=False)
    reference = pack_dataset(Dataset.from_list(old.examples), 512, "bfd")
    data = prepare_stage_data(
        str(path), smollm2_tokenizer, max_length=512, mask_student_prefix=False, root=tmp_path / "c", workers=2
    )
    assert data.rows == len(reference)
    assert data.dataset["seq_lengths"] == reference["seq_lengths"]
    assert data.dataset["input_ids"] == reference["input_ids"]


def test_a_rerun_reads_the_cache_and_new_content_gives_a_new_key(smollm2_tokenizer, qwen3_tokenizer, tmp_path):
    root = tmp_path / "cache"
    path = write_jsonl(tmp_path / "sft.jsonl", sft_records(12))
    first = _prepare(path, smollm2_tokenizer, root)
    manifest = first.folder / "prepared.json"
    stamp = manifest.stat().st_mtime_ns
    again = _prepare(path, smollm2_tokenizer, root)
    assert first.built and not again.built and again.folder == first.folder
    assert manifest.stat().st_mtime_ns == stamp  # read, not rewritten
    assert _rows(again.dataset) == _rows(first.dataset)
    # the same bytes under another name: the same data
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(path.read_bytes())
    assert _prepare(copy, smollm2_tokenizer, root).folder == first.folder
    # changed data (the same size, the same mtime: a file this fresh is hashed again, not taken from the memo),
    # another tokenizer, another setting: new keys
    before = path.stat()
    records = sft_records(12)
    records[3]["messages"][-1]["content"] = records[3]["messages"][-1]["content"].replace("add", "sum")
    write_jsonl(path, records)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size
    changed = _prepare(path, smollm2_tokenizer, root)
    other_tokenizer = _prepare(copy, qwen3_tokenizer, root)
    other_setting = _prepare(copy, smollm2_tokenizer, root, max_length=150)
    folders = {first.folder, changed.folder, other_tokenizer.folder, other_setting.folder}
    assert len(folders) == 4 and all(item.built for item in (changed, other_tokenizer, other_setting))
    cached = sorted(child.name for child in root.iterdir() if child.name not in ("hashes", "locks"))
    assert cached == sorted(folder.name for folder in folders)  # the four datasets, no partial build left


def test_bad_input_is_the_same_one_line_error(smollm2_tokenizer, tmp_path, monkeypatch):
    monkeypatch.setattr(train_data, "CHUNK_RECORDS", 4)
    records = sft_records(30)
    records[13]["weight"] = -1
    records[22]["messages"] = [{"role": "user", "content": "Hi"}]
    path = write_jsonl(tmp_path / "sft.jsonl", records)
    with pytest.raises(InputError) as old:
        prepare_examples(list(enumerate(records, 1)), smollm2_tokenizer, **SETTINGS, path=str(path))
    with pytest.raises(InputError) as new:
        _prepare(path, smollm2_tokenizer, tmp_path / "cache", workers=2)
    assert str(new.value) == str(old.value) == f"{path}:14: field 'weight': must be a finite number >= 0 (got -1)"
    # a line that is not JSON, after the bad record: reported first, as when the file was read whole before
    with open(path, "a") as handle:
        handle.write("{not json\n")
    with pytest.raises(InputError, match=r"sft.jsonl:31: invalid JSON"):
        _prepare(path, smollm2_tokenizer, tmp_path / "cache", workers=2)
    assert {child.name for child in (tmp_path / "cache").iterdir()} <= {"hashes", "locks"}  # no dataset kept
    with pytest.raises(InputError, match="max_length 20"):
        _prepare(
            write_jsonl(tmp_path / "one.jsonl", sft_records(1)),
            smollm2_tokenizer,
            tmp_path / "c",
            max_length=20,
            too_long="error",
        )


def _prepare_in_child(path, tokenizer, root, start, queue):
    start.wait()
    data = _prepare(path, tokenizer, root, workers=1)
    queue.put((data.built, str(data.folder), data.rows))


def test_one_of_several_processes_builds_and_all_read_it(smollm2_tokenizer, tmp_path):
    """Ranks of a launch all call prepare_stage_data at once: the lock lets one tokenize, the others wait and map."""
    path = write_jsonl(tmp_path / "sft.jsonl", sft_records(200))
    context = multiprocessing.get_context("fork")
    start, queue = context.Barrier(3), context.Queue()
    children = [
        context.Process(target=_prepare_in_child, args=(path, smollm2_tokenizer, tmp_path / "c", start, queue))
        for _ in "ab"
    ]
    for child in children:
        child.start()
    start.wait()
    results = [queue.get(timeout=120) for _ in children]
    for child in children:
        child.join(timeout=30)
    assert sorted(built for built, _, _ in results) == [False, True]
    assert len({(folder, rows) for _, folder, rows in results}) == 1


def test_no_process_holds_the_samples(smollm2_tokenizer, tmp_path, monkeypatch):
    """Python memory (tracemalloc) of building the dataset, and of mapping it and reading every row, stays far below
    what the samples take as Python lists; building 8x the records takes no more than building 1x."""
    monkeypatch.setattr(train_data, "CHUNK_RECORDS", 16)
    options = {**SETTINGS, "mask_student_prefix": False, "too_long": "drop", "chat_template_kwargs": None}
    peaks, tokens = {}, {}
    for name, count in (("small", 100), ("large", 800)):
        path = write_jsonl(tmp_path / f"{name}.jsonl", sft_records(count))
        folder = tmp_path / name
        tracemalloc.start()
        info = train_data._build(  # tokenized in this process (one worker): every allocation is seen
            folder, str(path), smollm2_tokenizer, {**options, "path": str(path)}, packing=False, workers=1, settings={}
        )
        peaks[name] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        tokens[name] = info["tokens"]
    as_lists = tokens["large"] * 3 * 8  # at least a pointer per id, label and weight in Python lists
    assert tokens["large"] > 50_000 and peaks["large"] < min(1.2 * peaks["small"] + (256 << 10), as_lists / 4), (
        peaks,
        as_lists,
    )

    # once untraced, so that what the first read imports (datasets' lazy modules, ~10 MB) is not counted
    sum(len(row["input_ids"]) for row in load_stage_data(tmp_path / "small").dataset)
    tracemalloc.start()
    data = load_stage_data(tmp_path / "large")
    read = sum(len(row["input_ids"]) for row in data.dataset)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert read == data.tokens == tokens["large"]
    # what may be alive is the batch of rows `datasets` decodes at a time (10 rows, up to ~90 KB of lists measured),
    # never the 800 rows (the bound was as_lists / 20, 64 KB, which held only when a batch was freed in time)
    assert peak < as_lists / 8, (peak, as_lists)


@pytest.mark.integration
def test_training_on_the_cached_dataset_gives_the_list_paths_weights(tmp_path, tiny_llama_smollm2, monkeypatch):
    """The stage trained on the cached dataset ends with bit-identical weights to the stage trained on
    `Dataset.from_list` of `prepare_examples` (what `dasd train` did before), packing and weights on."""
    from datasets import Dataset
    from safetensors.torch import load_file
    from trl.data_utils import pack_dataset

    from dasd.data.io import read_records

    monkeypatch.setenv("DASD_TRAIN_DATA_CACHE", str(tmp_path / "cache"))
    data = write_jsonl(tmp_path / "sft.jsonl", varied_records(24))
    stages = [{"name": "s", "data": str(data), "mask_student_prefix": True}]
    overrides = ("max_length=160", "epochs=1", "max_steps=3", "data_workers=2")
    metrics = train.run(_config(tmp_path / "new", tiny_llama_smollm2, stages, *overrides))["stages"][0]

    def list_path(path, tokenizer, *, max_length, mask_student_prefix, too_long, chat_template_kwargs, packing, **_):
        old = prepare_examples(
            read_records(path),
            tokenizer,
            max_length=max_length,
            mask_student_prefix=mask_student_prefix,
            too_long=too_long,
            path=path,
            chat_template_kwargs=chat_template_kwargs,
        )
        dataset = Dataset.from_list(old.examples)
        dataset = pack_dataset(dataset, max_length, "bfd") if packing else dataset
        counts = (len(old.examples), dict(old.dropped), old.tokens, old.trained_tokens, old.weighted, old.weighting)
        return train_data.StageData(dataset, *counts, rows=len(dataset), folder=tmp_path, built=True)

    monkeypatch.setattr(train_data, "prepare_stage_data", list_path)
    before = train.run(_config(tmp_path / "old", tiny_llama_smollm2, stages, *overrides))["stages"][0]
    new, old = (
        load_file(str(tmp_path / name / "run" / "s" / "final" / "model.safetensors")) for name in ("new", "old")
    )
    assert all(torch.equal(new[key], old[key]) for key in old)
    different = {"seconds", "tokens_per_s", "run_name"}
    assert {key: value for key, value in metrics.items() if key not in different} == {
        key: value for key, value in before.items() if key not in different
    }
    assert metrics["loss_weights"] == "per-token" and metrics["dropped"] == {"too_long": 2}
    assert json.loads((tmp_path / "new" / "run" / "s" / "metrics.json").read_text())["samples"] == 22
