"""Record IO: every input format, resumable appends, torn-line repair, question validation."""

from __future__ import annotations

import gzip
import json

import pytest

from dasd.data.io import ErrorLog, RecordWriter, read_records
from dasd.data.records import (
    load_questions,
    normalize_question,
    released_question_id,
    released_row_to_records,
    response_id,
)
from dasd.errors import InputError
from dasd.naming import sidecar

from .conftest import read_jsonl, write_jsonl

QUESTIONS = [
    {"id": "a", "prompt": "What is 1+1?", "answer": 2},
    {
        "id": "b",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a prime."}],
        "domain": "math",
    },
]


def test_reads_jsonl_gz_parquet_and_saved_dataset(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    plain = write_jsonl(tmp_path / "q.jsonl", QUESTIONS)
    gz = tmp_path / "q.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as handle:
        for record in QUESTIONS:
            handle.write(json.dumps(record) + "\n")
    rows = [
        {"id": "a", "prompt": "What is 1+1?", "answer": "2"},
        {"id": "b", "prompt": "Name a prime.", "answer": None},
    ]
    parquet = tmp_path / "q.parquet"
    pq.write_table(pa.Table.from_pylist(rows), parquet)
    saved = tmp_path / "saved"
    datasets.Dataset.from_list(rows).save_to_disk(str(saved))

    assert [r for _, r in read_records(plain)] == QUESTIONS
    assert [r for _, r in read_records(gz)] == QUESTIONS
    for path in (parquet, saved):
        questions = load_questions(str(path))
        assert [q["id"] for q in questions] == ["a", "b"]
        assert questions[0]["messages"] == [{"role": "user", "content": "What is 1+1?"}]
        assert questions[0]["answer"] == "2"


def test_question_normalisation():
    question = normalize_question(QUESTIONS[0])
    assert question == {
        "id": "a",
        "messages": [{"role": "user", "content": "What is 1+1?"}],
        "answer": "2",
        "domain": "other",
        "meta": {},
    }
    without_id = normalize_question({"prompt": "same text"})
    assert without_id["id"] == normalize_question({"prompt": "same text"})["id"]  # stable, from the prompt
    assert without_id["id"] != normalize_question({"prompt": "other text"})["id"]


@pytest.mark.parametrize(
    "record, field",
    [
        ({"id": "x"}, "messages"),
        ({"id": "x", "prompt": "   "}, "prompt"),
        ({"id": "x", "messages": []}, "messages"),
        ({"id": "x", "messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
        ({"id": "x", "messages": [{"role": "user", "content": 3}]}, "messages[0].content"),
        ({"id": "x", "prompt": "hi", "domain": "poetry"}, "domain"),
        ({"id": "", "prompt": "hi"}, "id"),
    ],
)
def test_bad_questions_name_the_field(record, field):
    with pytest.raises(InputError) as error:
        normalize_question(record, path="in.jsonl", line=7)
    assert str(error.value).startswith(f"in.jsonl:7: field '{field}':")


def test_bad_files(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        read_records(tmp_path / "missing.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(InputError, match="empty"):
        read_records(tmp_path / "empty.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"id": "a", "prompt": "x"}\n{"id": "b", "prompt": \n')
    with pytest.raises(InputError) as error:
        read_records(tmp_path / "bad.jsonl")
    assert "bad.jsonl:2:" in str(error.value) and "invalid JSON" in str(error.value)
    (tmp_path / "array.jsonl").write_text("[1, 2]\n")
    with pytest.raises(InputError, match="array.jsonl:1: expected a JSON object"):
        read_records(tmp_path / "array.jsonl")
    write_jsonl(tmp_path / "dup.jsonl", [{"id": "a", "prompt": "x"}, {"id": "a", "prompt": "y"}])
    with pytest.raises(InputError, match=r"dup.jsonl:2: field 'id': duplicate id 'a' \(first on line 1\)"):
        load_questions(str(tmp_path / "dup.jsonl"))


def test_writer_resumes_by_id_and_cuts_a_torn_line(tmp_path):
    path = tmp_path / "out" / "responses.jsonl"
    writer = RecordWriter(path)
    assert not path.exists()  # nothing is created before the first record
    writer.write({"id": "r1", "x": 1})
    writer.write({"id": "r2", "x": 2})
    writer.close()
    with open(path, "a", encoding="utf-8") as handle:
        handle.write('{"id": "r3", "x": ')  # a crash in the middle of a write
    resumed = RecordWriter(path)
    assert resumed.done == {"r1", "r2"}
    assert resumed.repaired_bytes == len('{"id": "r3", "x": ')
    resumed.write({"id": "r3", "x": 3})
    resumed.close()
    assert [r["id"] for r in read_jsonl(path)] == ["r1", "r2", "r3"]


def test_error_log_and_sidecars(tmp_path):
    assert sidecar(tmp_path / "responses.jsonl", "errors", ".jsonl").name == "responses.errors.jsonl"
    assert sidecar(tmp_path / "r.jsonl.gz", "config", ".yaml").name == "r.config.yaml"
    log = ErrorLog(tmp_path / "e.jsonl")
    log.log("r1", "http_500: boom", retries=3)
    log.close()
    assert read_jsonl(tmp_path / "e.jsonl")[0]["error"] == "http_500: boom"


def test_an_error_log_starts_each_run_afresh_and_a_clean_run_leaves_no_file(tmp_path):
    """The next run retries the failed records: the last run's entries go when its log is opened, not later."""
    path = tmp_path / "responses.errors.jsonl"
    first = ErrorLog(path)
    first.log("r1", "http_500: boom")
    first.close()
    ErrorLog(path).close()  # a run in which nothing failed
    assert not path.exists()
    second = ErrorLog(path)
    second.log("r2", "timeout")
    second.close()
    assert [entry["id"] for entry in read_jsonl(path)] == ["r2"]


def test_released_format_gives_question_and_response(tmp_path):
    row = {
        "uuid": "u-1",
        "input": "What is 2+3?",
        "output": "<think>\nAdd them: 5.\n</think>\n\nThe answer is **5**.",
        "domain": "math",
        "meta": {"answer": "5"},
    }
    question, response = released_row_to_records(row)
    assert question["id"] == released_question_id(question["messages"]) and question["answer"] == "5"
    assert response["id"] == "u-1" and response["question_id"] == question["id"]
    assert response["reasoning"] == "Add them: 5." and response["content"] == "The answer is **5**."
    assert response["finish_reason"] == "stop"
    # A file of released rows reads as questions too.
    write_jsonl(tmp_path / "released.jsonl", [row])
    assert load_questions(str(tmp_path / "released.jsonl"))[0]["messages"][0]["content"] == "What is 2+3?"


def test_response_ids_are_deterministic():
    assert response_id("q1", 0.6, 3) == "q1:t0.6:3"
    assert response_id("q1", 1, 0) == response_id("q1", 1.0, 0) == "q1:t1:0"


def test_released_responses_to_one_question_are_grouped_for_selection(tmp_path):
    """The release has one uuid per response and several responses per question: they share a question id
    (the hash of the normalised question), so DAS picks among a question's responses."""
    from dasd.cli import main

    rows = [
        {
            "uuid": f"u{q}-{r}",
            "input": f"What is {q} + {q}?" + " " * r,
            "output": f"<think>\nStep {r}.\n</think>\n\n{2 * q}",
            "domain": "math",
            "meta": {"answer": str(2 * q)},
        }
        for q in (1, 2)
        for r in range(3)
    ]
    write_jsonl(tmp_path / "released.jsonl", rows)
    assert [q["messages"][0]["content"] for q in load_questions(str(tmp_path / "released.jsonl"))] == [
        "What is 1 + 1?",
        "What is 2 + 2?",
    ]
    responses = [released_row_to_records(row)[1] for row in rows]
    assert len({response["question_id"] for response in responses}) == 2
    for index, response in enumerate(responses):  # as if scored: the middle response is richest in teacher sentences
        response["das"] = {"teacher": index % 3, "student": 0, "shared": 1, "n": 1 + index % 3}
    write_jsonl(tmp_path / "scored.jsonl", responses)
    assert main(["select", f"input={tmp_path / 'scored.jsonl'}", f"output={tmp_path / 'das.jsonl'}", "k=1"]) == 0
    selected = read_jsonl(tmp_path / "das.jsonl")
    assert sorted(record["id"] for record in selected) == ["u1-2", "u2-2"]


def test_merge_shards_keeps_each_id_once_and_survives_a_crash(tmp_path):
    from dasd.data.io import RecordWriter, merge_shards, shard_files

    output = tmp_path / "scored.jsonl"
    for index, ids in enumerate((["a", "b"], ["c", "a"])):  # "a" twice: a correct run never does this
        path = tmp_path / f"scored.shard-{index}-of-2.jsonl"
        path.write_text("".join(json.dumps({"id": i, "shard": index}) + "\n" for i in ids))
        (tmp_path / f"scored.shard-{index}-of-2.summary.json").write_text("{}")
    (tmp_path / "scored.jsonl").write_text(json.dumps({"id": "b", "shard": 0}) + "\n" + '{"id": "x"')  # torn merge
    assert [path.name for path in shard_files(output)] == ["scored.shard-0-of-2.jsonl", "scored.shard-1-of-2.jsonl"]
    # a third shard task under another count sees every merged or sharded id as done
    assert RecordWriter(tmp_path / "scored.shard-0-of-3.jsonl").done == {"a", "b", "c"}
    counts = merge_shards(output)
    assert counts == {"shards": 2, "merged": 2, "already_merged": 1, "duplicates": 1}
    assert [json.loads(line)["id"] for line in output.read_text().splitlines()] == ["b", "a", "c"]
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "scored.jsonl",
        "scored.shard-0-of-2.summary.json",  # each task's summary stays
        "scored.shard-1-of-2.summary.json",
    ]
    assert merge_shards(output) == {"shards": 0, "merged": 0, "already_merged": 0, "duplicates": 0}
