"""What `executor: slurm` hands to the cluster, checked by the real consumers without a cluster: the `accelerate
launch` command of a multi-node training job, parsed by the installed accelerate's own launch code (up to the
point where it would start processes), and the sbatch script submitit writes for a step."""

from __future__ import annotations

import argparse
import shutil
import socket
from pathlib import Path

import pytest

from dasd.pipeline import slurm as executors
from dasd.pipeline.config import DEFAULT_TIME_MIN, ExecutorConfig, SlurmResources
from dasd.pipeline.slurm import accelerate_command
from dasd.pipeline.step import StepJob

REPO = Path(__file__).resolve().parents[1]


def _launch(command: list[str], monkeypatch) -> tuple[str, argparse.Namespace, list[str] | None]:
    """Run accelerate's `launch_command` on `command` as far as the launcher it picks: which launcher, the
    arguments it prepared, and for DeepSpeed the external command it would spawn (None: torch.distributed's)."""
    from accelerate.commands import launch
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    picked: list[tuple[str, argparse.Namespace, list[str] | None]] = []

    def deepspeed(args):  # accelerate's deepspeed_launcher needs DeepSpeed installed; it starts with this call
        cmd, _ = prepare_deepspeed_cmd_env(args)
        picked.append(("deepspeed", args, cmd))

    def multi_gpu(args):  # multi_gpu_launcher (FSDP, --multi_gpu) starts with this call
        prepare_multi_gpu_env(args)
        picked.append(("multi_gpu", args, None))

    monkeypatch.setattr(launch, "deepspeed_launcher", deepspeed)
    monkeypatch.setattr(launch, "multi_gpu_launcher", multi_gpu)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # torch's config_from_args would set it for the whole test process
    monkeypatch.chdir(REPO)  # the shipped configs name configs/deepspeed/zero3.json relative to the repository
    assert command[:2] == ["accelerate", "launch"]
    launch.launch_command(launch.launch_command_parser().parse_args(command[2:]))
    assert len(picked) == 1
    return picked[0]


def _torchrun_config(args: argparse.Namespace):
    """The torch.distributed launch config accelerate's launcher would run (its `_filter_args`, then torch's own
    `config_from_args`): nodes, processes per node, this node's rank, the rendezvous endpoint."""
    import torch.distributed.run as distrib_run
    from accelerate.utils.launch import _filter_args

    filtered = _filter_args(
        args,
        distrib_run.get_args_parser(),
        ["--training_script", args.training_script, "--training_script_args", args.training_script_args],
    )
    return distrib_run.config_from_args(filtered)[0]


@pytest.mark.parametrize("node", [0, 1])
def test_multi_node_zero3_is_one_torch_distributed_run(node, monkeypatch, tmp_path):
    """The command dasd runs on each of 2 nodes with the shipped ZeRO-3 config: accelerate takes its standard
    multi-node launcher (torch.distributed, not pdsh without a hostfile, which trains each node alone), with 2
    nodes of 8 processes, this node's rank and node 0 as the rendezvous."""
    config = REPO / "configs" / "accelerate" / "zero3.yaml"
    job = StepJob(
        "train_das",
        "train",
        "dasd.stages.train",
        "TrainConfig",
        {},
        "f",
        tmp_path,
        accelerate=["--config_file", str(config)],
        nodes=2,
    )
    job.gpus_per_node = 8
    with socket.socket() as probe:  # accelerate refuses a busy port on node 0 (as it should)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = accelerate_command(job, tmp_path / "train.yaml", node=node, main_host="127.0.0.1", port=port)
    launcher, args, spawned = _launch(command, monkeypatch)
    assert launcher == "deepspeed" and args.deepspeed_multinode_launcher == "standard"
    assert spawned is None  # pdsh's would be ["deepspeed", "--hostfile", …, "--launcher", "pdsh", …]
    launch = _torchrun_config(args)
    assert (launch.min_nodes, launch.max_nodes, launch.nproc_per_node) == (2, 2, 8)
    assert launch.rdzv_backend == "static" and launch.rdzv_configs["rank"] == node
    assert launch.rdzv_endpoint == f"127.0.0.1:{port}"


def test_the_shipped_zero3_config_alone_selects_the_standard_launcher(monkeypatch):
    """`accelerate launch` run by hand on each node with configs/accelerate/zero3.yaml (no dasd option)."""
    config = str(REPO / "configs" / "accelerate" / "zero3.yaml")
    command = ["accelerate", "launch", "--config_file", config, "--num_machines", "2", "--machine_rank", "1"]
    command += ["--main_process_ip", "127.0.0.1", "--num_processes", "16", "-m", "dasd", "train"]
    launcher, args, spawned = _launch(command, monkeypatch)
    assert (launcher, args.deepspeed_multinode_launcher, spawned) == ("deepspeed", "standard", None)
    assert _torchrun_config(args).rdzv_configs["rank"] == 1


def test_the_launcher_option_leaves_other_distributed_types_alone(monkeypatch, tmp_path):
    """The same command with the FSDP2 config, or with no config (--multi_gpu), still reaches torch.distributed
    with both nodes and this node's rank."""
    for accelerate in (["--config_file", str(REPO / "configs" / "accelerate" / "fsdp2.yaml")], ["--multi_gpu"]):
        job = StepJob(
            "train_das",
            "train",
            "dasd.stages.train",
            "TrainConfig",
            {},
            "f",
            tmp_path,
            accelerate=accelerate,
            nodes=2,
            gpus_per_node=4,
        )
        command = accelerate_command(job, tmp_path / "train.yaml", node=1, main_host="127.0.0.1", port=24242)
        launcher, args, _ = _launch(command, monkeypatch)
        launch = _torchrun_config(args)
        assert launcher == "multi_gpu", accelerate
        assert (launch.min_nodes, launch.nproc_per_node, launch.rdzv_configs["rank"]) == (2, 4, 1), accelerate


def test_each_training_job_has_its_own_rendezvous_port_and_config(monkeypatch, tmp_path):
    """Two training jobs on one node do not both take 29500: the port comes from the job id, so both nodes of a
    job compute the same one and another job another; node 1 reads the config file its own job's node 0 wrote,
    never an earlier job's. submitit's real JobEnvironment reads the Slurm variables; the command is captured
    instead of run."""
    config = {"output_dir": str(tmp_path / "out"), "student": {"model": "x"}}
    job = StepJob(
        "train_das",
        "train",
        "dasd.stages.train",
        "TrainConfig",
        config,
        "f",
        tmp_path,
        accelerate=["--multi_gpu"],
        nodes=2,
        gpus_per_node=8,
    )
    commands: list[list[str]] = []
    monkeypatch.setattr(executors.subprocess, "run", lambda command, check: commands.append(command))
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "gpu[1-2]")
    monkeypatch.setenv("SLURM_NTASKS", "2")
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", "2")
    monkeypatch.setenv("SLURM_LOCALID", "0")
    for job_id, node in (("7001", 0), ("7001", 1), ("7002", 0), ("7002", 1)):
        monkeypatch.setenv("SLURM_JOB_ID", job_id)
        monkeypatch.setenv("SLURM_NODEID", str(node))
        monkeypatch.setenv("SLURM_PROCID", str(node))
        assert executors.launch_on_this_node(job) is (node == 0)
    ports = [command[command.index("--main_process_port") + 1] for command in commands]
    assert ports[0] == ports[1] != ports[2] == ports[3], ports
    assert all(20000 <= int(port) < 32768 for port in ports), ports  # below Linux's ephemeral range
    assert {command[command.index("--main_process_ip") + 1] for command in commands} == {"gpu1"}
    files = [command[-1] for command in commands]
    assert files[0] == files[1] != files[2] == files[3], files


def _script(executor, command: str) -> str:
    """The sbatch script text submitit's SlurmExecutor writes at submission (an AutoExecutor wraps one)."""
    return getattr(executor, "_executor", executor)._make_submission_file_text(command, "uid")


@pytest.mark.skipif(shutil.which("srun") is None, reason="submitit's SlurmExecutor needs srun on PATH (make slurm)")
def test_the_sbatch_script_has_a_generous_time_and_no_wckey(tmp_path):
    """The script submitit would submit for a step without time_min: --time is dasd's 24 h, not submitit's 5
    minutes, and no `--wckey=submitit`; a step's own time_min wins."""
    config = ExecutorConfig.model_validate({"name": "slurm", "steps": {"train": {"time_min": 90}}})
    scripts = {}
    for stage in ("score", "train"):
        executor = executors._executor(config, tmp_path, stage, config.resources(stage, stage), after=["12"])
        scripts[stage] = _script(executor, "python -m submitit.core._submit x")
    assert f"#SBATCH --time={DEFAULT_TIME_MIN}\n" in scripts["score"] and DEFAULT_TIME_MIN >= 600
    assert "#SBATCH --time=90\n" in scripts["train"]
    for script in scripts.values():
        assert "wckey" not in script, script
        assert "#SBATCH --dependency=afterok:12\n" in script and "#SBATCH --kill-on-invalid-dep=yes\n" in script
        assert "#SBATCH --ntasks-per-node=1\n" in script and "#SBATCH --job-name=dasd-" in script


@pytest.mark.skipif(shutil.which("srun") is None, reason="submitit's SlurmExecutor needs srun on PATH (make slurm)")
def test_resources_reach_the_sbatch_script(tmp_path):
    """Every resource field lands in the script as the AutoExecutor wrote it before (memory as submitit converts
    it)."""
    resources = SlurmResources(
        nodes=2, gpus_per_node=8, cpus_per_task=16, mem_gb=1.5, partition="h100", account="proj", max_parallel=3
    )
    resources.setup = ["source /shared/venv/bin/activate"]
    executor = executors._executor(ExecutorConfig(name="slurm"), tmp_path, "train", resources, after=[])
    script = _script(executor, "true")
    for line in (
        "--nodes=2",
        "--gpus-per-node=8",
        "--cpus-per-task=16",
        "--mem=1536MB",
        "--partition=h100",
        "--account=proj",
    ):
        assert f"#SBATCH {line}\n" in script, line
    assert "source /shared/venv/bin/activate" in script and "dependency" not in script
    assert executor.parameters["array_parallelism"] == 3  # written only for arrays (--array=0-N%3)


def test_a_shard_task_with_failures_writes_no_marker_and_the_finalize_asks_for_no_gpu(tmp_path):
    """A score shard whose records fail (no teacher log-probs) fails its task, naming the errors file, and leaves no
    task marker — the rerun resubmits it and it retries them; a shard with nothing of its own to score finishes
    without loading the student (the path is not even a model) and marks itself done. The finalize job that merges
    the shards asks Slurm for one node and no GPU."""
    import json

    from dasd.data.records import in_shard
    from dasd.errors import DasdError
    from dasd.pipeline.step import run_shard, task_done

    ids = [f"r{i}" for i in range(40)]
    mine = [record_id for record_id in ids if in_shard(record_id, (0, 2))]
    records = [
        {"id": record_id, "messages": [{"role": "user", "content": "hi"}], "reasoning": "Some work.", "content": "4"}
        for record_id in mine
    ]
    source = tmp_path / "responses.jsonl"
    source.write_text("".join(json.dumps(record) + "\n" for record in records))
    config = {"input": str(source), "output": str(tmp_path / "score" / "scored.jsonl"), "student": {"model": "nope"}}
    job = StepJob("score", "score", "dasd.stages.score", "ScoreConfig", config, "fp", tmp_path / "state")
    with pytest.raises(DasdError, match=rf"score shard 0/2: {len(mine)} records failed \(see .*scored.shard-0-of-2"):
        run_shard(job, (0, 2))
    assert not task_done(job, (0, 2))
    assert run_shard(job, (1, 2)) == "score shard 1/2 done" and task_done(job, (1, 2))

    finalize = executors.cpu_only(SlurmResources(tasks=2, gpus_per_node=8, sbatch={"gres": "gpu:8"}, mem_gb=64))
    assert (finalize.nodes, finalize.gpus_per_node, finalize.sbatch, finalize.mem_gb) == (1, None, {}, 64)
