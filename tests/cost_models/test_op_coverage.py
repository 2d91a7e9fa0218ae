"""Operator coverage: each op gives the same layers from torch, from fp32 ONNX and from QDQ int8
ONNX (``quantize_static``), and the kernel list covers it at fp32 and int8."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cost_models import GraphBuilder, LayerGraph, Precision, from_onnx, from_torch, kernels
from cost_models.errors import UnsupportedLayerError
from cost_models.graph import LAYER_KINDS

pytest.importorskip("onnxruntime.quantization")
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_static,
)


def _key(graph: LayerGraph, *, qdq: bool = False) -> list[tuple[object, ...]]:
    """Everything but the names; inputs as indices of the producer layers (-1 = graph input).
    ``qdq``: without ReLU/ReLU6 (``quantize_static`` drops those that feed a quantizer, which
    clips anyway)."""
    clipping = ("relu", "clip")
    dropped = {la.name: la.inputs[0] for la in graph.layers
               if qdq and (la.kind == "relu" or (la.kind == "act" and la.act in clipping))}
    kept = [la for la in graph.layers if la.name not in dropped]
    index = {la.name: i for i, la in enumerate(kept)}
    index[""] = -1

    def producer(s: str) -> int:
        while s in dropped:
            s = dropped[s]
        return index[s]

    return [
        (la.kind, la.in_shape, la.out_shape, la.macs, la.params, la.groups, la.kernel,
         la.stride, "" if qdq and la.act in clipping else la.act,
         tuple(producer(s) for s in la.inputs))
        for la in kept
    ]


def _same(a: LayerGraph, b: LayerGraph, *, qdq: bool = False) -> None:
    """The same layers feeding each other the same way, in any topological order (torch's ONNX
    export may order independent branches differently)."""
    ka, kb = _key(a, qdq=qdq), _key(b, qdq=qdq)

    def signatures(keys: list[tuple[object, ...]]) -> list[int]:
        sig: list[int] = []
        for k in keys:
            ins = k[-1]
            assert isinstance(ins, tuple)
            sig.append(hash((k[:-1], tuple(-1 if i == -1 else sig[i] for i in ins))))
        return sorted(sig)

    assert signatures(ka) == signatures(kb), f"{ka}\n!=\n{kb}"


def _export(model: nn.Module, shape: tuple[int, ...]) -> onnx.ModelProto:
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(model.eval(), (torch.randn(1, *shape),), buf, dynamo=False,  # type: ignore[arg-type]
                          opset_version=17, input_names=["input"])
    return onnx.load_from_string(buf.getvalue())


class _Reader(CalibrationDataReader):  # type: ignore[misc]
    def __init__(self, shape: tuple[int, ...]) -> None:
        rng = np.random.default_rng(0)
        self.data = [{"input": rng.standard_normal((1, *shape)).astype(np.float32)}
                     for _ in range(2)]

    def get_next(self) -> dict[str, np.ndarray] | None:
        return self.data.pop() if self.data else None


def _qdq(model: onnx.ModelProto, shape: tuple[int, ...], tmp: Path) -> onnx.ModelProto:
    src, dst = tmp / "f32.onnx", tmp / "q.onnx"
    onnx.save(model, str(src))
    quantize_static(
        str(src), str(dst), _Reader(shape), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
    )
    return onnx.load(str(dst))


def check(model: nn.Module, shape: tuple[int, ...], tmp: Path, *, qdq: bool = True
          ) -> tuple[LayerGraph, list[str], list[str]]:
    """The torch graph, after asserting both ONNX forms agree with it; and the kernel classes
    at fp32 and at int8."""
    model = model.eval()
    g = from_torch(model, shape)
    f32 = _export(model, shape)
    g_onnx, bits = from_onnx(f32)
    _same(g_onnx, g)
    assert bits == {}
    assert all(la.kind in LAYER_KINDS for la in g.layers)
    ks32 = kernels(g, {})
    assert [k for k in ks32 if k.elems < 0 or k.macs < 0] == []
    int8 = {la.name: Precision(8 if la.kind in ("conv", "dwconv", "linear") else 32, 8)
            for la in g.layers}
    ks8 = [k.cls for k in kernels(g, int8)]
    if qdq:
        g_q, bits_q = from_onnx(_qdq(f32, shape, tmp))
        _same(g_q, g, qdq=True)
        assert bits_q and all(p.act_bits == 8 for p in bits_q.values())
        ks8 = [k.cls for k in kernels(g_q, bits_q)]
    return g, [k.cls for k in ks32], ks8


def kinds(g: LayerGraph) -> list[str]:
    return [la.kind if la.kind != "act" else la.act for la in g.layers]


def cbr(cin: int, cout: int, k: int = 3, g: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, groups=g, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU())


class NB201Cell(nn.Module):
    """NAS-Bench-201: ReLU-Conv-BN ops summed at each node; the cell output goes through a BN."""

    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))

        def rcb(k: int) -> nn.Sequential:
            return nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, k, padding=k // 2, bias=False),
                                 nn.BatchNorm2d(c))

        self.e01, self.e02, self.e12 = rcb(3), rcb(1), rcb(3)
        self.pool = nn.AvgPool2d(3, 1, 1)
        self.bn = nn.BatchNorm2d(c)
        self.fc = nn.Linear(c, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n0 = self.stem(x)
        n1 = self.e01(n0)
        n2 = self.e02(n0) + self.e12(n1) + self.pool(n1)
        y = F.relu(self.bn(n2))
        return self.fc(y.mean((2, 3)))


def test_nasbench201_cell(tmp_path: Path) -> None:
    g, ks32, ks8 = check(NB201Cell(), (3, 12, 12), tmp_path)
    # the ReLU of node 0 is computed once for its two edges (as in the ONNX export), so it is
    # fused into the stem conv
    assert kinds(g) == ["conv", "conv", "conv", "relu", "conv", "add", "avgpool", "add", "bn",
                        "relu", "gap", "linear"]
    assert g.layers[0].act == "relu" and g.layers[1].inputs == g.layers[2].inputs == ("stem.0",)
    bn = g.layer("bn")
    assert bn.macs == 8 * 12 * 12 and bn.params == 4 * 8
    assert bn.inputs == ("add_1",)  # BN after the add, not folded
    assert g.layers[0].params == 3 * 8 * 9 + 8  # the stem's BN is folded: a bias
    assert "bn:f32" in ks32  # on an NCHWc tensor: an NCHWc depthwise conv
    assert "bn:f32p" in ks8 or "bn:f32" in ks8  # no int8 batch norm: float between DQ and Q


def test_graph_builder_nasbench201_cell() -> None:
    b = GraphBuilder((1, 8, 12, 12))
    n1 = b.conv(b.relu(""), 8, 3, bias=True)
    x = b.add(b.add(b.conv(b.relu(""), 8, 1), b.conv(b.relu(n1), 8, 3)), b.pool(n1, "avgpool", 3))
    y = b.relu(b.bn(x))
    g = b.build()
    assert [la.kind for la in g.layers] == ["relu", "conv", "relu", "conv", "relu", "conv",
                                            "add", "avgpool", "add", "bn", "relu"]
    assert g.layer(y).inputs == (g.layers[-2].name,) and g.layers[-2].params == 32
    assert len(kernels(g, {})) >= len(g.layers)


class SEHardSwish(nn.Module):
    """MobileNetV3: conv + hard-swish, depthwise, squeeze-and-excitation with a hard sigmoid."""

    def __init__(self, c: int = 16) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, c, 3, 2, 1)
        self.hs = nn.Hardswish()
        self.dw = nn.Conv2d(c, c, 3, 1, 1, groups=c)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1, self.fc2 = nn.Conv2d(c, c // 4, 1), nn.Conv2d(c // 4, c, 1)
        self.gate = nn.Hardsigmoid()
        self.hs2 = nn.Hardswish()
        self.proj = nn.Conv2d(c, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dw(self.hs(self.conv(x)))
        s = self.gate(self.fc2(F.relu(self.fc1(self.pool(y)))))
        return self.proj(self.hs2(y * s))


def test_se_block_hardswish(tmp_path: Path) -> None:
    g, ks32, ks8 = check(SEHardSwish(), (3, 16, 16), tmp_path)
    assert kinds(g) == ["conv", "dwconv", "gap", "conv", "conv", "mul", "hardswish", "conv"]
    conv, dw, _, _, fc2, mul, hs, _ = g.layers
    assert conv.act == "hardswish" and fc2.act == "hardsigmoid"  # fused, as today
    assert mul.inputs == (dw.name, fc2.name) and mul.in_shape == (1, 16, 8, 8)
    assert mul.macs == 16 * 8 * 8 and hs.kind == "act" and hs.macs == 16 * 64
    assert "mul:f32" in ks32 and "hardswish:f32" in ks32
    assert "mul:q8" in ks8 and "hardswish:f32" in ks8  # QLinearMul; HardSwish runs in float
    mul_k = next(k for k in kernels(g, {}) if k.cls == "mul:f32")
    assert mul_k.elems == 16 * 64 + 16 + 16 * 64  # both inputs and the output


class DenseBlock(nn.Module):
    def __init__(self, c: int = 8, growth: int = 8) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(3, c, 3, padding=1)
        self.bn1, self.c1 = nn.BatchNorm2d(c), nn.Conv2d(c, growth, 3, padding=1)
        self.bn2, self.c2 = nn.BatchNorm2d(c + growth), nn.Conv2d(c + growth, growth, 3, padding=1)
        self.trans = nn.Conv2d(c + 2 * growth, c, 1)
        self.pool = nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv0(x)
        x = F.relu(x)
        y = torch.cat([x, self.c1(F.relu(self.bn1(x)))], 1)
        y = torch.cat([y, self.c2(F.relu(self.bn2(y)))], dim=1)
        return self.pool(self.trans(y))


def test_densenet_concat(tmp_path: Path) -> None:
    g, ks32, ks8 = check(DenseBlock(), (3, 8, 8), tmp_path)
    assert kinds(g) == ["conv", "bn", "relu", "conv", "concat", "bn", "relu", "conv", "concat",
                        "conv", "avgpool"]
    cat2 = g.layers[8]
    assert cat2.out_shape == (1, 24, 8, 8) and cat2.macs == 24 * 64
    assert cat2.inputs == (g.layers[4].name, g.layers[7].name)
    assert g.layers[5].params == 4 * 16
    assert "concat:f32" in ks32 and "concat:q8" in ks8


class PreActBlock(nn.Module):
    """A pre-activation ResNet block (BN-ReLU-Conv), with a BN at the network start and after
    the add."""

    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.bn0 = nn.BatchNorm2d(c)
        self.bn1, self.conv1 = nn.BatchNorm2d(c), nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(c), nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn_out = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn0(x)
        y = self.conv1(F.relu(self.bn1(x)))
        y = self.conv2(F.relu(self.bn2(y)))  # bn2 follows conv1 alone: folded
        return F.relu(self.bn_out(x + y))


def test_preact_resnet_block(tmp_path: Path) -> None:
    g, ks32, ks8 = check(PreActBlock(), (8, 8, 8), tmp_path)
    # all three read NCHW tensors (the input, or an add of it); no int8 batch norm
    assert ks32.count("bn:f32p") == 3 and ks8.count("bn:f32p") == 3
    assert kinds(g) == ["bn", "bn", "relu", "conv", "conv", "add", "bn", "relu"]
    assert g.layers[0].inputs == ("",) and g.layers[3].act == "relu"
    assert g.layers[3].params == 8 * 8 * 9 + 8  # bn2 folded into conv1


class KWS1d(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv1d(10, 16, 9, stride=2, padding=4, bias=False)
        self.bn1 = nn.BatchNorm1d(16)
        self.dw = nn.Conv1d(16, 16, 5, padding=4, dilation=2, groups=16)
        self.pw = nn.Conv1d(16, 24, 1)
        self.pool = nn.MaxPool1d(2)
        self.gap = nn.AdaptiveAvgPool1d(1)
        self.fc = nn.Linear(24, 12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.c1(x)))
        x = self.pool(F.relu(self.pw(F.relu(self.dw(x)))))
        return self.fc(self.gap(x).flatten(1))


def test_conv1d_keyword_spotting(tmp_path: Path) -> None:
    g, ks32, ks8 = check(KWS1d(), (10, 49), tmp_path)
    assert kinds(g) == ["conv", "dwconv", "conv", "maxpool", "gap", "linear"]
    c1, dw, _, pool, gap, _ = g.layers
    assert c1.in_shape == (1, 10, 1, 49) and c1.out_shape == (1, 16, 1, 25)
    assert c1.kernel == 9 and c1.stride == 2 and c1.macs == 16 * 25 * 10 * 9
    assert dw.groups == 16 and dw.macs == 16 * 25 * 5 and dw.kernel == 5
    assert pool.in_shape == (1, 24, 1, 25) and pool.out_shape == (1, 24, 1, 12)
    assert gap.out_shape == (1, 24, 1, 1)
    assert "dwconv:f32" in ks32 and "pwconv:f32" in ks32 and "pwconv:q8s" in ks8


class OddConvs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(4, 8, (3, 5), stride=(2, 1), padding=(1, 2), dilation=1)
        self.b = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=2)
        self.c = nn.Conv2d(8, 8, (1, 3), padding=(0, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(self.b(self.a(x)))


def test_conv_kernels_strides_dilation_groups(tmp_path: Path) -> None:
    g, _, _ = check(OddConvs(), (4, 10, 12), tmp_path)
    a, b, c = g.layers
    assert a.out_shape == (1, 8, 5, 12) and a.macs == 8 * 5 * 12 * 4 * 15 and a.kernel == 5
    assert b.kind == "dwconv" and b.groups == 2 and b.macs == 8 * 60 * 4 * 9
    assert c.kernel == 3 and c.macs == 8 * 60 * 8 * 3  # a 1x3 conv is not pointwise


class UNetish(nn.Module):
    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode
        self.enc = nn.Conv2d(3, 8, 3, padding=1)
        self.down = nn.MaxPool2d(2)
        self.mid = nn.Conv2d(8, 8, 3, padding=1)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.dec = nn.Conv2d(16, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = F.relu(self.enc(x))
        m = F.relu(self.mid(self.down(e)))
        u = self.up(m) if self.mode == "nearest" else F.interpolate(m, scale_factor=2,
                                                                      mode="bilinear")
        return self.dec(torch.cat([u, e], 1))


@pytest.mark.parametrize(("mode", "factor"), [("nearest", 1), ("bilinear", 4)])
def test_unet_resize(tmp_path: Path, mode: str, factor: int) -> None:
    g, ks32, ks8 = check(UNetish(mode), (3, 16, 16), tmp_path)
    assert kinds(g) == ["conv", "maxpool", "conv", "resize", "concat", "conv"]
    up = g.layers[3]
    assert up.out_shape == (1, 8, 16, 16) and up.macs == 8 * 256 * factor
    assert "resize:f32" in ks32 and "resize:q8" in ks8


class Pads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pad = nn.ZeroPad2d((1, 2, 0, 1))
        self.conv = nn.Conv2d(4, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(self.pad(x), (1, 1, 1, 1)))


def test_pad(tmp_path: Path) -> None:
    g, ks32, ks8 = check(Pads(), (4, 6, 6), tmp_path)
    assert kinds(g) == ["pad", "pad", "conv"]
    assert g.layers[0].out_shape == (1, 4, 7, 9) and g.layers[1].macs == 4 * 9 * 11
    # no int8 Pad; in fp32 the zero pad read by the conv alone is folded into it (PadFusion)
    assert ks32.count("pad:f32") == 1 and ks8.count("pad:f32") == 2


class ReflectPad(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pad, self.conv = nn.ReflectionPad2d(1), nn.Conv2d(4, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(self.pad(x), (1, 1, 1, 1), mode="replicate"))


def test_pad_modes(tmp_path: Path) -> None:
    g, ks32, _ = check(ReflectPad(), (4, 6, 6), tmp_path, qdq=False)
    assert [la.act for la in g.layers[:2]] == ["reflect", "edge"]
    assert ks32.count("pad:f32") == 2  # a non-zero pad is not folded into the conv


class Attention(nn.Module):
    """Softmax, transpose and MatMul of two activations (and a MatMul by a constant)."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k = nn.Conv2d(8, 8, 1), nn.Conv2d(8, 8, 1)
        self.w = nn.Parameter(torch.randn(8, 6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.q(x).flatten(2)  # (1, 8, 16)
        k = self.k(x).flatten(2).permute(0, 2, 1)  # (1, 16, 8)
        a = torch.softmax(torch.matmul(k, q), dim=-1)  # (1, 16, 16)
        return torch.matmul(a @ k, self.w)  # (1, 16, 8) @ (8, 6)


def test_softmax_transpose_matmul(tmp_path: Path) -> None:
    g, ks32, ks8 = check(Attention(), (8, 4, 4), tmp_path)
    assert kinds(g) == ["conv", "conv", "transpose", "matmul", "softmax", "matmul", "linear"]
    mm = g.layers[3]
    assert mm.macs == 16 * 16 * 8 and mm.out_shape == (1, 16, 16)
    assert g.layers[2].macs == 8 * 16 and g.layers[4].macs == 256
    assert g.layers[6].macs == 16 * 6 * 8 and g.layers[6].params == 48
    assert {"transpose:f32", "matmul:f32", "softmax:f32"} <= set(ks32)
    assert {"transpose:q8", "matmul:q8", "softmax:q8"} <= set(ks8)


class Acts(nn.Module):
    """SiLU after a conv, standalone sigmoid/tanh/ReLU6/hard-sigmoid, a mean over channels and
    products by a scalar and by a tensor constant."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(4, 8, 3, padding=1), nn.Conv2d(8, 8, 1)
        self.silu = nn.SiLU()
        self.scale = nn.Parameter(torch.rand(1, 8, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.silu(self.a(x))
        z = self.b(y)
        s = torch.sigmoid(z) + z  # z has two readers: the sigmoid is not fused
        t = torch.tanh(s * 0.5)
        u = F.relu6(t * self.scale)
        v = F.hardsigmoid(u * u.mean(1, keepdim=True))
        return v


def test_activations_silu_reduce_constant_mul(tmp_path: Path) -> None:
    g, ks32, ks8 = check(Acts(), (4, 6, 6), tmp_path)
    assert kinds(g) == ["conv", "silu", "conv", "sigmoid", "add", "mul", "tanh", "mul", "clip",
                        "reduce", "mul", "hardsigmoid"]
    assert g.layers[0].act == "" and g.layers[1].kind == "act"  # SiLU never fused
    const_mul = g.layers[5]
    assert len(const_mul.inputs) == 1 and const_mul.macs == 8 * 36
    red = g.layers[9]
    assert red.out_shape == (1, 1, 6, 6) and red.macs == 8 * 36
    assert {"silu:f32", "sigmoid:f32", "tanh:f32", "clip:f32", "reduce:f32",
            "hardsigmoid:f32"} <= set(ks32)
    assert {"silu:q8", "sigmoid:q8", "mul:q8"} <= set(ks8)


def test_mul_by_constant_after_conv_is_folded_in_fp32() -> None:
    b = GraphBuilder((1, 8, 8, 8))
    x = b.mul(b.conv("", 8, 3))
    g = b.build()
    assert [k.cls for k in kernels(g, {})].count("mul:f32") == 0  # onnxruntime's ConvMulFusion
    int8 = {la.name: Precision(8 if la.kind == "conv" else 32, 8) for la in g.layers}
    assert "mul:q8" in [k.cls for k in kernels(g, int8)] and x


def test_builder_se_concat_act() -> None:
    b = GraphBuilder((1, 16, 8, 8))
    y = b.conv("", 16, 3)
    s = b.act(b.conv(b.relu(b.conv(b.gap(y), 4, 1)), 16, 1), "hardsigmoid")
    m = b.mul(y, s)
    c = b.concat(m, y)
    out = b.act(c, "silu")
    g = b.build()
    assert [la.kind for la in g.layers] == ["conv", "gap", "conv", "conv", "mul", "concat", "act"]
    assert g.layers[3].act == "hardsigmoid" and g.layers[2].act == "relu"
    assert g.layer(m).inputs == (y, g.layers[3].name) and g.layer(m).out_shape == (1, 16, 8, 8)
    assert g.layer(c).out_shape == (1, 32, 8, 8) and g.layer(out).act == "silu"
    with pytest.raises(ValueError, match="broadcast"):
        b.add(y, b.conv("", 8, 1))
    classes = [k.cls for k in kernels(g, {})]
    assert {"mul:f32", "concat:f32", "silu:f32"} <= set(classes)


def test_weight_bits_only_on_weighted_layers() -> None:
    b = GraphBuilder((1, 8, 8, 8))
    x = b.bn(b.conv("", 8, 3))
    with pytest.raises(UnsupportedLayerError, match="no weights"):
        kernels(b.build(), {x: Precision(8, 8)})


def test_unsupported_op_names_the_node() -> None:
    class Shuffle(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.pixel_shuffle(x, 2)

    with pytest.raises(UnsupportedLayerError, match=r"pixel_shuffle.*supported: Conv2d"):
        from_torch(Shuffle(), (4, 4, 4))
    with pytest.raises(UnsupportedLayerError, match=r"'DepthToSpace'.*GraphBuilder"):
        from_onnx(_export(Shuffle(), (4, 4, 4)))
