"""The package's module-level imports form no cycle (config knows no stage, stages know the
config), so each part can be read and tested alone."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {"tfllm": "tfllm", "export": "tfllm_export", "serving": "tfllm_serving"}


def _module_imports() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for folder, package in PACKAGES.items():
        for path in (REPO / folder).rglob("*.py"):
            parts = path.relative_to(REPO / folder).with_suffix("").parts
            name = ".".join((package, *parts)).removesuffix(".__init__")
            deps = set()
            for node in ast.parse(path.read_text(encoding="utf-8")).body:
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    deps.add(node.module)
                elif isinstance(node, ast.Import):
                    deps.update(alias.name for alias in node.names)
            graph[name] = deps
    return {name: {d for d in deps if d in graph} for name, deps in graph.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state and (found := visit(dep, [*path, dep])):
                return found
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node, [node])):
            return found
    return None


def test_module_level_imports_form_no_cycle():
    graph = _module_imports()
    assert "tfllm.config" in graph and "tfllm.data.stages" in graph
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = _module_imports()
    graph["tfllm.config"] = {*graph["tfllm.config"], "tfllm.data.stages"}
    assert _cycle(graph) is not None


def test_config_module_knows_no_stage():
    assert not {d for d in _module_imports()["tfllm.config"] if d != "tfllm.errors"}
