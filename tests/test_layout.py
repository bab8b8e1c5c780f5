"""The code's layout rules, checked on the source: stages on top, parts beneath, no cycles.

* no stage module imports another stage (shared code belongs in the parts), except the pipeline
  runner (`run`) and `demo`, which drive other stages through the registry;
* no part imports a stage;
* the import graph of `dasd` has no cycle, counting the imports inside functions too (those load
  heavy dependencies lazily; they are not a licence for two modules to need each other).
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


def test_the_examples_in_docstrings_hold():
    """Small pure functions show an example in their docstring; run them (doctest)."""
    import doctest
    import importlib

    with_examples = [name for name, path in _modules().items() if ">>> " in path.read_text(encoding="utf-8")]
    assert with_examples
    for name in with_examples:
        result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
        assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} docstring examples failed"
