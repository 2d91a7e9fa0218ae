from __future__ import annotations

import operator

import pytest
import torch
from torch import fx, nn

from cost_models.torch_graph import fx_trace, join_kind
from search.errors import WorkloadError
from search.workloads.models import (
    BUILTIN_MODELS,
    Add,
    densenet,
    dscnn,
    mobilenetv2,
    mobilenetv3,
    resnet8,
)
from spaces.functional import modularize

SHAPES = [(1, 28, 28), (3, 32, 32), (1, 49, 10)]

# The joins of activations each model has once loaded (one module each): resnet8 and
# mobilenetv2 are written with Add modules, mobilenetv3 and densenet with functional ops.
EXPECTED_JOINS = {
    "resnet8": {"add": 3},
    "dscnn": {},
    "mobilenetv2": {"add": 4},
    "mobilenetv3": {"add": 2, "mul": 3},
    "densenet": {"concat": 9},
}


def test_registry_names_the_builders() -> None:
    assert BUILTIN_MODELS == {
        "resnet8": resnet8,
        "dscnn": dscnn,
        "mobilenetv2": mobilenetv2,
        "mobilenetv3": mobilenetv3,
        "densenet": densenet,
    }


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", sorted(BUILTIN_MODELS))
def test_builds_outputs_and_traces(name: str, shape: tuple[int, int, int]) -> None:
    torch.manual_seed(0)
    model = BUILTIN_MODELS[name](input_shape=shape, num_classes=7).eval()
    x = torch.randn(3, *shape)
    with torch.no_grad():
        out = model(x)
        traced = fx.symbolic_trace(model)
        assert out.shape == (3, 7)
        assert torch.allclose(traced(x), out, atol=1e-6)
    # Only the listed plain module types, so pruning, cost models and quantizers know them all.
    allowed = (
        nn.Conv2d,
        nn.BatchNorm2d,
        nn.ReLU,
        nn.ReLU6,
        nn.Hardswish,
        nn.Hardsigmoid,
        nn.AvgPool2d,
        nn.AdaptiveAvgPool2d,
        nn.Flatten,
        nn.Linear,
        nn.Identity,
        nn.Sequential,
        Add,
    )
    leaves = [m for m in model.modules() if not list(m.children())]
    assert all(isinstance(m, allowed) for m in leaves), {type(m).__name__ for m in leaves}


@pytest.mark.parametrize("name", sorted(BUILTIN_MODELS))
def test_every_join_is_a_module_of_its_own_once_loaded(name: str) -> None:
    model = modularize(BUILTIN_MODELS[name]((1, 28, 28)))
    joins = {n: join_kind(m) for n, m in model.named_modules() if join_kind(m) is not None}
    counts = {k: list(joins.values()).count(k) for k in set(joins.values())}
    assert counts == EXPECTED_JOINS[name]
    graph = fx_trace(model).graph  # joins are leaves: no functional +, * or cat is left
    functional = [
        n for n in graph.nodes
        if (n.op == "call_function" and n.target in (operator.add, operator.mul, torch.cat))
        or (n.op == "call_method" and n.target in ("add", "add_", "mul", "mul_"))
    ]
    assert functional == []
    called = [n.target for n in graph.nodes if n.op == "call_module" and n.target in joins]
    assert sorted(called) == sorted(joins)  # each instance is called exactly once


def test_resnet8_matches_mlperf_tiny_size() -> None:
    # The MLPerf Tiny reference ResNet-8 has 78k parameters (77,658 for one input channel).
    model = resnet8((1, 28, 28), 10)
    assert sum(p.numel() for p in model.parameters()) == 77_658
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [16, 16, 16, 32, 32, 32, 64, 64, 64]
    assert sum(1 for c in convs if c.kernel_size == (1, 1)) == 2  # shortcuts at stages 2, 3


def test_dscnn_stem_is_10x4_stride_2_and_clipped_for_narrow_inputs() -> None:
    stem = next(m for m in dscnn((1, 49, 10)).modules() if isinstance(m, nn.Conv2d))
    assert (stem.kernel_size, stem.stride, stem.out_channels) == ((10, 4), (2, 2), 64)
    small = next(m for m in dscnn((1, 6, 3)).modules() if isinstance(m, nn.Conv2d))
    assert small.kernel_size == (6, 3)
    assert dscnn((1, 6, 3))(torch.randn(2, 1, 6, 3)).shape == (2, 10)


@pytest.mark.parametrize("bad", [(28, 28), (1, 0, 28), (1, 28, 28, 1)])
def test_bad_input_shape_is_a_workload_error(bad: tuple[int, ...]) -> None:
    with pytest.raises(WorkloadError, match="input_shape"):
        resnet8(bad)  # type: ignore[arg-type]
