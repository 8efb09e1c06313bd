"""Source packages of the registries this project reaches, other than PyPI's wheels:
npm tarballs (`npm pack`) and Debian's `golang-*-dev` and `librust-*-dev` packages
(`apt-get download`, which ship their sources), each fetched once into a cache folder.
The TypeScript/JavaScript/Go/Rust held-out set (`evals.polyglot`) and the training
data pack (`training.datapack`) read them.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

LANGUAGES = {".ts": "typescript", ".js": "javascript", ".go": "go", ".rs": "rust"}


def language_of(path: str) -> str | None:
    """The language of a source path, None for one this set does not hold."""
    if path.endswith((".d.ts", "_test.go", ".min.js")) or "/tests/" in path:
        return None
    return next((lang for ext, lang in LANGUAGES.items() if path.endswith(ext)), None)


def fetch(registry: str, name: str, version: str, cache: Path) -> Path:
    """The package file in `cache`, downloaded once."""
    cache.mkdir(parents=True, exist_ok=True)
    stem = name.removeprefix("@").replace("/", "-")  # @scope/name packs to scope-name
    if registry == "npm":
        target = cache / f"{stem}-{version}.tgz"
        command = ["npm", "pack", "--silent", f"{name}@{version}"]
    else:
        target = cache / f"{name}_{version.replace(':', '%3a')}_all.deb"
        command = ["apt-get", "download", f"{name}={version}"]
    if not target.is_file():
        subprocess.run(command, cwd=cache, check=True, capture_output=True)
        found = sorted(cache.glob(f"{stem}[-_]*"))
        if not found:
            raise FileNotFoundError(f"{' '.join(command)} left no file in {cache}")
        found[-1].rename(target)
    return target


def package_sources(path: Path, folder: str) -> Iterator[tuple[str, str]]:
    """(path inside the package, text) of every source file under `folder`."""
    if path.suffix == ".deb":
        data = subprocess.run(
            ["dpkg-deb", "--fsys-tarfile", str(path)], check=True, capture_output=True
        ).stdout
        archive = tarfile.open(fileobj=io.BytesIO(data))
    else:
        archive = tarfile.open(path)
    with archive:
        for member in archive.getmembers():
            name = member.name.removeprefix("./")
            if not member.isfile() or not name.startswith(folder):
                continue
            if language_of(name) is None:
                continue
            handle = archive.extractfile(member)
            if handle is None:
                continue
            try:
                yield name, handle.read().decode("utf-8")
            except UnicodeDecodeError:
                continue
