"""NAS-Bench-201 networks from their ``arch_str``, as layer graphs or ONNX models.

The skeleton (Dong & Yang, "NAS-Bench-201", ICLR 2020; ``../shared/data/devices/README.md``),
for 32×32×3 input and 10 classes:

* stem: 3×3 conv, 16 channels (+ batch norm, folded);
* three stages of 5 cells at 16, 32 and 64 channels, with a residual reduction block between
  stages: ReLU-Conv3×3(stride 2)-BN, ReLU-Conv3×3-BN, plus a shortcut AvgPool2×2 + Conv1×1,
  summed;
* last activation (BN + ReLU), global average pooling, linear classifier.

A cell has nodes 0..3; node j sums the ops on its edges from nodes i < j. ``arch_str`` is
``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``. Ops: ``none`` (no edge), ``skip_connect`` (identity,
no layer), ``nor_conv_1x1`` / ``nor_conv_3x3`` (a ReLU layer, then a conv with the batch norm
folded), ``avg_pool_3x3`` (3×3 average pool, stride 1). Summing m edges takes m-1 ``add``
layers. Runtimes compile the network, and the measured latencies show dead code is removed: a
node whose edges are all ``none`` (or read zero nodes) holds zeros and its readers are dropped,
ops feeding no path to the cell output are dropped, and a network whose cells output zeros is
a constant (its graph here has no layers). Common subexpressions are merged, as compilers and
onnxruntime merge them: a node read by several conv edges has one ReLU, and by several pool
edges one pool. The last BN is folded into the classifier (BN → GAP → linear is linear).

    python -m experiments.nb201 "|nor_conv_3x3~0|+|skip_connect~0|none~1|+|...|"  # prints MACs
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from cost_models.builder import GraphBuilder
from cost_models.graph import LayerGraph

if TYPE_CHECKING:
    import onnx

__all__ = ["OPS", "ConstantNetworkError", "nb201_graph", "nb201_onnx", "parse_arch"]

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
STAGES = (16, 32, 64)
CELLS_PER_STAGE = 5
INPUT_SHAPE = (1, 3, 32, 32)
NUM_CLASSES = 10


def parse_arch(arch_str: str) -> list[list[tuple[str, int]]]:
    """``arch_str`` -> for nodes 1..3, the list of (op, from-node) edges into it."""
    nodes = []
    for j, part in enumerate(arch_str.strip().split("+"), start=1):
        edges = []
        for tok in part.strip("|").split("|"):
            op, _, src = tok.partition("~")
            if op not in OPS or not src.isdigit() or int(src) >= j:
                raise ValueError(
                    f"arch_str {arch_str!r}: edge {tok!r} of node {j} must be 'op~i' with op in "
                    f"{OPS} and i < {j}"
                )
            edges.append((op, int(src)))
        nodes.append(edges)
    if len(nodes) != 3 or [len(e) for e in nodes] != [1, 2, 3]:
        raise ValueError(f"arch_str {arch_str!r}: expected 3 nodes with 1, 2 and 3 edges")
    return nodes


class ConstantNetworkError(ValueError):
    """The network's output does not depend on its input: every cell outputs zeros."""


def _live_edges(nodes: list[list[tuple[str, int]]]) -> dict[int, set[tuple[str, int]]] | None:
    """The edges a compiled graph keeps: not ``none``, not reading a zero node, and feeding a
    node that reaches the cell output (dead code is removed). ``None`` if node 3 is zero."""
    zero = [False]
    for edges in nodes:
        zero.append(all(op == "none" or zero[i] for op, i in edges))
    if zero[3]:
        return None
    used = {3}
    for j in (3, 2, 1):
        if j in used:
            used |= {i for op, i in nodes[j - 1] if op != "none" and not zero[i]}
    return {
        j: {(op, i) for op, i in nodes[j - 1] if op != "none" and not zero[i]}
        if j in used
        else set()
        for j in (1, 2, 3)
    }


class _Ops:
    """The few operations the skeleton needs, on a graph builder or an ONNX builder."""

    def __init__(self, onnx_out: bool) -> None:
        self.onnx_out = onnx_out
        if onnx_out:
            from targets.onnx_builder import OnnxBuilder

            self.ob = OnnxBuilder(INPUT_SHAPE[1:], seed=0)
            self.c: dict[str, int] = {"input": 3}
        else:
            self.gb = GraphBuilder(INPUT_SHAPE)

    def input(self) -> str:
        return "input" if self.onnx_out else ""

    def channels(self, x: str) -> int:
        return self.c[x] if self.onnx_out else self.gb.shape(x)[1]

    def conv(self, x: str, cout: int, k: int, stride: int = 1) -> str:
        if not self.onnx_out:
            return self.gb.conv(x, cout, k, stride=stride)
        y = self.ob.conv(x, self.c[x], cout, k, stride=stride, relu=False)
        self.c[y] = cout
        return y

    def relu(self, x: str) -> str:
        if not self.onnx_out:
            return self.gb.relu(x)
        y = self.ob.relu(x)
        self.c[y] = self.c[x]
        return y

    def add(self, a: str, b: str) -> str:
        if not self.onnx_out:
            return self.gb.add(a, b)
        y = self.ob.add(a, b)
        self.c[y] = self.c[a]
        return y

    def avgpool(self, x: str, k: int, stride: int) -> str:
        if not self.onnx_out:
            return self.gb.pool(x, "avgpool", k, stride=stride)
        from onnx import helper

        y = self.ob._name("avgpool")
        pads = [(k - 1) // 2] * 4 if stride == 1 else [0] * 4
        self.ob.nodes.append(
            helper.make_node(
                "AveragePool",
                [x],
                [y],
                kernel_shape=[k, k],
                strides=[stride, stride],
                pads=pads,
                count_include_pad=0,
            )
        )
        self.c[y] = self.c[x]
        return y

    def head(self, x: str) -> str:
        if not self.onnx_out:
            return self.gb.linear(self.gb.gap(self.gb.relu(x)), NUM_CLASSES)
        y = self.ob.pool(self.relu(x), "gap")
        return self.ob.linear(y, self.c[x], NUM_CLASSES)


def _build(arch_str: str, ops: _Ops) -> str:
    nodes = parse_arch(arch_str)
    live_edges = _live_edges(nodes)
    if live_edges is None:
        raise ConstantNetworkError(
            f"arch_str {arch_str!r}: no path of non-zero ops reaches the cell output, so the "
            f"network's output is a constant (runtimes measure it as almost free)"
        )
    x = ops.conv(ops.input(), STAGES[0], 3)
    for s, c in enumerate(STAGES):
        if s > 0:  # residual reduction block
            a = ops.conv(ops.relu(x), c, 3, stride=2)
            a = ops.conv(ops.relu(a), c, 3)
            sc = ops.conv(ops.avgpool(x, 2, 2), c, 1)
            x = ops.add(a, sc)
        for _ in range(CELLS_PER_STAGE):
            vals: list[str | None] = [x]
            # one ReLU (and one 3x3 pool) per node, however many edges read it: compilers
            # merge common subexpressions
            relu_of: dict[str, str] = {}
            pool_of: dict[str, str] = {}
            for j, edges in enumerate(nodes, start=1):
                outs: list[str] = []
                for op, i in edges:
                    src = vals[i]
                    if (op, i) not in live_edges[j] or src is None:
                        continue  # dead, or reading a zero node (never live)
                    if op == "skip_connect":
                        outs.append(src)
                    elif op == "avg_pool_3x3":
                        if src not in pool_of:
                            pool_of[src] = ops.avgpool(src, 3, 1)
                        outs.append(pool_of[src])
                    else:
                        if src not in relu_of:
                            relu_of[src] = ops.relu(src)
                        outs.append(ops.conv(relu_of[src], c, 1 if op == "nor_conv_1x1" else 3))
                acc: str | None = outs[0] if outs else None
                for o in outs[1:]:
                    acc = ops.add(acc, o) if acc is not None else o
                vals.append(acc)
            out = vals[3]
            if out is None:
                raise AssertionError("cell output is zero but the network is not constant")
            x = out
    return ops.head(x)


def nb201_graph(arch_str: str) -> LayerGraph:
    """The layer graph (fp32, batch 1) of the NAS-Bench-201 network ``arch_str``; a network
    whose output is constant (:class:`ConstantNetworkError`) has no layers."""
    ops = _Ops(onnx_out=False)
    try:
        _build(arch_str, ops)
    except ConstantNetworkError:
        return LayerGraph(layers=(), input_shape=INPUT_SHAPE)
    return ops.gb.build()


def nb201_onnx(arch_str: str) -> onnx.ModelProto:
    """The same network as an fp32 ONNX model (random weights, batch norm folded), e.g. for a
    whole-model measurements CSV; ``cost_models.from_onnx`` gives back :func:`nb201_graph`'s
    layers."""
    ops = _Ops(onnx_out=True)
    y = _build(arch_str, ops)
    return ops.ob.build(y, "nb201")


if __name__ == "__main__":
    g = nb201_graph(sys.argv[1])
    print(f"{len(g.layers)} layers, {sum(la.macs for la in g.layers) / 1e6:.1f} M MACs")
