"""The per-layer-type model prices layer kinds it has no coefficients for from the bytes they
move, at a precision the target runs, and still refuses a precision it never ran."""

from __future__ import annotations

import pytest

from cost_models import KernelCoefficients, Layer, LayerGraph, LayerTypeCostModel, Precision
from cost_models.energy import EnergyConstants
from cost_models.errors import UnsupportedLayerError
from cost_models.layerwise import LayerTypeConstants, layer_class

S = (1, 8, 4, 4)  # 128 elements


def _constants(prec: str) -> LayerTypeConstants:
    return LayerTypeConstants(0.1, coefficients=(
        KernelCoefficients(f"add:{prec}", fixed_ms=0.01, ns_per_elem=4.0),
        KernelCoefficients(f"relu:{prec}", fixed_ms=0.03, ns_per_elem=8.0),
        KernelCoefficients(f"linear:{prec}", fixed_ms=0.02, ns_per_mac=2.0, ns_per_elem=1.0),
    ), energy_constants=EnergyConstants(1.0))


def _graph(*layers: Layer) -> LayerGraph:
    return LayerGraph(tuple(layers), S)


def test_new_kinds_are_priced_from_bytes_and_named() -> None:
    g = _graph(
        Layer("bn", "bn", S, S, macs=128, params=32, inputs=("",)),
        Layer("sig", "act", S, S, macs=128, inputs=("bn",), act="sigmoid"),
        Layer("m", "mul", S, S, macs=128, inputs=("bn", "sig")),
        Layer("cat", "concat", S, (1, 24, 4, 4), inputs=("bn", "sig", "m")),
    )
    assert layer_class(g.layers[1], Precision()) == "sigmoid:fp32"
    c = LayerTypeCostModel().predict(g, {}, _constants("fp32"))
    assert c.approximated == ("bn", "sig", "m", "cat")
    # each: fixed = median(0.01, 0.03) = 0.02 ms; 6 ns per element (1.5 ns per fp32 byte)
    # bn: 128 in + 128 out + 32 params; sig: 256; m: 2x128 in + 128 out; cat: 3x128 + 384
    elems = (128 + 128 + 32) + 256 + 384 + 768
    assert c.latency_ms == pytest.approx(0.1 + 4 * 0.02 + 6.0 * elems * 1e-6)


def test_matmul_pays_the_gemm_rate_for_its_macs() -> None:
    g = _graph(Layer("mm", "matmul", S, S, macs=4096, inputs=("", "")))
    c = LayerTypeCostModel().predict(g, {}, _constants("fp32"))
    assert c.latency_ms == pytest.approx(0.1 + 0.02 + (2.0 * 4096 + 6.0 * 384) * 1e-6)


def test_int8_target_prices_int8_new_kinds_and_rejects_fp32() -> None:
    g = _graph(Layer("m", "mul", S, S, macs=128, inputs=("", "")))
    int8 = {"m": Precision(act_bits=8)}
    c = LayerTypeCostModel().predict(g, int8, _constants("int8"))
    assert c.approximated == ("m",)
    assert c.latency_ms == pytest.approx(0.1 + 0.02 + 6.0 * 384 * 1e-6)
    with pytest.raises(UnsupportedLayerError, match=r"mul:fp32.*precisions \['int8'\]"):
        LayerTypeCostModel().predict(g, {}, _constants("int8"))
    with pytest.raises(UnsupportedLayerError, match=r"mul:int8.*precisions \['fp32'\]"):
        LayerTypeCostModel().predict(g, int8, _constants("fp32"))


def test_fitted_classes_are_not_approximated() -> None:
    g = _graph(Layer("a", "add", S, S, macs=128, inputs=("", "")))
    c = LayerTypeCostModel().predict(g, {}, _constants("fp32"))
    assert c.approximated == ()
    assert c.latency_ms == pytest.approx(0.1 + 0.01 + 4.0 * 256 * 1e-6)
