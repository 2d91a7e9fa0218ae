"""The work-based energy model: its formula, its constants, its fit, and old files."""

from __future__ import annotations

import pytest

from cost_models import (
    KernelCoefficients,
    KernelConstants,
    KernelCostModel,
    Layer,
    LayerGraph,
    LayerTypeCostModel,
    Precision,
    predict,
)
from cost_models.energy import (
    EnergyConstants,
    dynamic_energy_mj,
    energy_features,
    energy_mj,
    layer_bytes,
    power_only,
    published_energy,
)
from cost_models.errors import CalibrationError
from cost_models.fit import fit_energy_constants

# input 1x1x8x8 -> conv 3x3 to 4 channels (2304 MACs, 40 params) -> gap -> linear 4->2
GRAPH = LayerGraph(
    layers=(
        Layer("conv", "conv", (1, 1, 8, 8), (1, 4, 8, 8), macs=2304, params=40, kernel=3,
              inputs=("",)),
        Layer("gap", "gap", (1, 4, 8, 8), (1, 4, 1, 1), macs=256, inputs=("conv",)),
        Layer("fc", "linear", (1, 4), (1, 2), macs=8, params=10, inputs=("gap",)),
    ),
    input_shape=(1, 1, 8, 8),
)
E = EnergyConstants(0.5, pj_per_mac_int8=1.0, pj_per_mac_fp32=10.0, pj_per_byte=2.0)


def test_float_energy_golden() -> None:
    # bytes: conv 40x4 + 64x4 + 256x4; gap 256x4 + 4x4; fc 10x4 + 4x4 + 2x4 (graph output)
    assert layer_bytes(GRAPH, {}) == {"conv": 1440.0, "gap": 1040.0, "fc": 64.0}
    # MACs of conv and linear only (the GAP's "MACs" are additions: it costs its bytes)
    dyn = (10.0 * (2304 + 8) + 2.0 * (1440 + 1040 + 64)) * 1e-9
    assert dynamic_energy_mj(GRAPH, {}, E) == pytest.approx(dyn)
    assert energy_mj(GRAPH, {}, 3.0, E) == pytest.approx(0.5 * 3.0 + dyn)


def test_int8_containers_and_macs() -> None:
    bits = {"conv": Precision(4, 8), "gap": Precision(act_bits=8), "fc": Precision(8, 8)}
    b = layer_bytes(GRAPH, bits)
    # 4-bit weights in INT4 (0.5 B); input read at 1 B; output stored at its reader's 1 B
    assert b["conv"] == 40 * 0.5 + 64 + 256
    assert b["fc"] == 10 * 1 + 4 * 1 + 2 * 4  # the graph output is stored as float
    f = energy_features(GRAPH, bits)
    assert f["mac_int8"] == pytest.approx((2304 + 8) * 1e-9) and f["mac_float"] == 0.0
    # int16 activations: a MAC costs 4 int8 MACs
    assert energy_features(GRAPH, {"fc": Precision(8, 16)})["mac_int8"] == pytest.approx(32e-9)


def test_energy_says_what_latency_does_not() -> None:
    """At the same latency, float work costs more energy than int8 work."""
    int8 = {la.name: Precision(8, 8) if la.params else Precision(act_bits=8)
            for la in GRAPH.layers}
    assert energy_mj(GRAPH, {}, 1.0, E) > energy_mj(GRAPH, int8, 1.0, E)
    assert energy_mj(GRAPH, {}, 1.0, power_only(0.5, "x")) == pytest.approx(0.5)


def test_fp16_float_layers() -> None:
    e16 = EnergyConstants(0.0, pj_per_mac_fp16=1.0, pj_per_mac_fp32=100.0, float_bits=16)
    # float containers are 2 bytes; float MACs at the fp16 figure
    assert layer_bytes(GRAPH, {}, float_bits=16)["conv"] == 720.0
    assert dynamic_energy_mj(GRAPH, {}, e16) == pytest.approx(2312e-9)


def test_constants_validate_and_round_trip() -> None:
    assert EnergyConstants.from_dict(E.to_dict()) == E
    with pytest.raises(CalibrationError, match="pj_per_byte"):
        EnergyConstants(1.0, pj_per_byte=-1.0)
    with pytest.raises(CalibrationError, match="source"):
        EnergyConstants(1.0, source="guessed")
    with pytest.raises(CalibrationError, match="float_bits"):
        EnergyConstants(1.0, float_bits=8)
    with pytest.raises(CalibrationError, match="static_power_w"):
        EnergyConstants.from_dict({"pj_per_byte": 1.0})
    assert E.method == "modelled" and E.label.startswith("modelled (")
    assert power_only(2.0, "a figure").method == "power_x_latency"
    assert power_only(2.0, "a figure").label == "modelled (power × latency: a figure)"
    cal = EnergyConstants(1.0, source="calibrated", note="fitted")
    assert cal.method == "calibrated" and cal.label == "calibrated (fitted)"


def test_published_energy_scales_with_the_node() -> None:
    e = published_energy(2.0, node_nm=22.5, note="test")
    assert e.source == "modelled" and e.static_power_w == 2.0
    assert e.pj_per_mac_int8 == pytest.approx(0.23 / 2)
    assert e.pj_per_mac_fp32 == pytest.approx(4.6 / 2)
    assert e.pj_per_byte == pytest.approx(12.5 / 2)
    assert "Horowitz" in e.label
    with pytest.raises(CalibrationError, match="memory"):
        published_energy(2.0, node_nm=7, note="x", memory="tape")


def _widths(n: int) -> list[LayerGraph]:
    out = []
    for i in range(n):
        c = 2 + 3 * i
        out.append(LayerGraph((
            Layer("conv", "conv", (1, 1, 8, 8), (1, c, 8, 8), macs=576 * c * (1 + i % 2),
                  params=10 * c, inputs=("",)),
            Layer("gap", "gap", (1, c, 8, 8), (1, c, 1, 1), macs=64 * c, inputs=("conv",)),
        ), (1, 1, 8, 8)))
    return out


def test_fit_recovers_constants() -> None:
    truth = EnergyConstants(0.3, pj_per_mac_int8=50.0, pj_per_byte=20.0)
    bits = {"conv": Precision(8, 8), "gap": Precision(act_bits=8)}
    rows = [(g, bits, 1.0 + (i * 7 % 5), 0.0) for i, g in enumerate(_widths(8))]
    rows = [(g, b, lat, energy_mj(g, b, lat, truth)) for g, b, lat, _ in rows]
    got = fit_energy_constants(rows, note="synthetic", fp32_per_int8=3.0)
    assert got.source == "calibrated" and got.note == "synthetic"
    assert got.static_power_w == pytest.approx(0.3, rel=1e-6)
    assert got.pj_per_mac_int8 == pytest.approx(50.0, rel=1e-5)
    assert got.pj_per_byte == pytest.approx(20.0, rel=1e-5)
    assert got.pj_per_mac_fp32 == pytest.approx(150.0, rel=1e-5)  # no float rows: 3 x int8
    with pytest.raises(CalibrationError, match="at least 3"):
        fit_energy_constants(rows[:2], note="x")
    with pytest.raises(CalibrationError, match="energy_mj"):
        fit_energy_constants([(g, b, lat, 0.0) for g, b, lat, _ in rows], note="x")


def test_both_cost_models_use_the_energy_model() -> None:
    kc = KernelConstants(0.01, coefficients=(
        KernelCoefficients("conv:f32", fixed_ms=0.002, ns_per_mac=0.5),
        KernelCoefficients("reorder"), KernelCoefficients("gap:f32", fixed_ms=0.001),
        KernelCoefficients("linear:f32", fixed_ms=0.003)), energy_constants=E)
    c = predict(GRAPH, {}, kc)
    assert c.energy_mj == pytest.approx(energy_mj(GRAPH, {}, c.latency_ms, E))
    cm = KernelCostModel()
    assert cm.constants_from_dict(cm.constants_to_dict(kc)) == kc
    assert kc.power_w == 0.5 and kc.energy_label == E.label
    with pytest.raises(CalibrationError, match="not both"):
        KernelConstants(0.0, 1.0, (), energy_constants=E)


def test_files_written_before_the_energy_model_keep_their_meaning() -> None:
    """A bare power_w is static power only: energy = power × latency, as it was."""
    kernel = KernelCostModel().constants_from_dict(
        {"session_ms": 0.01, "power_w": 3.0, "coefficients": []})
    assert kernel.energy_constants == EnergyConstants(3.0, note=kernel.energy_constants.note)
    assert kernel.energy_constants.method == "power_x_latency"
    lt = LayerTypeCostModel()
    old = {"overhead_ms": 0.1, "power_w": 0.05, "energy": "calibrated",
           "power_source": "fitted long ago", "coefficients": []}
    c = lt.constants_from_dict(old)
    assert c.energy_constants == EnergyConstants(0.05, source="calibrated",
                                                 note="fitted long ago")
    assert c.energy == "calibrated" and c.power_w == 0.05 and c.power_source == "fitted long ago"
    assert lt.constants_from_dict(lt.constants_to_dict(c)) == c  # rewritten in the new form
    assert "energy" in lt.constants_to_dict(c) and "power_w" not in lt.constants_to_dict(c)
    with pytest.raises(CalibrationError, match="energy must be one of"):
        lt.constants_from_dict({**old, "energy": "guess"})
    with pytest.raises(CalibrationError, match="exactly the keys"):
        lt.constants_from_dict({**old, "extra": 1})
