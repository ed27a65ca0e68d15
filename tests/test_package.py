"""The package's shape: no module imports another that (directly or not) imports it back."""
from __future__ import annotations

import ast
from pathlib import Path

import cxr


def import_graph() -> dict[str, set[str]]:
    graph = {}
    for path in Path(cxr.__file__).parent.glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                deps.update([node.module.split(".")[0]] if node.module else [a.name for a in node.names])
        graph[path.stem] = deps
    return graph


def test_no_import_cycles():
    graph = import_graph()
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]):
        state[node] = 1
        for dep in graph.get(node, ()):
            assert state.get(dep) != 1, "import cycle: " + " -> ".join(path + [dep])
            if dep not in state:
                visit(dep, path + [dep])
        state[node] = 2

    for module in graph:
        if module not in state:
            visit(module, [module])


def test_metrics_do_not_run_models():
    graph = import_graph()
    assert not graph["metrics"] & {"train", "checkpoints", "evaluate"}
    assert "train" not in graph["checkpoints"] and "train" not in graph["evaluate"]
