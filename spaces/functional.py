"""Functional joins as modules: ``+``, ``*`` and ``torch.cat`` of activations become ``Add``,
``Mul`` and ``Cat`` modules, so each can be quantized, pruned across and priced by its name.

Users write squeeze-and-excitation as ``x * s``, residuals as ``x + y`` and DenseNet blocks as
``torch.cat([x, y], 1)``. A fake-quant wrapper can only be put around a module, so
:func:`modularize` traces, with ``torch.fx``, the forward of each of the model's own modules
(not torch's layers and containers), its submodules as leaves, and rewrites every such op whose
operands are all activations (not constants, parameters or zero tensors) into a call of a new
module, set on the module that runs it: ``blocks.3.se.mul``, ``stages.0.1.cat`` (``mul_1``...
when one forward runs several). That module becomes a ``torch.fx.GraphModule`` in its place, so
the hierarchy, every name and the state_dict stay as written, and the ONNX exporter's scopes
follow the names. A module without such ops is kept as it is, and so is one fx cannot trace
(the cost models then say why). An op on a constant (``x * 0.5``, ``x + 3``) is left as it is:
it has no second activation to quantize.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

if TYPE_CHECKING:
    from torch import fx

__all__ = ["Add", "Cat", "Mul", "modularize"]


class Add(nn.Module):
    """An addition of two activations as a module (one instance per addition)."""

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return a + b


class Mul(nn.Module):
    """A product of two activations (broadcasting, as squeeze-and-excitation's ``x * s``)."""

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return a * b


class Cat(nn.Module):
    """``torch.cat`` of its arguments along ``dim``."""

    def __init__(self, dim: int = 0) -> None:
        super().__init__()
        self.dim = dim

    def extra_repr(self) -> str:
        return f"dim={self.dim}"

    def forward(self, *xs: Tensor) -> Tensor:
        import torch

        return torch.cat(xs, dim=self.dim)


def _join(node: fx.Node) -> tuple[str, nn.Module, tuple[Any, ...]] | None:
    """(op name, its module, its tensor arguments) for an add, mul or cat node, else None."""
    from cost_models.torch_graph import functional_join

    kind = functional_join(node)
    if kind == "concat":
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        parts = node.args[0]
        if not isinstance(dim, int) or not isinstance(parts, (list, tuple)) or len(parts) < 2:
            return None
        return "cat", Cat(dim), tuple(parts)
    if kind is None or node.kwargs or len(node.args) != 2:
        return None
    return kind, Add() if kind == "add" else Mul(), tuple(node.args)


def _free_name(gm: nn.Module, op: str) -> str:
    name, i = op, 0
    while hasattr(gm, name):
        i += 1
        name = f"{op}_{i}"
    return name


def _modularize_own(module: nn.Module) -> nn.Module:
    """``module`` with the joins its own forward runs made modules (its submodules untouched),
    as a GraphModule with the same children; ``module`` when it runs none or fx fails."""
    import torch
    from torch import fx

    from cost_models.dead_code import ACT, torch_liveness

    class _OwnOps(fx.Tracer):  # every submodule is a leaf: only this forward is rewritten
        def is_leaf_module(self, m: torch.nn.Module, qualname: str) -> bool:
            return m is not module

    try:
        gm = fx.GraphModule(module, _OwnOps().trace(module))
    except Exception:  # fx raises many types; the cost models explain a model they cannot trace
        return module
    state = torch_liveness(gm).state
    changed = False
    for node in list(gm.graph.nodes):
        join = _join(node)
        if join is None:
            continue
        op, join_module, args = join
        if not all(isinstance(a, fx.Node) and state.get(a) == ACT for a in args):
            continue
        name = _free_name(gm, op)
        gm.add_submodule(name, join_module)
        with gm.graph.inserting_after(node):
            call = gm.graph.call_module(name, args)
        state[call] = state[node]
        node.replace_all_uses_with(call)
        gm.graph.erase_node(node)
        changed = True
    if not changed:
        return module
    for node in gm.graph.nodes:  # a string annotation (``from __future__ import annotations``)
        node.type = None         # would become a global the pickled code cannot import
    gm.graph.lint()
    gm.recompile()
    gm.train(module.training)
    return gm


def modularize(model: nn.Module) -> nn.Module:
    """``model`` with every functional add, mul and cat of activations made a module (see the
    module docstring). Each module whose own forward runs such ops becomes a GraphModule in its
    place (set on its parent: ``model``'s submodules are rewritten in place), so the hierarchy
    and every name stay; ``model`` itself is returned when its own forward runs none."""
    from cost_models.torch_graph import join_kind

    def rewrite(module: nn.Module) -> nn.Module:
        if join_kind(module) is not None:
            return module
        for name, child in list(module.named_children()):
            new = rewrite(child)
            if new is not child:
                setattr(module, name, new)
        if type(module).__module__.startswith("torch.nn"):  # torch's layers and containers
            return module
        return _modularize_own(module)

    return rewrite(model)
