"""The one exception root of edgetune, and the errors of the cost models.

Every error edgetune raises on purpose derives from :class:`EdgetuneError`. Its message states
the rule that was broken, the value that broke it, and what to do; the command line prints it
on one line, with no traceback. The root lives here, in the bottom layer, so that every package
can derive its own errors from it without importing upward. Each layer defines the errors it
raises: ``cost_models`` here, ``spaces.errors``, ``targets.errors`` and ``search.errors``.
"""

from __future__ import annotations


class EdgetuneError(Exception):
    """Root of every error edgetune raises on purpose."""


class UnsupportedLayerError(EdgetuneError):
    """A layer that no cost model, pruner or exporter supports. It never counts as zero."""


class CalibrationError(EdgetuneError):
    """Measurements are missing, malformed, or too few to fit a target's constants."""
