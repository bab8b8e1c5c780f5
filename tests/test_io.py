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
    # a Parquet output that got no records (filter kept none) is an empty file, not "a folder": its writer makes the
    # folder, the parts come with records; any other folder stays an error
    (tmp_path / "kept.parquet").mkdir()
    with pytest.raises(InputError, match="kept.parquet: no records"):
        read_records(tmp_path / "kept.parquet")
    (tmp_path / "models").mkdir()
    with pytest.raises(InputError, match="is a folder, not a JSONL/Parquet file"):
        read_records(tmp_path / "models")
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


# --- streaming record I/O at scale (issue 34): memory flat in the file's size, merges that move bytes ---------------


def _big_jsonl(path, records: int, chars: int) -> int:
    """A JSONL output of `records` lines of ~`chars` characters each, written as raw bytes (fast)."""
    filler = "x" * chars
    with open(path, "wb") as handle:
        for index in range(records):
            handle.write(f'{{"id":"r{index}","reasoning":"{filler}","n":{index}}}\n'.encode())
    return path.stat().st_size


def test_resuming_a_200_mb_output_raises_rss_by_less_than_50_mb(tmp_path):
    """Reopening an output to resume reads its ids line by line: the process's peak RSS does not grow with the
    file (it did by the file's size, when the writer read the whole file to find a torn tail)."""
    import subprocess
    import sys

    path = tmp_path / "scored.jsonl"
    size = _big_jsonl(path, records=2000, chars=100_000)
    with open(path, "ab") as handle:
        handle.write(b'{"id":"torn","reasoning":"')  # and a torn tail to cut
    assert size > 200_000_000
    script = (
        "import resource, sys\n"
        "from dasd.data.io import RecordWriter\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "writer = RecordWriter(sys.argv[1])\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(len(writer.done), writer.repaired_bytes, (after - before) // 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, check=True)
    done, repaired, grown_mib = (int(value) for value in out.stdout.split())
    assert done == 2000 and repaired == len('{"id":"torn","reasoning":"')
    assert grown_mib < 50, f"resume raised peak RSS by {grown_mib} MiB for a {size >> 20} MiB file"
    assert path.stat().st_size == size


def test_a_damaged_line_in_the_middle_is_a_one_line_error_and_nothing_is_cut(tmp_path):
    """A torn write followed by later appends (not a torn tail): resuming names the file and line and leaves the
    file as it was — cutting there would delete every record after it."""
    path = tmp_path / "responses.jsonl"
    path.write_text('{"id":"a","x":1}\n{"id":"b","x":\n{"id":"c","x":3}\n')
    before = path.read_bytes()
    with pytest.raises(InputError, match=r"responses.jsonl:2: damaged record line"):
        RecordWriter(path)
    assert path.read_bytes() == before


def test_a_shard_task_skips_other_shards_lines_before_parsing_them(tmp_path):
    """`iter_records(keep_id=…)`: a line whose id is not kept is never parsed — here the other lines are not even
    valid JSON past their id, so parsing them would raise."""
    from dasd.data.io import iter_records

    path = tmp_path / "scored.jsonl"
    path.write_text('{"id":"mine","x":1}\n{"id":"theirs", not json at all\n{"id":"mine2","x":2}\n')
    kept = [(line, record["id"]) for line, record in iter_records(path, keep_id=lambda i: i.startswith("mine"))]
    assert kept == [(1, "mine"), (3, "mine2")]
    with pytest.raises(InputError, match="scored.jsonl:2: invalid JSON"):
        list(iter_records(path))


def test_a_merge_killed_half_way_leaves_the_shards_intact_and_a_rerun_completes_it(tmp_path):
    """kill -9 in the middle of `merge_shards`: every shard file is still there byte for byte, the output holds a
    prefix (maybe with a torn line), and the rerun appends only the rest: each id exactly once."""
    import signal
    import subprocess
    import sys
    import time

    output = tmp_path / "responses.jsonl"
    shards = []
    for index in range(4):
        shard = tmp_path / f"responses.shard-{index}-of-4.jsonl"
        with open(shard, "wb") as handle:
            for number in range(150_000):
                handle.write(f'{{"id":"s{index}-{number}","reasoning":"{"y" * 200}"}}\n'.encode())
        shards.append((shard, shard.read_bytes()))
    script = "import sys\nfrom dasd.data.io import merge_shards\nmerge_shards(sys.argv[1])\n"
    process = subprocess.Popen([sys.executable, "-c", script, str(output)])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not output.exists() or output.stat().st_size < 20_000_000):
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    partial = output.stat().st_size
    total = sum(len(data) for _, data in shards)
    assert 0 < partial < total, "the merge finished before it could be killed: make the shards larger"
    for shard, data in shards:
        assert shard.read_bytes() == data  # intact
    from dasd.data.io import merge_shards

    counts = merge_shards(output)
    assert counts["shards"] == 4 and counts["duplicates"] == 0
    assert counts["merged"] + counts["already_merged"] == 600_000
    ids = [json.loads(line)["id"] for line in output.read_bytes().splitlines()]
    assert len(ids) == 600_000 == len(set(ids))
    assert not any(shard.exists() for shard, _ in shards)


def test_parquet_shards_merge_by_moving_parts_and_layout_v1_still_reads(tmp_path):
    """Parquet shard parts are linked into the output whole (no record decoded), a part holding an id already merged
    is rewritten without that row; log-probs are float32 (layout v2), and a v1 output (float64) still reads."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dasd.data.io import ParquetRecordWriter, iter_records, merge_shards

    def record(record_id):
        logprobs = {"reasoning": {"offsets": [[0, 3], [3, 5]], "logprobs": [-0.5, -0.25]}, "content": None}
        return {"id": record_id, "reasoning": "abcde", "teacher_logprobs": logprobs}

    output = tmp_path / "scored.parquet"
    for index, ids in enumerate((["a", "b", "c"], ["d", "a"])):  # "a" twice: kept once
        with ParquetRecordWriter(tmp_path / f"scored.shard-{index}-of-2.parquet", rows_per_part=2) as writer:
            for record_id in ids:
                writer.write(record(record_id))
    first_part = tmp_path / "scored.shard-0-of-2.parquet" / "part-000000.parquet"
    inode = first_part.stat().st_ino
    counts = merge_shards(output)
    assert counts == {"shards": 2, "merged": 4, "already_merged": 0, "duplicates": 1}
    assert (output / "part-000000.parquet").stat().st_ino == inode  # moved, not rewritten
    merged = [r for _, r in iter_records(output)]
    assert sorted(r["id"] for r in merged) == ["a", "b", "c", "d"]
    assert merged[0]["teacher_logprobs"]["reasoning"] == {"offsets": [[0, 3], [3, 5]], "logprobs": [-0.5, -0.25]}
    assert pq.read_schema(output / "part-000000.parquet").field("reasoning_logprobs").type == pa.list_(pa.float32())

    v1 = tmp_path / "old.parquet"
    v1.mkdir()
    schema = pa.schema(
        [("id", pa.string()), ("record", pa.string()), ("has_logprobs", pa.bool_())]
        + [(f"{part}_offsets", pa.list_(pa.int32())) for part in ("reasoning", "content")]
        + [(f"{part}_logprobs", pa.list_(pa.float64())) for part in ("reasoning", "content")],
        metadata={b"dasd.layout": b"dasd-records-v1", b"dasd.logprob_field": b"teacher_logprobs"},
    )
    row = {
        "id": "z",
        "record": '{"id":"z"}',
        "has_logprobs": True,
        "reasoning_offsets": [0, 2, 2, 4],
        "content_offsets": [],
        "reasoning_logprobs": [-0.1, -0.2],
        "content_logprobs": [],
    }
    pq.write_table(pa.Table.from_pylist([row], schema=schema), v1 / "part-000000.parquet")
    assert [r for _, r in iter_records(v1)] == [
        {
            "id": "z",
            "teacher_logprobs": {
                "reasoning": {"offsets": [[0, 2], [2, 4]], "logprobs": [-0.1, -0.2]},
                "content": {"offsets": [], "logprobs": []},
            },
        }
    ]
