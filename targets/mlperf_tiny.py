"""Layer graphs of the four MLPerf Tiny reference models (mlcommons/tiny, closed division),
built by hand (no torch): ``ic`` ResNet-8, ``kws`` DS-CNN-S, ``vww`` MobileNetV1-0.25, ``ad``
the dense autoencoder. Batch norm is folded, ReLUs are fused (as the int8 TFLite models have it).
"""

from __future__ import annotations

from cost_models.builder import GraphBuilder
from cost_models.graph import LayerGraph

__all__ = ["BENCHMARKS", "mlperf_graph"]

BENCHMARKS = ("ic", "kws", "vww", "ad")


def _ic() -> LayerGraph:
    b = GraphBuilder((1, 3, 32, 32))
    x = b.relu(b.conv("", 16, 3))
    for c, s in ((16, 1), (32, 2), (64, 2)):
        y = b.conv(b.relu(b.conv(x, c, 3, stride=s)), c, 3)
        sc = x if s == 1 else b.conv(x, c, 1, stride=s)
        x = b.relu(b.add(y, sc))
    b.linear(b.gap(x), 10)
    return b.build()


def _kws() -> LayerGraph:
    b = GraphBuilder((1, 1, 49, 10))
    x = b.relu(b.conv("", 64, 10, kw=4, stride=2))
    for _ in range(4):
        x = b.relu(b.conv(b.relu(b.conv(x, 64, 3, groups=64)), 64, 1))
    b.linear(b.gap(x), 12)
    return b.build()


def _vww() -> LayerGraph:
    b = GraphBuilder((1, 3, 96, 96))
    x = b.relu(b.conv("", 8, 3, stride=2))
    c = 8
    for cout, s in (
        (16, 1),
        (32, 2),
        (32, 1),
        (64, 2),
        (64, 1),
        (128, 2),
        *[(128, 1)] * 5,
        (256, 2),
        (256, 1),
    ):
        x = b.relu(b.conv(b.relu(b.conv(x, c, 3, stride=s, groups=c)), cout, 1))
        c = cout
    b.linear(b.gap(x), 2)
    return b.build()


def _ad() -> LayerGraph:
    b = GraphBuilder((1, 640))
    x = ""
    for width in (128, 128, 128, 128, 8, 128, 128, 128, 128):
        x = b.relu(b.linear(x, width))
    b.linear(x, 640)
    return b.build()


def mlperf_graph(benchmark: str) -> LayerGraph:
    """The layer graph of MLPerf Tiny reference model ``benchmark`` (``ic``/``kws``/``vww``/``ad``)."""
    builders = {"ic": _ic, "kws": _kws, "vww": _vww, "ad": _ad}
    if benchmark not in builders:
        raise KeyError(f"unknown MLPerf Tiny benchmark {benchmark!r}; valid: {BENCHMARKS}")
    return builders[benchmark]()
