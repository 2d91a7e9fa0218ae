"""Built-in models: the MLPerf Tiny workloads, sized for small inputs.

Each builder is ``(input_shape=(C, H, W), num_classes=10) -> nn.Module`` and takes *normalized*
inputs of shape ``N×C×H×W`` (for Fashion-MNIST,
:func:`search.workloads.fashion_mnist.normalize`).

``resnet8``, ``dscnn`` and ``mobilenetv2`` are made only of modules (Conv2d, BatchNorm2d,
ReLU/ReLU6, AdaptiveAvgPool2d, Flatten, Linear and :class:`Add`). ``mobilenetv3`` and
``densenet`` are written as users write such networks, with functional ``+``, ``*`` and
``torch.cat``: edgetune turns each into a module of its own when it loads a model
(:func:`spaces.functional.modularize`), so they are pruned, quantized and priced like the rest.
All of them trace with ``torch.fx``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from search.errors import WorkloadError
from spaces.functional import Add

InputShape = tuple[int, int, int]
ModelBuilder = Callable[..., nn.Module]

__all__ = ["BUILTIN_MODELS", "Add", "densenet", "dscnn", "mobilenetv2", "mobilenetv3", "resnet8"]


def _check(input_shape: InputShape, num_classes: int, model: str) -> InputShape:
    shape = tuple(input_shape)
    if len(shape) != 3 or any(int(d) < 1 for d in shape):
        raise WorkloadError(
            f"{model}: input_shape must be (channels, height, width) with every entry >= 1, "
            f"got {input_shape!r}; give e.g. (1, 28, 28)"
        )
    if num_classes < 2:
        raise WorkloadError(f"{model}: num_classes must be >= 2, got {num_classes}")
    c, h, w = (int(d) for d in shape)
    return c, h, w


def _conv_bn(
    cin: int,
    cout: int,
    kernel: int | tuple[int, int],
    *,
    stride: int | tuple[int, int] = 1,
    groups: int = 1,
    act: type[nn.Module] | None = nn.ReLU,
) -> nn.Sequential:
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    layers: list[nn.Module] = [
        nn.Conv2d(
            cin,
            cout,
            (kh, kw),
            stride=stride,
            padding=((kh - 1) // 2, (kw - 1) // 2),
            groups=groups,
            bias=False,
        ),
        nn.BatchNorm2d(cout),
    ]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------------- ResNet-8


class ResidualBlock(nn.Module):
    """Conv-BN-ReLU, Conv-BN, plus a shortcut (identity, or a 1x1 conv where the shape
    changes, as in the MLPerf Tiny reference), then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = _conv_bn(cin, cout, 3, stride=stride)
        self.conv2 = _conv_bn(cout, cout, 3, act=None)
        self.shortcut: nn.Module = (
            nn.Conv2d(cin, cout, 1, stride=stride, bias=True)
            if stride != 1 or cin != cout
            else nn.Identity()
        )
        self.add = Add()
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.add(self.conv2(self.conv1(x)), self.shortcut(x)))


class ResNet8(nn.Module):
    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.stem = _conv_bn(in_channels, 16, 3)
        self.stage1 = ResidualBlock(16, 16, stride=1)
        self.stage2 = ResidualBlock(16, 32, stride=2)
        self.stage3 = ResidualBlock(32, 64, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(64, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stage3(self.stage2(self.stage1(self.stem(x))))
        return self.classifier(self.flatten(self.pool(x)))


def resnet8(input_shape: InputShape = (1, 28, 28), num_classes: int = 10) -> nn.Module:
    """MLPerf Tiny image-classification ResNet-8: stem conv 16, residual stages 16/32/64 (stride
    2 in stages 2 and 3, 1x1 conv shortcut there), global average pool, linear (78k params)."""
    c, _, _ = _check(input_shape, num_classes, "resnet8")
    return ResNet8(c, num_classes)


# ----------------------------------------------------------------------------------- DS-CNN


class DSCNN(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, stem_kernel: tuple[int, int]) -> None:
        super().__init__()
        self.stem = _conv_bn(in_channels, 64, stem_kernel, stride=2)
        self.blocks = nn.Sequential(
            *[nn.Sequential(_conv_bn(64, 64, 3, groups=64), _conv_bn(64, 64, 1)) for _ in range(4)]
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(64, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.flatten(self.pool(self.blocks(self.stem(x)))))


def dscnn(input_shape: InputShape = (1, 49, 10), num_classes: int = 10) -> nn.Module:
    """MLPerf Tiny keyword-spotting DS-CNN-S: conv 64 @10×4 stride 2, four depthwise-separable
    blocks (depthwise 3×3 + BN + ReLU, pointwise 64 + BN + ReLU), average pool, linear.

    The stem kernel is 10×4 (height×width) as in the reference, clipped to the input's height
    and width for inputs smaller than that; padding is ((k-1)//2) per side.
    """
    c, h, w = _check(input_shape, num_classes, "dscnn")
    return DSCNN(c, num_classes, (min(10, h), min(4, w)))


# ------------------------------------------------------------------------------ MobileNetV2


class InvertedResidual(nn.Module):
    """Expand 1x1 (ReLU6) -> depthwise 3x3 (ReLU6) -> linear 1x1 bottleneck, plus an
    :class:`Add` shortcut when stride is 1 and the channels match."""

    def __init__(self, cin: int, cout: int, *, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = cin * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(_conv_bn(cin, hidden, 1, act=nn.ReLU6))
        layers.append(_conv_bn(hidden, hidden, 3, stride=stride, groups=hidden, act=nn.ReLU6))
        layers.append(_conv_bn(hidden, cout, 1, act=None))
        self.body = nn.Sequential(*layers)
        self.add: Add | None = Add() if stride == 1 and cin == cout else None

    def forward(self, x: Tensor) -> Tensor:
        out = self.body(x)
        if self.add is not None:
            out = self.add(out, x)
        return out


# (expansion, out channels, repeats, first stride): a width small enough for 28×28 inputs.
_MBV2_CONFIG: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (4, 24, 2, 2),
    (4, 32, 2, 2),
    (4, 64, 2, 2),
)


class MobileNet(nn.Module):
    """A stem, blocks, a 1x1 head conv of 128 channels, average pool and a linear classifier:
    the MobileNetV2 and MobileNetV3 layouts."""

    def __init__(self, stem: nn.Module, blocks: list[nn.Module], cin: int,
                 head_act: type[nn.Module], num_classes: int) -> None:
        super().__init__()
        self.stem = stem
        self.blocks = nn.Sequential(*blocks)
        self.head = _conv_bn(cin, 128, 1, act=head_act)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(128, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.head(self.blocks(self.stem(x)))
        return self.classifier(self.flatten(self.pool(x)))


def mobilenetv2(input_shape: InputShape = (1, 28, 28), num_classes: int = 10) -> nn.Module:
    """A small MobileNetV2 (stem 16, inverted residual stages 16/24/32/64 with expansion 4,
    head 1x1 conv 128, average pool, linear). The stem has stride 1 for inputs up to 32 pixels
    on their shorter side (28×28, 32×32, 49×10) and stride 2 for larger ones."""
    c, h, w = _check(input_shape, num_classes, "mobilenetv2")
    blocks: list[nn.Module] = []
    cin = 16
    for expansion, cout, repeats, stride in _MBV2_CONFIG:
        for i in range(repeats):
            blocks.append(
                InvertedResidual(cin, cout, stride=stride if i == 0 else 1, expansion=expansion)
            )
            cin = cout
    stem = _conv_bn(c, 16, 3, stride=1 if min(h, w) <= 32 else 2, act=nn.ReLU6)
    return MobileNet(stem, blocks, cin, nn.ReLU6, num_classes)


# ------------------------------------------------------------------------------ MobileNetV3


class SqueezeExcite(nn.Module):
    """Global average pool, 1x1 conv squeeze (ReLU), 1x1 conv excite, hard-sigmoid, then the
    input scaled channel by channel: a functional ``x * s`` that broadcasts (N,C,1,1)."""

    def __init__(self, channels: int, squeezed: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.squeeze = nn.Conv2d(channels, squeezed, 1)
        self.relu = nn.ReLU()
        self.excite = nn.Conv2d(squeezed, channels, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gate(self.excite(self.relu(self.squeeze(self.pool(x)))))


class V3Block(nn.Module):
    """Expand 1x1, depthwise k x k, optional squeeze-and-excitation, linear 1x1; a functional
    ``x + out`` shortcut when stride is 1 and the channels match."""

    def __init__(self, cin: int, hidden: int, cout: int, *, kernel: int, stride: int,
                 se: bool, act: type[nn.Module]) -> None:
        super().__init__()
        self.expand = _conv_bn(cin, hidden, 1, act=act)
        self.depthwise = _conv_bn(hidden, hidden, kernel, stride=stride, groups=hidden, act=act)
        self.se: nn.Module = SqueezeExcite(hidden, max(8, hidden // 4)) if se else nn.Identity()
        self.project = _conv_bn(hidden, cout, 1, act=None)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        out = self.project(self.se(self.depthwise(self.expand(x))))
        return x + out if self.residual else out


# (kernel, hidden, out channels, squeeze-and-excitation, activation, stride)
_MBV3_CONFIG: tuple[tuple[int, int, int, bool, type[nn.Module], int], ...] = (
    (3, 32, 16, True, nn.ReLU, 2),
    (3, 48, 24, False, nn.ReLU, 2),
    (3, 64, 24, False, nn.ReLU, 1),
    (5, 96, 40, True, nn.Hardswish, 2),
    (5, 128, 40, True, nn.Hardswish, 1),
)


def mobilenetv3(input_shape: InputShape = (1, 28, 28), num_classes: int = 10) -> nn.Module:
    """A small MobileNetV3 (stem 3x3 16 hard-swish; five blocks 16/24/24/40/40 with 3x3 and 5x5
    depthwise convs, squeeze-and-excitation in three of them, hard-swish in the last two and two
    functional residual adds; head 1x1 conv 128, average pool, linear)."""
    c, _, _ = _check(input_shape, num_classes, "mobilenetv3")
    blocks: list[nn.Module] = []
    cin = 16
    for kernel, hidden, cout, se, act, stride in _MBV3_CONFIG:
        blocks.append(V3Block(cin, hidden, cout, kernel=kernel, stride=stride, se=se, act=act))
        cin = cout
    stem = _conv_bn(c, 16, 3, act=nn.Hardswish)
    return MobileNet(stem, blocks, cin, nn.Hardswish, num_classes)


# --------------------------------------------------------------------------------- DenseNet


class DenseLayer(nn.Module):
    """Conv 3x3 (BN, ReLU) of ``growth`` channels, concatenated to its input (``torch.cat``)."""

    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.conv = _conv_bn(cin, growth, 3)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([x, self.conv(x)], dim=1)


class DenseNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, growth: int = 12,
                 depth: int = 3) -> None:
        super().__init__()
        self.stem = _conv_bn(in_channels, 16, 3)
        stages: list[nn.Module] = []
        cin = 16
        for stage in range(3):
            layers: list[nn.Module] = []
            for _ in range(depth):
                layers.append(DenseLayer(cin, growth))
                cin += growth
            if stage < 2:  # transition: 1x1 conv to half the channels, 2x2 average pool
                layers += [_conv_bn(cin, cin // 2, 1), nn.AvgPool2d(2)]
                cin //= 2
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.flatten(self.pool(self.stages(self.stem(x)))))


def densenet(input_shape: InputShape = (1, 28, 28), num_classes: int = 10) -> nn.Module:
    """A small DenseNet: stem 3x3 16, three dense stages of three conv-BN-ReLU layers (growth
    12) each concatenated to its input with ``torch.cat``, 1x1 transitions halving the channels
    and 2x2 average pools between the stages, average pool, linear."""
    c, _, _ = _check(input_shape, num_classes, "densenet")
    return DenseNet(c, num_classes)


BUILTIN_MODELS: dict[str, ModelBuilder] = {
    "resnet8": resnet8,
    "dscnn": dscnn,
    "mobilenetv2": mobilenetv2,
    "mobilenetv3": mobilenetv3,
    "densenet": densenet,
}
