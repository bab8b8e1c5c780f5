"""The embedded demo world, as shipped: questions, a tiny teacher and a weaker student with another tokenizer.

The fitted models ship in the package as small files (`dasd/data/demo_world/`: the model bodies and the
rows of the few dozen tokens the world uses); `world_dir()` restores them, on first use, to ordinary model
folders under `$DASD_CACHE/demo-world-v6/`. This module only loads the world. What the world contains and
how it was fitted is in its builder, `scripts/build_demo_world.py` (a development tool, not part of the
package: `python scripts/build_demo_world.py --export src/dasd/data/demo_world` rebuilds the shipped files
from scratch, 46 minutes on 2 cores); how each build fared is in `benchmarks/RESULTS.md`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..errors import DasdError

WORLD_VERSION = "demo-world-v6"  # the cache folder's name: a new build gets a new version
COMPACT_DIR = "demo_world"  # inside the package's data folder
# The three disjoint question splits (evaluation, dev, training) and the build's report.
WORLD_FILES = ("eval_questions.jsonl", "dev_questions.jsonl", "train_questions.jsonl", "world.json")


def restore_compact(compact: Path, tokenizer: str, out: Path) -> None:
    """Rebuild the full model folder from a compact one (the model body and its closed vocabulary's rows, written
    by `export_compact` in `scripts/build_demo_world.py`): every other row is zero, as fitted."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    from .assets import load_tokenizer
    from .tiny import _stop_ids

    state = load_file(str(compact / "model.safetensors"))
    config = AutoConfig.for_model(**json.loads((compact / "config.json").read_text()))
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    embedding = torch.zeros_like(model.get_input_embeddings().weight)
    embedding[state.pop("dasd.row_ids")] = state.pop("dasd.rows")
    state["model.embed_tokens.weight"] = embedding
    model.load_state_dict(state, strict=False)
    model.tie_weights()
    text_tokenizer = load_tokenizer(tokenizer)
    model.generation_config = GenerationConfig(
        eos_token_id=_stop_ids(text_tokenizer), pad_token_id=text_tokenizer.pad_token_id
    )
    model.save_pretrained(str(out))
    text_tokenizer.save_pretrained(str(out))


def shipped_world() -> Path:
    """The package's folder of the world's small files (`dasd/data/demo_world`), whether or not they are there."""
    from importlib import resources

    return Path(str(resources.files("dasd").joinpath("data", COMPACT_DIR)))


def world_dir() -> Path:
    """The demo world, restored from the small files shipped in the package (seconds) and cached."""
    from .assets import _atomic_build, cache_dir

    shipped = shipped_world()
    if not (shipped / "teacher" / "model.safetensors").exists():
        raise DasdError(
            f"the demo world's files are missing from {shipped}: rebuild them with "
            f"`python scripts/build_demo_world.py --export {shipped}` (46 minutes on 2 cores)"
        )

    def make(root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        for name in WORLD_FILES:
            (root / name).write_bytes((shipped / name).read_bytes())
        restore_compact(shipped / "teacher", "qwen3", root / "teacher")
        restore_compact(shipped / "student", "smollm2", root / "student")

    root = cache_dir() / WORLD_VERSION
    cached = root / "world.json"
    if cached.exists() and cached.read_bytes() != (shipped / "world.json").read_bytes():
        # restored from other shipped files under the same version (a rebuild during development): restore anew
        shutil.rmtree(root)
    return _atomic_build(root, make)
