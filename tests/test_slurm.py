"""`dasd run` with `executor: slurm` on a real single-node Slurm cluster (Debian's slurm-wlm: munged,
slurmctld and slurmd on localhost, started and stopped here by tests/slurm/start.sh and stop.sh; `.ci/run`
installs the packages). Without Slurm or root the tests are skipped with the reason — never faked."""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from dasd.data.io import read_records
from dasd.data.records import in_shard
from dasd.models.demo_world import world_dir
from dasd.pipeline import config as pipeline_config
from dasd.pipeline import slurm as executors
from dasd.pipeline.step import StepJob
from dasd.stages import demo

pytestmark = pytest.mark.slow
SCRIPTS = Path(__file__).parent / "slurm"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def slurm_cluster():
    missing = [tool for tool in ("munged", "slurmctld", "slurmd", "sbatch") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"Slurm is not installed ({', '.join(missing)}): apt-get install slurm-wlm (.ci/run does)")
    if os.geteuid() != 0:
        pytest.skip("a throwaway slurmd needs root")
    # munged wants every folder above its socket world-searchable, which pytest's temporary folders are not
    state = Path(tempfile.mkdtemp(prefix="dasd-slurm-"))
    env = {
        **os.environ,
        "SLURM_PROTO_CTLD_PORT": str(_free_port()),
        "SLURM_PROTO_SLURMD_PORT": str(_free_port()),
        "SLURM_PROTO_MIN_JOB_AGE": "600",
    }
    started = subprocess.run([str(SCRIPTS / "start.sh"), str(state)], env=env, capture_output=True, text=True)
    if started.returncode != 0:
        subprocess.run([str(SCRIPTS / "stop.sh"), str(state)], capture_output=True)
        pytest.fail(f"the test cluster did not start:\n{started.stderr[-3000:]}")
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(state / "slurm.conf")
    try:
        yield state
    finally:
        stopped = subprocess.run([str(SCRIPTS / "stop.sh"), str(state)], capture_output=True, text=True)
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous
        assert stopped.returncode == 0, stopped.stderr
        shutil.rmtree(state, ignore_errors=True)


def _pipeline(work: Path, record_format: str = "jsonl", **tasks: int) -> Path:
    """The demo's pipeline, reduced: 6 questions × 2 teacher samples, no RS branch or mixed policy; sample,
    score and eval as job arrays, training as one job."""
    world = world_dir()
    config = demo.DemoConfig(
        workdir=str(work), train_questions=6, samples_per_temperature=1, eval_questions=4, global_batch_size=2
    )  # 6 records a stage at 2 a step: steps past warmup (one step inside it would train at learning rate 0)
    spec = demo.pipeline(config.model_copy(update={"eval_n": 2, "epochs": 1.0}), world)
    spec["teacher"]["batch_size"] = 1  # one response at a time: a task can be cancelled with part of its file written
    spec.update(
        rs_baseline=False,
        stages={"mix": False, "train_mixed": False, "provenance": False},
        eval_models=["student", "high_temp"],
        claims=[],
        record_format=record_format,
        executor={
            "name": "slurm",
            "poll_s": 0.5,
            "slurm": {"cpus_per_task": 1, "time_min": 30},
            "steps": {stage: {"tasks": count} for stage, count in tasks.items()},
        },
    )
    path = work.parent / f"pipeline-{'-'.join(f'{k}{v}' for k, v in tasks.items())}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _dasd_run(pipeline: Path, **popen) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "dasd", "run", str(pipeline)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen
    )


def _ids(path: Path) -> list[str]:
    return [record["id"] for _, record in read_records(path)]


def _task_processes(job_id: str) -> list[int]:
    """The processes a Slurm job (array task `<array>_<i>`) runs on this node: its batch shell, srun, python."""
    array, _, index = job_id.partition("_")
    wanted = {"SLURM_ARRAY_JOB_ID": array, "SLURM_ARRAY_TASK_ID": index} if index else {"SLURM_JOB_ID": array}
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            variables = (entry / "environ").read_bytes().split(b"\0")
        except OSError:  # gone, or a kernel thread
            continue
        env = dict(item.decode(errors="replace").split("=", 1) for item in variables if b"=" in item)
        if all(env.get(name) == value for name, value in wanted.items()):
            found.append(int(entry.name))
    return found


def _kill_after_first_record(work: Path, victim_task: int, first: subprocess.Popen) -> str:
    """SIGKILL one sample task's processes the moment its shard file holds a complete record, as the OOM killer or
    a dead node would, and return its Slurm id. Its processes are found while it loads the model, so that the kill
    takes a few milliseconds: a tiny teacher on a fast machine answers the rest of its shard in well under a
    second, which a poll-then-scancel outran (scancel goes through slurmctld and slurmd)."""
    jobs_file = work / ".dasd" / "slurm" / "jobs.json"
    shard = work / "sample" / f"responses.shard-{victim_task}-of-2.jsonl"
    victim, pids = None, []
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and first.poll() is None:
        if victim is None and jobs_file.exists():
            victim = json.loads(jobs_file.read_text())["sample"][victim_task]  # [task 0, task 1, finalize]
        if victim is not None and not shard.exists():
            pids = _task_processes(victim) or pids
        elif victim is not None and shard.read_bytes().count(b"\n") >= 1:
            for pid in pids or _task_processes(victim):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            return victim
        time.sleep(0.005 if shard.exists() else 0.1)
    raise AssertionError(f"sample task {victim_task} never wrote a record (job {victim}, processes {pids})")


def test_a_pipeline_on_slurm_survives_a_cancelled_task_and_a_new_task_count(slurm_cluster, tmp_path):
    # 1. Kill one sample task once it has written part of its file: the run stops, the steps after it never run.
    # The victim is the shard with the most questions (ids hash to shards: 5 and 1 of these 6), so that the kill
    # lands while most of its responses are still to come.
    questions = [json.loads(line) for line in (world_dir() / "train_questions.jsonl").read_text().splitlines()][:6]
    sizes = [sum(in_shard(question["id"], (index, 2)) for question in questions) for index in range(2)]
    victim_task = sizes.index(max(sizes))
    assert sizes[victim_task] >= 3, sizes
    work = tmp_path / "run"
    pipeline = _pipeline(work, sample=2, score=2, eval=2)
    jobs_file = work / ".dasd" / "slurm" / "jobs.json"
    shard = work / "sample" / f"responses.shard-{victim_task}-of-2.jsonl"
    first = _dasd_run(pipeline)
    victim = _kill_after_first_record(work, victim_task, first)
    _, stderr = first.communicate(timeout=600)
    marker = work / ".dasd" / "tasks" / "sample" / f"{victim_task}-of-2.json"
    written = shard.read_bytes().count(b"\n")
    assert not marker.exists(), (
        f"task {victim} finished although killed at {written} of {2 * sizes[victim_task]} "
        f"records: {marker.read_text()}\n{stderr.decode()[-3000:]}"
    )
    assert first.returncode == 2, stderr.decode()[-3000:]
    assert "rerun the same `dasd run` to resubmit only the unfinished tasks" in stderr.decode()
    assert (work / ".dasd" / "tasks" / "sample" / f"{1 - victim_task}-of-2.json").exists()
    killed_file = shard.read_bytes()
    partial = killed_file.split(b"\n")[:-1]  # complete lines only: SIGKILL may have torn the last one

    # 2. Rerun: only the cancelled task is resubmitted; it resumes from its own file; every id once.
    second = _dasd_run(pipeline)
    stdout, stderr = second.communicate(timeout=1200)
    assert second.returncode == 0, stderr.decode()[-4000:]
    submitted = json.loads(jobs_file.read_text())
    assert len(submitted["sample"]) == 2  # the killed task, then the finalize
    resumed = json.loads((work / "sample" / f"responses.shard-{victim_task}-of-2.summary.json").read_text())
    assert resumed["responses_already_done"] == len(partial) >= 1
    responses = _ids(work / "sample" / "responses.jsonl")
    assert len(responses) == len(set(responses)) == 6 * 2
    assert sorted(_ids(work / "score" / "scored.jsonl")) == sorted(responses)
    for model in ("student", "high_temp"):
        samples = _ids(work / "eval" / model / "eval_questions" / "samples.jsonl")
        assert len(samples) == len(set(samples)) == 4 * 2
        assert json.loads((work / "eval" / model / "summary.json").read_text())["benchmarks"]["eval_questions"][
            "complete"
        ]
    assert not [path for path in work.rglob("*.shard-*-of-*.jsonl") if ".errors." not in path.name]  # merged
    assert "high_temp" in stdout.decode()

    # 3. Another task count for every array: nothing finished is redone, nothing is submitted.
    third = _dasd_run(_pipeline(work, sample=3, score=3, eval=3))
    stdout, stderr = third.communicate(timeout=300)
    assert third.returncode == 0, stderr.decode()[-3000:]
    statuses = {row["step"]: row["status"] for row in json.loads((work / "run.summary.json").read_text())["steps"]}
    assert set(statuses.values()) == {"cached"}, statuses
    assert "submitted" not in stderr.decode()


def test_a_failing_step_names_its_log_and_cancels_what_waits_for_it(slurm_cluster, tmp_path):
    """A step that fails on a node: the run ends with the step, the job's last log lines and what to do; the
    steps that read it are cancelled by Slurm, not left pending."""
    work = tmp_path / "run"
    pipeline = _pipeline(work, sample=2)
    spec = yaml.safe_load(pipeline.read_text())
    # The submit host checks only the first 20 records of a question file (dasd.pipeline.preflight): a bad record
    # further down is found by the sample tasks on the node, which read the whole file before any work
    lines = (world_dir() / "train_questions.jsonl").read_text().splitlines()[:24]
    bad = json.loads(lines[21])
    bad["messages"][0]["role"] = "human"
    lines[21] = json.dumps(bad)
    questions = tmp_path / "late-mistake.jsonl"
    questions.write_text("\n".join(lines) + "\n")
    spec["questions"] = str(questions)
    pipeline.write_text(yaml.safe_dump(spec))
    finished = _dasd_run(pipeline)
    _, stderr = finished.communicate(timeout=600)
    text = stderr.decode()
    assert finished.returncode == 2, text[-3000:]
    assert "sample: job" in text and "late-mistake.jsonl:22: field 'messages[0].role'" in text, text[-3000:]
    assert "did not finish on Slurm (sample" in text
    queue = subprocess.run(["squeue", "-h", "-o", "%i %T"], capture_output=True, text=True).stdout
    assert queue.strip() == "", queue  # nothing left pending on a dependency that can never be met


def test_parquet_records_through_job_arrays(slurm_cluster, tmp_path):
    """`record_format: parquet`: the shard tasks write folders of parts, the finalize merges them, every later
    step reads them; every id once."""
    work = tmp_path / "run"
    finished = _dasd_run(_pipeline(work, record_format="parquet", sample=2, score=2))
    _, stderr = finished.communicate(timeout=900)
    assert finished.returncode == 0, stderr.decode()[-4000:]
    responses = _ids(work / "sample" / "responses.parquet")
    assert len(responses) == len(set(responses)) == 6 * 2
    assert sorted(_ids(work / "score" / "scored.parquet")) == sorted(responses)
    assert list((work / "sample" / "responses.parquet").glob("part-*.parquet"))
    assert not list(work.rglob("*.shard-*-of-*.parquet"))
    assert (work / "filter" / "filtered.parquet").is_dir() and (work / "sft" / "das" / "sft.jsonl").exists()


def test_a_step_without_time_min_gets_a_day_and_no_wckey(slurm_cluster, tmp_path):
    """submitit's default would be `--time=5` (killed after 5 minutes) and `--wckey=submitit`: the script dasd
    submits asks for its 24 h default and no wckey, Slurm accepts that limit, and the step runs."""
    config = pipeline_config.ExecutorConfig.model_validate({"name": "slurm"})
    resources = config.resources("score", "score")
    assert resources.time_min is None
    # a step that only records why it is skipped: a real job through run_step, no stage to run
    job = StepJob(
        "score",
        "score",
        "dasd.stages.score",
        "ScoreConfig",
        {},
        "f",
        tmp_path / "state",
        skip_if=functools.partial(str, "no model"),
    )
    folder = tmp_path / "slurm"
    job_id = executors.submit(config, folder, job, [], resources).jobs[-1]
    script = (folder / job_id / f"{job_id}_submission.sh").read_text()
    assert f"#SBATCH --time={pipeline_config.DEFAULT_TIME_MIN}\n" in script and "wckey" not in script.lower(), script
    shown = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, check=True).stdout
    assert "TimeLimit=1-00:00:00" in shown, shown  # Slurm's own reading of the limit it will enforce
    deadline = time.monotonic() + 120
    while executors.queue_states([job_id]).get(job_id) in executors.ACTIVE_STATES and time.monotonic() < deadline:
        time.sleep(0.5)
    marker = json.loads((tmp_path / "state" / "score.json").read_text())
    assert marker["status"] == "skipped" and marker["reason"] == "no model", marker


def test_the_queue_is_read_for_this_user_only(slurm_cluster, tmp_path):
    """`dasd run` polls its own user's jobs (squeue --me), not every job on the cluster: a job of another user
    (held, so it never runs) is not in the states it reads; its own held job is."""
    hold = ["sbatch", "--parsable", "--hold", "--output=/dev/null", "--wrap", "true"]
    other = subprocess.run(["runuser", "-u", "nobody", "--", *hold], cwd="/", capture_output=True, text=True)
    assert other.returncode == 0, other.stderr
    mine = subprocess.run(hold, cwd=tmp_path, capture_output=True, text=True, check=True)
    ids = [other.stdout.strip(), mine.stdout.strip()]
    try:
        everyone = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()
        assert set(ids) <= set(everyone)
        assert executors.queue_states(ids) == {ids[1]: "PENDING"}
    finally:
        subprocess.run(["scancel", *ids], check=True)


def test_the_progress_line_says_why_a_job_is_pending(slurm_cluster, tmp_path):
    """A step whose jobs wait shows squeue's reason in `dasd run`'s progress line, not only "pending": here a held
    job (JobHeldUser) and one that waits for it (Dependency), as a job held by a partition limit would show
    PartitionTimeLimit."""
    held = subprocess.run(
        ["sbatch", "--parsable", "--hold", "--output=/dev/null", "--wrap", "true"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    waiting = subprocess.run(
        ["sbatch", "--parsable", f"--dependency=afterok:{held}", "--output=/dev/null", "--wrap", "true"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    try:
        jobs = executors.queue_jobs([held, waiting])
        assert executors.queue_note([jobs[held]]) == " (pending: JobHeldUser)", jobs
        assert executors.queue_note([jobs[waiting]]) == " (pending: Dependency)", jobs
    finally:
        subprocess.run(["scancel", held, waiting], check=True)
