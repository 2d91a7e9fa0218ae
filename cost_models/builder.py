"""Building a :class:`LayerGraph` by hand, layer by layer, without torch or onnx.

For networks known only by a description: NAS-Bench-201 cells, the MLPerf Tiny reference models,
rows of a per-layer latency table. Shapes are NCHW at batch 1, padding is "same" (``(k-1)//2``),
and MACs and parameters are counted as :func:`cost_models.from_torch` counts them (see
:mod:`cost_models.graph`). A conv has its batch norm folded into its bias; :meth:`bn` adds a
batch norm that is not (after an add, at the network start...). :meth:`relu`/:meth:`act` after
a conv, linear or add read by it alone is fused into it by :meth:`build` (except SiLU), as the
graph builders do. A NAS-Bench-201 cell, for instance: ``x = b.add(b.conv(b.relu(n0), c, 3),
b.conv(b.relu(n1), c, 1))`` then ``b.bn(x)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cost_models.graph import Layer, LayerGraph
from cost_models.ops import NEVER_FUSED_ACTS, act_kind, act_name, broadcast, prod

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
        return self._add("relu", (x,), s, macs=prod(s))

    def act(self, x: str, op: str) -> str:
        """A standalone activation ``op`` (``"sigmoid"``, ``"hardswish"``, ``"silu"``,
        ``"relu6"``...): an ``act`` layer naming it (a ``relu`` layer for ``"relu"``)."""
        a = act_name(op)
        kind = act_kind(a)
        s = self._shapes[x]
        return self._add(kind, (x,), s, macs=prod(s), act=a if kind == "act" else "")

    def _broadcast(self, kind: str, a: str, b: str) -> tuple[int, ...]:
        sa, sb = self._shapes[a], self._shapes[b]
        out = broadcast(sa, sb)
        if any(d not in (1, o) for s in (sa, sb) for d, o in zip(s[::-1], out[::-1], strict=False)):
            raise ValueError(f"{kind} of shapes {sa} and {sb}, which do not broadcast")
        return out

    def add(self, a: str, b: str) -> str:
        """``a + b``; the shapes may broadcast."""
        s = self._broadcast("add", a, b)
        return self._add("add", (a, b), s, macs=prod(s))

    def mul(self, a: str, b: str | None = None) -> str:
        """``a * b`` (squeeze-and-excitation: ``b`` of shape ``(1, C, 1, 1)``), or ``a`` times a
        constant when ``b`` is None."""
        if b is None:
            s = self._shapes[a]
            return self._add("mul", (a,), s, macs=prod(s))
        s = self._broadcast("mul", a, b)
        return self._add("mul", (a, b), s, macs=prod(s))

    def concat(self, *xs: str) -> str:
        """Concatenation along channels."""
        first = self._shapes[xs[0]]
        if any(self._shapes[x][:1] + self._shapes[x][2:] != first[:1] + first[2:] for x in xs):
            raise ValueError(f"concat of shapes {[self._shapes[x] for x in xs]}: only the "
                             f"channels may differ")
        s = (first[0], sum(self._shapes[x][1] for x in xs), *first[2:])
        return self._add("concat", tuple(xs), s, macs=prod(s))

    def bn(self, x: str) -> str:
        """A batch norm that is not folded into a conv: per-channel scale and shift."""
        s = self._shapes[x]
        return self._add("bn", (x,), s, macs=prod(s), params=4 * s[1])

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
        """The graph, with each activation (but SiLU) whose producer is a conv, linear or add
        read by that activation alone fused into its producer (the :mod:`cost_models.graph`
        convention: the producer's ``act`` names it)."""
        from dataclasses import replace

        readers: dict[str, int] = {}
        for la in self.layers:
            for src in la.inputs:
                readers[src] = readers.get(src, 0) + 1
        alias: dict[str, str] = {}
        out: dict[str, Layer] = {}
        for la in self.layers:
            la = replace(la, inputs=tuple(alias.get(s, s) for s in la.inputs))
            pl = out.get(la.inputs[0]) if la.inputs else None
            act = "relu" if la.kind == "relu" else la.act if la.kind == "act" else ""
            if (act and act not in NEVER_FUSED_ACTS and pl is not None and not pl.act
                    and pl.kind in ("conv", "dwconv", "linear", "add")
                    and readers.get(pl.name) == 1):
                out[pl.name] = replace(pl, act=act)
                alias[la.name] = pl.name
                continue
            out[la.name] = la
        return LayerGraph(layers=tuple(out.values()), input_shape=tuple(self.input_shape))
