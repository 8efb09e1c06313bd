"""Typed settings under the `infill` section, validated once.

They arrive in `initializationOptions` and `workspace/didChangeConfiguration`, either as
`{"infill": {...}}` or as the section itself. A bad value is reported (the server shows
it with `window/showMessage`) and its default is used instead; nothing raises.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from infill_engine.backends.urls import LOCAL, parse_backend

# Every language: those without a grammar get line-based context.
DEFAULT_LANGUAGES = ("*",)
# The engine's `device.DEVICE_CHOICES`, spelt out here so that reading settings (and
# `infill-lsp --help`) does not import torch; a test keeps the two the same.
DEVICES = ("auto", "cuda", "cpu")


@dataclass(frozen=True)
class Settings:
    """Every user-facing knob of the server.

    Attributes:
        model: checkpoint directory or hub id; empty means the default model.
        device: 'auto', 'cuda' or 'cpu'.
        max_steps: cap on denoising steps per request (0: the model's default).
        span_size: span slots for a suggestion (0: chosen from the span kind).
        hole_marker: comment text that marks a hole, e.g. `# <fill>`.
        save_deadline_ms: how long fill-on-save may hold a save before answering.
        fill_on_save: fill hole markers when a document is saved.
        enable: suggestions on or off.
        languages: language ids to serve; '*' serves every language.
        disabled_languages: language ids never served, whatever `languages` says.
        in_comments_and_strings: automatic ghost text inside comments and strings
            (explicit requests answer there either way; `lsp_server.gate`).
        max_line_suffix: no automatic ghost text when more than this many characters
            follow the cursor on its line, trailing spaces not counted.
        next_suggestion: once a suggestion is accepted at a line's end, start on the
            next line's at once, so that it is ready for the next accept.
        cross_file: read context from other workspace files ahead of the prefix
            (`lsp_server.crossfile`); off by default, as it did not pay with the
            default model (`python -m lsp_server.tools.crosseval`).
        cross_file_tokens: the most prompt tokens that context takes.
        cross_file_sources: 'recent' (chunks of files opened or edited lately) and/or
            'imports' (definitions of the names the file imports from the workspace).
        backend: 'local' (the engine in this process) or `KIND:URL`, a remote backend
            (`infill_engine.backends.ray_client`), e.g. 'ray:http://gpu-box:8000/infill'.
    """

    model: str = ""
    device: str = "auto"
    max_steps: int = 0
    span_size: int = 0
    hole_marker: str = "<fill>"
    save_deadline_ms: int = 800
    fill_on_save: bool = True
    enable: bool = True
    languages: tuple[str, ...] = field(default=DEFAULT_LANGUAGES)
    disabled_languages: tuple[str, ...] = ()
    in_comments_and_strings: bool = False
    max_line_suffix: int = 8
    next_suggestion: bool = True
    cross_file: bool = False
    cross_file_tokens: int = 192
    cross_file_sources: tuple[str, ...] = ("recent", "imports")
    backend: str = LOCAL

    def serves(self, language_id: str) -> bool:
        """Whether suggestions are on for this language."""
        return (
            self.enable
            and language_id not in self.disabled_languages
            and ("*" in self.languages or language_id in self.languages)
        )


# setting name in the editor (camelCase) -> (field, type, check, what the check wants)
_RULES: dict[str, tuple[str, type, Any, str]] = {
    "model": ("model", str, lambda v: True, "a path or hub id"),
    "device": (
        "device",
        str,
        lambda v: v in DEVICES,
        "auto, cuda or cpu",
    ),
    "maxSteps": ("max_steps", int, lambda v: 0 <= v <= 512, "an integer in 0..512"),
    "spanSize": ("span_size", int, lambda v: 0 <= v <= 255, "an integer in 0..255"),
    "holeMarker": (
        "hole_marker",
        str,
        lambda v: 0 < len(v.strip()) <= 40,
        "1..40 chars",
    ),
    "saveDeadlineMs": (
        "save_deadline_ms",
        int,
        lambda v: 50 <= v <= 5000,
        "an integer in 50..5000",
    ),
    "fillOnSave": ("fill_on_save", bool, lambda v: True, "true or false"),
    "enable": ("enable", bool, lambda v: True, "true or false"),
    "languages": (
        "languages",
        list,
        lambda v: all(isinstance(x, str) for x in v),
        "ids",
    ),
    "disabledLanguages": (
        "disabled_languages",
        list,
        lambda v: all(isinstance(x, str) for x in v),
        "ids",
    ),
    "inCommentsAndStrings": (
        "in_comments_and_strings",
        bool,
        lambda v: True,
        "true or false",
    ),
    "maxLineSuffix": (
        "max_line_suffix",
        int,
        lambda v: 0 <= v <= 100_000,
        "an integer in 0..100000",
    ),
    "nextSuggestion": ("next_suggestion", bool, lambda v: True, "true or false"),
    "crossFile": ("cross_file", bool, lambda v: True, "true or false"),
    "crossFileTokens": (
        "cross_file_tokens",
        int,
        lambda v: 0 <= v <= 4096,
        "an integer in 0..4096",
    ),
    "crossFileSources": (
        "cross_file_sources",
        list,
        lambda v: all(x in ("recent", "imports") for x in v),
        'a list of "recent" and "imports"',
    ),
    "backend": (
        "backend",
        str,
        lambda v: _is_backend(v),
        "local or KIND:URL, e.g. ray:http://host:8000/infill",
    ),
}


def _is_backend(value: str) -> bool:
    try:
        parse_backend(value)
    except ValueError:
        return False
    return True


def parse(raw: Any, base: Settings | None = None) -> tuple[Settings, list[str]]:
    """Settings from a client payload, plus one message per rejected value.

    Args:
        raw: `{"infill": {...}}`, the section itself, or anything else (rejected).
        base: values to start from (defaults if None).

    Returns:
        The settings with every valid value applied, and the problems found.
    """
    settings = base or Settings()
    if raw is None:
        return settings, []
    if isinstance(raw, dict) and isinstance(raw.get("infill"), dict | list):
        raw = raw["infill"]
    if raw == []:  # Neovim encodes an empty Lua table as a JSON array
        raw = {}
    if not isinstance(raw, dict):
        return settings, [
            f"infill settings must be an object (got {type(raw).__name__})"
        ]
    changes, problems = {}, []
    for key, value in raw.items():
        rule = _RULES.get(key)
        if rule is None:
            if key not in {f.name for f in fields(Settings)}:
                problems.append(f"unknown setting infill.{key} (ignored)")
                continue
            rule = next(r for r in _RULES.values() if r[0] == key)
        name, kind, check, wanted = rule
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if not ok or not check(value):
            default = getattr(Settings(), name)
            problems.append(
                f"infill.{key} must be {wanted} (got {value!r}); using {default!r}"
            )
            changes[name] = default
            continue
        changes[name] = tuple(value) if kind is list else value
    return replace(settings, **changes), problems
