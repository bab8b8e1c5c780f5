"""The Slurm executor of `dasd run` (`executor: slurm`): every step as jobs on a cluster, submitted with submitit.

    executor:
      name: slurm
      slurm: {partition: h100, account: myproj, time_min: 1440, setup: ["source /shared/dasd/.venv/bin/activate"]}
      steps:
        sample: {tasks: 16, gpus_per_node: 8, cpus_per_task: 64}
        score: {tasks: 8, gpus_per_node: 1}
        train: {nodes: 8, gpus_per_node: 8, cpus_per_task: 96}
        eval: {tasks: 4, gpus_per_node: 8}

Every step becomes one job, except the record stages that can shard (sample, score, eval): with
`tasks: N` they become an N-task job array (`shard=i/N`: each task writes its own shard file) plus a
one-task finalize job, the stage run without shard, which merges the shards (each id once) and
writes the summary. Jobs wait for the steps they read (`afterok`; a failed job cancels what waits for
it). Training with several nodes or GPUs runs `accelerate launch` on every node (one task per node).

Nothing is lost and nothing runs twice: a finished shard task leaves a marker (`<workdir>/.dasd/tasks/`)
keyed by the step's fingerprint and the task count, so a rerun of `dasd run` resubmits only the
unfinished tasks; a task killed or pre-empted resumes from its own file (by id); with another task
count, each shard skips the ids any earlier shard file holds. State comes from dasd's own markers and
`squeue`, not from Slurm accounting (which many clusters, and single-node test clusters, do not run).

submitit (facebookincubator/submitit) was chosen over datatrove's executors: three small packages
instead of twenty, plain callables instead of pickled pipeline objects, one function per task under
`srun` (one `accelerate launch` per node), and neither tracks re-sharding — dasd's markers do.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import dump_config
from ..data.io import write_json_atomic
from ..errors import ConfigError, DasdError
from ..naming import step_marker
from .config import DEFAULT_TIME_MIN, SHARDABLE, ExecutorConfig, PipelineConfig, SlurmResources
from .step import (
    StepJob,
    cached_row,
    has_ended,
    read_marker,
    run_shard,
    run_step,
    task_done,
    task_marker,
)
from .steps import Step

ACTIVE_STATES = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED", "STAGE_OUT"}


def check_cluster(state_dir: Path) -> None:
    """Before `dasd run` writes anything: the Slurm tools are here and no earlier run's jobs are still queued."""
    require_slurm()
    check_no_jobs_left(state_dir)


def run_slurm(config: PipelineConfig, steps: list[Step], jobs: dict[str, StepJob], state_dir: Path):
    """Submit every step that is not done (a job, or a job array and its finalize, waiting for the steps it
    reads), then follow them to their end: one row per step."""
    rows, submitted, pending = [], [], {}
    for step in steps:
        job = jobs[step.name]
        cached = cached_row(job, step.outputs)
        if cached:
            rows.append(cached)
            continue
        pending[step.name], item = _submit(config, step, job, state_dir, submitted)
        submitted.append(item)
        record_jobs(state_dir, submitted)  # at once: an interrupted run must not lose track of its jobs
    return rows + _collect_slurm(config, submitted, pending, state_dir)


def placement(config: PipelineConfig, steps: list[Step], stages: list[str]) -> dict[str, str]:
    """With `executor: slurm`, each step's jobs in words (checked before anything is submitted); else {}.
    `executor.steps` may name a step or any of the `stages` (dasd's commands)."""
    if config.executor.name != "slurm":
        return {}
    known = {step.name for step in steps} | set(stages)
    unknown = sorted(set(config.executor.steps) - known)
    if unknown:
        raise ConfigError(f"executor.steps: unknown step or stage {unknown} (steps: {', '.join(sorted(known))})")
    placement = {}
    for step in steps:
        resources = config.executor.resources(step.stage, step.name)
        tasks = resources.tasks or 1
        words = [f"{tasks} tasks + finalize" if tasks > 1 and step.stage in SHARDABLE else "1 job"]
        if (resources.nodes or 1) > 1:
            words.append(f"{resources.nodes} nodes")
        if resources.gpus_per_node:
            words.append(f"{resources.gpus_per_node} GPU/node")
        placement[step.name] = "slurm: " + ", ".join(words)
    return placement


def _submit(
    config: PipelineConfig, step: Step, job: StepJob, state_dir: Path, submitted: list[Submitted]
) -> tuple[StepJob, Submitted]:
    """One step's jobs, after the jobs of the steps it reads; training on several GPUs or nodes through
    `accelerate launch` on each node."""
    resources = config.executor.resources(step.stage, step.name)
    multi = step.stage == "train" and ((resources.nodes or 1) > 1 or (resources.gpus_per_node or 0) > 1)
    accelerate = None
    if multi:
        accelerate = ["--config_file", config.executor.accelerate_config] if config.executor.accelerate_config else []
        accelerate += [] if accelerate else ["--multi_gpu"]
    job = dataclasses.replace(
        job, accelerate=accelerate, nodes=resources.nodes or 1, gpus_per_node=resources.gpus_per_node or 0
    )
    after = [item.jobs[-1] for item in submitted if item.step in step.depends]
    item = submit(config.executor, slurm_folder(config.executor, state_dir), job, after, resources)
    print(f"dasd run: {step.name} submitted: job {' '.join(item.jobs[-1:])}", file=sys.stderr, flush=True)
    return job, item


def _collect_slurm(
    config: PipelineConfig, submitted: list[Submitted], jobs: dict[str, StepJob], state_dir: Path
) -> list[dict[str, Any]]:
    """Follow the jobs to their end, then each step's row from its marker; a one-line error per unfinished
    step, with its log's last lines, and what a rerun will do."""
    if not config.executor.wait:
        return [{"step": item.step, "status": f"submitted: job {item.jobs[-1]}", "seconds": 0.0} for item in submitted]
    states = follow(submitted, jobs, config.executor.poll_s)
    rows, failed = [], []
    for item in submitted:
        marker = read_marker(step_marker(state_dir, item.step))
        if has_ended(jobs[item.step]):
            status = "ran (slurm)" if marker["status"] == "done" else f"skipped: {marker.get('reason', '')}"
            # from submission to the end of its last job: queueing, every shard task and the finalize
            seconds = round(marker.get("finished", item.at) - item.at, 2)
            rows.append({"step": item.step, "status": status, "seconds": seconds})
            continue
        bad = [job_id for job_id in item.jobs if states.get(job_id) not in ("COMPLETED", "gone")]
        culprit = bad[0] if bad else item.jobs[-1]
        log = log_tail(slurm_folder(config.executor, state_dir), culprit)
        failed.append(f"{item.step}: job {culprit} {states.get(culprit, 'gone')}; {log}")
        rows.append(
            {"step": item.step, "status": f"failed: job {culprit} {states.get(culprit, 'gone')}", "seconds": 0.0}
        )
    if failed:
        print("\n".join(failed), file=sys.stderr, flush=True)
        raise DasdError(
            f"{len(failed)} step(s) did not finish on Slurm ({', '.join(line.split(':')[0] for line in failed)}); "
            "rerun the same `dasd run` to resubmit only the unfinished tasks"
        )
    return rows


def rendezvous_port(job_id: str | int) -> int:
    """The rendezvous port of a training job, the same on all its nodes without them talking: derived from the
    Slurm job id, so two training jobs sharing a node do not both listen on accelerate's 29500. The range
    20000-31999 lies below Linux's ephemeral ports (32768-60999), which outgoing connections take; jobs
    collide only if their ids differ by a multiple of 12000 and they share a node at the same time.

    >>> rendezvous_port("4242"), rendezvous_port(4243), rendezvous_port(16242)
    (24242, 24243, 24242)
    """
    return 20000 + int(job_id) % 12000


def accelerate_command(job: StepJob, config_file: Path, node: int, main_host: str, port: int) -> list[str]:
    """`accelerate launch` for one node of a multi-node (or multi-GPU) training job.

    >>> job = StepJob("train_das", "train", "dasd.stages.train", "TrainConfig", {}, "f", Path("w"), nodes=2,
    ...               accelerate=[], gpus_per_node=8)
    >>> command = accelerate_command(job, Path("t.yaml"), node=1, main_host="gpu1", port=24242)
    >>> " ".join(command[:10])
    'accelerate launch --num_machines 2 --machine_rank 1 --main_process_ip gpu1 --main_process_port 24242'
    >>> " ".join(command[10:])
    '--num_processes 16 --deepspeed_multinode_launcher standard -m dasd train --config t.yaml'
    """
    return [
        "accelerate",
        "launch",
        "--num_machines",
        str(job.nodes),
        "--machine_rank",
        str(node),
        "--main_process_ip",
        main_host,
        "--main_process_port",
        str(port),
        "--num_processes",
        str(job.nodes * max(job.gpus_per_node, 1)),
        # dasd starts one launcher per node itself (srun), so each must be torch.distributed's node launcher. Without
        # this, accelerate's DeepSpeed path picks `pdsh` (accelerate/utils/launch.py `prepare_deepspeed_cmd_env`:
        # launcher None -> DEEPSPEED_MULTINODE_LAUNCHERS[0]) with no hostfile, and every node trains on its own.
        # Other launchers ignore the option.
        "--deepspeed_multinode_launcher",
        "standard",
        *(job.accelerate or []),
        "-m",
        "dasd",
        job.stage,
        "--config",
        str(config_file),
    ]


def launch_on_this_node(job: StepJob) -> bool:
    """Run this node's `accelerate launch` (submitit runs the job's function once per node); True on node 0."""
    import submitit

    environment = submitit.JobEnvironment()
    job_id = environment.raw_job_id  # SLURM_JOB_ID: the same on every node of the job
    # named by the job, so that the other nodes never take an earlier job's file for this one's
    config_file = job.state_dir / "jobs" / f"{job.name}.{job_id}.config.yaml"
    if environment.global_rank == 0:
        config_file.parent.mkdir(parents=True, exist_ok=True)
        dump_config(job.stage_config(job.config), config_file)
    else:
        for _ in range(600):  # the first node writes it; the filesystem is shared
            if config_file.exists():
                break
            time.sleep(1)
    command = accelerate_command(job, config_file, environment.node, environment.hostnames[0], rendezvous_port(job_id))
    subprocess.run(command, check=True)
    return environment.global_rank == 0


@dataclass
class Submitted:
    step: str
    jobs: list[str] = field(default_factory=list)  # Slurm ids: array tasks, then the step's own job
    tasks: tuple[int, int] = (0, 0)  # shard tasks finished before this run, shard tasks in all
    at: float = field(default_factory=time.time)  # when it was submitted


def require_slurm() -> None:
    missing = [tool for tool in ("sbatch", "squeue", "srun", "scancel") if shutil.which(tool) is None]
    if missing:
        raise DasdError(f"executor: slurm needs the Slurm client tools; not found on PATH: {', '.join(missing)}")


def queue_jobs(job_ids: list[str]) -> dict[str, tuple[str, str]]:
    """`squeue`'s (state, reason) of these jobs (array tasks as `<array>_<i>`; the reason says why a job is pending,
    e.g. `Resources`, `Priority`, `Dependency`, `PartitionTimeLimit`); jobs Slurm forgot are absent."""
    if not job_ids:
        return {}
    # this user's jobs Slurm still remembers (array tasks one per line: -r), not every user's (a long list on a busy
    # cluster, every poll); `-j` with one forgotten id fails whole
    listed = subprocess.run(
        ["squeue", "--me", "-h", "-r", "--states=all", "-o", "%i|%T|%r"], capture_output=True, text=True
    )
    if listed.returncode != 0:
        raise DasdError(f"squeue failed: {listed.stderr.strip()[:300]}")
    wanted = set(job_ids)
    jobs = {}
    for line in listed.stdout.splitlines():
        job_id, _, rest = line.strip().partition("|")
        state, _, reason = rest.partition("|")
        if job_id in wanted:
            jobs[job_id] = (state, reason)
    return jobs


def queue_states(job_ids: list[str]) -> dict[str, str]:
    """`squeue` states of these jobs (`queue_jobs` without the reasons)."""
    return {job_id: state for job_id, (state, _) in queue_jobs(job_ids).items()}


def queue_note(jobs: list[tuple[str, str]]) -> str:
    """What a step's progress line says of its jobs' (state, reason): running, or why it waits — the reason of its
    first pending job, as squeue gives it (a job held by a partition limit says so, not just "pending").

    >>> queue_note([("PENDING", "Dependency"), ("RUNNING", "None")])
    ' (running)'
    >>> queue_note([("PENDING", "PartitionTimeLimit"), ("PENDING", "Dependency")])
    ' (pending: PartitionTimeLimit)'
    >>> queue_note([("COMPLETED", "None")])
    ''
    """
    if any(state == "RUNNING" for state, _ in jobs):
        return " (running)"
    reasons = [reason for state, reason in jobs if state == "PENDING"]
    if reasons:
        return f" (pending: {reasons[0]})" if reasons[0] and reasons[0] != "None" else " (pending)"
    return ""


def _executor(config: ExecutorConfig, folder: Path, name: str, resources: SlurmResources, after: list[str]):
    import submitit

    # submitit's SlurmExecutor, not its AutoExecutor: only there can `wckey` be unset (None drops the line), where
    # submitit otherwise writes `--wckey=submitit`, which a cluster that tracks WCKeys may reject or misbill
    executor = submitit.SlurmExecutor(folder=str(folder / "%j"))
    extra: dict[str, Any] = {"kill-on-invalid-dep": "yes", **resources.sbatch}
    if after:
        extra["dependency"] = "afterok:" + ":".join(after)
    parameters: dict[str, Any] = {
        "job_name": f"dasd-{name}",
        "additional_parameters": extra,
        "nodes": resources.nodes or 1,
        "ntasks_per_node": 1,
        "time": resources.time_min or DEFAULT_TIME_MIN,  # also what submitit tells a time-out from a pre-emption by
        "wckey": None,
    }
    mem = resources.mem_gb
    optional = {
        "gpus_per_node": resources.gpus_per_node,
        "cpus_per_task": resources.cpus_per_task,
        # as submitit's AutoExecutor writes mem_gb (submitit/slurm/slurm.py `_convert_mem`)
        "mem": None if mem is None else f"{int(mem)}GB" if mem == int(mem) else f"{int(mem * 1024)}MB",
        "partition": resources.partition,
        "account": resources.account,
        "array_parallelism": resources.max_parallel,
        "setup": resources.setup,
    }
    parameters.update({key: value for key, value in optional.items() if value is not None})
    executor.update_parameters(**parameters)
    return executor


def submit(
    config: ExecutorConfig, folder: Path, job: StepJob, after: list[str], resources: SlurmResources
) -> Submitted:
    """Submit one step: an array of its unfinished shard tasks and the finalize, or one job."""
    submitted = Submitted(job.name)
    count = resources.tasks or 1
    with _job_free_env():
        if job.stage in SHARDABLE and count > 1:
            shards = [(index, count) for index in range(count)]
            todo = [shard for shard in shards if not task_done(job, shard)]
            submitted.tasks = (count - len(todo), count)
            if todo:
                array = _executor(config, folder, job.name, resources, after)
                jobs = array.map_array(run_shard, [job] * len(todo), todo)
                submitted.jobs += [item.job_id for item in jobs]
                after = [jobs[0].job_id.split("_")[0]]
            # the finalize merges files (bytes moved, nothing parsed: dasd.data.merge): one node, no GPU
            finalize = cpu_only(resources)
            final = _executor(config, folder, job.name, finalize, after).submit(run_step, job, launch_on_this_node)
        else:
            final = _executor(config, folder, job.name, resources, after).submit(run_step, job, launch_on_this_node)
    submitted.jobs.append(final.job_id)
    return submitted


def cpu_only(resources: SlurmResources) -> SlurmResources:
    """The finalize job's resources: one node, the step's time, memory, partition and account, and no GPU (neither
    `gpus_per_node` nor a GPU request among the extra sbatch options).

    >>> finalize = cpu_only(SlurmResources(tasks=8, nodes=2, gpus_per_node=8, sbatch={"gres": "gpu:8", "qos": "hi"}))
    >>> finalize.nodes, finalize.gpus_per_node, finalize.sbatch
    (1, None, {'qos': 'hi'})
    """
    gpu_options = {"gres", "gpus", "gpus-per-node", "gpus_per_node", "gpus-per-task", "gpus_per_task"}
    sbatch = {key: value for key, value in resources.sbatch.items() if key not in gpu_options}
    return resources.model_copy(update={"nodes": 1, "gpus_per_node": None, "sbatch": sbatch})


@contextlib.contextmanager
def _job_free_env():
    """Submit without the SLURM_* variables of a job `dasd run` may itself run in (they would reach the new
    jobs and confuse their srun), but with SLURM_CONF, which says which cluster to talk to (submitit's own
    clean_env drops it too); sbatch's refusal becomes one line."""
    import submitit

    saved = {key: os.environ.pop(key) for key in list(os.environ) if key.startswith("SLURM_") and key != "SLURM_CONF"}
    try:
        yield
    except submitit.core.utils.FailedJobError as exc:
        raise DasdError(f"sbatch refused the job: {' '.join(str(exc).split())[:400]}") from None
    finally:
        os.environ.update(saved)


def log_tail(folder: Path, job_id: str, lines: int = 15) -> str:
    """The last lines of a job's stderr log (submitit's `<id>_<task>_log.err`)."""
    logs = sorted(folder.glob(f"*/{job_id}_*_log.err"))
    if not logs:
        return f"(no log found for job {job_id} under {folder})"
    text = logs[-1].read_text(errors="replace").rstrip().splitlines()
    return f"{logs[-1]}:\n" + "\n".join("    " + line for line in text[-lines:])


def follow(submitted: list[Submitted], jobs: dict[str, StepJob], poll_s: float) -> dict[str, str]:
    """Wait until no job is queued or running, printing each step's progress when it changes; returns
    each submitted step's final Slurm state summary (from squeue, or 'gone' once Slurm forgot it)."""
    all_ids = [job_id for item in submitted for job_id in item.jobs]
    started = time.monotonic()
    last = ""
    while True:
        queued = queue_jobs(all_ids)
        states = {job_id: state for job_id, (state, _) in queued.items()}
        active = [job_id for job_id in all_ids if states.get(job_id) in ACTIVE_STATES]
        finished, parts = 0, []
        for item in submitted:
            job = jobs[item.step]
            if has_ended(job):
                finished += 1
                continue
            text = item.step
            if item.tasks[1] > 1:
                total = item.tasks[1]
                markers = [read_marker(task_marker(job, (index, total))) for index in range(total)]
                finished_now = [m for m in markers if m.get("fingerprint") == job.fingerprint and m["time"] >= item.at]
                done = sum(m.get("fingerprint") == job.fingerprint for m in markers)
                text += f" {done}/{total} tasks"
                elapsed = time.time() - item.at
                if finished_now and done < total:  # the tasks finished so far, at the same pace
                    text += f", ETA ~{elapsed / len(finished_now) * (total - done):.0f} s"
                tokens = sum(m.get("tokens", 0) for m in finished_now)
                if tokens:
                    text += f", {tokens / elapsed:,.0f} tok/s"
            text += queue_note([queued[job_id] for job_id in item.jobs if job_id in queued])
            parts.append(text)
        line = " | ".join([f"{finished}/{len(submitted)} steps done", *parts])
        if line != last:
            print(f"[slurm {time.monotonic() - started:6.0f} s] {line}", file=sys.stderr, flush=True)
            last = line
        if not active:
            return {job_id: states.get(job_id, "gone") for job_id in all_ids}
        time.sleep(poll_s)


def slurm_folder(config: ExecutorConfig, state_dir: Path) -> Path:
    return Path(config.folder) if config.folder else state_dir / "slurm"


def record_jobs(state_dir: Path, submitted: list[Submitted]) -> None:
    """The ids this `dasd run` submitted, so that the next one can tell whether they are still queued."""
    write_json_atomic(state_dir / "slurm" / "jobs.json", {item.step: item.jobs for item in submitted})


def check_no_jobs_left(state_dir: Path) -> None:
    """Refuse to submit while an earlier run's jobs are queued or running: they would write the same files."""
    path = state_dir / "slurm" / "jobs.json"
    earlier = [job_id for ids in read_marker(path).values() for job_id in ids]
    active = sorted(job_id for job_id, state in queue_states(earlier).items() if state in ACTIVE_STATES)
    if active:
        raise DasdError(
            f"jobs of an earlier `dasd run` are still queued or running ({', '.join(active[:8])}"
            f"{' …' if len(active) > 8 else ''}): wait for them (squeue), or scancel them, then rerun"
        )
