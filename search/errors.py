"""The errors of the search package, and every edgetune error re-exported in one place.

The root, :class:`EdgetuneError`, lives in the bottom layer (``cost_models.errors``); each
layer defines the errors it raises. Callers above all layers (the command line, the service)
import them from here.
"""

from __future__ import annotations

from cost_models.errors import CalibrationError, EdgetuneError, UnsupportedLayerError
from spaces.errors import SpaceError, TrialError
from targets.errors import TargetError

__all__ = [
    "CalibrationError",
    "EdgetuneError",
    "ExportError",
    "InfeasibleSpecError",
    "SpaceError",
    "SpecError",
    "StudyError",
    "TargetError",
    "TrialError",
    "UnsupportedLayerError",
    "WorkloadError",
]


class SpecError(EdgetuneError):
    """A constraint spec (or a value from the command line) is invalid. Names the field."""


class InfeasibleSpecError(EdgetuneError):
    """No candidate in the spec's space can meet a budget, not even the cheapest corner."""


class StudyError(EdgetuneError):
    """A study that does not exist, or cannot be opened, resumed or exported."""


class WorkloadError(EdgetuneError):
    """A model, weights file or data set named by a spec cannot be built or loaded."""


class ExportError(EdgetuneError):
    """A candidate cannot be exported to ONNX or measured."""
