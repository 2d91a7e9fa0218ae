from __future__ import annotations

import operator

import pytest
import torch
from torch import fx, nn

from search.errors import WorkloadError
from search.workloads.models import BUILTIN_MODELS, Add, dscnn, mobilenetv2, resnet8

SHAPES = [(1, 28, 28), (3, 32, 32), (1, 49, 10)]

# How many residual additions each model has (one Add instance each).
EXPECTED_ADDS = {"resnet8": 3, "dscnn": 0, "mobilenetv2": 4}


class _AddIsLeaf(fx.Tracer):
    """The tracer a quantizer would use: Add stays a module, so it can be wrapped."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, Add) or super().is_leaf_module(m, module_qualified_name)


def test_registry_names_the_builders() -> None:
    assert BUILTIN_MODELS == {"resnet8": resnet8, "dscnn": dscnn, "mobilenetv2": mobilenetv2}


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
def test_residuals_are_add_modules_one_per_addition(name: str) -> None:
    model = BUILTIN_MODELS[name]((1, 28, 28))
    adds = [n for n, m in model.named_modules() if isinstance(m, Add)]
    assert len(adds) == EXPECTED_ADDS[name]
    graph = _AddIsLeaf().trace(model)
    functional_adds = [
        n
        for n in graph.nodes
        if (n.op == "call_function" and n.target in (operator.add, torch.add))
        or (n.op == "call_method" and n.target in ("add", "add_"))
    ]
    assert functional_adds == []
    called = [n.target for n in graph.nodes if n.op == "call_module" and n.target in adds]
    assert sorted(called) == sorted(adds)  # each instance is called exactly once


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
