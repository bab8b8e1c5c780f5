"""The code's layout rules, checked on the source: stages on top, parts beneath, no cycles.

* no stage module imports another stage (shared code belongs in the parts), except the pipeline
  runner (`run`) and `demo`, which drive other stages through the registry;
* no part imports a stage;
* the import graph of `dasd` has no cycle, counting the imports inside functions too (those load
  heavy dependencies lazily; they are not a licence for two modules to need each other);
* each layer imports only from itself and the layers below it (`LAYERS`, README's "How the code is laid out"):
  every module belongs to one, and a new folder has to be placed before it can be imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "dasd"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path, *, top_level_only: bool) -> set[str]:
    """The dasd modules `path` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [f"{target}.{alias.name}" for alias in node.names]
            found.update(name if _exists(name) else target for name in names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name == "dasd" or name.startswith("dasd.")}


def _exists(module: str) -> bool:
    relative = Path(*module.split(".")[1:])
    return (SRC / relative).with_suffix(".py").exists() or (SRC / relative / "__init__.py").exists()


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in SRC.rglob("*.py")}


# Above the stages: the CLI (the entry point reads the registry) — nothing else outside dasd.stages imports them.
ABOVE_THE_STAGES = ("dasd.cli", "dasd.__main__")


def test_no_stage_imports_another_stage_and_no_part_imports_a_stage():
    modules = _modules()
    # the package counts too: `from .stages import STAGES` (the registry) is an import of the stages
    stage_modules = {name for name in modules if name == "dasd.stages" or name.startswith("dasd.stages.")}
    problems = []
    for name, path in modules.items():
        imported = _imports(path, top_level_only=False) & stage_modules
        if name in ("dasd.stages.run", "dasd.stages.demo", *ABOVE_THE_STAGES):
            continue
        imported.discard(name)
        if name.startswith("dasd.stages."):
            imported.discard("dasd.stages")  # a stage module's own package (its `from . import …`)
        if imported:
            problems.append(f"{name} imports {sorted(imported)}")
    assert not problems, problems


def test_the_rule_sees_the_registry_imported_by_a_part(tmp_path):
    """`from .stages import STAGES` in a part resolves to the package, which the rule above counts."""
    part = tmp_path / "part.py"
    part.write_text("from .stages import STAGES\n")
    original = _module_name
    try:
        globals()["_module_name"] = lambda path: "dasd.part" if path == part else original(path)
        assert _imports(part, top_level_only=False) == {"dasd.stages"}
    finally:
        globals()["_module_name"] = original


def test_the_import_graph_has_no_cycle():
    modules = _modules()
    graph = {
        name: {dep for dep in _imports(path, top_level_only=False) if dep in modules and dep != name}
        for name, path in modules.items()
    }
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return stack[stack.index(dep) :] + [dep]
            if dep not in state:
                cycle = visit(dep)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = visit(module)
            assert cycle is None, " -> ".join(cycle)


# The layers, bottom first: a module imports only from its own layer and those below (top-level and lazy imports alike).
# A module's layer is its folder under dasd/ (or its own name for the modules at the top: the foundation).
LAYERS = (
    ("dasd", "errors", "files", "naming", "progress", "config"),  # the foundation (`dasd` is the package's __init__)
    ("cache",),  # content keys, the cache root
    ("models",),  # loading, assets (tokenizers), identity, tiny models, the demo world
    ("text",),  # rendering, reasoning formats, sentences, token offsets
    ("grading",),  # answers, code grading, the sandbox
    ("data",),  # the records' contract, io, hub, lineage, benchmarks
    ("backends",),  # generation backends and the per-task server launcher
    ("scoring",),  # token scorers, sentence scores
    ("sampling",),  # the generation loop, the probe, mixing, the caches of generations
    ("selection",),  # the filter chain
    ("training",),  # SFT data and the trainer
    ("reporting",),  # metrics, ablation claims, figures, cards
    ("pipeline",),  # dasd run's parts
    ("stages",),  # one module per command, and the registry
    ("cli", "__main__"),  # the entry point
)


def _layer_of(module: str) -> int | None:
    parts = module.split(".")
    group = parts[1] if len(parts) > 1 else "dasd"
    return next((rank for rank, groups in enumerate(LAYERS) if group in groups), None)


def _upward_imports(modules: dict[str, Path]) -> list[str]:
    problems = []
    for name, path in sorted(modules.items()):
        own = _layer_of(name)
        if own is None:
            problems.append(f"{name} is in no layer (tests/test_layout.py LAYERS)")
            continue
        for imported in sorted(_imports(path, top_level_only=False)):
            layer = _layer_of(imported)
            if layer is not None and layer > own:
                problems.append(f"{name} imports {imported}, a layer above it")
    return problems


def test_each_layer_imports_only_the_layers_below():
    assert not _upward_imports(_modules())


def test_the_layer_rule_fails_on_an_upward_import(tmp_path):
    """A part of `data` that imports the pipeline, and a module in a folder no layer names, are both reported."""
    part = tmp_path / "upward.py"
    part.write_text("from ..pipeline.plan import plan\n")
    stray = tmp_path / "stray.py"
    stray.write_text("")
    original = _module_name
    names = {part: "dasd.data.upward", stray: "dasd.newfolder.stray"}
    try:
        globals()["_module_name"] = lambda path: names.get(path) or original(path)
        problems = _upward_imports({"dasd.data.upward": part, "dasd.newfolder.stray": stray})
    finally:
        globals()["_module_name"] = original
    assert problems == [
        "dasd.data.upward imports dasd.pipeline.plan, a layer above it",
        "dasd.newfolder.stray is in no layer (tests/test_layout.py LAYERS)",
    ]


def test_the_examples_in_docstrings_hold():
    """Small pure functions show an example in their docstring; run them (doctest)."""
    import doctest
    import importlib

    with_examples = [name for name, path in _modules().items() if ">>> " in path.read_text(encoding="utf-8")]
    assert with_examples
    for name in with_examples:
        result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
        assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} docstring examples failed"
