"""Functional ``+``, ``*`` and ``torch.cat`` through the whole path: made modules, pruned across,
fake-quantized, exported in QDQ form that onnxruntime runs as int8 kernels, and priced."""

from __future__ import annotations

import io
import pickle
from collections import Counter

import onnx
import onnxruntime as ort
import pytest
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from cost_models import from_torch
from cost_models.kernels import kernels
from search.onnx_export import run_onnx, to_onnx
from spaces.config import PruningSpace, QuantizationSpace, Space
from spaces.functional import Add, Cat, Mul, modularize
from spaces.joint import JointSpace
from spaces.pruning import kept_channels
from spaces.quantization import QuantJoin, wrappers
from spaces.student import build_student
from tests.spaces.conftest import randomize_bn

SHAPE = (1, 16, 16)


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU())


class SE(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, 8, 1), nn.Conv2d(8, c, 1)

    def forward(self, x: Tensor) -> Tensor:
        s = F.adaptive_avg_pool2d(x, 1)
        return x * F.hardsigmoid(self.fc2(F.relu(self.fc1(s))))


class UserNet(nn.Module):
    """As a user writes it: a residual ``+``, squeeze-and-excitation ``*``, a dense ``torch.cat``,
    and a ``* 0.5`` on a constant that has nothing to quantize."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn(1, 16)
        self.body = conv_bn(16, 16)
        self.dw = conv_bn(16, 16, groups=16)
        self.se = SE(16)
        self.grow = conv_bn(16, 12)
        self.down = conv_bn(28, 24, stride=2)
        self.head = nn.Linear(24, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        x = x + self.body(x)
        x = self.se(self.dw(x))
        x = torch.cat([x, self.grow(x)], dim=1)
        x = self.down(x) * 0.5
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


@pytest.fixture
def user_net() -> nn.Module:
    torch.manual_seed(0)
    return randomize_bn(UserNet())


def joins(model: nn.Module) -> dict[str, str]:
    return {n: type(m).__name__ for n, m in model.named_modules() if isinstance(m, Add | Mul | Cat)}


def test_modularize_names_each_join_after_its_module_and_keeps_the_function(
    user_net: nn.Module,
) -> None:
    model = modularize(user_net)
    assert joins(model) == {"add": "Add", "se.mul": "Mul", "cat": "Cat"}
    x = torch.randn(4, *SHAPE)
    assert torch.equal(model(x), user_net(x))
    model.load_state_dict(UserNet().state_dict())  # the author's state_dict loads: same names
    assert modularize(model) is model  # nothing left to rewrite
    copy = pickle.loads(pickle.dumps(model))  # Ray ships it pickled
    assert torch.equal(copy(x), model(x))


def test_a_model_of_modules_only_is_returned_as_it_is(resnet: nn.Module) -> None:
    assert modularize(resnet) is resnet


def test_an_untraceable_model_is_left_for_the_cost_model_to_explain() -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3)

        def forward(self, x: Tensor) -> Tensor:
            y = self.conv(x)
            return y * y if y.sum() > 0 else y + y  # data-dependent: fx cannot trace it

    model = Branchy()
    assert modularize(model) is model


def _space() -> Space:
    return Space(
        quantization=QuantizationSpace(weight_bits=(8, 32), activation_bits=(8, 32)),
        pruning=PruningSpace(max_ratio=0.5, step=0.25, round_to=4),
    )


def test_pruned_int8_student_quantizes_every_join_and_onnxruntime_runs_them_in_int8(
    user_net: nn.Module, tmp_path: object
) -> None:
    teacher = modularize(user_net)
    space = JointSpace(teacher, SHAPE, _space(), batch_size=16)
    calib = torch.randn(64, *SHAPE)
    built = build_student(teacher, space.uniform_params(0.5, 8, 8), space, calib=calib,
                          reduce_range=False)
    student = built.model
    assert student is not None
    wrapped = {n for n, w in wrappers(student).items() if isinstance(w, QuantJoin)}
    assert wrapped == {"add", "se.mul", "cat"}  # nothing left in float

    # pruning across the concat: the conv after it reads both pruned parts
    kept = kept_channels(built.pruned)
    assert kept["stem.0"] == 8 and kept["grow.0"] == 8  # 16 and 12 at ratio 0.5, round_to 4
    assert built.pruned.get_submodule("down.0").in_channels == kept["stem.0"] + kept["grow.0"]

    x = torch.randn(32, *SHAPE)
    model = to_onnx(student, SHAPE)
    with torch.no_grad():
        expected = student(x)
    got = run_onnx(model, x)
    assert (expected.argmax(1) == got.argmax(1)).float().mean() >= 0.95
    assert float((expected - got).abs().max()) < 0.05 * float(expected.abs().max())

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(tmp_path) + "/optimized.onnx"
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    ops = Counter(n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node)
    assert ops["QLinearAdd"] == 1 and ops["QLinearMul"] == 1 and ops["QLinearConcat"] == 1
    assert ops["Add"] == ops["Concat"] == 0

    # the cost model prices the same layers, by the same names, as int8 kernels
    graph = from_torch(built.pruned, SHAPE)
    assert set(built.policy.bits) <= {layer.name for layer in graph.layers}
    classes = {k.layer: k.cls for k in kernels(graph, built.policy.bits)}
    assert classes["add"] == "add:q8" and classes["se.mul"] == "mul:q8" and classes["cat"] == "concat:q8"


def test_a_join_left_at_32_bits_stays_float(user_net: nn.Module) -> None:
    teacher = modularize(user_net)
    space = JointSpace(teacher, SHAPE, _space(), batch_size=16)
    params = {**space.uniform_params(0.0, 8, 8), "abits.se.mul": 32}
    built = build_student(teacher, params, space, calib=torch.randn(16, *SHAPE),
                          reduce_range=False)
    assert built.model is not None
    assert "se.mul" not in wrappers(built.model) and "cat" in wrappers(built.model)
    buffer = io.BytesIO(to_onnx(built.model, SHAPE).SerializeToString())
    nodes = onnx.load(buffer).graph.node
    mul = next(n for n in nodes if n.op_type == "Mul" and n.name.startswith("/se/mul"))
    assert not any(i.endswith("_dequantized") for i in mul.input)
