"""The one identity of a model, whatever names it: its files' names, sizes and contents.

    model_identity("runs/x/final", None)      # a model folder, .gguf file, asset or Hub snapshot, by content

A model is its files' names, sizes and contents (less the files training writes beside the weights that do not
change what it computes): a copied or re-synced folder with the same weights is the same model, a `touch` changes
nothing, and a changed weight file makes another model. Files are hashed by `dasd.cache.keys.file_sha256` (memoised).
"""

from __future__ import annotations

from pathlib import Path

from ..cache.keys import digest, file_sha256
from ..errors import DasdError

# Files of a model folder that do not change what the model computes: written by training beside the weights
# (the card, dasd's stage record, the pickled training arguments: these name the workdir and the time).
# a trained model's card and its records (`dasd.reporting.cards`: README.md, dasd_evals.json) change without the
# model changing
NOT_MODEL_FILES = ("README.md", "dasd_stage.json", "dasd_evals.json", "training_args.bin", "trainer_state.json")


def model_files(path: Path) -> list[Path]:
    """The files of a model folder that make the model (transformers loads only the top level), name-sorted."""
    return sorted(
        child
        for child in path.iterdir()
        if child.is_file() and not child.name.startswith(".") and child.name not in NOT_MODEL_FILES
    )


def folder_identity(path: Path) -> str:
    """A model folder by its files' names, sizes and contents.

    >>> import os, tempfile; folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "config.json").write_text("{}")
    >>> before = folder_identity(folder); os.utime(folder / "config.json"); before == folder_identity(folder)
    True
    """
    return digest({child.name: [child.stat().st_size, file_sha256(child)] for child in model_files(path)})


def path_identity(path: Path) -> str:
    """What a step's input is: a file by its content, a folder (a model) by `folder_identity`, a missing path by
    name (it exists once an earlier step made it, and that step's fingerprint covers it)."""
    if path.is_dir():
        return folder_identity(path)
    if not path.exists():
        return f"{path}:missing"
    return file_sha256(path)


def model_identity(model: str, revision: str | None) -> str:
    """The content of a model, whatever names it: a folder (`folder_identity`), a `.gguf` file, the `smollm2`
    asset, or a Hub id (its snapshot in the local Hugging Face cache). Raises `DasdError` when there is nothing
    local to read."""
    from .assets import QUICKTOK_ENCODINGS, smollm2_gguf_path

    path = Path(model)
    if model == "smollm2":
        path = smollm2_gguf_path()
    elif not path.exists() and model not in QUICKTOK_ENCODINGS:
        try:
            from huggingface_hub import snapshot_download

            path = Path(snapshot_download(model, revision=revision or "main", local_files_only=True))
        except Exception as exc:  # huggingface_hub raises several types for a model that is not cached
            raise DasdError(f"{model} is not a local model folder or file, nor in the Hugging Face cache") from exc
    if path.is_file():
        return file_sha256(path)
    if path.is_dir():
        return folder_identity(path)
    return f"asset:{model}"  # a tokenizer asset used as a model: dasd builds it the same way everywhere
