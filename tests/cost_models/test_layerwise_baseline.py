"""The per-layer-type cost model, the graph builder and the FLOPs baseline."""

from __future__ import annotations

import pytest

from cost_models import (
    Bits,
    GraphBuilder,
    KernelCoefficients,
    LayerGraph,
    LayerTypeConstants,
    LayerTypeCostModel,
    Precision,
    compare_folds,
    compare_heldout,
    fit_flops_constant,
    total_macs,
    with_precision,
)
from cost_models.errors import CalibrationError, UnsupportedLayerError
from cost_models.layerwise import layer_class


def _net(width: int, depth: int) -> tuple:
    b = GraphBuilder((1, 3, 16, 16))
    x = b.relu(b.conv("", width, 3))
    for _ in range(depth):
        x = b.relu(b.add(b.conv(x, width, 3), x))
    b.linear(b.gap(x), 10)
    return b.build(), {}


def test_builder_counts_macs_and_fuses_relus() -> None:
    g, _ = _net(8, 1)
    kinds = [la.kind for la in g.layers]
    assert kinds == ["conv", "conv", "add", "gap", "linear"]  # both ReLUs fused
    assert g.layers[0].macs == 16 * 16 * 8 * 3 * 9 and g.layers[0].params == 8 * 27 + 8
    assert g.layers[2].inputs == ("conv_2", "conv_0")  # the add reads the fused conv


def test_int8_only_target_rejects_fp32_and_derived_fp32_costs_more() -> None:
    g, _ = _net(8, 2)
    int8 = {
        la.name: Precision(8, 8) if la.kind in ("conv", "linear") else Precision(act_bits=8)
        for la in g.layers
    }
    c = LayerTypeConstants(
        0.0,
        1.0,
        "power_x_latency",
        "test",
        tuple(
            KernelCoefficients(f"{k}:int8", fixed_ms=0.01, ns_per_mac=1.0, ns_per_elem=1.0)
            for k in ("convk", "add", "gap", "linear")
        ),
    )
    m = LayerTypeCostModel()
    fast = m.predict(g, int8, c).latency_ms
    with pytest.raises(UnsupportedLayerError, match=r"convk:fp32.*precisions \['int8'\]"):
        m.predict(g, {}, c)
    both = with_precision(c, "int8", "fp32", 2.5)
    assert m.predict(g, {}, both).latency_ms == pytest.approx(2.5 * fast)
    assert layer_class(g.layers[0], Precision(4, 8)) == "convk:int8"


def test_flops_baseline_is_fitted_on_the_given_rows() -> None:
    rows: list[tuple[LayerGraph, Bits, float]] = [
        (_net(w, 1)[0], {}, 1e-6 * total_macs((_net(w, 1)[0], {}, 0.0)) * k)
        for w, k in ((4, 2.0), (8, 2.0), (16, 2.0))
    ]
    assert fit_flops_constant(rows) == pytest.approx(2e-6)
    # a model that predicts exactly: held-out figures are perfect; the baseline is fitted on
    # `train` only, so it is off by the factor between train and test
    test = [(g, b, t * 1.5) for g, b, t in rows]
    f = compare_heldout(rows, test, lambda m: m[2])
    assert f["within_10pct"] == 1.0 and f["mdape"] == 0.0 and f["n_heldout"] == 3
    assert f["flops_baseline"]["mdape"] == pytest.approx(100 / 3, rel=1e-6)
    with pytest.raises(CalibrationError, match="held-out"):
        compare_heldout(rows, test[:1], lambda m: m[2])


def test_folds_are_judged_together_and_each_on_its_own() -> None:
    rows: list[tuple[LayerGraph, Bits, float]] = [
        (_net(w, 1)[0], {}, 1e-6 * total_macs((_net(w, 1)[0], {}, 0.0)))
        for w in (4, 8, 16, 32)
    ]
    exact, off = rows[:2], rows[2:]
    # fold 1 predicts its rows exactly, fold 2 predicts 20% high: half the rows within 10%
    f = compare_folds([(off, exact, lambda m: m[2]), (exact, off, lambda m: 1.2 * m[2])])
    assert f["n_heldout"] == 4 and f["within_10pct"] == 0.5
    assert f["mdape"] == pytest.approx(10.0)  # the median of 0, 0, 20 and 20%
    assert [(d["n_heldout"], d["within_10pct"]) for d in f["folds"]] == [(2, 1.0), (2, 0.0)]
    assert f["flops_baseline"]["ms_per_gmac"] == pytest.approx(1e-6 * 1e9)
    assert "folds" not in compare_heldout(off, exact, lambda m: m[2])


def test_fit_recovers_per_class_constants_from_whole_networks() -> None:
    truth = LayerTypeConstants(
        0.05,
        1.0,
        "power_x_latency",
        "t",
        tuple(
            KernelCoefficients(c, fixed_ms=f, ns_per_mac=m, ns_per_elem=e)
            for c, f, m, e in (
                ("convk:fp32", 0.02, 0.3, 0.0),
                ("add:fp32", 0.01, 0.0, 2.0),
                ("gap:fp32", 0.005, 0.0, 1.0),
                ("linear:fp32", 0.003, 1.0, 0.0),
            )
        ),
    )
    m = LayerTypeCostModel()
    rows = [
        (g, b, m.predict(g, b, truth).latency_ms)
        for g, b in (_net(w, d) for w in (4, 8, 12, 16, 24, 32) for d in (0, 1, 2, 3))
    ]
    fitted = m.fit(rows[::2], truth)
    for g, b, t in rows[1::2]:
        assert m.predict(g, b, fitted).latency_ms == pytest.approx(t, rel=0.05)
