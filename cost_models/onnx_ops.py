"""Helpers of :func:`cost_models.from_onnx`: patterns that span several ONNX nodes, and the
reading of constant node inputs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["const_ints", "fold_pads", "merge_common", "silu_pairs"]

_QDQ = ("QuantizeLinear", "DequantizeLinear")


def silu_pairs(nodes: Any, readers: dict[str, int], inits: set[str]) -> dict[str, str]:
    """SiLU as torch exports it, ``Mul(x, Sigmoid(x))`` (with QDQ pairs in between in a QDQ
    model): the Sigmoid's output read only (through Q/DQ) by that Mul. Returns the Sigmoid
    output and the Mul output -> the Sigmoid's input tensor, for both nodes of each pair."""
    made: dict[str, Any] = {}
    for n in nodes:
        for o in n.output:
            made[o] = n

    def origin(t: str) -> str:
        while t not in inits and t in made and made[t].op_type in _QDQ:
            t = made[t].input[0]
        return t

    def sole_chain(t: str, end: str) -> bool:
        while t != end:
            if readers.get(t, 0) != 1 or t not in made or made[t].op_type not in _QDQ:
                return False
            t = made[t].input[0]
        return readers.get(end, 0) == 1

    pairs: dict[str, str] = {}
    for n in nodes:
        if n.op_type != "Mul" or len(n.input) != 2:
            continue
        for p, q in ((n.input[0], n.input[1]), (n.input[1], n.input[0])):
            sig = made.get(origin(p))
            if (sig is not None and sig.op_type == "Sigmoid"
                    and origin(sig.input[0]) == origin(q) and sole_chain(p, sig.output[0])):
                pairs[sig.output[0]] = sig.input[0]
                pairs[n.output[0]] = sig.input[0]
                break
    return pairs


def const_ints(
    node: Any, attrs: dict[str, Any], index: int, key: str, consts: dict[str, Any]
) -> list[int] | None:
    """An int list given as attribute ``key`` or (newer opsets) as constant input ``index``."""
    if key in attrs:
        return [int(v) for v in attrs[key]]
    if len(node.input) > index and node.input[index] in consts:
        return [int(v) for v in consts[node.input[index]].reshape(-1).tolist()]
    return None



def fold_pads(model: Any) -> Any:
    """``model`` with each Pad whose pads are computed from constants (torch writes ``F.pad``'s
    pads as ConstantOfShape/Concat/Reshape/Slice/Transpose/Cast) reading them as an
    initializer instead, so that shape inference gives its output shape. The constants are
    computed with onnx's reference evaluator; ``model`` itself is unchanged."""
    from onnx import numpy_helper

    g = model.graph
    if not any(n.op_type == "Pad" for n in g.node):
        return model
    consts: dict[str, Any] = {
        t.name: numpy_helper.to_array(t) for t in g.initializer if len(t.dims) <= 1
    }
    folded: dict[int, Any] = {}
    for k, node in enumerate(g.node):
        if node.op_type == "Pad" and len(node.input) > 1 and node.input[1] in consts:
            folded[k] = consts[node.input[1]]
            continue
        consts.update(_evaluate(node, consts))
    if not folded:
        return model
    out = type(model)()
    out.CopyFrom(model)
    for k, pads in folded.items():
        name = f"{out.graph.node[k].input[1]}__folded"
        out.graph.initializer.append(numpy_helper.from_array(pads.astype("int64"), name))
        out.graph.node[k].input[1] = name
    return out


def _evaluate(node: Any, consts: dict[str, Any]) -> dict[str, Any]:
    """The outputs of a node whose inputs are all small known constants; empty when they are
    not, or when onnx's reference evaluator cannot run the node."""
    ins = [i for i in node.input if i]
    if any(i not in consts for i in ins) or node.op_type in ("QuantizeLinear", "DequantizeLinear"):
        return {}
    try:
        from onnx.reference import ReferenceEvaluator

        outs = ReferenceEvaluator(node).run(None, {i: consts[i] for i in ins})
    except Exception:  # an op the reference cannot run: the constant stays unknown
        return {}
    return {o: v for o, v in zip(node.output, outs, strict=False) if getattr(v, "size", 99) <= 64}


def merge_common(nodes: Sequence[Any], outputs: Sequence[str]) -> list[Any]:
    """``nodes`` with common subexpressions merged, as onnxruntime's optimizer merges them: a
    node with the op, attributes and inputs of an earlier one is dropped, and its readers read
    the earlier node's outputs (two identical average pools of one tensor run once). A node
    that writes a graph output is kept, and so are QuantizeLinear/DequantizeLinear nodes
    (onnxruntime gives each quantized node its own before fusing them). The nodes are
    copies; the model is unchanged."""
    import onnx

    alias: dict[str, str] = {}
    seen: dict[tuple[Any, ...], Any] = {}
    keep_outputs = set(outputs)
    out = []
    for node in nodes:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        for i, name in enumerate(copy.input):
            if name in alias:
                copy.input[i] = alias[name]
        key = (
            copy.domain,
            copy.op_type,
            tuple(copy.input),
            tuple(sorted(a.SerializeToString() for a in copy.attribute)),
        )
        first = seen.get(key)
        if (
            first is not None
            and copy.op_type not in ("QuantizeLinear", "DequantizeLinear")
            and len(first.output) == len(copy.output)
            and not keep_outputs & set(copy.output)
        ):
            alias.update(zip(copy.output, first.output, strict=True))
            continue
        seen.setdefault(key, copy)
        out.append(copy)
    return out
