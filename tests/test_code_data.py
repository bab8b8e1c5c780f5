"""Code and science benchmark data (`dasd.data.code_data`): LiveCodeBench rows, the shipped problems, GPQA's CSV."""

from __future__ import annotations

import base64
import csv
import json
import os
import pickle
import shlex
import subprocess
import sys
import zlib
from importlib import resources

import pytest

from dasd.data.benchmarks import load_benchmark
from dasd.data.code_data import (
    decode_test_cases,
    encode_test_cases,
    lcb_window_dates,
    load_code_problems,
    load_livecodebench,
)
from dasd.data.gpqa import GPQA_LETTERS, load_gpqa
from dasd.data.io import write_jsonl_atomic
from dasd.errors import ConfigError, InputError

# --- the shipped problems ---------------------------------------------------------------------------


def _shipped_rows() -> list[dict]:
    text = resources.files("dasd").joinpath("data", "code_problems.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_shipped_problems_have_both_kinds_of_test_and_a_prompt_for_each():
    problems = load_code_problems()
    assert len(problems) == 8
    by_kind = {"stdin": [], "functional": []}
    for problem in problems:
        kinds = {test["kind"] for test in problem["meta"]["tests"]}
        assert len(kinds) == 1, problem["id"]
        by_kind[kinds.pop()].append(problem)
        assert 3 <= len(problem["meta"]["tests"]) <= 5, problem["id"]
        assert 1 <= problem["meta"]["public_tests"] < len(problem["meta"]["tests"])
        assert problem["domain"] == "code" and problem["answer"] is None and problem["meta"]["source"] == "dasd"
    assert len(by_kind["stdin"]) == 4 and len(by_kind["functional"]) == 4
    for problem in by_kind["functional"]:
        meta, prompt = problem["meta"], problem["messages"][0]["content"]
        assert meta["starter_code"].startswith("class Solution:\n    def " + meta["func_name"] + "(self")
        assert "```python\nclass Solution:" in prompt and "standard input" not in prompt
    for problem in by_kind["stdin"]:
        assert problem["meta"]["func_name"] is None and problem["meta"]["starter_code"] == ""
        assert "reads the input from standard input" in problem["messages"][0]["content"]


def test_the_encoded_private_tests_of_the_shipped_problems_are_decoded():
    rows = {row["question_id"]: row for row in _shipped_rows()}
    encoded = [qid for qid, row in rows.items() if not row["private_test_cases"].lstrip().startswith("[")]
    assert len(encoded) >= 2
    kinds_encoded = set()
    for problem in load_code_problems():
        if problem["id"] not in encoded:
            continue
        raw = json.loads(pickle.loads(zlib.decompress(base64.b64decode(rows[problem["id"]]["private_test_cases"]))))
        private = problem["meta"]["tests"][problem["meta"]["public_tests"] :]
        assert private == [{"input": t["input"], "output": t["output"], "kind": t["testtype"]} for t in raw]
        assert private  # non-empty: the encoded part held tests
        kinds_encoded.add(private[0]["kind"])
    assert kinds_encoded == {"stdin", "functional"}


# Reference solutions: the expected outputs of the shipped tests must be what a correct program gives.
STDIN_SOLUTIONS = {
    "dasd-001": """
s = input().strip()
depth = best = 0
for char in s:
    depth += 1 if char == "(" else -1
    best = max(best, depth)
    if depth < 0:
        break
print(best if depth == 0 else -1)
""",
    "dasd-002": """
import sys
values = sys.stdin.read().split()[1:]
print(sum(sum(map(int, value)) % 2 == 0 for value in values))
""",
    "dasd-003": """
import sys
h, w, *rows = sys.stdin.read().split()
h, w = int(h), int(w)
ways = [0] * w
for i in range(h):
    for j in range(w):
        if rows[i][j] == "#":
            ways[j] = 0
        elif i == j == 0:
            ways[j] = 1
        else:
            ways[j] = (ways[j] + (ways[j - 1] if j else 0)) % 998244353
print(ways[-1])
""",
    "dasd-004": """
import itertools
s = input().strip()
print("".join(char + str(len(list(group))) for char, group in itertools.groupby(s)))
""",
}


def _longest_equal_run(nums: list[int]) -> int:
    best = run = 1
    for before, after in zip(nums, nums[1:]):
        run = run + 1 if before == after else 1
        best = max(best, run)
    return best


def _fewest_stamps(stamps: list[int], postage: int) -> int:
    reachable, count = {0}, 0
    while postage not in reachable:
        if count >= postage:
            return -1
        reachable = {total + stamp for total in reachable for stamp in stamps if total + stamp <= postage}
        count += 1
    return count


def _rotate_words(sentence: str, k: int) -> str:
    words = sentence.split(" ")
    for _ in range(k % len(words)):
        words.insert(0, words.pop())
    return " ".join(words)


def _count_peaks(heights: list[int]) -> int:
    return sum(heights[i - 1] < heights[i] > heights[i + 1] for i in range(1, len(heights) - 1))


FUNCTION_SOLUTIONS = {
    "longestEqualRun": _longest_equal_run,
    "fewestStamps": _fewest_stamps,
    "rotateWords": _rotate_words,
    "countPeaks": _count_peaks,
}


def test_reference_solutions_pass_every_shipped_test():
    checked = 0
    for problem in load_code_problems():
        meta = problem["meta"]
        for test in meta["tests"]:
            if test["kind"] == "functional":
                args = [json.loads(line) for line in test["input"].split("\n")]
                assert FUNCTION_SOLUTIONS[meta["func_name"]](*args) == json.loads(test["output"]), (problem["id"], test)
            else:
                result = subprocess.run(
                    [sys.executable, "-c", STDIN_SOLUTIONS[problem["id"]]],
                    input=test["input"],
                    capture_output=True,
                    text=True,
                    timeout=30,
                )
                assert result.stdout.split() == test["output"].split(), (problem["id"], test, result.stderr)
            checked += 1
    assert checked >= 8 * 3


# --- LiveCodeBench rows -----------------------------------------------------------------------------


def _lcb_row(question_id: str, contest_date: str, **overrides) -> dict:
    row = {
        "question_title": f"Problem {question_id}",
        "question_content": "Print the sum of A and B.",
        "platform": "atcoder",
        "question_id": question_id,
        "contest_id": "abc000",
        "contest_date": contest_date,
        "starter_code": "",
        "difficulty": "easy",
        "public_test_cases": json.dumps([{"input": "1 2\n", "output": "3\n", "testtype": "stdin"}]),
        "private_test_cases": encode_test_cases([{"input": "5 5\n", "output": "10\n", "testtype": "stdin"}]),
        "metadata": "{}",
    }
    row.update(overrides)
    return row


@pytest.fixture
def windowed_file(tmp_path):
    dates = {
        "before-v5": "2024-07-31T23:59:00",
        "v5-first": "2024-08-01T00:00:00",
        "v5-last": "2025-01-31T12:00:00",
        "v6-first": "2025-02-01T00:00:00",
        "v6-last": "2025-04-30T20:00:00",
        "after-v6": "2025-05-01T00:00:00",
    }
    path = tmp_path / "lcb.jsonl"
    write_jsonl_atomic(path, [_lcb_row(qid, when) for qid, when in dates.items()])
    return path


def test_release_date_window_keeps_start_and_drops_end(windowed_file):
    everything = load_livecodebench(windowed_file)
    assert len(everything) == 6 and everything[0]["meta"]["window"] is None
    v5 = load_livecodebench(windowed_file, window="v5")
    assert [q["id"] for q in v5] == ["v5-first", "v5-last"]
    v6 = load_livecodebench(windowed_file, window="v6")
    assert [q["id"] for q in v6] == ["v6-first", "v6-last"]
    assert v6[0]["meta"]["window"] == {"name": "v6", "start": "2025-02-01", "end": "2025-05-01", "end_exclusive": True}
    custom = load_livecodebench(windowed_file, window=("2024-07-31", "2024-08-02"))
    assert [q["id"] for q in custom] == ["before-v5", "v5-first"]
    assert custom[0]["meta"]["window"]["name"] == "custom"
    assert [q["id"] for q in load_livecodebench(windowed_file, window="2025-04-30..2025-05-02")] == [
        "v6-last",
        "after-v6",
    ]
    # both tests of a row, public first; the encoded private one decoded
    assert v5[0]["meta"]["tests"] == [
        {"input": "1 2\n", "output": "3\n", "kind": "stdin"},
        {"input": "5 5\n", "output": "10\n", "kind": "stdin"},
    ]
    assert v5[0]["meta"]["contest_date"] == "2024-08-01T00:00:00"


def test_window_presets_and_bad_windows():
    assert lcb_window_dates("v5")["start"] == "2024-08-01" and lcb_window_dates("v5")["end"] == "2025-02-01"
    for bad in ("v7", ("2025-01-01", "2024-01-01"), ("2024-13-01", "2025-01-01"), ("2024-01-01",)):
        with pytest.raises(ConfigError):
            lcb_window_dates(bad)


def test_a_window_that_keeps_nothing_is_a_one_line_error(windowed_file):
    with pytest.raises(InputError) as caught:
        load_livecodebench(windowed_file, window=("2020-01-01", "2021-01-01"))
    message = str(caught.value)
    assert "\n" not in message and "2020-01-01..2021-01-01" in message and "2024-07-31..2025-05-01" in message


class _RunsAShellCommand:
    """A pickle payload that runs `command` when an ordinary unpickler loads it."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_a_private_test_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned.txt"
    payload = pickle.dumps(_RunsAShellCommand(f"echo pwned > {shlex.quote(str(marker))}"))
    encoded = base64.b64encode(zlib.compress(payload)).decode("ascii")
    path = tmp_path / "evil.jsonl"
    write_jsonl_atomic(path, [_lcb_row("fine", "2024-09-01T00:00:00"), _lcb_row("evil", "2024-09-02T00:00:00")])
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[1]["private_test_cases"] = encoded
    write_jsonl_atomic(path, rows)

    with pytest.raises(InputError) as caught:
        load_livecodebench(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:2: field 'private_test_cases': ") and "\n" not in message
    assert "refused to load" in message and "system" in message
    assert not marker.exists()
    with pytest.raises(ValueError, match="refused"):
        decode_test_cases(encoded)
    assert not marker.exists()

    # The payload is real: an ordinary unpickler does run the command.
    pickle.loads(payload)
    assert marker.read_text().strip() == "pwned"


def test_private_tests_that_decode_to_something_else_are_rejected(tmp_path):
    not_a_list = base64.b64encode(zlib.compress(pickle.dumps(json.dumps({"input": "1"})))).decode("ascii")
    garbage = base64.b64encode(zlib.compress(b"not a pickle at all")).decode("ascii")
    for value, reason in ((not_a_list, "list of test cases"), (garbage, "pickle"), ("%%%", "neither")):
        path = tmp_path / "bad.jsonl"
        write_jsonl_atomic(path, [_lcb_row("x", "2024-09-01T00:00:00", private_test_cases=value)])
        with pytest.raises(InputError, match=reason):
            load_livecodebench(path)


def test_functional_rows_need_a_function_name_and_json_arguments(tmp_path):
    functional = {
        "starter_code": "class Solution:\n    def add(self, a: int, b: int) -> int:\n        ",
        "public_test_cases": json.dumps([{"input": "1\n2", "output": "3", "testtype": "functional"}]),
        "private_test_cases": json.dumps([{"input": "[1]\n2", "output": "3", "testtype": "functional"}]),
        "metadata": json.dumps({"func_name": "add"}),
    }
    path = tmp_path / "functional.jsonl"
    write_jsonl_atomic(path, [_lcb_row("ok", "2024-09-01T00:00:00", **functional)])
    (question,) = load_livecodebench(path)
    assert question["meta"]["func_name"] == "add" and [t["kind"] for t in question["meta"]["tests"]] == [
        "functional",
        "functional",
    ]
    assert "def add(self, a: int, b: int) -> int:" in question["messages"][0]["content"]

    write_jsonl_atomic(path, [_lcb_row("no-name", "2024-09-01T00:00:00", **{**functional, "metadata": "{}"})])
    with pytest.raises(InputError, match="func_name"):
        load_livecodebench(path)
    broken = json.dumps([{"input": "1\nnot json", "output": "3", "testtype": "functional"}])
    write_jsonl_atomic(
        path, [_lcb_row("bad-args", "2024-09-01T00:00:00", **{**functional, "public_test_cases": broken})]
    )
    with pytest.raises(InputError, match=r"public_test_cases\[0\]\.input"):
        load_livecodebench(path)


def test_rows_missing_a_field_or_repeating_an_id_stop_with_the_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    row = _lcb_row("a", "2024-09-01T00:00:00")
    del row["contest_date"]
    write_jsonl_atomic(path, [_lcb_row("b", "2024-09-01T00:00:00"), row])
    with pytest.raises(InputError, match=r"rows\.jsonl:2: field 'contest_date': missing"):
        load_livecodebench(path)
    write_jsonl_atomic(path, [_lcb_row("b", "2024-09-01T00:00:00"), _lcb_row("b", "2024-09-03T00:00:00")])
    with pytest.raises(InputError, match="duplicate id 'b'"):
        load_livecodebench(path)


# --- GPQA -------------------------------------------------------------------------------------------

GPQA_HEADER = [
    "Pre-Revision Question",
    "Question",
    "Correct Answer",
    "Incorrect Answer 1",
    "Incorrect Answer 2",
    "Incorrect Answer 3",
    "Explanation",
    "Record ID",
    "High-level domain",
    "Subdomain",
]


def _gpqa_row(number: int, **overrides) -> dict:
    row = {
        "Pre-Revision Question": "old text",
        "Question": f"Question {number}:\nwhich value is right?",  # GPQA's questions span several lines
        "Correct Answer": f"right {number}",
        "Incorrect Answer 1": f"wrong {number}a",
        "Incorrect Answer 2": f"wrong {number}b",
        "Incorrect Answer 3": f"wrong {number}c",
        "Explanation": "because",
        "Record ID": f"rec{number:04d}",
        "High-level domain": "Physics",
        "Subdomain": "Optics",
    }
    row.update(overrides)
    return row


def _write_gpqa(path, rows, header=GPQA_HEADER):
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_gpqa_options_are_shuffled_per_question_with_the_seed(tmp_path):
    path = _write_gpqa(tmp_path / "gpqa_diamond.csv", [_gpqa_row(number) for number in range(12)])
    first, again, other = load_gpqa(path, seed=0), load_gpqa(path, seed=0), load_gpqa(path, seed=1)
    assert first == again
    assert [q["choices"] for q in first] != [q["choices"] for q in other]
    for question in first + other:
        number = int(question["id"][3:])
        assert question["choices"][GPQA_LETTERS.index(question["answer"])] == f"right {number}"
        assert sorted(question["choices"]) == sorted([f"right {number}", *(f"wrong {number}{x}" for x in "abc")])
        assert question["domain"] == "science" and question["meta"]["subdomain"] == "Optics"
    assert len({q["answer"] for q in first}) > 1  # the correct option is not always in the same place
    assert first[0]["messages"][0]["content"] == "Question 0:\nwhich value is right?"


def test_gpqa_questions_run_as_multiple_choice_in_eval(tmp_path):
    questions = load_gpqa(_write_gpqa(tmp_path / "gpqa_diamond.csv", [_gpqa_row(n) for n in range(3)]))
    path = tmp_path / "gpqa.jsonl"
    write_jsonl_atomic(path, questions)
    benchmark = load_benchmark(str(path))
    assert benchmark.kind == "choice"
    for loaded, question in zip(benchmark.questions, questions):
        assert loaded["answer"] == question["answer"]
        letter = question["answer"]
        assert f"{letter}. {question['meta']['correct_answer']}" in loaded["messages"][-1]["content"]


def test_gpqa_missing_column_or_empty_field_is_a_one_line_error(tmp_path):
    header = [column for column in GPQA_HEADER if column != "Incorrect Answer 2"]
    path = _write_gpqa(tmp_path / "no_column.csv", [_gpqa_row(1)], header=header)
    with pytest.raises(InputError) as caught:
        load_gpqa(path)
    assert str(caught.value) == f"{path}:1: field 'Incorrect Answer 2': missing column (is this GPQA's CSV?)"

    # row 1 spans lines 2-3 (its question has a newline), so row 2 starts on line 4
    path = _write_gpqa(tmp_path / "empty.csv", [_gpqa_row(1), _gpqa_row(2, **{"Correct Answer": "  "})])
    with pytest.raises(InputError) as caught:
        load_gpqa(path)
    assert str(caught.value) == f"{path}:4: field 'Correct Answer': empty"
