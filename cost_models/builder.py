"""Building a :class:`LayerGraph` by hand, layer by layer, without torch or onnx.

For networks known only by a description: NAS-Bench-201 cells, the MLPerf Tiny reference models,
rows of a per-layer latency table. Shapes are NCHW at batch 1, padding is "same" (``(k-1)//2``),
and MACs and parameters are counted as :func:`cost_models.from_torch` counts them (batch norm
folded into a bias, activations after a conv fused into it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cost_models.graph import Layer, LayerGraph

__all__ = ["GraphBuilder"]


@dataclass
class GraphBuilder:
    """Appends layers; every method takes and returns a tensor handle (the producer's name,
    ``""`` for the graph input)."""

    input_shape: tuple[int, ...]
    layers: list[Layer] = field(default_factory=list)
    _shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._shapes[""] = tuple(self.input_shape)

    def shape(self, x: str) -> tuple[int, ...]:
        return self._shapes[x]

    def _add(self, kind: str, x: tuple[str, ...], out_shape: tuple[int, ...], **kw: Any) -> str:
        name = f"{kind}_{len(self.layers)}"
        self.layers.append(Layer(name=name, kind=kind, in_shape=self._shapes[x[0]],
                                 out_shape=out_shape, inputs=x, **kw))
        self._shapes[name] = out_shape
        return name

    def conv(self, x: str, cout: int, k: int, *, stride: int = 1, groups: int = 1,
             bias: bool = True, kw: int | None = None) -> str:
        """A k×k conv (or k×kw), "same" padding, stride ``stride``; ``groups == cin == cout``
        makes it depthwise."""
        _, cin, h, w = self._shapes[x]
        kw = kw or k
        oh, ow = -(-h // stride), -(-w // stride)
        macs = oh * ow * cout * (cin // groups) * k * kw
        params = cout * (cin // groups) * k * kw + (cout if bias else 0)
        kind = "dwconv" if groups > 1 and groups == cin == cout else "conv"
        return self._add(kind, (x,), (1, cout, oh, ow), macs=macs, params=params, kernel=k,
                         stride=stride, groups=groups)

    def relu(self, x: str) -> str:
        s = self._shapes[x]
        n = 1
        for d in s:
            n *= d
        return self._add("relu", (x,), s, macs=n)

    def add(self, a: str, b: str) -> str:
        s = self._shapes[a]
        if s != self._shapes[b]:
            raise ValueError(f"add of different shapes {s} and {self._shapes[b]}")
        n = 1
        for d in s:
            n *= d
        return self._add("add", (a, b), s, macs=n)

    def pool(self, x: str, kind: str, k: int, *, stride: int = 1) -> str:
        """``maxpool``/``avgpool`` k×k ("same" padding when stride is 1, none otherwise)."""
        _, c, h, w = self._shapes[x]
        oh, ow = (h, w) if stride == 1 else ((h - k) // stride + 1, (w - k) // stride + 1)
        return self._add(kind, (x,), (1, c, oh, ow), macs=c * oh * ow * k * k, kernel=k,
                         stride=stride)

    def gap(self, x: str) -> str:
        _, c, h, w = self._shapes[x]
        return self._add("gap", (x,), (1, c, 1, 1), macs=c * h * w)

    def linear(self, x: str, fout: int, *, bias: bool = True) -> str:
        s = self._shapes[x]
        fin = 1
        for d in s[1:]:
            fin *= d
        self._shapes[x + "#flat"] = (1, fin)
        name = f"linear_{len(self.layers)}"
        self.layers.append(Layer(name=name, kind="linear", in_shape=(1, fin), out_shape=(1, fout),
                                 macs=fin * fout, params=fin * fout + (fout if bias else 0),
                                 inputs=(x,)))
        self._shapes[name] = (1, fout)
        return name

    def build(self) -> LayerGraph:
        """The graph, with each ReLU whose producer is a conv, linear or add read by that ReLU
        alone fused into its producer (the :mod:`cost_models.graph` convention)."""
        from dataclasses import replace

        readers: dict[str, int] = {}
        for la in self.layers:
            for src in la.inputs:
                readers[src] = readers.get(src, 0) + 1
        kinds = {la.name: la.kind for la in self.layers}
        alias: dict[str, str] = {}
        out = []
        for la in self.layers:
            la = replace(la, inputs=tuple(alias.get(s, s) for s in la.inputs))
            src = la.inputs[0] if la.inputs else ""
            if (la.kind == "relu" and kinds.get(src) in ("conv", "dwconv", "linear", "add")
                    and readers.get(src) == 1):
                alias[la.name] = src
                continue
            out.append(la)
        return LayerGraph(layers=tuple(out), input_shape=tuple(self.input_shape))
