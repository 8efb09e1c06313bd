import pytest

from lsp_server.documents import Snapshot
from lsp_server.syntax import SyntaxTrees, error_count, grammar, parse

SAMPLES = {
    "python": "def f(x):\n    return x\n",
    "javascript": "function f(x) { return x; }\n",
    "typescript": "function f(x: number): number { return x; }\n",
    "typescriptreact": "const A = () => <div>{1}</div>;\n",
    "go": "package main\nfunc f(x int) int { return x }\n",
    "rust": "fn f(x: i32) -> i32 { x }\n",
}


@pytest.mark.parametrize("language", sorted(SAMPLES))
def test_every_shipped_grammar_parses_clean_code(language):
    assert grammar(language) is not None
    assert error_count(parse(language, SAMPLES[language])) == 0


def test_errors_are_counted_and_unknown_languages_have_no_tree():
    assert error_count(parse("python", "def f(:\n")) > 0
    assert parse("zig", "const x = 1;") is None and grammar("zig") is None


def test_incremental_tree_equals_a_fresh_parse():
    trees = SyntaxTrees()
    text = "def f(x):\n    return x\n\nprint(f(1))\n"
    trees.tree(Snapshot("u", 1, "python", text))
    edited = text.replace("return x", "return x + 1 😀")
    tree = trees.tree(Snapshot("u", 2, "python", edited))
    assert str(tree.root_node) == str(parse("python", edited).root_node)
