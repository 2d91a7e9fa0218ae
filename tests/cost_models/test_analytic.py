"""Golden values of the kernel cost model on a tiny graph with hand-set constants."""

from __future__ import annotations

from dataclasses import replace

import pytest

from cost_models import (
    KernelCoefficients,
    KernelConstants,
    Layer,
    LayerGraph,
    Precision,
    kernels,
    latency_ms,
    peak_memory_kb,
    predict,
    size_kb,
)
from cost_models.errors import UnsupportedLayerError

# input 1x1x8x8 -> conv 3x3 to 4 channels (2304 MACs, 40 params) -> gap -> linear 4->2
GRAPH = LayerGraph(
    layers=(
        Layer(
            "conv", "conv", (1, 1, 8, 8), (1, 4, 8, 8), macs=2304, params=40, kernel=3, inputs=("",)
        ),
        Layer("gap", "gap", (1, 4, 8, 8), (1, 4, 1, 1), macs=256, inputs=("conv",)),
        Layer("fc", "linear", (1, 4), (1, 2), macs=8, params=10, inputs=("gap",)),
    ),
    input_shape=(1, 1, 8, 8),
)


def _constants() -> KernelConstants:
    return KernelConstants(
        session_ms=0.01,
        power_w=2.0,
        coefficients=(
            KernelCoefficients("conv:f32", fixed_ms=0.002, ns_per_mac=0.5, ns_per_elem=1.0),
            KernelCoefficients("gap:f32", fixed_ms=0.001, ns_per_elem=2.0),
            KernelCoefficients("linear:f32", fixed_ms=0.003, ns_per_mac=10.0),
            KernelCoefficients("conv:rt", fixed_ms=0.004, ns_per_mac=1.0),
            KernelCoefficients("im2col:dense", ns_per_elem=5.0),
            KernelCoefficients("dqw8", ns_per_elem=100.0),
            KernelCoefficients("dqw4", ns_per_elem=200.0),
            KernelCoefficients("q8", fixed_ms=0.001, ns_per_elem=10.0),
            KernelCoefficients("dq8", fixed_ms=0.001, ns_per_elem=20.0),
            KernelCoefficients("reorder", ns_per_elem=3.0),
        ),
    )


def test_fp32_latency_golden() -> None:
    assert [k.cls for k in kernels(GRAPH, {})] == ["conv:f32", "reorder", "gap:f32", "linear:f32"]
    # session + NCHWc conv (fixed + MACs with 4 output channels padded to 8 + in/out
    # elements) + reorder of its 256 outputs out of NCHWc (the 4-channel GAP runs plain) +
    # gap + linear, by hand:
    expected = (
        0.01
        + 0.002
        + (0.5 * 2304 * 2 + 1.0 * (64 + 256)) * 1e-6
        + 3.0 * 256 * 1e-6
        + 0.001
        + 2.0 * (256 + 4) * 1e-6
        + 0.003
        + 10.0 * 8 * 1e-6
    )
    assert expected == pytest.approx(0.019992)
    assert latency_ms(GRAPH, {}, _constants()) == pytest.approx(expected)
    costs = predict(GRAPH, {}, _constants())
    assert costs.energy_mj == pytest.approx(expected * 2.0)


def test_int8_conv_before_float_layer_runs_unfused_with_boundary_kernels() -> None:
    bits = {"conv": Precision(8, 8)}  # its reader (gap) is float, so no QLinearConv
    assert [k.cls for k in kernels(GRAPH, bits)] == [
        "q8",
        "dq8",
        "dqw8",
        "conv:rt",
        "im2col:dense",
        "gap:f32",
        "linear:f32",
    ]
    expected = (
        0.01
        + 0.001
        + 10.0 * 64 * 1e-6  # quantize the input
        + 0.001
        + 20.0 * 64 * 1e-6  # dequantize it again (it really runs)
        + 100.0 * 40 * 1e-6  # dequantize the weights at run time
        # im2col + GEMM: 64 pixels x 4 channels padded to 16 x depth 9 padded to 12
        + 0.004
        + 1.0 * 64 * 16 * 12 * 1e-6
        + 5.0 * 64 * 9 * 1e-6  # the im2col matrix: 1 channel x 9 taps x 64 pixels
        + 0.001
        + 2.0 * 260 * 1e-6
        + 0.003
        + 10.0 * 8 * 1e-6
    )
    assert latency_ms(GRAPH, bits, _constants()) == pytest.approx(expected)


def test_fused_chain_has_one_quantize_and_one_dequantize() -> None:
    g = LayerGraph(
        layers=(
            Layer("a", "conv", (1, 2, 4, 4), (1, 2, 4, 4), macs=576, params=38, kernel=3,
                  inputs=("",)),
            Layer("b", "conv", (1, 2, 4, 4), (1, 2, 4, 4), macs=576, params=38, kernel=3,
                  inputs=("a",)),
            Layer("c", "conv", (1, 2, 4, 4), (1, 2, 4, 4), macs=576, params=38, kernel=3,
                  inputs=("b",)),
        ),
        input_shape=(1, 2, 4, 4),
    )
    q = Precision(8, 8)
    assert [k.cls for k in kernels(g, {"a": q, "b": q, "c": q})] == [
        "q8",
        "conv:q8",
        "conv:q8",
        "conv:q8",
        "dq8",
    ]
    # b float in the middle: a is not re-quantized (b reads float), c quantizes b's output
    assert [k.cls for k in kernels(g, {"a": q, "c": q})] == [
        "q8",
        "dq8",
        "dqw8",
        "conv:rt",
        "im2col:dense",
        "conv:f32",
        "q8",
        "reorder",
        "conv:q8",
        "dq8",
    ]
    # 4-bit weights read at 8 bits run as a runtime dequantize + fp32 kernel; with float
    # activations (weight-only) they are folded at load and run as a float conv
    assert "dqw4" in [k.cls for k in kernels(g, {"b": Precision(4, 8)})]
    weight_only = [k.cls for k in kernels(g, {"b": Precision(4, 32)})]
    assert weight_only == [k.cls for k in kernels(g, {})]
    assert "dqw4" not in weight_only and "conv:rt" not in weight_only


def test_size_kb_packs_bits() -> None:
    fp32 = size_kb(GRAPH, {})
    assert fp32 == pytest.approx((40 + 10) * 4 / 1024)
    # the conv: 36 weights + 4 biases; quantized, each channel keeps a fp32 bias and fp32 scale
    w8 = size_kb(GRAPH, {"conv": Precision(8, 32)})
    w4 = size_kb(GRAPH, {"conv": Precision(4, 32)})
    w6 = size_kb(GRAPH, {"conv": Precision(6, 32)})
    per_channel = 4 * 8
    assert w8 == pytest.approx((36 * 1 + per_channel + 10 * 4) / 1024)
    # bits are packed: 4-bit weights take half the bytes of 8-bit ones, 6-bit three quarters
    assert w4 * 1024 == pytest.approx(36 * 0.5 + per_channel + 40)
    assert w6 * 1024 == pytest.approx(36 * 0.75 + per_channel + 40)
    # an 8-bit activation quantizer adds its fp32 scale and 1-byte zero point
    assert size_kb(GRAPH, {"conv": Precision(8, 8)}) * 1024 == pytest.approx(w8 * 1024 + 5)


def test_peak_memory_kb() -> None:
    # weights 200 B; peak at the conv: input 64x4 B + output 256x4 B = 1280 B
    assert peak_memory_kb(GRAPH, {}) == pytest.approx((200 + 1280) / 1024)
    # an 8-bit conv reads its input as 1 byte per element; weights 40 B + 40 B for fc
    got = peak_memory_kb(GRAPH, {"conv": Precision(8, 8)})
    assert got == pytest.approx((40 + 40 + 64 * 1 + 256 * 4) / 1024)


def test_missing_coefficient_raises_never_zero() -> None:
    with pytest.raises(UnsupportedLayerError, match="conv:q8"):
        g = LayerGraph(GRAPH.layers[:1], GRAPH.input_shape)
        latency_ms(g, {"conv": Precision(8, 8)}, _constants())  # output requantized: fused


def test_bad_bits_raise() -> None:
    with pytest.raises(UnsupportedLayerError, match="act_bits"):
        kernels(GRAPH, {"conv": Precision(8, 4)})
    with pytest.raises(UnsupportedLayerError, match="not in the graph"):
        kernels(GRAPH, {"nope": Precision(8, 8)})
    with pytest.raises(UnsupportedLayerError, match="no weights"):
        kernels(GRAPH, {"gap": Precision(8, 8)})


def _one_conv(cin: int, cout: int, *, k: int = 3, dw: bool = False, act: str = "") -> LayerGraph:
    groups = cin if dw else 1
    macs = 64 * cout * (cin // groups) * k * k
    conv = Layer("c", "dwconv" if dw else "conv", (1, cin, 8, 8), (1, cout, 8, 8), macs=macs,
                 params=macs // 64 + cout, kernel=k, groups=groups, inputs=("",), act=act)
    return LayerGraph(layers=(conv,), input_shape=(1, cin, 8, 8))


def _conv_kernel(graph: LayerGraph, bits: dict[str, Precision]) -> str:
    (cls,) = [k.cls for k in kernels(graph, bits) if k.layer == "c" and "conv" in k.cls]
    return cls


def test_int8_conv_takes_the_symmetric_kernel_only_when_channels_align() -> None:
    q = {"c": Precision(8, 8)}
    assert _conv_kernel(_one_conv(16, 32), q) == "conv:q8s"
    assert _conv_kernel(_one_conv(16, 24), q) == "conv:q8s"  # a multiple of 8, >= 16
    assert _conv_kernel(_one_conv(16, 8), q) == "conv:q8"  # fewer than 16 outputs
    assert _conv_kernel(_one_conv(14, 32), q) == "conv:q8"  # inputs not a multiple of 4
    assert _conv_kernel(_one_conv(16, 20), q) == "conv:q8"  # outputs not a multiple of 8
    assert _conv_kernel(_one_conv(16, 32, k=1), q) == "pwconv:q8s"
    assert _conv_kernel(_one_conv(32, 32, dw=True), q) == "dwconv:q8s"
    assert _conv_kernel(_one_conv(24, 24, dw=True), q) == "dwconv:q8"
    # the symmetric kernel packs output channels by 16: 24 outputs cost as 32
    (k,) = [k for k in kernels(_one_conv(16, 24), q) if k.cls == "conv:q8s"]
    assert k.macs == 64 * 32 * 16 * 9


def test_generic_int8_depthwise_counts_the_channels_past_a_vector_of_8_as_tail() -> None:
    (k,) = [k for k in kernels(_one_conv(20, 20, dw=True), {"c": Precision(8, 8)})
            if k.cls == "dwconv:q8"]
    assert k.tail_macs == 64 * 4 * 9 and k.macs == 64 * 16 * 9
    c = KernelConstants(0.0, 1.0, (KernelCoefficients("dwconv:q8", ns_per_mac=1.0,
                                                      ns_per_tail_mac=5.0),))
    from cost_models.analytic import kernel_latency_ms

    assert kernel_latency_ms(k, c) == pytest.approx((64 * 16 * 9 + 5 * 64 * 4 * 9) * 1e-6)


def test_relu6_costs_a_pass_in_float_and_nothing_in_int8() -> None:
    relu, relu6 = _one_conv(16, 16, act="relu"), _one_conv(16, 16, act="clip")
    assert "act:f32" not in [k.cls for k in kernels(relu, {})]
    (act,) = [k for k in kernels(relu6, {}) if k.cls == "act:f32"]
    assert act.elems == 16 * 64
    assert "act:f32" not in [k.cls for k in kernels(relu6, {"c": Precision(8, 8)})]


def _classes(graph: LayerGraph, bits: dict[str, Precision], block: int) -> list[str]:
    return [k.cls for k in kernels(graph, bits, nchwc_block=block)]


def test_nchwc_block_decides_the_plain_input_and_the_padding() -> None:
    # 8 input channels: NCHWc input on AVX2 (block 8), plain NCHW input with AVX-512F (16)
    g = _one_conv(8, 20)
    assert _classes(g, {}, 8) == ["reorder", "conv:f32", "reorder"]
    assert _classes(g, {}, 16) == ["conv:f32", "reorder"]
    assert kernels(g, {}) == kernels(g, {}, nchwc_block=8)  # 8 is the default
    (k8,) = [k for k in kernels(g, {}, nchwc_block=8) if k.cls == "conv:f32"]
    (k16,) = [k for k in kernels(g, {}, nchwc_block=16) if k.cls == "conv:f32"]
    assert k8.macs == 64 * 24 * 8 * 9  # 20 outputs padded to 24
    assert k16.macs == 64 * 32 * 8 * 9  # to 32; 8 inputs < 16 are not padded
    # 10 input channels: im2col + GEMM with block 8, NCHWc with plain input with block 16
    assert _classes(_one_conv(10, 16), {}, 8) == ["conv:f32p", "im2col:dense"]
    assert _classes(_one_conv(10, 16), {}, 16) == ["conv:f32", "reorder"]
    # a depthwise conv always reads NCHWc, whatever the block
    for block in (8, 16):
        assert _classes(_one_conv(4, 4, dw=True), {}, block) == ["reorder", "dwconv:f32", "reorder"]


def _conv_then_float_gap(cin: int) -> LayerGraph:
    (conv,) = _one_conv(cin, 12).layers
    gap = Layer("g", "gap", (1, 12, 8, 8), (1, 12, 1, 1), macs=768, inputs=("c",))
    return LayerGraph(layers=(conv, gap), input_shape=(1, cin, 8, 8))


def test_float_weight_conv_reading_a_quantized_tensor_runs_in_nchwc() -> None:
    # int8 activations, float weights, a float reader: not fused, so the input goes through
    # QuantizeLinear and DequantizeLinear, and the conv is an fp32 (NCHWc where it fits) one
    bits = {"c": Precision(32, 8)}
    assert _classes(_conv_then_float_gap(16), bits, 8) == [
        "q8", "dq8", "reorder", "conv:f32", "reorder", "gap:f32"
    ]
    assert _classes(_conv_then_float_gap(14), bits, 8) == [
        "q8", "dq8", "conv:f32p", "im2col:dense", "gap:f32"]
    assert _classes(_conv_then_float_gap(14), bits, 16) == [
        "q8", "dq8", "conv:f32", "reorder", "gap:f32"
    ]


def test_nchwc_block_is_a_constant_of_the_target() -> None:
    from cost_models.analytic import KernelCostModel
    from cost_models.errors import CalibrationError

    cm = KernelCostModel()
    c16 = KernelConstants(0.0, 1.0, (), nchwc_block=16)
    assert cm.constants_from_dict(cm.constants_to_dict(c16)) == c16
    old = {"session_ms": 0.0, "power_w": 1.0, "coefficients": []}  # written before the field
    assert cm.constants_from_dict(old).nchwc_block == 8
    with pytest.raises(CalibrationError, match="nchwc_block"):
        cm.constants_from_dict({**old, "nchwc_block": 12})
    with pytest.raises(CalibrationError, match="nchwc_block"):
        KernelConstants(0.0, 1.0, (), nchwc_block=4)
    g = _one_conv(8, 16)
    reorder = KernelConstants(0.0, 1.0, (KernelCoefficients("reorder", fixed_ms=1.0),
                                         KernelCoefficients("conv:f32", fixed_ms=0.0)))
    assert latency_ms(g, {}, reorder) == pytest.approx(2.0)  # reorder in and out
    assert latency_ms(g, {}, replace(reorder, nchwc_block=16)) == pytest.approx(1.0)


def _elementwise_constants(*drop: str) -> KernelConstants:
    coeffs = (
        KernelCoefficients("add:f32", fixed_ms=0.001, ns_per_elem=2.0),
        KernelCoefficients("relu:f32", fixed_ms=0.003, ns_per_elem=4.0),
        KernelCoefficients("linear:f32", fixed_ms=0.002, ns_per_mac=7.0),
        KernelCoefficients("gap:f32", fixed_ms=0.001, ns_per_elem=2.0),
        KernelCoefficients("conv:f32", fixed_ms=0.002, ns_per_mac=0.5, ns_per_elem=1.0),
        KernelCoefficients("reorder", ns_per_elem=3.0),
    )
    return KernelConstants(0.0, 1.0, tuple(c for c in coeffs if c.cls not in drop))


def _mul_graph() -> LayerGraph:
    s = (1, 16, 4, 4)
    return LayerGraph((
        Layer("r", "relu", s, s, macs=256, inputs=("",)),
        Layer("m", "mul", s, s, macs=256, inputs=("r", "")),
    ), s)


def test_a_class_the_target_lacks_is_priced_from_bytes() -> None:
    """Rule: fixed = median fixed_ms of add/relu at that precision (2 µs), ns per element =
    median of their ns_per_elem (3 ns: 0.75 ns/byte at 4 bytes per fp32 element)."""
    g = _mul_graph()
    c = predict(g, {}, _elementwise_constants())
    mul = next(k for k in kernels(g, {}) if k.layer == "m")
    assert mul.cls == "mul:f32"
    relu = 0.003 + 4.0 * 512 * 1e-6
    assert c.latency_ms == pytest.approx(relu + 0.002 + 3.0 * mul.elems * 1e-6)
    assert c.approximated == ("m",)
    assert predict(g, {}, _elementwise_constants()).latency_ms > relu  # never counted as zero


def test_a_removed_fitted_class_is_approximated_and_named() -> None:
    full = predict(GRAPH, {}, _elementwise_constants())
    assert full.approximated == ()
    got = predict(GRAPH, {}, _elementwise_constants("gap:f32"))
    assert got.approximated == ("gap",)
    assert got.latency_ms == pytest.approx(full.latency_ms - 0.001 - 2.0 * 260e-6
                                           + 0.002 + 3.0 * 260e-6)


def test_a_precision_the_target_never_ran_still_raises() -> None:
    g = LayerGraph(GRAPH.layers[:1], GRAPH.input_shape)
    fp32_only = _elementwise_constants()
    with pytest.raises(UnsupportedLayerError, match=r"int8.*never calibrated"):
        predict(g, {"conv": Precision(8, 8)}, fp32_only)


def test_size_and_memory_count_params_of_layers_without_weights() -> None:
    s = (1, 8, 4, 4)
    g = LayerGraph((
        Layer("bn", "bn", s, s, macs=128, params=32, inputs=("",)),
        Layer("m", "mul", s, s, macs=128, inputs=("bn", "")),
        Layer("cat", "concat", s, (1, 24, 4, 4), inputs=("bn", "m", "")),
    ), s)
    assert size_kb(g, {}) * 1024 == pytest.approx(32 * 4)  # a batch norm's 4 x C floats
    q = {"m": Precision(act_bits=8), "cat": Precision(act_bits=8)}
    # a mul quantizes both inputs and its output (3), a concat its 3 inputs and output (4)
    assert size_kb(g, q) * 1024 == pytest.approx(32 * 4 + (3 + 4) * 5)
    # weights 128 B (the bn's) + peak at the concat: input 128x4 B (the bn reads it as
    # float), bn and m outputs 128x1 B (read at 8 bits), concat output 384x4 B
    assert peak_memory_kb(g, q) * 1024 == pytest.approx(128 + 512 + 128 + 128 + 1536)
