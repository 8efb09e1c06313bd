"""The engine must not depend on editors: no LSP, pygls, lsprotocol or tree-sitter."""

import ast
from pathlib import Path

import infill_engine

FORBIDDEN = {"pygls", "lsprotocol", "tree_sitter", "lsp_server"}
# The one exception: the held-out set in other languages checks that a fill parses
# with tree-sitter, as the server does. It is an evaluation tool; no fill imports it.
ALLOWED = {"evals/polyglot.py": {"tree_sitter"}}


def imported_roots(source: str) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_engine_imports_nothing_of_editors():
    root = Path(infill_engine.__file__).parent
    files = sorted(root.rglob("*.py"))
    assert len(files) > 5
    offenders = {
        str(f.relative_to(root)): sorted(
            imported_roots(f.read_text())
            & FORBIDDEN - ALLOWED.get(str(f.relative_to(root)), set())
        )
        for f in files
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_detector_sees_forbidden_imports():
    assert imported_roots("import pygls.server\nfrom tree_sitter import Parser\n") >= {
        "pygls",
        "tree_sitter",
    }
