"""The NAS-Bench-201 builder: layer counts and MACs of known architectures."""

from __future__ import annotations

import pytest

from experiments.nb201 import nb201_graph, parse_arch

ALL_3X3 = (
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+"
    "|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
)


def test_all_conv3x3_cell_counts_and_macs() -> None:
    g = nb201_graph(ALL_3X3)
    convs = [la for la in g.layers if la.kind == "conv"]
    # stem + 15 cells x 6 edges + 2 reduction blocks x 3 convs
    assert len(convs) == 1 + 15 * 6 + 2 * 3 == 97
    # adds: per cell 1 (node 2) + 2 (node 3), plus one per reduction block
    assert sum(la.kind == "add" for la in g.layers) == 15 * 3 + 2
    cell_macs = 32 * 32 * 16 * 16 * 9  # one 3x3 conv at stage 1
    stage1 = [la for la in convs if la.out_shape == (1, 16, 32, 32) and la.kernel == 3]
    assert len(stage1) == 1 + 5 * 6 and all(la.macs == cell_macs for la in stage1[1:])
    assert g.layers[-1].kind == "linear" and g.layers[-1].out_shape == (1, 10)
    # one ReLU per node (not per edge), fused into its producer where it is the only reader
    assert sum(la.macs for la in g.layers) == 220_615_296


def test_dead_code_and_constant_networks() -> None:
    # node 1 feeds nothing that reaches node 3: its conv is dead and dropped
    dead = nb201_graph("|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|")
    assert sum(la.kind == "conv" for la in dead.layers) == 1 + 2 * 3  # stem + reductions
    # every cell outputs zeros: a constant network, no layers
    assert nb201_graph("|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|").layers == ()


def test_bad_arch_strings() -> None:
    with pytest.raises(ValueError, match="op~i"):
        parse_arch("|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    with pytest.raises(ValueError, match="3 nodes"):
        parse_arch("|none~0|+|none~0|none~1|")


def test_onnx_export_matches_the_graph() -> None:
    pytest.importorskip("onnx")
    from cost_models import from_onnx
    from experiments.nb201 import nb201_onnx

    arch = "|nor_conv_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|skip_connect~0|none~1|nor_conv_3x3~2|"
    g, bits = from_onnx(nb201_onnx(arch))
    ref = nb201_graph(arch)
    assert bits == {}
    assert [(la.kind, la.out_shape, la.macs) for la in g.layers] == [
        (la.kind, la.out_shape, la.macs) for la in ref.layers
    ]
