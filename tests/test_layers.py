"""The code's layers, one way down, read from its imports with `ast`.

Bottom to top: `core` (the fill) and `data` (corpus, holes), `model`, `engine`, the
package's public names, `backends`, `tools`, `training`, `evals`, the CLI and
`python -m`; then the language server, then its tools. A module imports only from its
own folder or from a layer below; no import cycle anywhere, function-level imports
included. The engine knows nothing of editors: no pygls or lsprotocol, and tree-sitter
only in the one module that holds the grammars.
"""

from __future__ import annotations

import ast
from pathlib import Path

import infill_engine
import lsp_server

LAYERS = [
    ("infill_engine.core", "infill_engine.data"),
    ("infill_engine.model",),
    ("infill_engine.engine",),
    ("infill_engine",),  # the package's public names (__init__)
    ("infill_engine.backends",),
    ("infill_engine.tools",),
    ("infill_engine.training",),
    ("infill_engine.evals",),
    ("infill_engine.cli",),
    ("infill_engine.__main__",),
    ("lsp_server",),
    ("lsp_server.tools",),
]
EDITOR_ROOTS = {"pygls", "lsprotocol", "lsp_server"}
GRAMMARS = "infill_engine.tools.grammars"


def modules(*packages: object) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the packages."""
    found = {}
    for package in packages:
        root = Path(package.__file__).parent  # type: ignore[attr-defined]
        for path in root.rglob("*.py"):
            parts = path.relative_to(root.parent).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def imports(source: str, known: set[str]) -> set[str]:
    """What a module's source imports: modules of `known` where the name is one (a
    `from pkg import submodule` names the submodule), else the top-level name."""
    out = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                out.add(name if name in known else node.module)
    return out


def layer(module: str) -> tuple[int, str]:
    """(rank, layer name) of a module: the longest layer prefix that holds it."""
    best = (-1, "")
    for rank, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > len(
                best[1]
            ):
                best = (rank, name)
    return best


def wrong_way(graph: dict[str, set[str]]) -> list[str]:
    """Imports that point up a layer or sideways into another folder of the same one."""
    bad = []
    for source, targets in graph.items():
        rank, home = layer(source)
        for target in targets:
            if target not in graph:
                continue
            other, there = layer(target)
            if there != home and other >= rank:
                bad.append(f"{source} -> {target}")
    return sorted(bad)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Groups of modules that import each other, directly or around (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def project_graph() -> dict[str, set[str]]:
    files = modules(infill_engine, lsp_server)
    known = set(files)
    graph = {}
    for name, path in files.items():
        targets = imports(path.read_text(encoding="utf-8"), known)
        # A package's submodule imports its package's __init__ implicitly; that
        # is not a dependency the code chose.
        graph[name] = {t for t in targets if t != name}
    return graph


def test_every_module_has_a_layer():
    graph = project_graph()
    assert len(graph) > 40
    assert [m for m in graph if layer(m)[0] < 0] == []


def test_imports_point_down_only():
    assert wrong_way(project_graph()) == []


def test_no_import_cycle():
    assert cycles(project_graph()) == []


def test_engine_imports_nothing_of_editors():
    graph = project_graph()
    offenders = {}
    for module, targets in graph.items():
        if not module.startswith("infill_engine"):
            continue
        roots = {t.split(".")[0] for t in targets}
        bad = roots & EDITOR_ROOTS
        if "tree_sitter" in roots and module != GRAMMARS:
            bad.add("tree_sitter")
        if bad:
            offenders[module] = sorted(bad)
    assert offenders == {}


def test_the_checks_can_fail():
    """An upward import, a sideways one, a cycle and an editor import are each seen."""
    graph = project_graph()
    graph["infill_engine.core.loop"] = graph["infill_engine.core.loop"] | {
        "infill_engine.engine"
    }
    graph["infill_engine.data.holes"] = {"infill_engine.core.spans"}
    assert wrong_way(graph) == [
        "infill_engine.core.loop -> infill_engine.engine",
        "infill_engine.data.holes -> infill_engine.core.spans",
    ]
    assert ["infill_engine.core.loop", "infill_engine.engine"] in [
        [m for m in group if m in ("infill_engine.core.loop", "infill_engine.engine")]
        for group in cycles(graph)
    ]
    known = set(graph)
    assert imports("import pygls.server\nfrom tree_sitter import Parser\n", known) == {
        "pygls.server",
        "tree_sitter",
    }
    assert imports("from infill_engine.model import loader\n", known) == {
        "infill_engine.model.loader"
    }
