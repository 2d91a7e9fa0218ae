"""Dead code (zero propagation): ``x * 0`` and everything that reads only zeros is no layer, in
:func:`from_torch`, in fp32 ONNX and in QDQ int8 ONNX, as the devices' compilers fold it
(see :mod:`cost_models.dead_code`); NAS-Bench-201's ``none`` edges are the case that matters."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, cast

import onnx
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cost_models import (
    LayerGraph,
    Measurement,
    from_onnx,
    from_torch,
    kernels,
    peak_memory_kb,
    size_kb,
)
from cost_models.analytic import KernelConstants, predict
from cost_models.layerwise import LayerTypeCostModel, default_constants, layer_type_features
from experiments.nb201 import nb201_graph
from experiments.nb201_torch import NB201Net
from tests.cost_models.test_op_coverage import _export, _qdq, _same, check, kinds

ZERO_NETWORK = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
ARCHS = [
    # node 2 is all-none (zero), the avg pool reading it folds away, node 1's conv is dead
    "|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|avg_pool_3x3~2|",
    # one none edge into the output node
    "|nor_conv_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|none~2|",
    # node 1 all-none: the none and skip edges reading it add nothing
    "|none~0|+|nor_conv_3x3~0|none~1|+|avg_pool_3x3~0|skip_connect~1|nor_conv_1x1~2|",
    # no none edge: nothing to remove
    "|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_3x3~1|skip_connect~2|",
]
CONSTANT_ARCHS = [
    ZERO_NETWORK,
    "|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|",  # live ops, zero output
    "|none~0|+|none~0|none~1|+|none~0|none~1|skip_connect~2|",  # zero through a skip
]
_WEIGHTED = ("conv", "dwconv", "linear")


def _nb201_onnx(arch: str) -> onnx.ModelProto:
    buf = io.BytesIO()
    torch.onnx.export(NB201Net(arch).eval(), (torch.zeros(1, 3, 32, 32),), cast(Any, buf),
                      dynamo=False, input_names=["input"])
    return onnx.load_from_string(buf.getvalue())


def _macs(g: LayerGraph, of: tuple[str, ...]) -> int:
    return sum(la.macs for la in g.layers if la.kind in of)


@pytest.mark.parametrize("arch", ARCHS)
def test_nb201_torch_and_onnx_drop_dead_code_as_the_hand_built_graph(arch: str) -> None:
    g = from_torch(NB201Net(arch), (3, 32, 32))
    g_onnx, bits = from_onnx(_nb201_onnx(arch))
    _same(g_onnx, g)
    assert bits == {} and "mul" not in kinds(g)
    hand = nb201_graph(arch)
    # the hand-built graph folds the last BN (after an add) into the classifier, fusing the last
    # ReLU into that add, and writes one ReLU per conv edge (torch's export computes a node's
    # ReLU once); every other layer is the same
    same = (*_WEIGHTED, "avgpool", "add", "gap")
    assert sorted((la.kind, la.macs) for la in g.layers if la.kind in same) == sorted(
        (la.kind, la.macs) for la in hand.layers if la.kind in same)
    assert kinds(g).count("conv") == kinds(hand).count("conv")
    assert _macs(g, _WEIGHTED) == _macs(hand, _WEIGHTED) and _macs(g, same) == _macs(hand, same)
    assert [la.kind for la in g.layers if la.kind not in same] == ["relu"] * (
        kinds(g).count("relu") - 1) + ["bn", "relu"]


@pytest.mark.parametrize("arch", CONSTANT_ARCHS)
def test_nb201_constant_network_has_no_layers(arch: str) -> None:
    g = from_torch(NB201Net(arch), (3, 32, 32))
    g_onnx, bits = from_onnx(_nb201_onnx(arch))
    assert g.layers == () == g_onnx.layers == nb201_graph(arch).layers and bits == {}
    assert g.input_shape == g_onnx.input_shape == (1, 3, 32, 32)


@pytest.mark.parametrize("arch", [ARCHS[0], ZERO_NETWORK])
def test_nb201_qdq_int8_drops_dead_code(arch: str, tmp_path: Path) -> None:
    f32 = _nb201_onnx(arch)
    g_q, bits_q = from_onnx(_qdq(f32, (3, 32, 32), tmp_path))
    g = from_torch(NB201Net(arch), (3, 32, 32))
    _same(g_q, g, qdq=True)
    assert "mul" not in kinds(g_q) and set(bits_q) <= {la.name for la in g_q.layers}
    if arch == ZERO_NETWORK:
        assert g_q.layers == () and bits_q == {}
    else:
        assert bits_q and all(p.act_bits == 8 for p in bits_q.values())


class ZeroBranch(nn.Module):
    """A residual block whose branch is multiplied by 0: the branch, the product and the add
    are dead; a second zero (a zero buffer) feeds a BN, a ReLU and a pool that fold away, and a
    concat with a zero part keeps only its live part as input."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.branch = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.bn, self.pool = nn.BatchNorm2d(8), nn.MaxPool2d(2)
        self.register_buffer("mask", torch.zeros(1, 8, 1, 1))
        self.out = nn.Conv2d(16, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.conv(x))
        y = y + self.branch(y) * 0
        z = self.pool(F.relu(self.bn(y * self.mask)))  # a constant, folded
        y = self.pool(y) + z
        return self.out(torch.cat([y, 0 * z], 1))


def test_mul_by_zero_is_no_layer_and_nothing_downstream_of_it_is(tmp_path: Path) -> None:
    g, _, _ = check(ZeroBranch(), (3, 8, 8), tmp_path)
    assert kinds(g) == ["conv", "maxpool", "concat", "conv"]
    conv, pool, cat, out = g.layers
    assert conv.act == "relu"  # the dead branch no longer reads the conv: the ReLU is fused
    assert cat.inputs == (pool.name,) and cat.out_shape == (1, 16, 4, 4) and out.inputs == (
        cat.name,)


class ZeroOutput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x).mul(0.0)
        return self.fc(F.adaptive_avg_pool2d(F.relu(y), 1).flatten(1))


def test_constant_output_and_every_consumer_of_an_empty_graph(tmp_path: Path) -> None:
    model = ZeroOutput().eval()
    g = from_torch(model, (3, 6, 6))
    f32 = _export(model, (3, 6, 6))
    assert g.layers == () == from_onnx(f32)[0].layers == from_onnx(_qdq(f32, (3, 6, 6), tmp_path))[
        0].layers
    assert kernels(g, {}) == [] and size_kb(g, {}) == 0.0
    assert peak_memory_kb(g, {}) == 0.0  # no layer runs, so no activation is ever live
    costs = predict(g, {}, KernelConstants(0.5, power_w=2.0))
    assert costs.latency_ms == 0.5 and costs.approximated == ()
    lt = LayerTypeCostModel().predict(g, {}, default_constants(2.0, "test"))
    assert lt.latency_ms == 0.0 and layer_type_features(g, {}) == {"overhead_ms": 1.0}
    # a calibration set may hold constant networks (measured at the session overhead)
    rows: list[Measurement] = [(g, {}, 0.1), (g, {}, 0.1)]
    rows += [(from_torch(nn.Sequential(nn.Conv2d(3, 4 * c, 3)), (3, 6, 6)), {}, 0.1 + 0.05 * c)
             for c in range(1, 5)]
    fitted = LayerTypeCostModel().fit(rows, default_constants(2.0, "test"))
    assert fitted.overhead_ms == pytest.approx(0.1, abs=1e-3)


def test_networks_without_dead_code_are_unchanged() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 1))
    g = from_torch(model, (3, 8, 8))
    assert kinds(g) == ["conv", "conv"] and g.layers[0].act == "relu"
    # no none edge: every conv is there (stem, 3 per cell, 3 per reduction block)
    nb = from_torch(NB201Net(ARCHS[-1]), (3, 32, 32))
    assert kinds(nb).count("conv") == 1 + 15 * 3 + 2 * 3 and kinds(nb).count("add") == 15 * 3 + 2


class ZerosLike(nn.Module):
    """A product by ``torch.zeros_like``, and a concat of a live part and two zero parts."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        z = y * torch.zeros_like(y)
        return torch.cat([self.b(z) + y, z, torch.relu(z)], 1)


def test_zeros_like_and_concat_of_zero_parts(tmp_path: Path) -> None:
    g, _, _ = check(ZerosLike(), (3, 8, 8), tmp_path)
    assert kinds(g) == ["conv", "concat"]
    assert g.layers[1].inputs == ("a",) and g.layers[1].out_shape == (1, 12, 8, 8)
