"""Diffusion infilling engine: fill a span between a prefix and a suffix with
DiffusionGemma.

Knows nothing of editors or syntax trees: strings, token ids and tensors only.
"""

from infill_engine.config import DenoiseConfig
from infill_engine.engine import (
    Candidate,
    InfillEngine,
    InfillRequest,
    InfillResult,
    Timings,
)
from infill_engine.loader import ModelLoadError, default_model
from infill_engine.loop import StepView

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
