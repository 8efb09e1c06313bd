"""Which engine serves requests: `local` (in-process) or `KIND:URL` (a remote
backend, `infill_engine.backends.ray_client`). Torch-free, so settings are checked
without loading it.

A `vllm` URL is the vLLM server's root, with a query that names what the client needs
(`vllm_target`):

    vllm:http://gpu-box:8000?tokenizer=/models/dg-26b&model=google/dg-26b&canvas=256

* `tokenizer` (required): a local checkpoint directory or tokenizer path; the client
  turns text into token ids with it, so it must be the served model's tokenizer.
* `model`: the served model's name (vLLM's `--served-model-name`, else its path);
  omitted, the server's only model answers.
* `canvas`: the served canvas length, `--diffusion-config '{"canvas_length": N}'`
  (default 32, vLLM's own default).

Values are percent-decoded ('+' stays a plus); `&`, `#` and `%` in a path are written
%26, %23 and %25.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

KINDS = ("ray", "vllm")
LOCAL = "local"
VLLM_OPTIONS = ("tokenizer", "model", "canvas")
VLLM_DEFAULT_CANVAS = 32  # vLLM's canvas without --diffusion-config
MIN_CANVAS = 16  # as the engine's: a span and context around it must fit


def parse_backend(value: str) -> tuple[str, str] | None:
    """`local` (None) or `KIND:URL` as (kind, url).

    Raises:
        ValueError: an unknown kind, a URL that is not http(s), or a `vllm` URL whose
            query `vllm_target` refuses.
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
    url = url.rstrip("/")
    if kind == "vllm":
        vllm_target(url)
    return kind, url


@dataclass(frozen=True)
class VllmTarget:
    """A `vllm` backend URL, taken apart.

    Attributes:
        root: the server's root, without the query (requests go to root/v1/...).
        tokenizer: local checkpoint directory or tokenizer path (or hub id).
        model: the served model's name; None lets the server pick its only one.
        canvas_length: the served canvas length.
    """

    root: str
    tokenizer: str
    model: str | None
    canvas_length: int


def vllm_target(url: str) -> VllmTarget:
    """What a `vllm` backend URL names (see the module docstring).

    Raises:
        ValueError: no tokenizer, an unknown or repeated option, or a canvas that is
            not an integer >= 16.
    """
    parts = urlsplit(url)
    options: dict[str, str] = {}
    for pair in filter(None, parts.query.split("&")):
        key, has_value, raw = pair.partition("=")
        key = unquote(key)
        if key not in VLLM_OPTIONS:
            raise ValueError(
                f"vllm backend option {key!r} is unknown "
                f"(options: {', '.join(VLLM_OPTIONS)})"
            )
        if key in options:
            raise ValueError(f"vllm backend option {key!r} is given twice")
        options[key] = unquote(raw) if has_value else ""
    tokenizer = options.get("tokenizer", "").strip()
    if not tokenizer:
        raise ValueError(
            "a vllm backend needs the served model's tokenizer: "
            "vllm:http://HOST:PORT?tokenizer=/path/to/checkpoint"
        )
    canvas = options.get("canvas", str(VLLM_DEFAULT_CANVAS)).strip()
    if not (canvas.isascii() and canvas.isdigit()) or int(canvas) < MIN_CANVAS:
        raise ValueError(
            f"vllm backend canvas must be an integer >= {MIN_CANVAS} (got {canvas!r})"
        )
    root = urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
    model = options.get("model", "").strip() or None
    return VllmTarget(root, tokenizer, model, int(canvas))
