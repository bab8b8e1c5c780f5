"""Every stage at N and 4N records: peak memory and µs per teacher token, as a user runs the stages (issue 34).

    make bench-scale                                   # the default size: 4N is ~1.1 GB of JSONL
    .venv/bin/python benchmarks/bench_scale.py --quick # a small smoke run (a minute)
    .venv/bin/python benchmarks/bench_scale.py [--records N] [--tokens T] [--json OUT] [--src PATH] [--keep]
    .venv/bin/python benchmarks/bench_scale.py --show OUT  # the table of an earlier run

Writes synthetic scored responses in dasd's own format (`dasd score`'s output: the sampled record with its
per-token teacher log-probs and character offsets, `sentences` and `das`; 4 candidates per question, two at
T=0.6 and two at T=1.0; healthy chains of thought that the filters keep, about one in ten with a wrong
boxed answer) at N and 4N records of ~T teacher tokens each (the 4N file's first N records are the N file).
Then, at each size, runs every stage in its own process under GNU time (`/usr/bin/time -v`: the peak RSS is
that of the largest single process, the stage or one of its workers) and a wall clock:

* `select` — `dasd select` (count, k=1 per question and temperature) on the scored file;
* `filter` — `dasd filter` with the real Qwen3 tokenizer (length filter) and math-verify, on the scored file;
* `filter resumed` — the kept and rejected files cut at half their bytes (a torn last line, as a kill leaves),
  then the same `dasd filter` command again;
* `build-sft` — `dasd build-sft` on the selection (its default files, the template check);
* `train data` — what `dasd train` does with a stage file before the model loads (`dasd.stages.train.run_stage`:
  read the records, `dasd.training.sft.prepare_examples` with the Qwen3 tokenizer, `Dataset.from_list`, BFD
  packing at max_length 65536), on build-sft's high_temp file;
* `push` — `dasd push` of the selection with `dry_run=true` to a local folder (the Parquet dataset folder and
  its card, nothing uploaded);
* `shard merge` — the scored file as 4 shard files `scored.shard-i-of-4.jsonl`, merged as a sample/score/eval
  finalize run merges them (`dasd.data.io.merge_shards`; the finalize runs it before resuming);
* `reopen an output` — the merged file with a torn last line, opened as every resumable stage (sample, score,
  filter, the finalize) opens its output (`dasd.data.io.open_writer`: the torn line cut, the done ids collected);
* `write Parquet` — the scored file through `dasd.data.io.open_writer` on a `*.parquet` path (the Parquet
  output every record stage can write), for bytes per token per format.

A stage that fails (not supported in this form, out of memory, …) is reported with its exit status and the
last line of its stderr; the stages after it that need its output are skipped. The table gives per stage the
peak RSS at N and 4N, their ratio, the goal (peak at 4N <= 1.2 x peak at N + 64 MiB), µs per input teacher
token (wall) at each size, and a projection to the report's 8.7B teacher tokens: peak RSS if it keeps growing
as it did from N to 4N, and core-hours at the CPU time per token measured at 4N. `--json` writes it all.

`--src DIR` runs the stages from another checkout's `src` (e.g. a `git worktree` of the last commit, for a
baseline): every stage is `python -m dasd.cli` (or `python -c`) with `PYTHONPATH=DIR` first. Everything is
written under `--workdir` (default: a new folder in /tmp), removed at the end unless `--keep`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REPORT_TOKENS = 8.7e9  # the report's teacher tokens (DESIGN.md §9)
CANDIDATES = (0.6, 0.6, 1.0, 1.0)  # temperatures of a question's candidates, in the order sample writes them
GOAL_FACTOR, GOAL_SLACK_MIB = 1.2, 64
MiB = 2**20

# --- synthetic scored responses ------------------------------------------------------------------------------

# BPE-like pieces: a word or a number group with its leading space, punctuation, a run of whitespace.
TOKEN = re.compile(r" ?[A-Za-z]+| ?\d{1,3}| ?[^\sA-Za-z\d]+|\s+")
LINES = (
    "Step {i}: we compute {a} * {b} = {ab}, then add {c} to get {abc}.",
    "So the running total becomes {abc}, which is {parity} and {cmp} than {d}.",
    "Now consider the case n = {a}: the remainder of {ab} modulo {d} is {rem}, so this case {verdict}.",
    "If we substitute x = {a} into x^2 - {b}, we get {sq} - {b} = {sqb}.",
    "Let me also check the bound: {ab} / {b} = {a}, which agrees with the estimate of {a} from before.",
    "Counting the pairs with sum {c}, there are {e} of them, and {f} of those have an even first entry.",
    "Hence the sequence continues {a}, {b}, {c}, and the next difference should be {g}.",
)
OPENING = "Okay, let me work through problem {q} carefully before answering."


def _line(rng: random.Random, i: int) -> str:
    a, b, c, d = rng.randint(3, 999), rng.randint(2, 199), rng.randint(1, 500), rng.randint(2, 97)
    ab = a * b
    values = {
        "i": i,
        "a": a,
        "b": b,
        "c": c,
        "d": d,
        "ab": ab,
        "abc": ab + c,
        "parity": "even" if (ab + c) % 2 == 0 else "odd",
        "cmp": "larger" if ab + c > d else "smaller",
        "rem": ab % d,
        "verdict": "works" if ab % d == 0 else "fails",
        "sq": a * a,
        "sqb": a * a - b,
        "e": rng.randint(2, 60),
        "f": rng.randint(1, 30),
        "g": c - b,
    }
    return rng.choice(LINES).format(**values)


def _token_logprob(rng: random.Random) -> float:
    # most teacher tokens are near-certain; some carry real uncertainty
    return -abs(rng.gauss(0.0, 0.02)) if rng.random() < 0.7 else -rng.expovariate(1.2)


def _part(units: list[str], rng: random.Random, part: str, offsets: list, logprobs: list, sentences: list) -> str:
    """Join text units (a sentence, or whitespace between sentences) into a part's text, with one teacher token
    per piece (character offsets, raw log-prob) and one scored sentence per non-blank unit."""
    position = 0
    for unit in units:
        first = len(logprobs)
        for match in TOKEN.finditer(unit):
            offsets.append([position + match.start(), position + match.end()])
            logprobs.append(_token_logprob(rng))
        if unit.strip():
            teacher = sum(logprobs[first:]) / max(len(logprobs) - first, 1)
            student = min(teacher - rng.gauss(0.12, 0.3), 0.0)
            difference = math.exp(teacher) - math.exp(student)
            kind = "teacher" if difference > 0.1 else "student" if difference < -0.1 else "shared"
            sentences.append(
                {
                    "part": part,
                    "start": position,
                    "end": position + len(unit),
                    "teacher_logprob": teacher,
                    "student_logprob": student,
                    "type": kind,
                }
            )
        position += len(unit)
    return "".join(units)


def scored_response(index: int, tokens: int) -> tuple[dict, int]:
    """Record `index` (question index // 4, candidate index % 4) as `dasd score` writes it, and its teacher
    tokens. Deterministic in `index`."""
    rng = random.Random(index)
    question, candidate = divmod(index, len(CANDIDATES))
    temperature = CANDIDATES[candidate]
    sample_index = CANDIDATES[:candidate].count(temperature)
    answer = str((question * 7919) % 10007)
    wrong = rng.random() < 0.1
    units, count, step = [OPENING.format(q=question)], 0, 0
    while count < tokens:
        step += 1
        if step % 40 == 0:
            a = rng.randint(2, 30)
            line = f"$$x^2 + {2 * a}x + {a * a} = (x+{a})^2$$"
        elif step % 25 == 0:
            line = "Wait, let me double-check that."
        else:
            line = _line(rng, step)
        units.append("\n\n" if step % 8 == 0 else "\n")
        units.append(line)
        count += len(TOKEN.findall(line)) + 1
    units += ["\n", f"Therefore the value we are looking for is {answer}."]
    offsets: dict[str, list] = {"reasoning": [], "content": []}
    logprobs: dict[str, list] = {"reasoning": [], "content": []}
    sentences: list[dict] = []
    reasoning = _part(units, rng, "reasoning", offsets["reasoning"], logprobs["reasoning"], sentences)
    given = str(int(answer) + 1) if wrong else answer
    content = _part(
        [f"The value is {given}.", "\n\n", f"The final answer is $\\boxed{{{given}}}$."],
        rng,
        "content",
        offsets["content"],
        logprobs["content"],
        sentences,
    )
    das = {kind: sum(sentence["type"] == kind for sentence in sentences) for kind in ("teacher", "student", "shared")}
    record = {
        "id": f"q{question:06d}:t{temperature:g}:{sample_index}",
        "question_id": f"q{question:06d}",
        "messages": [
            {
                "role": "user",
                "content": f"Problem {question}: find the smallest positive integer n with the property described "
                f"in part {question % 13}. Please reason step by step, and put your final answer within \\boxed{{}}.",
            }
        ],
        "answer": answer,
        "domain": "math",
        "temperature": temperature,
        "top_p": 0.95 if temperature < 1 else 1.0,
        "top_k": -1,
        "model": "openai/gpt-oss-120b",
        "seed": 1000 * question + candidate,
        "sample_index": sample_index,
        "reasoning": reasoning,
        "content": content,
        "finish_reason": "stop",
        "teacher_logprobs": {part: {"offsets": offsets[part], "logprobs": logprobs[part]} for part in offsets},
        "logprob_mode": "raw",
        "sampling": {"temperature": temperature, "top_p": 0.95 if temperature < 1 else 1.0, "max_tokens": 65536},
        "usage": {"prompt_tokens": 60, "completion_tokens": len(logprobs["reasoning"]) + len(logprobs["content"])},
        "meta": {},
        "sentences": sentences,
        "das": {**das, "n": len(sentences)},
        "student_model": "Qwen/Qwen3-4B-Instruct-2507",
    }
    return record, len(logprobs["reasoning"]) + len(logprobs["content"])


def write_inputs(paths: list[Path], counts: list[int], tokens: int) -> dict[str, int]:
    """`paths[i]` gets the first `counts[i]` records (one pass: the smaller file is a prefix of the larger one).
    Returns each record id's teacher tokens."""
    token_counts: dict[str, int] = {}
    handles = [open(path, "w", encoding="utf-8") for path in paths]
    try:
        for index in range(max(counts)):
            record, count = scored_response(index, tokens)
            token_counts[record["id"]] = count
            line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
            for handle, limit in zip(handles, counts):
                if index < limit:
                    handle.write(line)
    finally:
        for handle in handles:
            handle.close()
    return token_counts


_DECODER = json.JSONDecoder()


def file_tokens(path: Path, token_counts: dict[str, int]) -> tuple[int, int]:
    """(records, teacher tokens) of a JSONL file whose records carry the synthetic responses' ids."""
    records = tokens = 0
    with open(path, "rb") as handle:
        for line in handle:
            if not line.strip():
                continue
            head = line[:200].decode("utf-8", "replace")
            try:
                record_id = _DECODER.raw_decode(head[len('{"id":') :])[0] if head.startswith('{"id":') else None
            except json.JSONDecodeError:
                record_id = None
            if record_id is None:
                record_id = json.loads(line).get("id")
            records += 1
            tokens += token_counts.get(str(record_id), 0)
    return records, tokens


def size_of(path: Path) -> int:
    if path.is_dir():
        return sum(part.stat().st_size for part in path.rglob("*") if part.is_file())
    return path.stat().st_size if path.exists() else 0


def split_shards(source: Path, output: Path, shards: int) -> None:
    """`source`'s lines dealt round-robin into `<output stem>.shard-i-of-<shards>.jsonl` (bytes, no parsing)."""
    stem = output.name.removesuffix(".jsonl")
    handles = [open(output.with_name(f"{stem}.shard-{i}-of-{shards}.jsonl"), "wb") for i in range(shards)]
    try:
        with open(source, "rb") as handle:
            for number, line in enumerate(handle):
                handles[number % shards].write(line)
    finally:
        for handle in handles:
            handle.close()


def cut_tail(path: Path, size: int) -> None:
    """Truncate the last `size` bytes of a file: a torn last line."""
    with open(path, "r+b") as handle:
        handle.truncate(max(path.stat().st_size - size, 0))


def cut_in_half(path: Path) -> None:
    """Truncate a file to half its bytes: a run killed half way, its last line torn."""
    if path.exists():
        with open(path, "r+b") as handle:
            handle.truncate(path.stat().st_size // 2)


# --- running a stage ---------------------------------------------------------------------------------------------

TRAIN_DATA = """
import sys, tempfile
from dasd.models.assets import load_tokenizer

path, tokenizer, max_length = sys.argv[1], sys.argv[2], int(sys.argv[3])
try:  # what dasd.stages.train.run_stage does before the model loads: tokenize once into the cache, then map it
    from dasd.training.data import prepare_stage_data
except ImportError:  # before issue 34: read every record, tokenize into lists, pack from Python
    from datasets import Dataset
    from trl.data_utils import pack_dataset
    from dasd.data.io import read_records
    from dasd.training.sft import prepare_examples

    records = read_records(path)
    prepared = prepare_examples(
        records, load_tokenizer(tokenizer), max_length=max_length, mask_student_prefix=False, path=path
    )
    dataset = pack_dataset(Dataset.from_list(prepared.examples), max_length, "bfd")
    print(f"{len(prepared.examples)} examples, {prepared.tokens} student tokens, {len(dataset)} packed rows")
else:
    with tempfile.TemporaryDirectory() as root:  # a cold cache: the tokenizing and packing are measured
        data = prepare_stage_data(
            path, load_tokenizer(tokenizer), max_length=max_length, mask_student_prefix=False, root=root
        )
        rows = sum(1 for _ in data.dataset)  # every row read, as training does
        print(f"{rows} packed rows mapped")
"""

MERGE = """
import sys
from dasd.data.io import merge_shards

print(merge_shards(sys.argv[1]))  # what a sample/score/eval run without shard does first (the finalize job)
"""

TO_PARQUET = """
import sys
from dasd.data.io import iter_records, open_writer

writer = open_writer(sys.argv[2])
for _, record in iter_records(sys.argv[1]):
    writer.write(record)
writer.finish()
"""

REOPEN = """
import sys
from dasd.data.io import open_writer

writer = open_writer(sys.argv[1])  # what a resumable stage does first: cut a torn last line, collect the done ids
print(f"{len(writer.done)} ids done, {writer.repaired_bytes} torn bytes cut")
writer.finish()
"""

DASD = [sys.executable, "-m", "dasd.cli"]


def last_line(text: str) -> str:
    lines = [line.strip() for line in re.split(r"[\r\n]+", text) if line.strip()]
    return lines[-1][:300] if lines else ""


def measured(command: list[str], env: dict[str, str], logs: Path, name: str) -> dict:
    """Run `command` under GNU time: exit status, wall and CPU seconds, peak RSS (KiB), stderr's last line."""
    logs.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    stats, out, err = logs / f"{slug}.time", logs / f"{slug}.out", logs / f"{slug}.err"
    gnu_time = Path("/usr/bin/time")
    wrapped = [str(gnu_time), "-v", "-o", str(stats), *command] if gnu_time.exists() else command
    started = time.perf_counter()
    with open(out, "w") as stdout, open(err, "w") as stderr:
        process = subprocess.Popen(wrapped, stdout=stdout, stderr=stderr, env=env, cwd=str(logs))
        _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    result = {
        "rc": process.returncode,
        "wall_s": round(wall, 3),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
        "peak_rss_kib": usage.ru_maxrss,
    }
    if stats.exists():
        text = stats.read_text()
        rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
        user = re.search(r"User time \(seconds\): ([\d.]+)", text)
        system = re.search(r"System time \(seconds\): ([\d.]+)", text)
        status_line = re.search(r"Exit status: (\d+)", text)
        if rss:
            result["peak_rss_kib"] = int(rss.group(1))
        if user and system:
            result["cpu_s"] = round(float(user.group(1)) + float(system.group(1)), 3)
        if status_line:
            result["rc"] = int(status_line.group(1))
        if "Command terminated by signal" in text:
            result["rc"] = result["rc"] or -1
            result["signal"] = last_line(text.split("Command being timed")[0])
    if result["rc"] != 0:
        result["error"] = last_line(err.read_text(errors="replace")) or result.get("signal") or "no stderr"
    return result


# --- one size --------------------------------------------------------------------------------------------------


def run_size(label: str, folder: Path, env: dict, token_counts: dict, args, stages: set[str], log) -> dict:
    scored = folder / "scored.jsonl"
    logs = folder / "logs"
    results: dict[str, dict] = {}
    records, tokens = file_tokens(scored, token_counts)
    inputs = {"scored": (records, tokens, size_of(scored))}

    def stage(name: str, command: list[str], input_tokens: int, needs: Path | None = None, note: str = "") -> None:
        if name not in stages:
            return
        if needs is not None and not needs.exists():
            results[name] = {"rc": None, "error": f"skipped: {needs.name} missing (an earlier stage failed)"}
            log(f"  [{label}] {name:15} skipped: {needs.name} missing")
            return
        log(f"  [{label}] {name:15} … ", end="")
        result = measured(command, env, logs, name)
        result["input_tokens"] = input_tokens
        if note:
            result["note"] = note
        results[name] = result
        if result["rc"] == 0:
            log(
                f"{result['wall_s']:8.1f} s, peak RSS {result['peak_rss_kib'] / 1024:8.0f} MiB, "
                f"{result['wall_s'] * 1e6 / max(input_tokens, 1):6.2f} µs/token"
            )
        else:
            log(f"FAILED (exit {result['rc']}): {result['error']}")

    tokenizer = args.tokenizer
    selected = folder / "select" / "selected.jsonl"
    stage("select", [*DASD, "select", f"input={scored}", f"output={selected}"], tokens)
    kept = folder / "filter" / "kept.jsonl"
    filter_command = [*DASD, "filter", f"input={scored}", f"output={kept}", f"student_tokenizer={tokenizer}"]
    stage("filter", filter_command, tokens)
    if "filter resumed" in stages and kept.exists():
        cut_in_half(kept)
        cut_in_half(kept.with_name("kept.rejected.jsonl"))
        stage("filter resumed", filter_command, tokens, note="kept and rejected cut at half their bytes, then rerun")
    if selected.exists():
        inputs["selected"] = (*file_tokens(selected, token_counts), size_of(selected))
    selected_tokens = inputs.get("selected", (0, 0, 0))[1]
    sft = folder / "sft" / "sft.jsonl"
    stage(
        "build-sft",
        [*DASD, "build-sft", f"input={selected}", f"output={sft}", f"student_tokenizer={tokenizer}"],
        selected_tokens,
        needs=selected,
    )
    stage_file = sft.with_name("sft.high_temp.jsonl")
    if stage_file.exists():
        inputs["sft.high_temp"] = (*file_tokens(stage_file, token_counts), size_of(stage_file))
    stage(
        "train data",
        [sys.executable, "-c", TRAIN_DATA, str(stage_file), tokenizer, "65536"],
        inputs.get("sft.high_temp", (0, 0, 0))[1],
        needs=stage_file,
    )
    stage(
        "push",
        [*DASD, "push", str(selected), "repo_id=bench/scale", "dry_run=true", f"folder={folder / 'push' / 'hf'}"],
        selected_tokens,
        needs=selected,
    )
    merged = folder / "merge" / "scored.jsonl"
    if "merge" in stages:
        merged.parent.mkdir(parents=True, exist_ok=True)
        split_shards(scored, merged, 4)
        stage("merge", [sys.executable, "-c", MERGE, str(merged)], tokens)
        if merged.exists() and size_of(merged) != size_of(scored) and "merge" in results:
            results["merge"]["note"] = f"merged {size_of(merged):,} bytes of {size_of(scored):,}"
    if "reopen" in stages:
        if not (merged.is_file() and size_of(merged) == size_of(scored)):
            merged.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(scored, merged)
        cut_tail(merged, 1000)
        stage("reopen", [sys.executable, "-c", REOPEN, str(merged)], tokens, note="a torn last line (1000 bytes cut)")
    shutil.rmtree(merged.parent, ignore_errors=True)  # a second full copy: not needed past here
    parquet = folder / "parquet" / "scored.parquet"
    stage("parquet", [sys.executable, "-c", TO_PARQUET, str(scored), str(parquet)], tokens)
    if parquet.exists():
        inputs["scored.parquet"] = (records, tokens, size_of(parquet))
    return {"inputs": inputs, "stages": results}


# --- the table ---------------------------------------------------------------------------------------------------

STAGE_NAMES = {
    "select": "dasd select",
    "filter": "dasd filter",
    "filter resumed": "dasd filter (resumed)",
    "build-sft": "dasd build-sft",
    "train data": "train data preparation",
    "push": "dasd push (local folder)",
    "merge": "shard merge (4 shards)",
    "reopen": "reopen an output (resume)",
    "parquet": "write Parquet",
}


def summarize(small: dict, large: dict) -> list[dict]:
    rows = []
    for name, title in STAGE_NAMES.items():
        a, b = small["stages"].get(name), large["stages"].get(name)
        if a is None and b is None:
            continue
        row = {"stage": name, "title": title, "n": a, "4n": b}
        ok_a, ok_b = a is not None and a["rc"] == 0, b is not None and b["rc"] == 0
        for result, ok in ((a, ok_a), (b, ok_b)):
            if ok:
                tokens = max(result["input_tokens"], 1)
                result["us_per_token"] = round(result["wall_s"] * 1e6 / tokens, 3)
                result["cpu_us_per_token"] = round(result["cpu_s"] * 1e6 / tokens, 3)
                result["peak_rss_mib"] = round(result["peak_rss_kib"] / 1024, 1)
        if ok_a and ok_b:
            rss_a, rss_b = a["peak_rss_mib"], b["peak_rss_mib"]
            row["ratio"] = round(rss_b / rss_a, 3) if rss_a else None
            row["bound_mib"] = round(GOAL_FACTOR * rss_a + GOAL_SLACK_MIB, 1)
            row["goal_met"] = rss_b <= row["bound_mib"]
            extra_tokens = b["input_tokens"] - a["input_tokens"]
            slope = (rss_b - rss_a) * MiB / extra_tokens if extra_tokens > 0 else 0.0  # bytes per input token
            row["rss_growth_bytes_per_token"] = round(slope, 2)
            row["projected_rss_gib"] = round(
                (rss_b * MiB + max(slope, 0.0) * (REPORT_TOKENS - b["input_tokens"])) / 2**30, 1
            )
            row["projected_core_hours"] = round(b["cpu_us_per_token"] * REPORT_TOKENS / 1e6 / 3600, 1)
            row["projected_wall_hours"] = round(b["us_per_token"] * REPORT_TOKENS / 1e6 / 3600, 1)
        rows.append(row)
    return rows


def render(result: dict) -> str:
    sizes = result["sizes"]
    lines = [
        f"bench_scale: dasd from {result['dasd']}",
        f"machine: {result['machine']['cpus']} CPUs, {result['machine']['memory_gib']} GiB RAM, "
        f"{result['machine']['platform']}, Python {result['machine']['python']}",
        f"N = {sizes['n']['records']:,} records ({sizes['n']['tokens']:,} teacher tokens, "
        f"{sizes['n']['jsonl_bytes'] / 1e9:.2f} GB JSONL); 4N = {sizes['4n']['records']:,} records "
        f"({sizes['4n']['tokens']:,} tokens, {sizes['4n']['jsonl_bytes'] / 1e9:.2f} GB JSONL); "
        f"~{result['config']['tokens']:,} tokens per record",
        "",
        f"{'stage':26} {'in tok N':>11} {'RSS N MiB':>10} {'RSS 4N MiB':>11} {'ratio':>6} {'goal':>12} "
        f"{'µs/tok N':>9} {'µs/tok 4N':>10} {'cpu µs/tok':>11} {'B/tok':>7} {'@8.7B tok GiB':>14} {'core-h':>8}",
    ]
    failures = []
    for row in result["stages"]:
        a, b = row["n"], row["4n"]

        def rss(x):
            return f"{x['peak_rss_mib']:.0f}" if x and x.get("rc") == 0 else "failed"

        def speed(x, key="us_per_token"):
            return f"{x[key]:.2f}" if x and x.get("rc") == 0 else "—"

        goal = "—"
        if "goal_met" in row:
            goal = ("ok" if row["goal_met"] else "NO") + f" ≤{row['bound_mib']:.0f}"
        tokens_n = f"{a['input_tokens']:,}" if a and a.get("input_tokens") else "—"
        ratio = f"{row['ratio']:.2f}" if row.get("ratio") is not None else "—"
        lines.append(
            f"{row['title']:26} {tokens_n:>11} {rss(a):>10} {rss(b):>11} {ratio:>6} {goal:>12} "
            f"{speed(a):>9} {speed(b):>10} {speed(b, 'cpu_us_per_token'):>11} "
            f"{row.get('rss_growth_bytes_per_token', '—'):>7} "
            f"{row.get('projected_rss_gib', '—'):>14} {row.get('projected_core_hours', '—'):>8}"
        )
        for key, x in (("N", a), ("4N", b)):
            if x and x.get("rc") != 0:
                failures.append(f"  {row['title']} at {key}: {x.get('error')}")
    lines += [
        "",
        "RSS: peak resident set of the stage's largest process (GNU time). goal: RSS at 4N <= 1.2 x RSS at N + 64 MiB.",
        "µs/tok: wall seconds per input teacher token (the scored file; build-sft and push: the selection; train",
        "data: the high_temp stage file); cpu µs/tok: user + system seconds per token at 4N, children included.",
        "B/tok: peak RSS growth from N to 4N per input token; @8.7B tok: the peak RSS if it grows on so; core-h:",
        "CPU hours for 8.7B tokens at 4N's CPU cost.",
    ]
    notes = [f"  {row['title']}: {row['4n']['note']}" for row in result["stages"] if (row["4n"] or {}).get("note")]
    if notes:
        lines += ["", "notes:", *notes]
    formats = result["formats"]
    if formats:
        lines.append("")
        lines.append(
            "bytes per teacher token: "
            + ", ".join(f"{name} {value:.2f}" for name, value in formats.items())
            + " (the scored records: text, offsets, log-probs, sentences)"
        )
    if failures:
        lines += ["", "failed:", *failures]
    return "\n".join(lines)


# --- main --------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=752, help="N: records at the small size (4N at the large)")
    parser.add_argument("--tokens", type=int, default=8192, help="teacher tokens per record (about)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: N=16 records of ~4K tokens")
    parser.add_argument("--tokenizer", default="qwen3", help="student tokenizer (asset name or folder)")
    parser.add_argument("--src", help="run the stages from this src folder (PYTHONPATH), e.g. a worktree's src")
    parser.add_argument("--json", help="also write the results as JSON here")
    parser.add_argument("--workdir", help="where to write (default: a new folder under /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the workdir")
    parser.add_argument("--show", metavar="JSON", help="print the table of an earlier run's --json file and stop")
    parser.add_argument(
        "--stages",
        default=",".join(STAGE_NAMES),
        help="comma-separated subset of: " + ", ".join(STAGE_NAMES) + " (build-sft, train data, push need select)",
    )
    args = parser.parse_args()
    if args.show:
        print(render(json.loads(Path(args.show).read_text())))
        return
    if args.quick:
        args.records, args.tokens = 16, 4096
    stages = {name.strip() for name in args.stages.split(",") if name.strip()}
    unknown = stages - set(STAGE_NAMES)
    if unknown:
        parser.error(f"unknown stages: {', '.join(sorted(unknown))}")
    if "build-sft" in stages or "push" in stages or "train data" in stages:
        stages.add("select")
    if "train data" in stages:
        stages.add("build-sft")
    if "filter resumed" in stages:
        stages.add("filter")
    args.records = max(len(CANDIDATES), args.records - args.records % len(CANDIDATES))

    src = Path(args.src).resolve() if args.src else REPO / "src"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(src), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    env.setdefault("DASD_CACHE", str(REPO / ".cache" / "dasd"))
    env.update(HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", TOKENIZERS_PARALLELISM="false")
    found = subprocess.run(
        [sys.executable, "-c", "import dasd; print(dasd.__file__)"], env=env, capture_output=True, text=True
    )
    if found.returncode != 0:
        sys.exit(f"bench_scale: cannot import dasd from {src}: {last_line(found.stderr)}")
    dasd_file = found.stdout.strip()

    workdir = Path(args.workdir).resolve() if args.workdir else Path(tempfile.mkdtemp(prefix="dasd-bench-scale-"))
    workdir.mkdir(parents=True, exist_ok=True)

    def log(message: str, end: str = "\n") -> None:
        print(message, end=end, file=sys.stderr, flush=True)

    try:
        sizes = {"n": args.records, "4n": 4 * args.records}
        folders = {label: workdir / label for label in sizes}
        for folder in folders.values():
            folder.mkdir(parents=True, exist_ok=True)
        log(f"bench_scale: dasd from {dasd_file}; workdir {workdir}")
        started = time.perf_counter()
        token_counts = write_inputs(
            [folders[label] / "scored.jsonl" for label in sizes], list(sizes.values()), args.tokens
        )
        log(
            f"  wrote {sizes['n']:,} and {sizes['4n']:,} scored records in {time.perf_counter() - started:.0f} s "
            f"({size_of(folders['4n'] / 'scored.jsonl') / 1e9:.2f} GB at 4N)"
        )
        runs = {}
        for label in sizes:
            runs[label] = run_size(label, folders[label], env, token_counts, args, stages, log)
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        formats = {}
        for label in ("4n", "n"):
            inputs = runs[label]["inputs"]
            if "scored.parquet" in inputs and not formats:
                tokens = inputs["scored"][1]
                formats = {"JSONL": inputs["scored"][2] / tokens, "Parquet": inputs["scored.parquet"][2] / tokens}
        result = {
            "dasd": dasd_file,
            "machine": {
                "cpus": os.cpu_count(),
                "memory_gib": round(memory / 2**30, 1),
                "platform": platform.platform(),
                "python": platform.python_version(),
            },
            "config": {"records": args.records, "tokens": args.tokens, "tokenizer": args.tokenizer},
            "sizes": {
                label: {
                    "records": runs[label]["inputs"]["scored"][0],
                    "tokens": runs[label]["inputs"]["scored"][1],
                    "jsonl_bytes": runs[label]["inputs"]["scored"][2],
                    "files": {
                        name: {"records": records, "tokens": tokens, "bytes": size}
                        for name, (records, tokens, size) in runs[label]["inputs"].items()
                    },
                }
                for label in sizes
            },
            "formats": {name: round(value, 3) for name, value in formats.items()},
            "goal": f"peak RSS at 4N <= {GOAL_FACTOR} x peak RSS at N + {GOAL_SLACK_MIB} MiB",
            "projection_tokens": REPORT_TOKENS,
            "stages": summarize(runs["n"], runs["4n"]),
            "seconds": round(time.perf_counter() - started, 1),
        }
        print(render(result))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    finally:
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
