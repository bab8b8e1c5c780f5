"""Hugging Face Hub data inputs: `hf://datasets/OWNER/NAME[@REVISION][/PATH][?config=C&split=S]`.

    records = read_records("hf://datasets/Alibaba-Apsara/Superior-Reasoning-SFT-gpt-oss-120b?split=train")
    read_records("hf://datasets/me/my-questions@v1.0/data/*.parquet")

Every stage's `input=` takes such a URL beside local files. The repository is fetched with
`huggingface_hub.snapshot_download` — from the local Hugging Face cache, or downloaded when the user is
online — so `HF_HUB_OFFLINE=1`, `HF_HOME`, `HF_TOKEN` and mirrors work as with every HF tool. Which
files: the PATH (a file or a glob inside the repository) when given; else the split's files as the
dataset card's `configs:` lists them (what `datasets.load_dataset` reads); else the Hub's conventions
(`data/{split}-*`, `{split}.jsonl`, …). The files are then read like local ones (JSONL, JSONL.gz,
Parquet, one after another).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs

from ..errors import InputError, hub_where

PREFIX = "hf://datasets/"
DATA_EXTENSIONS = (".parquet", ".jsonl", ".jsonl.gz")


@dataclass(frozen=True)
class HubDataset:
    repo_id: str
    revision: str | None = None
    path: str | None = None  # a file or glob inside the repository
    config: str | None = None
    split: str = "train"


def parse_hub_url(url: str) -> HubDataset:
    """The parts of an `hf://datasets/...` URL.

    >>> parse_hub_url("hf://datasets/org/name")
    HubDataset(repo_id='org/name', revision=None, path=None, config=None, split='train')
    >>> parse_hub_url("hf://datasets/org/name@v1.0/data/*.parquet")
    HubDataset(repo_id='org/name', revision='v1.0', path='data/*.parquet', config=None, split='train')
    >>> parse_hub_url("hf://datasets/org/name?config=logprob&split=test")
    HubDataset(repo_id='org/name', revision=None, path=None, config='logprob', split='test')
    """
    if not url.startswith(PREFIX):
        raise ValueError(f"not a Hub dataset URL: {url}")
    rest, _, query = url[len(PREFIX) :].partition("?")
    parts = rest.split("/")
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise InputError(url, None, None, "a Hub dataset URL is hf://datasets/OWNER/NAME[@REVISION][/PATH]")
    name, _, revision = parts[1].partition("@")
    options = {key: values[-1] for key, values in parse_qs(query).items()}
    unknown = set(options) - {"config", "split"}
    if unknown:
        raise InputError(url, None, None, f"unknown option(s) {sorted(unknown)}: use config= and split=")
    return HubDataset(
        repo_id=f"{parts[0]}/{name}",
        revision=revision or None,
        path="/".join(parts[2:]) or None,
        config=options.get("config"),
        split=options.get("split", "train"),
    )


def _card_data_files(snapshot: Path, config: str | None, split: str) -> list[str] | None:
    """The split's file patterns from the dataset card's `configs:` YAML, or None if it has none."""
    readme = snapshot / "README.md"
    if not readme.exists():
        return None
    from huggingface_hub import DatasetCard

    configs = DatasetCard.load(readme).data.to_dict().get("configs") or []
    if not configs:
        return None
    chosen = None
    for entry in configs:
        if (config is None and (entry.get("default") or len(configs) == 1)) or entry.get("config_name") == config:
            chosen = entry
            break
    if chosen is None and config is None:
        chosen = next((entry for entry in configs if entry.get("config_name") == "default"), None)
    if chosen is None:  # no such config (or no default among several): no files, said by the caller
        return []
    data_files = chosen.get("data_files")
    if isinstance(data_files, str):
        return [data_files]
    patterns: list[str] = []
    for entry in data_files or []:
        if isinstance(entry, str):
            patterns.append(entry)
        elif entry.get("split") == split:
            paths = entry.get("path")
            patterns.extend([paths] if isinstance(paths, str) else paths or [])
    return patterns


def _conventional_files(files: list[str], split: str) -> list[str]:
    """The Hub's naming conventions for a split when the card lists no configs."""
    data = [name for name in files if name.endswith(DATA_EXTENSIONS)]
    for pattern in (f"data/{split}-*", f"data/{split}.*", f"{split}-*", f"{split}.*", f"*/{split}-*", f"*/{split}.*"):
        matched = sorted(name for name in data if fnmatch.fnmatch(name, pattern))
        if matched:
            return matched
    return sorted(data) if split == "train" and len({Path(name).parent for name in data}) <= 1 else []


def _download(spec: HubDataset, url: str, patterns: list[str] | None) -> Path:
    """The repository's snapshot folder, with (at least) the files matching `patterns` (None: all) present."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(
            snapshot_download(spec.repo_id, repo_type="dataset", revision=spec.revision, allow_patterns=patterns)
        )
    except (LocalEntryNotFoundError, RepositoryNotFoundError, HfHubHTTPError, OSError, ValueError) as exc:
        message = f"dataset {spec.repo_id!r} not found {hub_where()}: {exc}".splitlines()[0]
        raise InputError(url, None, None, message) from None


def _conventional_patterns(split: str) -> list[str]:
    """What `_conventional_files` may pick for a split: its names, else (train) any data file.

    >>> _conventional_patterns("test")[:2]
    ['data/test-*', 'data/test.*']
    """
    named = [f"data/{split}-*", f"data/{split}.*", f"{split}-*", f"{split}.*", f"*/{split}-*", f"*/{split}.*"]
    return named + ([f"*{extension}" for extension in DATA_EXTENSIONS] if split == "train" else [])


def hub_data_files(url: str) -> list[Path]:
    """The local files (in the HF cache) that a Hub dataset URL names; downloads them when online.

    Only what is read is downloaded (a released dataset's other configs can be many GB): the PATH's files; else
    the card first, then the chosen config's patterns; else (no configs on the card) the conventional names."""
    spec = parse_hub_url(url)
    if spec.path:
        snapshot = _download(spec, url, [spec.path, "README.md"])
        patterns = [spec.path]
    else:
        snapshot = _download(spec, url, ["README.md"])
        patterns = _card_data_files(snapshot, spec.config, spec.split)
        if patterns is None and spec.config:
            raise InputError(url, None, None, f"the dataset card lists no configs, so no config {spec.config!r}")
        if patterns:
            snapshot = _download(spec, url, [*patterns, "README.md"])
        elif patterns is None:
            snapshot = _download(spec, url, [*_conventional_patterns(spec.split), "README.md"])
    files = sorted(str(p.relative_to(snapshot)) for p in snapshot.rglob("*") if p.is_file())
    if spec.path or patterns:
        chosen = sorted({name for pattern in patterns for name in files if fnmatch.fnmatch(name, pattern)})
    elif patterns is None:
        chosen = _conventional_files(files, spec.split)
    else:
        chosen = []
    if not chosen:
        what = spec.path or f"config {spec.config or 'default'}, split {spec.split}"
        raise InputError(url, None, None, f"no data files for {what} in {spec.repo_id} (files: {files[:8]})")
    return [snapshot / name for name in chosen]
