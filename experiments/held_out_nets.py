"""Networks of the kinds edge users bring, with random (pruned-like) widths, for checking cost
models on operators the ResNet/DS-CNN/MobileNetV2 generators of ``check_host_fidelity`` lack:

* ``mbv3``: MobileNetV3-style inverted residuals with squeeze-and-excitation (a broadcast Mul),
  hard-swish and hard-sigmoid, 3×3 and 5×5 depthwise convs;
* ``dense``: DenseNet-style blocks that concatenate every layer's output, with transitions;
* ``preact``: pre-activation ResNet blocks (BN-ReLU-Conv; a BatchNorm right after each
  residual Add);
* ``nb201``: NAS-Bench-201 networks of random cells (``experiments.nb201_torch``: a ``none`` edge
  is ``x * 0``; BatchNorm after the last Add), at 28×28 or 32×32 input.

Each generator takes a seeded ``random.Random`` and the input shape and returns an ``nn.Module``
in eval mode with trained-like batch-norm statistics.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import torch
from torch import nn

__all__ = ["FAMILIES", "build", "trained_like_bn"]


def _w(rng: random.Random, base: int) -> int:
    return max(4, int(base * rng.choice((0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0))))


def _cba(cin: int, cout: int, k: int, s: int = 1, g: int = 1, act: nn.Module | None = None) -> nn.Sequential:
    mods: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, s, (k - 1) // 2, groups=g, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act is not None:
        mods.append(act)
    return nn.Sequential(*mods)


class SE(nn.Module):
    def __init__(self, c: int, r: int = 4) -> None:
        super().__init__()
        mid = max(4, c // r)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1, self.fc2 = nn.Conv2d(c, mid, 1), nn.Conv2d(mid, c, 1)
        self.relu, self.gate = nn.ReLU(), nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.fc2(self.relu(self.fc1(self.pool(x)))))


class MBV3Block(nn.Module):
    def __init__(self, cin: int, hid: int, cout: int, k: int, s: int, se: bool, hs: bool) -> None:
        super().__init__()
        act: Callable[[], nn.Module] = nn.Hardswish if hs else nn.ReLU
        self.expand = _cba(cin, hid, 1, act=act())
        self.dw = _cba(hid, hid, k, s, g=hid, act=act())
        self.se = SE(hid) if se else nn.Identity()
        self.project = _cba(hid, cout, 1)
        self.res = s == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(self.dw(self.expand(x))))
        return x + y if self.res else y


def mbv3(rng: random.Random, cin: int) -> nn.Module:
    c = _w(rng, 16)
    layers: list[nn.Module] = [_cba(cin, c, 3, 2, act=nn.Hardswish())]
    for cout, k, s, se, hs in ((16, 3, 1, True, False), (24, 3, 2, False, False),
                               (24, 3, 1, False, False), (40, 5, 2, True, True),
                               (40, 5, 1, True, True)):
        co = c if (s == 1 and rng.random() < 0.5) else _w(rng, cout)
        layers.append(MBV3Block(c, c * rng.choice((3, 4, 6)), co, k, s, se, hs))
        c = co
    last = _w(rng, 96)
    layers += [_cba(c, last, 1, act=nn.Hardswish()), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
               nn.Linear(last, 10)]
    return nn.Sequential(*layers)


class DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(),
                                  nn.Conv2d(cin, 2 * growth, 1, bias=False),
                                  nn.BatchNorm2d(2 * growth), nn.ReLU(),
                                  nn.Conv2d(2 * growth, growth, 3, padding=1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.body(x)], 1)


def dense(rng: random.Random, cin: int) -> nn.Module:
    growth = rng.choice((8, 12, 16))
    c = _w(rng, 24)
    layers: list[nn.Module] = [nn.Conv2d(cin, c, 3, padding=1, bias=False)]
    for stage in range(3):
        for _ in range(rng.choice((2, 3, 4))):
            layers.append(DenseLayer(c, growth))
            c += growth
        if stage < 2:
            out = max(4, c // 2)
            layers += [nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, out, 1, bias=False),
                       nn.AvgPool2d(2)]
            c = out
    layers += [nn.BatchNorm2d(c), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
               nn.Linear(c, 10)]
    return nn.Sequential(*layers)


class PreActBlock(nn.Module):
    def __init__(self, cin: int, cout: int, s: int) -> None:
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, s, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.relu = nn.ReLU()
        self.short = (nn.Conv2d(cin, cout, 1, s, bias=False) if (s != 1 or cin != cout)
                      else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.relu(self.bn1(x))
        y = self.conv2(self.relu(self.bn2(self.conv1(a))))
        return y + self.short(a if not isinstance(self.short, nn.Identity) else x)


def preact(rng: random.Random, cin: int) -> nn.Module:
    c = _w(rng, 16)
    layers: list[nn.Module] = [nn.Conv2d(cin, c, 3, padding=1, bias=False)]
    for base, s in ((16, 1), (32, 2), (64, 2)):
        co = _w(rng, base)
        layers.append(PreActBlock(c, co, s))
        c = co
    layers += [nn.BatchNorm2d(c), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
               nn.Linear(c, 10)]
    return nn.Sequential(*layers)


def nb201(rng: random.Random, cin: int) -> nn.Module:
    from experiments.nb201 import OPS
    from experiments.nb201_torch import NB201Net

    ops = [o for o in OPS if o != "none"]  # a live cell (dead edges are checked elsewhere)
    arch = "+".join(
        "|" + "|".join(f"{rng.choice(ops)}~{i}" for i in range(j)) + "|" for j in (1, 2, 3)
    )
    net = NB201Net(arch)
    if cin != 3:
        net.stem[0] = nn.Conv2d(cin, 16, 3, padding=1, bias=False)
    return net


FAMILIES: dict[str, Callable[[random.Random, int], nn.Module]] = {
    "mbv3": mbv3,
    "dense": dense,
    "preact": preact,
    "nb201": nb201,
}


def build(family: str, rng: random.Random, cin: int, seed: int) -> nn.Module:
    """A network of ``family`` in eval mode, with batch-norm statistics drawn from ``seed``."""
    return trained_like_bn(FAMILIES[family](rng, cin), seed)


def trained_like_bn(m: nn.Module, seed: int) -> nn.Module:
    """``m`` in eval mode with trained-like batch-norm statistics drawn from ``seed``, so every
    folded bias is distinct (the exporter shares identical all-zero biases, which stops
    onnxruntime fusing those convs)."""
    gen = torch.Generator().manual_seed(seed)
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            n_c = mod.num_features
            mod.running_mean = torch.randn(n_c, generator=gen) * 0.1
            mod.running_var = torch.rand(n_c, generator=gen) + 0.5
            mod.weight.data.copy_(torch.rand(n_c, generator=gen) + 0.5)
            mod.bias.data.copy_(torch.randn(n_c, generator=gen) * 0.1)
    return m.eval()
