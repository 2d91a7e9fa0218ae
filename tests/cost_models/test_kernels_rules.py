"""Kernel rules read off onnxruntime's optimized graphs for NAS-Bench-201 cells, DenseNet and
MobileNetV3 blocks (see the :mod:`cost_models.kernels` docstring): golden kernel lists, and the
same lists checked against the graphs onnxruntime optimizes on this machine."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

import pytest

from cost_models import GraphBuilder, LayerGraph, Precision, kernels
from cost_models.kernels import Kernel

if TYPE_CHECKING:
    import onnx

INT8 = Precision(8, 8)


def _classes(graph: LayerGraph, bits: dict[str, Precision] | None = None,
             block: int = 16) -> list[str]:
    return [k.cls for k in kernels(graph, bits or {}, nchwc_block=block)]


def _all_int8(graph: LayerGraph) -> dict[str, Precision]:
    return {la.name: INT8 if la.kind in ("conv", "dwconv", "linear") else Precision(32, 8)
            for la in graph.layers}


def _cell() -> LayerGraph:
    """Stem conv, then node 1 = avgpool3x3(x), node 2 = conv1x1(relu(x)) + conv3x3(relu(n1))."""
    b = GraphBuilder((1, 3, 14, 14))
    x = b.conv("", 16, 3)
    n1 = b.pool(x, "avgpool", 3)
    n2 = b.add(b.conv(b.relu(x), 16, 1), b.conv(b.relu(n1), 16, 3))
    b.add(b.add(x, n2), n1)
    return b.build()


def test_int8_standalone_relu_is_a_requantization() -> None:
    # onnxruntime drops a quantized ReLU into the QuantizeLinear after it; the DQ -> Q pair from
    # its producer's scale to its own runs: dq8 + q8 over its elements, no relu kernel
    g = _cell()
    ks = kernels(g, _all_int8(g), nchwc_block=16)
    assert [k.cls for k in ks] == [
        "q8", "conv:q8", "avgpool:q8", "dq8", "q8", "pwconv:q8s", "dq8", "q8", "conv:q8s",
        "add:q8", "add:q8", "add:q8", "dq8",
    ]
    relus = [la.name for la in g.layers if la.kind == "relu"]
    assert [k.cls for k in ks if k.layer in relus] == ["dq8", "q8", "dq8", "q8"]
    assert all(k.elems == 16 * 14 * 14 for k in ks if k.layer in relus)


def test_fp32_standalone_relu_and_unfused_adds_run_on_nchwc() -> None:
    assert _classes(_cell()) == [
        "conv:f32", "avgpool:f32", "relu:f32", "pwconv:f32", "relu:f32", "conv:f32",
        "add:fused", "add:f32", "add:f32", "reorder",
    ]


def test_pool_elements_count_every_window_tap() -> None:
    b = GraphBuilder((1, 16, 8, 8))
    p3 = b.pool("", "avgpool", 3)  # stride 1, "same": 64 outputs x 9 taps per channel
    b.pool(p3, "maxpool", 2, stride=2)  # 16 outputs x 4 taps per channel
    ks = kernels(b.build(), {}, nchwc_block=16)
    by = {k.cls: k for k in ks}
    assert by["avgpool:f32"].elems == 16 * 64 + 16 * 64 * 9
    assert by["maxpool:f32"].elems == 16 * 64 + 16 * 16 * 4


def test_bn_on_an_nchwc_tensor_runs_nchwc_whatever_its_channels() -> None:
    # a 12-channel conv output is NCHWc (padded to 16); the batch norm reading it runs as an
    # NCHWc depthwise 1x1 conv, and a ReLU after it is fused into that conv
    b = GraphBuilder((1, 3, 14, 14))
    b.conv(b.relu(b.bn(b.conv("", 12, 3))), 8, 1)
    assert _classes(b.build()) == [
        "conv:f32", "bn:f32", "relu:fused", "reorder", "pwconv:f32n", "reorder"]
    # reading a plain tensor (a concat of 12 + 8 channels) it runs the plain kernel
    b = GraphBuilder((1, 3, 14, 14))
    x = b.conv("", 12, 3)
    b.bn(b.concat(x, b.conv(x, 8, 3)))
    assert "bn:f32p" in _classes(b.build())


def _conv_act(cout: int, act: str, *, groups: int = 1) -> LayerGraph:
    b = GraphBuilder((1, 16, 14, 14))
    y = b.act(b.conv("", cout, 3, groups=groups), act)
    b.conv(y, 16, 1)
    return b.build()


@pytest.mark.parametrize("act", ["hardsigmoid", "sigmoid", "tanh", "leakyrelu", "hardswish"])
def test_float_conv_applies_its_activation_in_the_kernel(act: str) -> None:
    # an NCHWc conv (32 outputs) fuses all of them, HardSwish included
    assert "act:f32" not in _classes(_conv_act(32, act))


def test_hardswish_on_a_plain_float_conv_is_two_passes() -> None:
    # a grouped conv is not NCHWc: onnxruntime runs HardSwish as HardSigmoid + Mul after it,
    # while a plain conv fuses HardSigmoid (FusedConv)
    assert _classes(_conv_act(26, "hardswish", groups=2)).count("act:f32") == 2
    assert _classes(_conv_act(26, "hardsigmoid", groups=2)).count("act:f32") == 0
    # ReLU6 keeps its pass; a quantized conv's hard swish runs between DQ and Q: one pass
    assert _classes(_conv_act(32, "relu6")).count("act:f32") == 1
    g = _conv_act(32, "hardswish")
    assert _classes(g, _all_int8(g)).count("act:f32") == 1


def _ort_ops(model: onnx.ModelProto) -> Counter[str]:
    from targets.kernel_check import optimized_ops

    return Counter(op for op, _ in optimized_ops(model))


def test_cell_kernels_match_onnxruntime() -> None:
    """The suite's NAS-Bench-201-like cell in int8: as many QuantizeLinear/DequantizeLinear,
    QLinearAveragePool and QLinearAdd nodes as the kernel list has q8/dq8, avgpool:q8 and
    add:q8 kernels, and no Relu; in fp32 a Relu per standalone ReLU."""
    pytest.importorskip("onnxruntime")
    from cost_models import from_onnx
    from targets.host import nchwc_block_size
    from targets.suite import suite

    block = nchwc_block_size()
    models = {n: m for n, m in suite(size="small") if n.startswith("cell_")}
    assert len(models) == 4
    for name, model in models.items():
        ops = _ort_ops(model)
        graph, bits = from_onnx(model)
        ks = Counter(_classes(graph, bits, block))
        if name.endswith("_int8"):
            assert ops["Relu"] == 0 and ks["relu:q8"] == 0
            assert (ops["QuantizeLinear"], ops["DequantizeLinear"]) == (ks["q8"], ks["dq8"])
            assert ops["QLinearAveragePool"] == ks["avgpool:q8"] == 4
            assert ops["QLinearAdd"] == ks["add:q8"]
        else:
            assert ops["Relu"] == ks["relu:f32"] == 4
            assert ops["AveragePool"] == ks["avgpool:f32"] + ks["avgpool:f32p"] == 4
            assert ops["Add"] == ks["add:f32"]


def test_relu_after_an_add_no_conv_absorbs_is_a_kernel_of_its_own() -> None:
    # two adds summed into their convs, then their sum + ReLU: an NCHWc Add, then a Relu
    b = GraphBuilder((1, 16, 14, 14))
    x = b.conv("", 16, 3)
    a1, a2 = b.add(b.conv(x, 16, 1), x), b.add(b.conv(x, 16, 3), x)
    b.conv(b.relu(b.add(a1, a2)), 16, 1)
    g = b.build()
    (add,) = [la for la in g.layers if la.kind == "add" and la.act == "relu"]
    ks = kernels(g, {}, nchwc_block=16)
    assert [k.cls for k in ks if k.layer == add.name] == ["add:f32", "relu:f32"]
    assert [k.cls for k in ks].count("add:fused") == 2


def test_int8_average_pool_layout_and_channel_tail() -> None:
    # read by an int8 conv: channels-last; read by a layer without an int8 kernel (a batch
    # norm reading 8 bits, through a DequantizeLinear): NCHW after a transpose, avgpool:q8p
    b = GraphBuilder((1, 24, 14, 14))
    x = b.conv("", 24, 1)
    b.conv(b.pool(x, "avgpool", 3), 16, 1)
    g = b.build()
    ks = kernels(g, _all_int8(g), nchwc_block=16)
    (pool,) = [k for k in ks if k.cls.startswith("avgpool")]
    assert pool.cls == "avgpool:q8"
    # 24 channels: 8 past the vector of 16, a third of the 24 x 196 x 9 taps
    assert pool.tail_macs == 24 * 196 * 9 * 8 // 24 and pool.elems == 24 * 196 * 10
    b = GraphBuilder((1, 16, 14, 14))
    b.bn(b.pool(b.conv("", 16, 1), "avgpool", 3))
    g = b.build()
    bits = {la.name: INT8 if la.kind == "conv" else Precision(32, 8) for la in g.layers}
    (pool,) = [k for k in kernels(g, bits, nchwc_block=16) if k.cls.startswith("avgpool")]
    assert pool.cls == "avgpool:q8p" and pool.tail_macs == 0


def _conv_on(h: int, w: int, cin: int, cout: int, k: int, *, stride: int = 1,
             dw: bool = False) -> LayerGraph:
    b = GraphBuilder((1, cin, h, w))
    b.conv("", cout, k, stride=stride, groups=cin if dw else 1)
    return b.build()


def _nchwc_conv_kernel(graph: LayerGraph, bits: dict[str, Precision] | None = None,
                       block: int = 16) -> Kernel:
    (k,) = [k for k in kernels(graph, bits or {}, nchwc_block=block) if "conv" in k.cls]
    return k


def test_nchwc_conv_calls_and_edge_taps_follow_rows_and_padding() -> None:
    # one call per output row, filter set (4 blocks of 16 outputs) and input channel block;
    # the two columns that read the left/right padding are computed one output at a time
    k = _nchwc_conv_kernel(_conv_on(49, 10, 32, 64, 3))
    assert (k.cls, k.calls, k.edge_taps) == ("conv:f32", 49 * 1 * 2, 49 * 2 * 32 * 9)
    # the same pixels as 10 rows of 49: a fifth of the calls and of the edge taps
    k2 = _nchwc_conv_kernel(_conv_on(10, 49, 32, 64, 3))
    assert (k2.calls, k2.edge_taps) == (10 * 2, 10 * 2 * 32 * 9) and k2.macs == k.macs
    # 80 outputs are two filter sets; a plain NCHW input (< 16 channels) is one call per channel
    assert _nchwc_conv_kernel(_conv_on(28, 28, 32, 80, 3)).calls == 28 * 2 * 2
    k3 = _nchwc_conv_kernel(_conv_on(28, 28, 3, 16, 3))
    assert (k3.calls, k3.edge_taps) == (28 * 3, 28 * 2 * 3 * 9)
    # a 5x5 kernel has two padded columns a side; stride 2 on an even width only one (right)
    assert _nchwc_conv_kernel(_conv_on(20, 20, 16, 16, 5)).edge_taps == 20 * 4 * 16 * 25
    assert _nchwc_conv_kernel(_conv_on(28, 28, 16, 16, 3, stride=2)).edge_taps == 14 * 16 * 9
    # depthwise: per channel block
    kd = _nchwc_conv_kernel(_conv_on(14, 14, 32, 32, 3, dw=True))
    assert (kd.cls, kd.calls, kd.edge_taps) == ("dwconv:f32", 14 * 2, 14 * 2 * 9 * 2)


def test_a_1x1_conv_on_a_plain_nchw_input_runs_the_direct_kernel() -> None:
    # fewer input channels than the NCHWc block: MLAS's direct NCHW-input kernel (one call per
    # input channel), not the pointwise one; at the AVX2 block of 8, 12 channels are blocked
    g = _conv_on(28, 28, 12, 64, 1)
    k = _nchwc_conv_kernel(g)
    assert (k.cls, k.calls) == ("pwconv:f32n", 28 * 12)
    assert _nchwc_conv_kernel(_conv_on(28, 28, 16, 64, 1)).cls == "pwconv:f32"
    assert _nchwc_conv_kernel(g, block=8).cls == "pwconv:f32"
    # a 3x3 conv on a plain input keeps its class; int8 and im2col convs are not NCHWc ones
    assert _nchwc_conv_kernel(_conv_on(28, 28, 12, 64, 3)).cls == "conv:f32"
    assert _nchwc_conv_kernel(g, _all_int8(g)).cls == "pwconv:q8s"
    assert _nchwc_conv_kernel(_conv_on(28, 28, 6, 64, 1)).cls == "pwconv:f32n"
    assert _nchwc_conv_kernel(_conv_on(28, 28, 18, 64, 1)).cls == "pwconv:f32p"


def _im2col(graph: LayerGraph, bits: dict[str, Precision]) -> list[tuple[str, int]]:
    return [(k.cls, k.elems) for k in kernels(graph, bits, nchwc_block=16)
            if k.cls.startswith("im2col")]


def _runtime_weights(graph: LayerGraph) -> dict[str, Precision]:
    return {la.name: Precision(8, 16) for la in graph.layers}


def test_a_conv_outside_nchwc_copies_its_input_into_an_im2col_matrix() -> None:
    # weights dequantized at run time: a plain conv, im2col + GEMM; the matrix it copies has
    # input channels x kernel area rows of output positions
    g = _conv_on(14, 14, 24, 8, 3)
    assert _im2col(g, _runtime_weights(g)) == [("im2col:dense", 24 * 9 * 14 * 14)]
    g2 = _conv_on(14, 14, 24, 8, 3, stride=2)
    assert _im2col(g2, _runtime_weights(g2)) == [("im2col:dense", 24 * 9 * 7 * 7)]
    # a 1x1 stride-1 conv multiplies its input as it is; at stride 2 it is copied too
    g3 = _conv_on(14, 14, 24, 8, 1)
    assert _im2col(g3, _runtime_weights(g3)) == []
    g4 = _conv_on(14, 14, 24, 8, 1, stride=2)
    assert _im2col(g4, _runtime_weights(g4)) == [("im2col:dense", 24 * 7 * 7)]
    # a grouped conv is copied a group at a time (priced by rows); NCHWc and fused int8 convs
    # are not copied
    g5 = _conv_on(14, 14, 24, 24, 3, dw=True)
    assert [c for c, _ in _im2col(g5, _runtime_weights(g5))] == ["im2col:f32"]
    assert _im2col(g, {}) == [] and _im2col(g, _all_int8(g)) == []


def test_calls_and_edge_taps_only_for_nchwc_float_convs() -> None:
    # a 1x1 conv reads no padding (its own pointwise kernel), a fused int8 conv runs other code
    assert _nchwc_conv_kernel(_conv_on(28, 28, 16, 16, 1)).edge_taps == 0
    g = _conv_on(28, 28, 16, 16, 3)
    k = _nchwc_conv_kernel(g, _all_int8(g))
    assert k.cls.endswith(("q8", "q8s")) and (k.calls, k.edge_taps) == (0, 0)


@pytest.mark.parametrize(("quantized_before_flatten", "gap_class"), [(False, "gap:f32"),
                                                                     (True, "gap:q8")])
def test_gap_fuses_only_when_quantized_before_the_flatten(
    quantized_before_flatten: bool, gap_class: str
) -> None:
    """edgetune's exporter quantizes the classifier's input after the Flatten: onnxruntime then
    runs the GAP in float (DQ, GlobalAveragePool, Flatten, Q); quantize_static quantizes the
    GAP's output before it: a QLinearGlobalAveragePool."""
    pytest.importorskip("onnxruntime")
    from cost_models import from_onnx
    from targets.host import nchwc_block_size
    from targets.kernel_check import check_kernel_rules
    from targets.onnx_builder import OnnxBuilder

    b = OnnxBuilder((16, 14, 14), seed=0)
    x = b.pool(b.conv("input", 16, 16, 1, prec=(8, 8)), "gap", act_bits=8)
    if quantized_before_flatten:
        x = b.quant_act(x, 8)
    model = b.build(b.linear(x, 16, 10, prec=(8, 8)), "m")
    graph, bits = from_onnx(model)
    (gap,) = [la for la in graph.layers if la.kind == "gap"]
    assert gap.reshaped is not quantized_before_flatten
    classes = _classes(graph, bits, nchwc_block_size())
    assert gap_class in classes
    assert check_kernel_rules([("m", model)], nchwc_block_size())["agree"] == 1


def test_torch_flatten_marks_the_layer_before_it_reshaped() -> None:
    torch = pytest.importorskip("torch")
    from cost_models import from_torch

    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(), torch.nn.Dropout(), torch.nn.Linear(8, 10),
    )
    graph = from_torch(net, (1, 12, 12))
    assert [la.kind for la in graph.layers if la.reshaped] == ["gap"]
