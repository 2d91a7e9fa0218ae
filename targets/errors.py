"""Errors the targets raise (calibration errors are the cost models' ``CalibrationError``)."""

from __future__ import annotations

from cost_models.errors import EdgetuneError


class TargetError(EdgetuneError):
    """An unknown target name, or a target file that is invalid."""
