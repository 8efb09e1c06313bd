"""Cross-file context: what reaches the engine's prompt from other files, and what not;
real files in a temporary workspace, real grammars."""

from pathlib import Path

from lsp_server import crossfile
from lsp_server.documents import Snapshot
from lsp_server.syntax import parse


def workspace(
    tmp_path: Path, files: dict[str, str]
) -> tuple[Path, crossfile.CrossFile]:
    root = tmp_path / "ws"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    cross = crossfile.CrossFile()
    cross.set_folders([root.as_uri()])
    return root, cross


def context_in(cross, root: Path, name: str, language: str, **kw) -> str:
    """The context of a fill at the end of `name`."""
    text = (root / name).read_text()
    snap = Snapshot((root / name).as_uri(), 1, language, text)
    return cross.context(snap, len(text), parse(language, text), 4000, **kw)


def test_python_imports_bring_the_definitions_of_the_names_used(tmp_path):
    root, cross = workspace(
        tmp_path,
        {
            "pkg/models.py": "import os\n\nclass Invoice:\n    total: float\n\n"
            "def make_invoice(total):\n    return Invoice(total)\n\n"
            "def unused():\n    pass\n",
            "pkg/app.py": "from .models import Invoice, make_invoice\n\n"
            "def run():\n    bill = make_invoice(3)\n    return bill.",
        },
    )
    out = context_in(cross, root, "pkg/app.py", "python")
    assert out.startswith("# pkg/models.py\n")
    assert "def make_invoice(total):" in out and "class Invoice:" in out
    assert "unused" not in out and "import os" not in out  # not imported
    # far from the import, only the imported names used near the cursor count
    filler = "".join(f"step_{i} = {i}\n" for i in range(400))
    (root / "pkg/app.py").write_text(
        "from .models import Invoice, make_invoice\n" + filler + "bill = make_invoice("
    )
    out = context_in(cross, root, "pkg/app.py", "python")
    assert "def make_invoice" in out and "class Invoice:" not in out
    assert context_in(cross, root, "pkg/app.py", "python", sources=["recent"]) == ""


def test_typescript_go_and_rust_find_their_files(tmp_path):
    root, cross = workspace(
        tmp_path,
        {
            "web/user.ts": "export interface User { name: string }\n"
            "export function greet(u: User): string { return u.name; }\n",
            "web/main.ts": "import { greet, User } from './user';\n"
            "const u: User = { name: 'a' };\nconsole.log(greet(",
            "go/shapes/area.go": "package shapes\n\n"
            "func Area(w, h int) int { return w * h }\n",
            "go/shapes/main.go": "package shapes\n\nfunc Total() int {\n\treturn Area(",
            "rs/src/geometry/mod.rs": "pub struct Point { pub x: i32 }\n"
            "pub fn origin() -> Point { Point { x: 0 } }\n",
            "rs/src/main.rs": "mod geometry;\nuse crate::geometry::{origin, Point};\n"
            "fn main() { let p: Point = origin(",
        },
    )
    ts = context_in(cross, root, "web/main.ts", "typescript")
    assert "// web/user.ts" in ts and "export function greet" in ts
    go = context_in(cross, root, "go/shapes/main.go", "go")
    assert "func Area(w, h int) int" in go and "func Total" not in go
    rs = context_in(cross, root, "rs/src/main.rs", "rust")
    assert "pub fn origin() -> Point" in rs and "pub struct Point" in rs


def test_nothing_outside_the_workspace_is_read_or_sent(tmp_path):
    outside = tmp_path / "secret.py"
    outside.write_text("def leaked_helper():\n    return 'password'\n")
    root, cross = workspace(
        tmp_path, {"app.py": "from ..secret import leaked_helper\nleaked_helper("}
    )
    assert "leaked" not in context_in(cross, root, "app.py", "python")
    # an open document outside the workspace is not kept as a recent chunk either
    cross.saw(Snapshot(outside.as_uri(), 1, "python", outside.read_text()), None)
    assert cross.ring == ()
    assert context_in(cross, root, "app.py", "python") == ""
    # and a document outside gets no context at all
    other = Snapshot(outside.as_uri(), 1, "python", "x = ")
    assert cross.context(other, 4, parse("python", "x = "), 4000) == ""


def test_recent_chunks_are_other_files_newest_last_one_per_stretch(tmp_path):
    body = "".join(f"line_{i} = {i}\n" for i in range(200))
    root, cross = workspace(
        tmp_path, {"a.py": body, "b.py": "helper_b = 1\n", "c.py": "x = "}
    )

    def seen(name: str, line: int | None) -> None:
        text = (root / name).read_text()
        snap = Snapshot((root / name).as_uri(), 1, "python", text)
        cross.saw(snap, None if line is None else snap.lines.starts[line])

    seen("a.py", None)
    seen("b.py", None)
    seen("a.py", 3)  # the same stretch of a.py again: moves to the end
    seen("a.py", 150)
    assert [(c.path, c.start) for c in cross.ring] == [
        ("b.py", 0),
        ("a.py", 0),
        ("a.py", 134),
    ]
    out = context_in(cross, root, "c.py", "python", sources=["recent"])
    assert out.index("# b.py") < out.index("# a.py") and "line_150 = 150" in out
    assert "# c.py" not in out  # never the file being filled
    for i in range(crossfile.RING_CHUNKS + 4):
        (root / f"m{i}.py").write_text(f"name_{i} = {i}\n")
        seen(f"m{i}.py", None)
    assert len(cross.ring) == crossfile.RING_CHUNKS and cross.ring[-1].path == "m19.py"


def test_the_budget_keeps_whole_chunks_nearest_the_prefix(tmp_path):
    root, cross = workspace(
        tmp_path,
        {f"f{i}.py": "".join(f"v{i}_{j} = {j}\n" for j in range(30)) for i in range(5)}
        | {"main.py": "x = "},
    )
    for i in range(5):
        text = (root / f"f{i}.py").read_text()
        cross.saw(Snapshot((root / f"f{i}.py").as_uri(), 1, "python", text), None)
    text = "x = "
    snap = Snapshot((root / "main.py").as_uri(), 1, "python", text)
    out = cross.context(snap, 4, parse("python", text), 700)
    assert 0 < len(out) <= 700
    assert "# f4.py" in out and "# f0.py" not in out  # the newest kept
    assert out.count("# f") * len(cross.ring[0].text) < 700 + 200


def test_large_and_binary_files_are_skipped(tmp_path):
    root, cross = workspace(
        tmp_path,
        {"app.py": "from big import huge_helper\nfrom blob import blob_helper\nx = "},
    )
    (root / "big.py").write_text(
        "def huge_helper():\n    pass\n" + "#" * crossfile.MAX_FILE_BYTES
    )
    (root / "blob.py").write_bytes(b"def blob_helper():\n    pass\n\0\0\0")
    (root / "app.py").write_text(
        "from big import huge_helper\nfrom blob import blob_helper\n"
        "huge_helper()\nblob_helper()\n"
    )
    assert context_in(cross, root, "app.py", "python") == ""
