"""Dead-code elimination for :func:`cost_models.from_torch` and :func:`cost_models.from_onnx`,
as a device's compiler does it (TF grappler-style algebraic simplification and constant
folding; NAS-Bench-201's ``none`` edge, ``x * 0``, is the case that matters).

Every tensor is an *activation* (it depends on the network input), a *constant* (weights,
shapes), or *zero*:

* a product of an activation by a constant that is all zeros (the scalar 0, a zero tensor,
  also through Q/DQ or a cast) is zero; so is a product with a zero tensor;
* an op whose only activation inputs are zero tensors (conv, linear, BN, activations, pools,
  pad, resize, transpose, reshape, Q/DQ...) is a constant a compiler folds: it is *treated as
  zero* too (an approximation: BN(0) is its bias, ReLU(BN(0)) a constant, and adding such a
  folded constant to an activation is priced as nothing, not as a bias add);
* ``a + zero`` is ``a`` (no layer), ``zero + zero`` is zero; a concat of an activation with
  zero tensors stays a concat (its output and MACs are still the whole tensor), whose
  ``inputs`` are its activation parts only;
* other ops mixing an activation with a zero tensor are not simplified (the builder then
  reports the zero input as not an activation).

Then, backwards from the network output, only the ops whose result the output needs are kept
(ops feeding only zero products are dropped), and each tensor's readers are counted among the
kept ops only, so that fusion decisions see the graph the compiler runs. A network whose
output is zero (a constant) keeps no op: its graph has no layers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

__all__ = ["ACT", "CONST", "ZERO", "Liveness", "onnx_liveness", "torch_liveness"]

ACT, CONST, ZERO = "act", "const", "zero"

# ops through which an all-zero constant stays zero once dequantized (Q(0) is the zero point,
# which DequantizeLinear maps back to 0)
_ONNX_SAME = ("QuantizeLinear", "DequantizeLinear", "Cast", "Identity", "Reshape", "Squeeze",
              "Unsqueeze", "Expand", "Flatten", "Transpose")
_TORCH_MUL = ("mul", "mul_", "__mul__", "__rmul__", "imul")


@dataclass
class Liveness:
    """What each tensor is (:data:`ACT`, :data:`CONST` or :data:`ZERO`), which ops are kept, and
    how many kept ops (or network outputs) read each tensor."""

    state: dict[Any, str] = field(default_factory=dict)
    live: set[Any] = field(default_factory=set)
    readers: dict[Any, int] = field(default_factory=dict)

    def zero(self, t: Any) -> bool:
        return self.state.get(t) == ZERO


def _combine(mul: bool, states: list[str], zero_const: Callable[[int], bool]) -> str:
    """The state of an op's output from its inputs' states (an add or a concat is any op: an
    activation if any input is one); ``mul``: whether the op is a product; ``zero_const(i)``:
    whether input ``i`` is an all-zero constant (asked only of a product's constant inputs)."""
    has_act, has_zero = ACT in states, ZERO in states
    if mul and (has_act or has_zero) and (
        has_zero or any(s == CONST and zero_const(i) for i, s in enumerate(states))
    ):
        return ZERO
    if has_act:
        return ACT
    return ZERO if has_zero else CONST


def _nth(test: Callable[[Any], bool], items: list[Any], k: int) -> bool:
    return test(items[k])


def _never(k: int) -> bool:
    return False


def _count(live: Iterable[Any], ins: Callable[[Any], Iterable[Any]], state: dict[Any, str],
           outputs: Iterable[Any]) -> dict[Any, int]:
    readers: dict[Any, int] = {}
    for n in live:
        for i in ins(n):
            if state.get(i) != ZERO:
                readers[i] = readers.get(i, 0) + 1
    for o in outputs:
        if state.get(o) != ZERO:
            readers[o] = readers.get(o, 0) + 1
    return readers


def onnx_liveness(nodes: Any, inits: dict[str, Any], input_name: str,
                  outputs: list[str]) -> Liveness:
    """The liveness of an ONNX graph's nodes (``live`` holds node indices; tensors by name)."""
    from onnx import numpy_helper

    made = {o: n for n in nodes for o in n.output}
    memo: dict[str, bool] = {}

    def zero_valued(t: str) -> bool:
        if t not in memo:
            memo[t] = False  # while it is being computed (a valid graph has no cycle)
            memo[t] = _onnx_zero(t)
        return memo[t]

    def _onnx_zero(t: str) -> bool:
        if t in inits:
            arr = numpy_helper.to_array(inits[t])
            return bool(arr.size) and not arr.any()
        n = made.get(t)
        if n is None:
            return False
        if n.op_type == "Constant":
            value = next((a.t for a in n.attribute if a.name == "value"), None)
            if value is None:
                return False
            arr = numpy_helper.to_array(value)
            return bool(arr.size) and not arr.any()
        if n.op_type == "ConstantOfShape":
            value = next((a.t for a in n.attribute if a.name == "value"), None)
            return value is None or not numpy_helper.to_array(value).any()
        if n.op_type == "DequantizeLinear" and n.input[0] in inits:
            q = numpy_helper.to_array(inits[n.input[0]]).astype("int64")
            zp = 0
            if len(n.input) > 2 and n.input[2] in inits:
                zps = numpy_helper.to_array(inits[n.input[2]]).astype("int64").reshape(-1)
                if len(set(zps.tolist())) != 1:
                    return False
                zp = int(zps[0])
            return bool(q.size) and not (q - zp).any()
        return n.op_type in _ONNX_SAME and zero_valued(n.input[0])

    state: dict[Any, str] = {input_name: ACT}
    for n in nodes:
        ins = [i for i in n.input if i]
        states = [state.get(i, CONST) for i in ins]
        if n.op_type in ("Constant", "Shape"):
            s = CONST
        else:
            s = _combine(n.op_type == "Mul", states, partial(_nth, zero_valued, ins))
        for o in n.output:
            state[o] = s
    needed = {o for o in outputs if state.get(o) != ZERO}
    live: set[Any] = set()
    for k in range(len(nodes) - 1, -1, -1):
        n = nodes[k]
        if any(o in needed for o in n.output):
            live.add(k)
            needed.update(i for i in n.input if i and state.get(i) != ZERO)
    readers = _count((nodes[k] for k in live), lambda n: n.input, state, outputs)
    return Liveness(state, live, readers)


def torch_liveness(gm: Any) -> Liveness:
    """The liveness of a traced ``torch.fx.GraphModule``'s nodes (tensors are nodes)."""
    import operator

    import torch
    from torch import fx

    def node_args(n: Any) -> list[Any]:
        out: list[Any] = []
        fx.node.map_arg((n.args, n.kwargs), out.append)
        return out

    def zero_operand(v: Any) -> bool:
        if isinstance(v, (int, float)):
            return v == 0
        if isinstance(v, fx.Node) and v.op == "get_attr":
            t = gm
            for part in str(v.target).split("."):
                t = getattr(t, part)
            return isinstance(t, torch.Tensor) and t.numel() > 0 and not bool(t.any())
        return False

    state: dict[Any, str] = {}
    for n in gm.graph.nodes:
        if n.op == "placeholder":
            state[n] = ACT
            continue
        if n.op in ("get_attr", "output"):
            state[n] = CONST
            continue
        fname = getattr(n.target, "__name__", str(n.target))
        if fname == "zeros_like":
            state[n] = ZERO
            continue
        if n.target in (operator.mul, operator.imul, torch.mul) or fname in _TORCH_MUL:
            operands = list(n.args[:2]) + [n.kwargs[k] for k in ("other",) if k in n.kwargs]
            states = [state.get(v, CONST) if isinstance(v, fx.Node) else CONST for v in operands]
            state[n] = _combine(True, states, partial(_nth, zero_operand, operands))
            continue
        state[n] = _combine(False, [state.get(a, CONST) for a in node_args(n)], _never)
    needed: set[Any] = set()
    live: set[Any] = set()
    for n in reversed(list(gm.graph.nodes)):
        if n.op == "output":
            needed.update(a for a in node_args(n) if state.get(a) != ZERO)
        elif n in needed:
            live.add(n)
            needed.update(a for a in node_args(n) if state.get(a) != ZERO)
    outputs = [n for n in gm.graph.nodes if n.op == "output"]
    readers = _count([*live, *outputs], lambda n: dict.fromkeys(node_args(n)), state, ())
    return Liveness(state, live, readers)
