"""The package's layering, read from its source (ast): no import cycle between modules or between the top-level
groups, and the lower layers import nothing above them (CONTRIBUTING.md's picture)."""

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "loopformer"

# group -> the loopformer groups it may import (besides itself); only the lower layers are listed
ALLOWED_BELOW = {
    "errors": set(),
    "batch": set(),
    "kernels": {"errors"},
    "model": {"kernels", "batch", "errors"},
    "data": {"batch", "errors", "files", "argtypes", "checkpoint.atomic", "locks"},
    "checkpoint.atomic": set(),
    "locks": set(),
}
THIRD_PARTY_BANNED = {"model": {"lightning", "pytorch_lightning"}, "kernels": {"lightning", "pytorch_lightning"}}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Every module's imports (function-level ones included), as module names."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    child = f"{node.module}.{alias.name}"
                    graph[name].add(child if child in modules else node.module)
            elif isinstance(node, ast.Import):
                graph[name].update(alias.name for alias in node.names)
    return graph


def _group(module: str) -> str:
    """``loopformer.checkpoint.format`` -> ``checkpoint``; the atomic writer is a group of its own (a leaf)."""
    if module.startswith("loopformer.checkpoint.atomic"):
        return "checkpoint.atomic"
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "loopformer"


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        state[node] = 2
        path.pop()
        return []

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return []


def test_no_import_cycle_between_modules():
    graph = {m: {t for t in ts if t.startswith("loopformer")} for m, ts in _imports().items()}
    assert _cycle(graph) == []


def test_no_import_cycle_between_the_top_level_groups():
    groups: dict[str, set[str]] = defaultdict(set)
    for module, targets in _imports().items():
        for target in targets:
            if target.startswith("loopformer") and _group(target) != _group(module):
                groups[_group(module)].add(_group(target))
    assert _cycle(groups) == [], dict(groups)


def test_the_lower_layers_import_nothing_above_them():
    wrong = []
    for module, targets in _imports().items():
        group = _group(module)
        for target in targets:
            if group in ALLOWED_BELOW and target.startswith("loopformer"):
                if _group(target) not in ALLOWED_BELOW[group] | {group}:
                    wrong.append(f"{module} -> {target}")
            if target.split(".")[0] in THIRD_PARTY_BANNED.get(group, ()):
                wrong.append(f"{module} -> {target}")
    assert wrong == []
