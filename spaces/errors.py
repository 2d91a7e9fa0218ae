"""Errors the search-space knobs raise."""

from __future__ import annotations

from cost_models.errors import EdgetuneError


class SpaceError(EdgetuneError):
    """A value outside the search space, or params made for another model or space."""


class TrialError(EdgetuneError):
    """One candidate failed (a NaN loss, a pruning failure). The study goes on."""
