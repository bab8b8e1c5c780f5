"""`dasd push`: publish a dataset or a trained model on the Hugging Face Hub, with a card that carries its lineage.

    dasd push runs/x/select/das.jsonl repo_id=me/gpt-oss-das-selected private=true
    dasd push runs/x/train/das/high_temp/final repo_id=me/qwen3-4b-dasd eval=[runs/x/eval/high_temp]
    dasd push runs/x/sft/das/sft.jsonl repo_id=me/sft dry_run=true     # write the folder, list the files, stop

A record file (responses, scored, selected, filtered, SFT, mixed — JSONL or Parquet) becomes a Hugging Face
dataset folder beside it (`<name>.hf/`: `data/train-*.parquet` + `README.md`, `dasd.reporting.cards.export_dataset`);
a folder that already is one is pushed as it is; a trained model folder (`…/<stage>/final`) gets its model
card (`dasd.reporting.cards.write_model_card`: base model, data lineage, stages and hyper-parameters, the eval table of
the `eval` folders given). Then `huggingface_hub` creates the repository (`exist_ok`) and uploads: one
commit of the listed files, or — above 1,000 files or 5 GB — `upload_folder`, which commits in batches and
resumes where it stopped. Credentials are huggingface_hub's own (`hf auth login` or `HF_TOKEN`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from ..config import ADDED, StageConfig
from ..errors import ConfigError, DasdError, InputError
from ..naming import STAGE_MARKER

LARGE_FILES = 1_000
LARGE_BYTES = 5 * 2**30


class PushConfig(StageConfig):
    path: str = Field(
        ..., description="what to publish: a record file (JSONL/Parquet), a dataset folder, or a model folder"
    )
    repo_id: str = Field(..., description="the Hub repository, OWNER/NAME")
    repo_type: Literal["auto", "dataset", "model"] = Field(
        "auto", description="auto: model for a folder with config.json, else dataset"
    )
    private: bool = Field(False, description="create the repository private (an existing one keeps its visibility)")
    revision: str | None = Field(None, description="branch to commit to (default: main)")
    commit_message: str | None = Field(None, description="default: 'dasd push <path>'")
    license: str = Field("other", description="the card's licence field (the teacher's and data's terms apply)")
    eval: list[str] = Field(
        default_factory=list, description="model: `dasd eval` output folders whose avg@k ± s.e. go in the card"
    )
    folder: str | None = Field(
        None, description="record file: where to write its dataset folder (default: beside it, <name>.hf)"
    )
    rows_per_shard: int = Field(50_000, ge=1, description="record file: rows per Parquet shard of the dataset folder")
    bytes_per_shard: int = Field(
        512 << 20,
        ge=1 << 20,
        description="record file: a Parquet shard is closed once this many bytes of rows (estimated, uncompressed) "
        "are in it; memory holds one batch of at most 64 MiB of rows, whatever the shard size",
        json_schema_extra=ADDED,
    )
    dry_run: bool = Field(
        False, description="write the folder and its card, print the files the commit would add, upload nothing"
    )


def _dataset_folder(path: Path) -> bool:
    return path.is_dir() and (path / "README.md").exists() and any((path / "data").glob("*.parquet"))


def plan_operations(folder: Path) -> list:
    """One `CommitOperationAdd` per file of the folder (hidden files and caches left out)."""
    from huggingface_hub import CommitOperationAdd

    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    return [CommitOperationAdd(path_in_repo=str(p.relative_to(folder)), path_or_fileobj=str(p)) for p in files]


def run(config: PushConfig) -> dict[str, Any]:
    from ..reporting.cards import export_dataset, write_model_card

    source = Path(config.path)
    if not source.exists():
        raise InputError(config.path, None, None, "not found")
    if "/" not in config.repo_id or config.repo_id.count("/") != 1:
        raise ConfigError(f"repo_id={config.repo_id!r}: expected OWNER/NAME")
    is_model = source.is_dir() and (source / "config.json").exists()
    repo_type = config.repo_type if config.repo_type != "auto" else "model" if is_model else "dataset"
    if repo_type == "model":
        if not is_model:
            raise InputError(config.path, None, None, "not a model folder (no config.json)")
        if (source / STAGE_MARKER).exists():
            write_model_card(source, evals=config.eval, license=config.license)
        folder = source
    elif _dataset_folder(source):
        folder = source
    elif source.is_dir() and not any(source.glob("part-*.parquet")):
        raise InputError(config.path, None, None, "a folder that is neither a model, a dataset folder nor dasd Parquet")
    else:
        stem = source.name.split(".")[0] if source.is_file() else source.name
        folder = Path(config.folder) if config.folder else source.with_name(f"{stem}.hf")
        export_dataset(
            source,
            folder,
            rows_per_shard=config.rows_per_shard,
            bytes_per_shard=config.bytes_per_shard,
            license=config.license,
        )
    operations = plan_operations(folder)
    total = sum(Path(op.path_or_fileobj).stat().st_size for op in operations)
    summary: dict[str, Any] = {
        "stage": "push",
        "repo_id": config.repo_id,
        "repo_type": repo_type,
        "folder": str(folder),
        "files": [op.path_in_repo for op in operations],
        "bytes": total,
        "uploaded": False,
    }
    lines = [
        f"dasd push -> {repo_type} {config.repo_id}: {len(operations)} files, {total / 2**20:.1f} MiB from {folder}"
    ]
    lines += [f"  {op.path_in_repo}" for op in operations[:20]]
    if len(operations) > 20:
        lines.append(f"  … and {len(operations) - 20} more")
    if config.dry_run:
        print("\n".join(lines + ["dry run: nothing uploaded"]), file=sys.stdout, flush=True)
        return summary
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi()
    message = config.commit_message or f"dasd push {config.path}"
    try:
        url = api.create_repo(config.repo_id, repo_type=repo_type, private=config.private, exist_ok=True)
        if len(operations) > LARGE_FILES or total > LARGE_BYTES:  # batched commits, resumable
            commit = api.upload_folder(
                repo_id=config.repo_id,
                folder_path=str(folder),
                repo_type=repo_type,
                revision=config.revision,
                commit_message=message,
                ignore_patterns=[".*", "**/.*"],
            )
        else:
            commit = api.create_commit(
                config.repo_id, operations, commit_message=message, repo_type=repo_type, revision=config.revision
            )
    except HfHubHTTPError as exc:
        raise DasdError(f"push to {config.repo_id} failed: {str(exc).splitlines()[0]}") from None
    summary.update(uploaded=True, url=str(url), commit=getattr(commit, "oid", None) or str(commit))
    print("\n".join(lines + [f"uploaded: {url}"]), file=sys.stdout, flush=True)
    return summary
