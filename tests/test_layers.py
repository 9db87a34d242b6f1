"""Import layers: the core imports nothing above it, no two top-level packages import each
other, and the agent's runtime never imports the simulator or the training code.

The graph is read from the source (every `import`, also those inside functions), through
the `edge_agent/` links at the repository root, the same view any tool that follows imports
has.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "edge_agent"
TOP = ("core", "connectors", "models", "rules", "simulator", "daemon")
# Where the agent process starts: everything these reach is the runtime.
RUNTIME_ROOTS = ("edge_agent.daemon.app",)
NOT_RUNTIME = ("edge_agent.simulator", "edge_agent.models.training")


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for top in TOP:
        base = PACKAGE / top
        for path in base.rglob("*.py"):
            rel = path.relative_to(PACKAGE).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(["edge_agent", *parts])] = path
    return found


MODULES = _modules()


def _imports(module: str) -> Iterator[str]:
    """Every edge_agent module `module` imports, resolved to a module that exists."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for imported in names:
            if not imported.startswith("edge_agent."):
                continue
            name = imported
            while name not in MODULES and "." in name:
                name = name.rsplit(".", 1)[0]
            if name in MODULES:
                yield name


GRAPH = {m: set(_imports(m)) for m in MODULES}


def _top(module: str) -> str:
    return module.split(".")[1]


def test_the_graph_is_read() -> None:
    # A guard for the test itself: a broken walk would find no edges and pass everything.
    assert "edge_agent.daemon.app" in MODULES
    assert "edge_agent.core.readings" in GRAPH["edge_agent.daemon.flow.frames"]
    assert sum(len(v) for v in GRAPH.values()) > 100


def test_core_imports_nothing_above_it() -> None:
    bad = sorted(
        f"{m} -> {d}"
        for m, deps in GRAPH.items()
        if _top(m) == "core"
        for d in deps
        if _top(d) != "core"
    )
    assert not bad, "the core imports a layer above it:\n" + "\n".join(bad)


def test_no_two_top_level_packages_import_each_other() -> None:
    edges: dict[tuple[str, str], str] = {}
    for m, deps in GRAPH.items():
        for d in deps:
            if _top(m) != _top(d):
                edges.setdefault((_top(m), _top(d)), f"{m} -> {d}")
    mutual = sorted(
        f"{a} <-> {b}: {edges[a, b]}; {edges[b, a]}" for a, b in edges if (b, a) in edges and a < b
    )
    assert not mutual, "\n".join(mutual)


def test_plugins_do_not_import_the_agent() -> None:
    bad = sorted(
        f"{m} -> {d}"
        for m, deps in GRAPH.items()
        if _top(m) in ("connectors", "models", "rules", "simulator")
        for d in deps
        if _top(d) == "daemon"
    )
    assert not bad, "\n".join(bad)


def _reach(roots: tuple[str, ...]) -> dict[str, str]:
    """Every module reachable from `roots`, with the module that first imported it."""
    seen: dict[str, str] = dict.fromkeys(roots, "")
    todo = list(roots)
    while todo:
        m = todo.pop()
        for d in GRAPH[m]:
            if d not in seen:
                seen[d] = m
                todo.append(d)
    return seen


def test_the_runtime_imports_no_simulator_and_no_training() -> None:
    reached = _reach(RUNTIME_ROOTS)
    bad = sorted(
        f"{m} (imported by {by})"
        for m, by in reached.items()
        if any(m == n or m.startswith(n + ".") for n in NOT_RUNTIME)
    )
    assert not bad, "the agent's runtime imports:\n" + "\n".join(bad)
    # The runtime still reaches every stage of the flow.
    for stage in ("connectors.mqtt", "daemon.flow.frames", "models.scorer", "rules.engine"):
        assert f"edge_agent.{stage}" in reached
