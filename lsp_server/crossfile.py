"""Context from other files of the workspace, read ahead of the file's own prefix.

Two sources, each a setting (`crossFileSources`):

- `recent`: chunks of the documents the user opened or edited lately, other than the
  one being filled: `CHUNK_LINES` lines around the edit (the top of a file just opened),
  at most `RING_CHUNKS` of them, one per stretch of a file, the newest last.
- `imports`: the definitions of the names the file imports from files of the
  workspace (Python `from .models import User`, TS/JS `import { User } from './user'`,
  Rust `use crate::models::User`), and for Go the top-level declarations of the other
  files of its package whose names the file uses. Found with tree-sitter; a file is
  read once per change on disk (an open document is used as the editor has it).

Nothing outside the workspace folders is read or sent, neither from disk nor from open
documents; a file over `MAX_FILE_BYTES` or one that is not text is skipped. The chunks
go to the engine as `InfillRequest.context`, each under a comment naming its path: the
recent chunks first (oldest first), then the definitions, nearest the prefix. The
engine keeps the context's end within `crossFileTokens` and the prefix fills the rest
of its prompt. While the user types in one file none of this changes, so the prompt's
start stays put and its prefill is reused from one keystroke to the next.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import tree_sitter as ts

from lsp_server import syntax
from lsp_server.documents import Snapshot

log = logging.getLogger(__name__)

CHUNK_LINES = 32
RING_CHUNKS = 16
MAX_FILE_BYTES = 1_000_000
# A definition goes in with at most this many of its lines.
DEFINITION_LINES = 12
# Names are looked for in this much text around the cursor.
NEAR_CHARS = 3000
SOURCES = ("recent", "imports")

_EXTENSIONS = {
    "python": (".py",),
    "typescript": (".ts", ".tsx", ".d.ts", ".js"),
    "typescriptreact": (".tsx", ".ts", ".js"),
    "javascript": (".js", ".mjs", ".cjs", ".ts"),
    "javascriptreact": (".jsx", ".js", ".tsx", ".ts"),
    "go": (".go",),
    "rust": (".rs",),
}
_LANGUAGE_OF = {".py": "python", ".ts": "typescript", ".tsx": "typescriptreact"}
_LANGUAGE_OF |= {".js": "javascript", ".mjs": "javascript", ".cjs": "javascript"}
_LANGUAGE_OF |= {".jsx": "javascriptreact", ".go": "go", ".rs": "rust"}
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Chunk:
    """Lines [start, start + n) of a workspace file, `path` relative to its folder."""

    path: str
    start: int
    text: str


def path_of(uri: str) -> Path | None:
    """The local path of a `file:` uri, or None."""
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        return None
    return Path(unquote(parsed.path))


class CrossFile:
    """The server's cross-file context: the recent chunks, the workspace folders and
    the definitions read from files (cached per file and change)."""

    def __init__(self) -> None:
        self.folders: tuple[Path, ...] = ()
        self.ring: tuple[Chunk, ...] = ()  # oldest first; replaced whole, never edited
        self._definitions: dict[Path, tuple[tuple[int, int], list[Definition]]] = {}

    def set_folders(self, uris: Iterable[str]) -> None:
        """The workspace folders, from their uris; nothing outside them is read."""
        folders = []
        for uri in uris:
            path = path_of(uri)
            if path is not None:
                folders.append(path.resolve())
        self.folders = tuple(folders)

    def relative(self, path: Path) -> str | None:
        """`path` relative to the workspace folder it is in, or None if in none."""
        try:
            resolved = path.resolve()
        except OSError:
            return None
        for folder in self.folders:
            if resolved.is_relative_to(folder):
                return resolved.relative_to(folder).as_posix()
        return None

    def saw(self, snap: Snapshot, offset: int | None) -> None:
        """Keep the chunk of `snap` around `offset` (its top if None) as the newest,
        dropping older chunks of the same stretch of that file and the oldest past
        `RING_CHUNKS`. Documents outside the workspace folders are not kept."""
        path = path_of(snap.uri)
        name = None if path is None else self.relative(path)
        if name is None or len(snap.text) > MAX_FILE_BYTES:
            return
        lines = snap.text.split("\n")
        line = 0 if offset is None else snap.lines.line_of(offset)
        start = max(0, min(line - CHUNK_LINES // 2, len(lines) - CHUNK_LINES))
        text = "\n".join(lines[start : start + CHUNK_LINES]).strip("\n")
        if not text.strip():
            return
        kept = [
            c
            for c in self.ring
            if c.path != name or abs(c.start - start) >= CHUNK_LINES // 2
        ]
        self.ring = (*kept, Chunk(name, start, text))[-RING_CHUNKS:]

    def context(
        self,
        snap: Snapshot,
        offset: int,
        tree: ts.Tree | None,
        budget_chars: int,
        sources: Sequence[str] = SOURCES,
        open_text: dict[Path, str] | None = None,
    ) -> str:
        """The context text for a fill in `snap` at `offset`: chunks under a comment
        header each, at most `budget_chars` characters (whole chunks, the ones
        furthest from the prefix dropped first); '' for a document outside the
        workspace. `open_text`: open documents' texts by path, used instead of disk."""
        path = path_of(snap.uri)
        name = None if path is None else self.relative(path)
        if name is None or budget_chars <= 0:
            return ""
        comment = syntax.line_comment(snap.language_id)
        # (header, texts) nearest the prefix last: recent chunks oldest first, then
        # the definitions by file
        parts: list[tuple[str, list[str]]] = []
        if "recent" in sources:
            parts += [(c.path, [c.text]) for c in self.ring if c.path != name]
        if "imports" in sources and tree is not None and path is not None:
            near = snap.text[max(0, offset - NEAR_CHARS) : offset + NEAR_CHARS // 3]
            used = set(_WORD.findall(near))
            found = self.definitions_for(snap, path, tree, used, open_text or {})
            by_file: dict[str, list[str]] = {}
            for where, definition in found:
                by_file.setdefault(where, []).append(definition.text)
            parts += sorted(by_file.items())
        kept: list[str] = []
        left = budget_chars
        for where, texts in reversed(parts):  # nearest the prefix first
            header = f"{comment} {where}\n"
            body: list[str] = []
            for text in texts:  # a file's definitions as far as they fit
                if len(header) + sum(len(b) for b in body) + len(text) + 1 > left:
                    break
                body.append(text + "\n")
            if not body:
                break
            kept.append(header + "".join(body))
            left -= len(kept[-1])
        return "".join(reversed(kept))

    def definitions_for(
        self,
        snap: Snapshot,
        path: Path,
        tree: ts.Tree,
        used: set[str],
        open_text: dict[Path, str],
    ) -> list[tuple[str, Definition]]:
        """(relative path, definition) of the names near the cursor that the file
        takes from other workspace files, in the order the file imports them."""
        out: list[tuple[str, Definition]] = []
        seen: set[tuple[str, str]] = set()
        for target, names in imports_of(snap.language_id, snap.text, tree, path):
            where = self.relative(target)
            if where is None or target.resolve() == path.resolve():
                continue
            wanted = used if names is None else (set(names) & used)
            for definition in self._read(target, open_text):
                key = (where, definition.name)
                if definition.name in wanted and key not in seen:
                    seen.add(key)
                    out.append((where, definition))
        return out

    def _read(self, target: Path, open_text: dict[Path, str]) -> list[Definition]:
        """The top-level definitions of a workspace file, cached until it changes."""
        language = _LANGUAGE_OF.get(target.suffix)
        if language is None:
            return []
        text = open_text.get(target)
        if text is not None:
            return definitions(language, text)
        try:
            stat = target.stat()
        except OSError:
            return []
        stamp = (stat.st_mtime_ns, stat.st_size)
        cached = self._definitions.get(target)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        found: list[Definition] = []
        if stat.st_size <= MAX_FILE_BYTES:
            data = target.read_bytes()
            if b"\0" not in data[:8192]:
                try:
                    found = definitions(language, data.decode("utf-8"))
                except UnicodeDecodeError:
                    found = []
        self._definitions[target] = (stamp, found)
        return found


@dataclass(frozen=True)
class Definition:
    """A top-level definition: its name and its first `DEFINITION_LINES` lines."""

    name: str
    text: str


# Node types that define a name at a file's top level, per grammar family.
_DEFINING = {
    "function_definition",
    "class_definition",
    "decorated_definition",
    "function_declaration",
    "class_declaration",
    "interface_declaration",
    "type_alias_declaration",
    "enum_declaration",
    "lexical_declaration",
    "variable_declaration",
    "export_statement",
    "method_declaration",
    "type_declaration",
    "const_declaration",
    "var_declaration",
    "function_item",
    "struct_item",
    "enum_item",
    "trait_item",
    "type_item",
    "const_item",
    "static_item",
    "impl_item",
    "expression_statement",
}


def definitions(language_id: str, text: str) -> list[Definition]:
    """The top-level definitions of a file's text (functions, classes, types,
    constants), each with its name and first lines."""
    tree = syntax.parse(language_id, text)
    if tree is None:
        return []
    out = []
    for node in tree.root_node.children:
        if node.type not in _DEFINING:
            continue
        for name in _names(node):
            body = (node.text or b"").decode("utf-8", "replace").split("\n")
            out.append(Definition(name, "\n".join(body[:DEFINITION_LINES])))
    return out


def _names(node: ts.Node) -> list[str]:
    """The names a top-level node defines."""
    if node.type in ("decorated_definition", "export_statement"):
        inner = node.child_by_field_name("definition") or node.child_by_field_name(
            "declaration"
        )
        return _names(inner) if inner is not None else []
    if node.type == "impl_item":
        kind = node.child_by_field_name("type")
        return [_text(kind)] if kind is not None else []
    if node.type == "expression_statement":  # Python: NAME = ...
        first = node.children[0] if node.children else None
        if first is not None and first.type == "assignment":
            left = first.child_by_field_name("left")
            if left is not None and left.type == "identifier":
                return [_text(left)]
        return []
    name = node.child_by_field_name("name")
    if name is not None:
        return [_text(name)]
    names = []  # declarations holding specs or declarators: Go's type/const/var, TS's
    for child in node.named_children:
        inner = child.child_by_field_name("name")
        if inner is not None:
            names.append(_text(inner))
    return names


def _text(node: ts.Node) -> str:
    return (node.text or b"").decode("utf-8", "replace")


def imports_of(
    language_id: str, text: str, tree: ts.Tree, path: Path
) -> list[tuple[Path, list[str] | None]]:
    """The workspace files a file takes names from, with those names (None: any name
    used, as for a whole module or a Go package); candidates may not exist."""
    language = _LANGUAGE_OF.get(path.suffix, language_id)
    if language == "python":
        return _python_imports(tree, path)
    if language in ("typescript", "typescriptreact", "javascript", "javascriptreact"):
        return _script_imports(tree, path)
    if language == "go":
        return [(sibling, None) for sibling in sorted(path.parent.glob("*.go"))]
    if language == "rust":
        return _rust_imports(tree, path)
    return []


def _python_imports(tree: ts.Tree, path: Path) -> list[tuple[Path, list[str] | None]]:
    out: list[tuple[Path, list[str] | None]] = []
    for node in tree.root_node.children:
        if node.type == "import_from_statement":
            module = node.child_by_field_name("module_name")
            if module is None:
                continue
            names = [
                _text(n.child_by_field_name("name") or n)
                for n in node.children_by_field_name("name")
            ]
            for target in _python_module(_text(module), path):
                out.append((target, names))
        elif node.type == "import_statement":
            for child in node.children_by_field_name("name"):
                dotted = child.child_by_field_name("name") or child
                for target in _python_module(_text(dotted), path):
                    out.append((target, None))
    return out


def _python_module(module: str, path: Path) -> list[Path]:
    """Where a module may live: relative to the file for `.x`, else from the file's
    folder and each folder above it."""
    dots = len(module) - len(module.lstrip("."))
    parts = [p for p in module.lstrip(".").split(".") if p]
    if dots:
        base = path.parent
        for _ in range(dots - 1):
            base = base.parent
        roots = [base]
    else:
        roots = [path.parent, *path.parent.parents][:6]
    out = []
    for root in roots:
        where = root.joinpath(*parts) if parts else root
        for candidate in (where.with_suffix(".py"), where / "__init__.py"):
            if candidate.is_file():
                out.append(candidate)
                return out
    return out


def _script_imports(tree: ts.Tree, path: Path) -> list[tuple[Path, list[str] | None]]:
    out: list[tuple[Path, list[str] | None]] = []
    for node in tree.root_node.children:
        if node.type not in ("import_statement", "export_statement"):
            continue
        source = node.child_by_field_name("source")
        if source is None:
            continue
        spec = _text(source).strip("'\"`")
        if not spec.startswith("."):
            continue  # a package, not a workspace file
        names = [
            _text(n) for n in _walk(node) if n.type in ("identifier", "type_identifier")
        ]
        base = (path.parent / spec).resolve()
        for candidate in _script_candidates(base):
            if candidate.is_file():
                out.append((candidate, names))
                break
    return out


def _script_candidates(base: Path) -> list[Path]:
    suffixes = (".ts", ".tsx", ".d.ts", ".js", ".jsx", ".mjs")
    found = [base] if base.suffix else []
    found += [base.with_name(base.name + s) for s in suffixes]
    found += [base / f"index{s}" for s in suffixes]
    return found


def _rust_imports(tree: ts.Tree, path: Path) -> list[tuple[Path, list[str] | None]]:
    src = next((p for p in path.parents if p.name == "src"), path.parent)
    out: list[tuple[Path, list[str] | None]] = []
    for node in tree.root_node.children:
        if node.type == "mod_item" and node.child_by_field_name("body") is None:
            name = _text(node.child_by_field_name("name") or node)
            for candidate in (
                path.parent / f"{name}.rs",
                path.parent / name / "mod.rs",
            ):
                if candidate.is_file():
                    out.append((candidate, None))
        if node.type != "use_declaration":
            continue
        words = [_text(n) for n in _walk(node) if n.type in ("identifier", "crate")]
        words += [_text(n) for n in _walk(node) if n.type in ("super", "self")]
        spec = _text(node).removeprefix("pub ").removeprefix("use ").rstrip(";")
        head = re.split(r"::\{|::\*", spec)[0].split("::")
        if not head or head[0] not in ("crate", "super", "self"):
            continue
        base = src if head[0] == "crate" else path.parent
        if head[0] == "super":
            base = path.parent.parent if path.stem == "mod" else path.parent
        parts = head[1:]
        # the longest module path that is a file; the rest names items in it
        for cut in range(len(parts), 0, -1):
            where = base.joinpath(*parts[:cut])
            target = next(
                (
                    c
                    for c in (where.with_suffix(".rs"), where / "mod.rs")
                    if c.is_file()
                ),
                None,
            )
            if target is not None:
                out.append((target, [w for w in words if w not in parts[:cut]]))
                break
    return out


def _walk(node: ts.Node) -> Iterable[ts.Node]:
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(reversed(current.children))
