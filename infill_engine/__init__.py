"""Diffusion infilling engine: fill a span between a prefix and a suffix with
DiffusionGemma.

The fill path (`core`, `model`, `engine`, `backends`) knows nothing of editors or syntax
trees: strings, token ids and tensors only. One module above it, `tools.grammars`,
imports tree-sitter: the parse check that `infill fill`, the evaluations and the
language server share. Nothing in the package imports the language server.

The public names are imported on first use (PEP 562): importing the package, or a
torch-free module of it such as `infill_engine.cli`, does not import torch and
transformers, which take seconds; `infill --help` answers without them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from infill_engine.core.config import DenoiseConfig
    from infill_engine.core.loop import StepView
    from infill_engine.engine import (
        Candidate,
        InfillEngine,
        InfillRequest,
        InfillResult,
        Timings,
    )
    from infill_engine.model.loader import ModelLoadError, default_model

# Public name -> the module that defines it.
_HOMES = {
    "Candidate": "infill_engine.engine",
    "DenoiseConfig": "infill_engine.core.config",
    "InfillEngine": "infill_engine.engine",
    "InfillRequest": "infill_engine.engine",
    "InfillResult": "infill_engine.engine",
    "ModelLoadError": "infill_engine.model.loader",
    "StepView": "infill_engine.core.loop",
    "Timings": "infill_engine.engine",
    "default_model": "infill_engine.model.loader",
}

__all__ = [
    "Candidate",
    "DenoiseConfig",
    "InfillEngine",
    "InfillRequest",
    "InfillResult",
    "ModelLoadError",
    "StepView",
    "Timings",
    "default_model",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """Import a public name's module the first time the name is read."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later reads skip this function
    return value


def __dir__() -> list[str]:
    """The module's names, the not yet imported public ones included."""
    return sorted({*globals(), *__all__})
