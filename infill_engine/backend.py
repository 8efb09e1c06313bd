"""Which engine serves requests: `local` (in-process) or `KIND:URL` (a remote backend,
`infill_engine.remote`). Torch-free, so settings are checked without loading it."""

from __future__ import annotations

from urllib.parse import urlsplit

KINDS = ("ray",)
LOCAL = "local"


def parse_backend(value: str) -> tuple[str, str] | None:
    """`local` (None) or `KIND:URL` as (kind, url).

    Raises:
        ValueError: an unknown kind or a URL that is not http(s).
    """
    value = value.strip()
    if value in ("", LOCAL):
        return None
    kind, _, url = value.partition(":")
    if kind not in KINDS:
        raise ValueError(
            f"backend must be {LOCAL} or KIND:URL with KIND one of "
            f"{', '.join(KINDS)} (got {value!r})"
        )
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"backend URL must be http(s)://host[:port]/path: {url!r}")
    return kind, url.rstrip("/")
