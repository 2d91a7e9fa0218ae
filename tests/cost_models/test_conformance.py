"""Conformance suite every :class:`CostModel` implementation runs."""

from __future__ import annotations

from typing import Any

import pytest

from cost_models import (
    CostModel,
    KernelCoefficients,
    KernelConstants,
    KernelCostModel,
    Layer,
    LayerGraph,
    LayerTypeConstants,
    LayerTypeCostModel,
    Precision,
)
from cost_models.errors import CalibrationError


def _kernel_constants() -> KernelConstants:
    cls = (
        "conv:f32",
        "conv:f32p",
        "conv:rt",
        "conv:q8",
        "dqw8",
        "dqw4",
        "q8",
        "dq8",
        "reorder",
        "gap:f32",
        "linear:f32",
        "linear:q8",
        "linear:rt",
    )
    return KernelConstants(
        0.01,
        2.0,
        tuple(
            KernelCoefficients(
                c, fixed_ms=0.001, ns_per_mac=0.05, ns_per_elem=0.5, ns_per_pixel=1.0
            )
            for c in cls
        ),
    )


def _layer_type_constants() -> LayerTypeConstants:
    return LayerTypeConstants(
        0.01,
        2.0,
        "power_x_latency",
        "test figure",
        tuple(
            KernelCoefficients(c, fixed_ms=0.001, ns_per_mac=0.05, ns_per_elem=0.5)
            for c in ("convk:fp32", "gap:fp32", "linear:fp32")
        ),
    )


IMPLEMENTATIONS: list[tuple[CostModel, Any]] = [
    (KernelCostModel(), _kernel_constants()),
    (LayerTypeCostModel(), _layer_type_constants()),
]


def _graph(width: int) -> LayerGraph:
    return LayerGraph(
        (
            Layer(
                "c",
                "conv",
                (1, 3, 16, 16),
                (1, width, 16, 16),
                macs=width * 256 * 27,
                params=width * 28,
                kernel=3,
                inputs=("",),
            ),
            Layer(
                "g", "gap", (1, width, 16, 16), (1, width, 1, 1), macs=width * 256, inputs=("c",)
            ),
            Layer(
                "fc",
                "linear",
                (1, width),
                (1, 10),
                macs=width * 10,
                params=width * 10 + 10,
                inputs=("g",),
            ),
        ),
        (1, 3, 16, 16),
    )


@pytest.mark.parametrize(("model", "constants"), IMPLEMENTATIONS)
def test_costs_positive_and_monotone_in_width(model: CostModel, constants: Any) -> None:
    small, big = model.predict(_graph(8), {}, constants), model.predict(_graph(64), {}, constants)
    for c in (small, big):
        assert c.latency_ms > 0 and c.energy_mj > 0 and c.peak_memory_kb > 0 and c.size_kb > 0
    assert big.latency_ms > small.latency_ms and big.size_kb > small.size_kb
    assert big.peak_memory_kb > small.peak_memory_kb


@pytest.mark.parametrize(("model", "constants"), IMPLEMENTATIONS)
def test_quantized_weights_are_smaller(model: CostModel, constants: Any) -> None:
    g = _graph(32)
    bits = {"c": Precision(8, 32), "fc": Precision(8, 32)}
    assert model.predict(g, bits, constants).size_kb < model.predict(g, {}, constants).size_kb


@pytest.mark.parametrize(("model", "constants"), IMPLEMENTATIONS)
def test_constants_round_trip(model: CostModel, constants: Any) -> None:
    data = model.constants_to_dict(constants)
    assert model.constants_from_dict(data) == constants
    with pytest.raises(CalibrationError):
        model.constants_from_dict({**data, "unknown": 1})


@pytest.mark.parametrize(("model", "constants"), IMPLEMENTATIONS)
def test_fit_reproduces_its_own_predictions(model: CostModel, constants: Any) -> None:
    rows = []
    for w in (4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 3, 5):
        for bits in ({}, {"c": Precision(8, 32)}, {"c": Precision(4, 32)}):
            g = _graph(w)
            rows.append((g, bits, model.predict(g, bits, constants).latency_ms))
    fitted = model.fit(rows, constants)
    for g, bits, t in rows:
        assert model.predict(g, bits, fitted).latency_ms == pytest.approx(t, rel=1e-3)
