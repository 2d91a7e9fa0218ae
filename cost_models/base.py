"""The plug-in point for a device family's cost model."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from cost_models.graph import Bits, Costs, LayerGraph

__all__ = ["CostModel", "Measurement"]

Measurement = tuple[LayerGraph, Bits, float]
"""One measured model: its layer graph, its bit-widths and its measured ``latency_ms``."""


class CostModel(ABC):
    """Predicts a candidate's costs on one device family from its constants.

    ``predict`` is called for every trial (so it must be fast and pure); ``fit`` is called by a
    target's calibration with measurements taken on the device, and returns new constants.
    ``constants_from_dict``/``constants_to_dict`` (de)serialize constants for a target file.
    """

    name: str = "base"

    @abstractmethod
    def predict(self, graph: LayerGraph, bits: Bits, constants: Any) -> Costs:
        """The four costs of ``graph`` at ``bits`` under ``constants``."""

    @abstractmethod
    def fit(self, measurements: Sequence[Measurement], base: Any) -> Any:
        """New constants fitted to ``measurements``; fields not fitted are taken from ``base``."""

    @abstractmethod
    def constants_to_dict(self, constants: Any) -> dict[str, Any]:
        """JSON-ready form of ``constants``."""

    @abstractmethod
    def constants_from_dict(self, data: dict[str, Any]) -> Any:
        """Constants from :meth:`constants_to_dict`'s output; raises on unknown keys."""
