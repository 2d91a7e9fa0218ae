"""Graph extraction: torch and ONNX give the same layers; unsupported layers raise."""

from __future__ import annotations

import io

import onnx
import pytest
import torch
from torch import nn

from cost_models import LayerGraph, Precision, from_onnx, from_torch
from cost_models.errors import UnsupportedLayerError


class Add(nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b


def cbr(cin: int, cout: int, k: int, s: int = 1, g: int = 1, act: bool = True) -> nn.Module:
    mods: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, s, k // 2, groups=g, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act:
        mods.append(nn.ReLU6())
    return nn.Sequential(*mods)


class TinyResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(1, 8, 3)
        self.c1, self.c2 = cbr(8, 12, 3, 2), cbr(12, 12, 3, act=False)
        self.sc = nn.Conv2d(8, 12, 1, 2)
        self.add = Add()
        self.c3 = cbr(12, 12, 3, act=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(12, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = torch.relu(self.add(self.c2(self.c1(x)), self.sc(x)))
        y = torch.relu(self.c3(y) + y)  # a functional add
        return self.fc(torch.flatten(self.pool(y), 1))


class TinyDSCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.f = nn.Sequential(
            cbr(1, 16, 3, 2),
            cbr(16, 16, 3, g=16),
            cbr(16, 24, 1),
            nn.MaxPool2d(2),
            cbr(24, 24, 3, g=24),
            cbr(24, 24, 1),
            nn.AvgPool2d(2),
        )
        self.fc = nn.Linear(24 * 3 * 3, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.f(x).view(1, -1))


class MBV2Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 8, 3, 2)
        self.body = nn.Sequential(cbr(8, 32, 1), cbr(32, 32, 3, g=32), cbr(32, 8, 1, act=False))
        self.add = Add()
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.add(self.body(x), x)
        return self.fc(x.mean((2, 3)))


def _key(graph: LayerGraph) -> list[tuple[object, ...]]:
    return [
        (la.kind, la.in_shape, la.out_shape, la.macs, la.params, la.groups) for la in graph.layers
    ]


def _export(model: nn.Module, shape: tuple[int, int, int]) -> onnx.ModelProto:
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(model.eval(), (torch.zeros(1, *shape),), buf, dynamo=False)  # type: ignore[arg-type]
    return onnx.load_from_string(buf.getvalue())


NETS = [(TinyResNet, (1, 16, 16)), (TinyDSCNN, (1, 24, 24)), (MBV2Block, (3, 16, 16))]


@pytest.mark.parametrize(("cls", "shape"), NETS)
def test_torch_and_onnx_agree(cls: type[nn.Module], shape: tuple[int, int, int]) -> None:
    model = cls().eval()
    g_torch = from_torch(model, shape)
    g_onnx, bits = from_onnx(_export(model, shape))
    assert _key(g_torch) == _key(g_onnx)
    assert bits == {}
    # inputs point at producer layers in both
    assert [len(la.inputs) for la in g_torch.layers] == [len(la.inputs) for la in g_onnx.layers]


def test_tiny_resnet_layers() -> None:
    g = from_torch(TinyResNet(), (1, 16, 16))
    # the ReLU after each add is fused into it, as onnxruntime does
    assert [la.kind for la in g.layers] == [
        "conv",
        "conv",
        "conv",
        "conv",
        "add",
        "conv",
        "add",
        "gap",
        "linear",
    ]
    names = [la.name for la in g.layers]
    assert names[:5] == ["stem.0", "c1.0", "c2.0", "sc", "add"]
    stem = g.layer("stem.0")
    assert stem.macs == 8 * 16 * 16 * 9 and stem.params == 8 * 9 + 8  # BN folded: a bias
    assert g.layer("add").inputs == ("c2.0", "sc")
    assert g.layer("c1.0").inputs == ("stem.0",)
    functional = g.layers[6]  # named after its fx node
    assert functional.name == "add_1" and functional.inputs == ("c3.0", "add")


def test_quant_wrappers_are_their_layer() -> None:
    class QuantConv(nn.Module):
        def __init__(self, layer: nn.Conv2d) -> None:
            super().__init__()
            self.layer = layer
            self.scale: torch.Tensor
            self.register_buffer("scale", torch.ones(1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.layer(x) * self.scale

    model = TinyResNet()
    model.stem[0] = QuantConv(model.stem[0])  # type: ignore[index, operator]
    g = from_torch(model, (1, 16, 16))
    assert _key(g) == _key(from_torch(TinyResNet(), (1, 16, 16)))
    assert g.layers[0].name == "stem.0"


def test_builtin_models_torch_vs_onnx() -> None:
    models = pytest.importorskip("search.workloads.models")
    for name, shape in (
        ("resnet8", (1, 28, 28)),
        ("dscnn", (1, 49, 10)),
        ("mobilenetv2", (1, 28, 28)),
    ):
        model = getattr(models, name)(shape).eval()
        assert _key(from_torch(model, shape)) == _key(from_onnx(_export(model, shape))[0])


def test_unsupported_torch_layer_raises() -> None:
    class Recurrent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3)
            self.rnn = nn.LSTM(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.rnn(self.conv(x).view(36, 1, 4))[0]

    with pytest.raises(UnsupportedLayerError, match=r"'rnn'.*LSTM.*supported: Conv2d"):
        from_torch(Recurrent(), (1, 8, 8))


def test_unsupported_onnx_op_raises() -> None:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("LpNormalization", ["x"], ["y"], name="sm")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
    )
    with pytest.raises(UnsupportedLayerError, match=r"'sm'.*'LpNormalization'.*supported: Conv"):
        from_onnx(helper.make_model(graph))


def test_qdq_precision_read_from_onnx() -> None:
    from targets.onnx_builder import OnnxBuilder

    b = OnnxBuilder((4, 8, 8))
    x = b.conv("input", 4, 8, 3, prec=(8, 8))
    x = b.conv(x, 8, 8, 3, prec=(4, 32))
    x = b.conv(x, 8, 8, 1, prec=(8, 16))
    y = b.linear(b.pool(x, "gap"), 8, 3)
    g, bits = from_onnx(b.build(y, "t"))
    names = [la.name for la in g.layers]
    assert [la.kind for la in g.layers] == ["conv", "conv", "conv", "gap", "linear"]
    assert bits == {
        names[0]: Precision(8, 8),
        names[1]: Precision(4, 32),
        names[2]: Precision(8, 16),
    }
