"""The embedded demo worlds, as shipped: questions, a tiny teacher and a weaker student with another tokenizer.

The fitted models ship in the package as small files (`dasd/data/demo_world/`: the model bodies and the
rows of the few dozen tokens the world uses); `world_dir()` restores them, on first use, to ordinary model
folders under `$DASD_CACHE/demo-world-v6/`. `world_dir("v7")` and `world_dir("v7-twin")` restore DAS's world and
its twin (`dasd/data/demo_world_v7/`: one teacher, the splits, and two students — in v7 the teacher's "Negative totals
are allowed." is a teacher sentence, in the twin a shared one). This module only loads the worlds. What
a world contains and how it was fitted is in the builder, `scripts/build_demo_world.py` (a development tool, not part
of the package: `python scripts/build_demo_world.py --export src/dasd/data/demo_world` rebuilds v6's shipped files
from scratch, 46 minutes on 2 cores; `--world v7` builds v7 and its twin); how each build fared is in
`benchmarks/RESULTS.md`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..errors import DasdError

WORLD_VERSION = "demo-world-v6"  # the cache folder's name: a new build gets a new version
COMPACT_DIR = "demo_world"  # inside the package's data folder
# Each world: (cache folder's name, the package's data folder, the student's compact folder in it).
WORLDS = {
    "v6": (WORLD_VERSION, COMPACT_DIR, "student"),
    "v7": ("demo-world-v7", "demo_world_v7", "student"),
    "v7-twin": ("demo-world-v7-twin", "demo_world_v7", "twin"),
}
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


def shipped_world(world: str = "v6") -> Path:
    """The package's folder of a world's small files (`dasd/data/demo_world` for v6), whether or not they are there."""
    from importlib import resources

    return Path(str(resources.files("dasd").joinpath("data", WORLDS[world][1])))


def world_skill_sentences(world: Path) -> list[str]:
    """The world's own labels of the skill (regular expressions over a sentence's text; v7 and its twin), for the
    `oracle` selection; empty for a world without them (v6)."""
    return list(json.loads((world / "world.json").read_text()).get("skill_sentences", []))


def world_dir(world: str = "v6") -> Path:
    """A demo world (`WORLDS`), restored from the small files shipped in the package (seconds) and cached."""
    from .assets import _atomic_build, cache_dir

    if world not in WORLDS:
        raise DasdError(f"no demo world {world!r} (there are: {', '.join(WORLDS)})")
    version, _, student = WORLDS[world]
    shipped = shipped_world(world)
    if not (shipped / "teacher" / "model.safetensors").exists():
        extra = "" if world == "v6" else " --world v7"
        raise DasdError(
            f"the demo world's files are missing from {shipped}: rebuild them with "
            f"`python scripts/build_demo_world.py{extra} --export {shipped}` (46 minutes on 2 cores)"
        )

    def make(root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        for name in WORLD_FILES:
            (root / name).write_bytes((shipped / name).read_bytes())
        restore_compact(shipped / "teacher", "qwen3", root / "teacher")
        restore_compact(shipped / student, "smollm2", root / "student")

    root = cache_dir() / version
    cached = root / "world.json"
    if cached.exists() and cached.read_bytes() != (shipped / "world.json").read_bytes():
        # restored from other shipped files under the same version (a rebuild during development): restore anew
        shutil.rmtree(root)
    return _atomic_build(root, make)
