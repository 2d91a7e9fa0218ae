"""The one exception root of edgetune, and its specific subclasses.

Every error edgetune raises on purpose derives from :class:`EdgetuneError`. Its message states
the rule that was broken, the value that broke it, and what to do; the CLI prints that message
on one line, with no traceback. This module imports nothing heavy, so every package (including
the pure ``cost_models``) may import it.
"""

from __future__ import annotations


class EdgetuneError(Exception):
    """Root of every error edgetune raises on purpose."""


class SpecError(EdgetuneError):
    """A constraint spec (or a value from the command line) is invalid. Names the field."""


class InfeasibleSpecError(EdgetuneError):
    """No candidate in the spec's space can meet a budget, not even the cheapest corner."""


class UnsupportedLayerError(EdgetuneError):
    """A layer that no cost model, pruner or exporter supports. It never counts as zero."""


class CalibrationError(EdgetuneError):
    """Measurements are missing, malformed, or too few to fit a target's constants."""


class TargetError(EdgetuneError):
    """An unknown target name, or a target file that is invalid."""


class StudyError(EdgetuneError):
    """A study that does not exist, or cannot be opened, resumed or exported."""


class TrialError(EdgetuneError):
    """One candidate failed (a NaN loss, a pruning failure). The study goes on."""


class WorkloadError(EdgetuneError):
    """A model, weights file or data set named by a spec cannot be built or loaded."""


class ExportError(EdgetuneError):
    """A candidate cannot be exported to ONNX or measured."""
