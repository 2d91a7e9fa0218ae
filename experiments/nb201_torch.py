"""NAS-Bench-201 networks as PyTorch modules, written as the benchmark's own code writes them,
and nothing folded: ReLU-Conv-BN ops, a ``none`` edge as ``x * 0``, the residual reduction
blocks, and the last BatchNorm + ReLU after the final cell's sum (BatchNorm after an Add).

``experiments.nb201`` builds the same skeleton directly as layer graphs and hand-made ONNX (batch
norm folded, dead code dropped); this module is the independent path a user takes: a torch
model exported with ``torch.onnx.export``.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from experiments.nb201 import parse_arch

if TYPE_CHECKING:
    import onnx

__all__ = ["NB201Net", "nb201_torch_onnx"]

STAGES = (16, 32, 64)
CELLS_PER_STAGE = 5


class ReLUConvBN(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int, stride: int = 1) -> None:
        super().__init__(
            nn.ReLU(),
            nn.Conv2d(cin, cout, k, stride=stride, padding=(k - 1) // 2, bias=False),
            nn.BatchNorm2d(cout),
        )


class Zero(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


def _op(name: str, c: int) -> nn.Module:
    if name == "none":
        return Zero()
    if name == "skip_connect":
        return nn.Identity()
    if name == "nor_conv_1x1":
        return ReLUConvBN(c, c, 1)
    if name == "nor_conv_3x3":
        return ReLUConvBN(c, c, 3)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise ValueError(f"unknown NB201 op {name!r}")


class Cell(nn.Module):
    def __init__(self, arch: list[list[tuple[str, int]]], c: int) -> None:
        super().__init__()
        self.inputs = [[src for _, src in node] for node in arch]
        self.edges = nn.ModuleList(nn.ModuleList(_op(op, c) for op, _ in node) for node in arch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for srcs, ops in zip(self.inputs, list(self.edges), strict=True):
            total = None
            for src, op in zip(srcs, cast(nn.ModuleList, ops), strict=True):
                y = op(nodes[src])
                total = y if total is None else total + y
            assert total is not None
            nodes.append(total)
        return nodes[-1]


class Reduction(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(cin, cout, 3, stride=2)
        self.conv_b = ReLUConvBN(cout, cout, 3)
        self.downsample = nn.Sequential(
            nn.AvgPool2d(2, stride=2), nn.Conv2d(cin, cout, 1, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))


class NB201Net(nn.Module):
    def __init__(self, arch_str: str, num_classes: int = 10) -> None:
        super().__init__()
        arch = parse_arch(arch_str)
        self.stem = nn.Sequential(nn.Conv2d(3, STAGES[0], 3, padding=1, bias=False),
                                  nn.BatchNorm2d(STAGES[0]))
        layers: list[nn.Module] = []
        for i, c in enumerate(STAGES):
            if i:
                layers.append(Reduction(STAGES[i - 1], c))
            layers += [Cell(arch, c) for _ in range(CELLS_PER_STAGE)]
        self.cells = nn.Sequential(*layers)
        self.lastact = nn.Sequential(nn.BatchNorm2d(STAGES[-1]), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(STAGES[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.lastact(self.cells(self.stem(x)))
        return self.classifier(torch.flatten(self.pool(x), 1))


def nb201_torch_onnx(arch_str: str) -> onnx.ModelProto:
    """The network exported to fp32 ONNX by torch's defaults, as a user would, in eval mode
    (the exporter folds a BatchNorm into the conv before it; the last one stays)."""
    import onnx

    buf = io.BytesIO()
    torch.onnx.export(NB201Net(arch_str).eval(), (torch.zeros(1, 3, 32, 32),), cast(Any, buf),
                      dynamo=False)
    return onnx.load_from_string(buf.getvalue())
