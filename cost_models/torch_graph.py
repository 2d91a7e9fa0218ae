"""torch ``nn.Module`` -> :class:`LayerGraph`, with ``torch.fx`` tracing and shape propagation.

Mapping (batch 1, NCHW; the MACs of each kind are listed in :mod:`cost_models.graph`):

* ``Conv2d``/``Conv1d`` -> ``conv`` when ``groups == 1``, else ``dwconv``: every grouped conv
  (depthwise or not) counts as ``dwconv``, because onnxruntime runs all grouped convs with the
  same grouped kernel. Any kernel size, stride, padding and dilation; MACs are exact
  (``out_elems × in_channels/groups × kernel area``). ``kernel``/``stride`` are the largest
  kernel side/stride. A 1-D conv (and 1-D pool) has its ``(N, C, L)`` shapes written
  ``(N, C, 1, L)``, so every cost model reads it as a ``1 × L`` 2-D conv.
* ``Linear`` (and ``matmul`` by a parameter) -> ``linear``; ``MaxPool``/``AvgPool`` 1d/2d ->
  ``maxpool``/``avgpool``; ``AdaptiveAvgPool(1)`` and ``mean`` over all spatial dims -> ``gap``;
  ``mean`` over other dims -> ``reduce``; ``+``, ``torch.add`` and any parameterless module
  whose class is named ``Add`` -> ``add`` (shapes may broadcast); ``*``/``torch.mul`` and a
  ``Mul`` module ->
  ``mul`` (two activations, or one activation and a constant); ``torch.cat`` and a ``Cat``
  module -> ``concat`` (:data:`JOIN_MODULES`, as :mod:`spaces.functional` makes them);
  ``F.interpolate``/``Upsample`` -> ``resize``; ``F.pad``/``*Pad1d/2d`` -> ``pad``; softmax ->
  ``softmax``; ``permute``/``transpose`` -> ``transpose``; ``@``/``matmul``/``bmm`` of two
  activations -> ``matmul``.
* BatchNorm is folded into the conv/linear right before it when that output has no other
  reader (the conv then has a bias); any other BatchNorm is a ``bn`` layer. An activation
  (ReLU, ReLU6, Hardswish, ...) right after a conv, linear or add whose output nothing else
  reads is fused into it (``act`` names it), except SiLU, which never is (see
  :data:`cost_models.ops.NEVER_FUSED_ACTS`); any other ReLU is a ``relu`` layer, any other
  activation an ``act`` layer whose ``act`` names it (``sigmoid``, ``hardswish``, ``silu``...).
  Flatten/reshape/view/squeeze/unsqueeze/dropout/identity are free.
* A wrapper module with a ``.layer`` attribute that is a ``Conv1d``/``Conv2d``/``Linear`` (the
  quantization knob's ``QuantConv``/``QuantLinear``) is that layer, named after the wrapper.
* Dead code is no layer (:mod:`cost_models.dead_code`): ``x * 0`` (a scalar zero or an
  all-zero buffer), ``torch.zeros_like`` and any op reading only zeros are zero tensors, ``a +
  zero`` is ``a``, and ops the output does not need are dropped.
* Anything else raises :class:`UnsupportedLayerError`.
"""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING, Any

from cost_models.dead_code import torch_liveness
from cost_models.errors import UnsupportedLayerError
from cost_models.graph import Layer, LayerGraph
from cost_models.ops import (
    NEVER_FUSED_ACTS,
    act_kind,
    act_name,
    as_4d,
    pad_mode,
    prod,
    resize_factor,
    spatial_axes,
)

if TYPE_CHECKING:
    from torch import nn

__all__ = ["JOIN_MODULES", "from_torch", "functional_join", "fx_trace", "join_kind"]

# parameterless modules that join activations: their class name is their layer kind
JOIN_MODULES = {"Add": "add", "Mul": "mul", "Cat": "concat"}

_ACT_MODULES = ("ReLU", "ReLU6", "Hardswish", "Hardsigmoid", "SiLU", "Sigmoid", "GELU",
                "LeakyReLU", "Tanh", "ELU", "Mish", "PReLU", "Hardtanh")
_FREE_MODULES = ("Flatten", "Dropout", "Dropout1d", "Dropout2d", "Identity", "Unflatten")
_PAD_MODULES = ("ZeroPad1d", "ZeroPad2d", "ConstantPad1d", "ConstantPad2d", "ReflectionPad1d",
                "ReflectionPad2d", "ReplicationPad1d", "ReplicationPad2d")
_ACT_FUNCS = ("relu", "relu_", "relu6", "hardswish", "hardsigmoid", "silu", "sigmoid", "gelu",
              "leaky_relu", "tanh", "elu", "mish", "clamp", "hardtanh")
_FREE_FUNCS = ("flatten", "reshape", "view", "dropout", "contiguous", "squeeze", "unsqueeze",
               "size", "dim")
_RESHAPE_FUNCS = ("flatten", "reshape", "view", "squeeze", "unsqueeze")
_ADD = ("add", "add_", "__add__", "iadd")
_MUL = ("mul", "mul_", "__mul__", "imul")
_CAT = ("cat", "concat", "concatenate")
_MATMUL = ("matmul", "bmm", "__matmul__")
SUPPORTED = ("Conv2d", "Conv1d", "Linear", "BatchNorm1d/2d", "MaxPool1d/2d", "AvgPool1d/2d",
             "AdaptiveAvgPool1d/2d(1)", "Add (module or +)", "* (mul)", "torch.cat",
             "interpolate/Upsample", "pad", "softmax", "permute/transpose", "matmul", "mean",
             *_ACT_MODULES, *_FREE_MODULES)


def _unwrap(mod: Any) -> Any:
    from torch import nn

    inner = getattr(mod, "layer", None)
    if isinstance(inner, (nn.Conv1d, nn.Conv2d, nn.Linear)):
        return inner
    return mod


def join_kind(mod: Any) -> str | None:
    """``add``, ``mul`` or ``concat`` for a parameterless module of class ``Add``, ``Mul`` or
    ``Cat`` (a join of activations, as :func:`spaces.functional.modularize` makes them), else
    None."""
    kind = JOIN_MODULES.get(type(mod).__name__)
    return kind if kind is not None and not any(True for _ in mod.parameters()) else None


def functional_join(node: Any) -> str | None:
    """``add``, ``mul`` or ``concat`` for an fx call of ``+``, ``*`` or ``torch.cat`` (as a
    function, a method or in place), else None: the ops a model's forward joins activations
    with, which :func:`spaces.functional.modularize` makes modules."""
    import torch

    if node.op not in ("call_function", "call_method"):
        return None
    fname = getattr(node.target, "__name__", str(node.target))
    if node.target in (operator.add, operator.iadd, torch.add) or fname in _ADD:
        return "add"
    if node.target in (operator.mul, operator.imul, torch.mul) or fname in _MUL:
        return "mul"
    return "concat" if fname in _CAT else None


def _is_leaf(mod: Any) -> bool:
    from torch import nn

    if isinstance(mod, nn.Sequential):
        return False
    return (
        join_kind(mod) is not None
        or _unwrap(mod) is not mod
        or mod.__module__.startswith("torch.nn")
    )


def _attr(gm: Any, target: str) -> Any:
    obj = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def fx_trace(model: nn.Module) -> Any:
    """``model`` traced by ``torch.fx`` into a GraphModule whose leaves are torch's own modules,
    ``Add``/``Mul``/``Cat`` modules and quantization wrappers (user modules are traced through).
    Raises UnsupportedLayerError when fx cannot trace it."""
    import torch
    from torch import fx

    class _Tracer(fx.Tracer):
        def is_leaf_module(self, m: torch.nn.Module, qualname: str) -> bool:
            return _is_leaf(m)

    try:
        return fx.GraphModule(model, _Tracer().trace(model))
    except Exception as exc:  # fx raises many types; re-raise as ours with the cause
        raise UnsupportedLayerError(
            f"torch.fx could not trace {type(model).__name__}: {exc}. edgetune needs a "
            f"model whose forward has no data-dependent control flow"
        ) from exc


def from_torch(model: nn.Module, input_shape: tuple[int, ...]) -> LayerGraph:
    """The layer graph of ``model`` for one input of shape ``(C, H, W)`` (``(C, L)`` for a
    1-D network, ``(F,)`` for an MLP)."""
    import torch
    from torch import fx

    was_training = model.training
    model.eval()
    try:
        gm = fx_trace(model)
        _propagate_shapes(gm, (1, *input_shape))
    finally:
        model.train(was_training)

    modules = dict(model.named_modules())
    _merge_common(gm, modules)
    dc = torch_liveness(gm)  # dead code: zero tensors and the ops the output does not need
    layers: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    src: dict[Any, str] = {}  # fx node -> producer layer name ("" = graph input)
    fusible: dict[Any, bool] = {}  # fx node -> raw conv/linear/add output read only by this node

    def users(node: Any) -> int:
        return dc.readers.get(node, 0)

    def shape(node: Any) -> tuple[int, ...]:
        meta = node.meta.get("tensor_meta")
        return tuple(int(d) for d in meta.shape)

    def arg_node(node: Any, i: int = 0) -> Any:
        a = node.args[i] if len(node.args) > i else None
        if not isinstance(a, fx.Node) or a not in src:
            raise UnsupportedLayerError(
                f"{node.name}: expected an activation tensor as argument {i}, got {a!r}; "
                f"edgetune's cost models read ops on activations only"
            )
        return a

    def add_layer(node: Any, name: str, kind: str, ins: tuple[Any, ...], **kw: Any) -> None:
        layers[name] = {
            "name": name, "kind": kind, "in_shape": shape(ins[0]), "out_shape": shape(node),
            "inputs": tuple(src[i] for i in ins), **kw,
        }
        order.append(name)
        src[node] = name
        fusible[node] = False

    def activation(node: Any, x: Any, name: str, op: str) -> None:
        act = act_name(op)  # named as the ONNX op it exports to (ReLU6 and clamp are Clip)
        if act not in NEVER_FUSED_ACTS and fusible.get(x) and users(x) == 1:
            layers[src[x]]["act"] = act
            # edgetune's exporter quantizes an add's output before the activation after it
            layers[src[x]]["act_after_quant"] = layers[src[x]]["kind"] == "add"
            src[node] = src[x]
            fusible[node] = False
            return
        kind = act_kind(act)
        add_layer(node, name, kind, (x,), macs=prod(shape(x)), act=act if kind == "act" else "")

    def batchnorm(node: Any, x: Any, name: str) -> None:
        rec = layers.get(src[x])
        if rec is not None and fusible.get(x) and rec["kind"] in ("conv", "dwconv", "linear"):
            if not rec["bias"]:
                rec["bias"] = True
                rec["params"] += rec["cout"]
            src[node] = src[x]
            fusible[node] = users(node) == 1
            return
        c = shape(x)[1]
        add_layer(node, name, "bn", (x,), macs=prod(shape(x)), params=4 * c)

    def binary(node: Any, name: str, kind: str) -> None:
        a, b = node.args[0], node.args[1]
        acts = tuple(v for v in (a, b) if isinstance(v, fx.Node) and v in src)
        if kind == "add" and len(acts) == 1 and any(dc.zero(v) for v in (a, b)):
            free(node, acts[0])  # a + zero is a (see cost_models.dead_code)
            fusible[node] = bool(fusible.get(acts[0])) and users(node) == 1
            return
        if not acts:
            raise UnsupportedLayerError(f"{name}: {kind} of two constants is not a layer")
        if kind == "add" and len(acts) < 2:
            raise UnsupportedLayerError(
                f"operation {name!r}: adding a constant to an activation is not supported; "
                f"fold it into the layer before (a bias) or add an activation"
            )
        add_layer(node, name, kind, acts, macs=prod(shape(node)))
        fusible[node] = kind == "add" and users(node) == 1

    def free(node: Any, x: Any, *, reshape: bool = False) -> None:
        src[node] = src[x]
        fusible[node] = False
        if reshape and src[x] in layers:
            # edgetune's exporter quantizes the next layer's input after the reshape
            layers[src[x]]["reshaped"] = True

    def conv(node: Any, name: str, inner: Any) -> None:
        x = arg_node(node)
        ks = tuple(int(k) for k in inner.kernel_size)
        cout, groups = inner.out_channels, inner.groups
        add_layer(
            node, name, "conv" if groups == 1 else "dwconv", (x,),
            in_shape=as_4d(shape(x)), out_shape=as_4d(shape(node)),
            macs=prod(shape(node)) * (inner.in_channels // groups) * prod(ks),
            params=inner.weight.numel() + (cout if inner.bias is not None else 0),
            kernel=max(ks), stride=max(int(s) for s in inner.stride), groups=groups,
            bias=inner.bias is not None, cout=cout,
        )
        fusible[node] = users(node) == 1

    def pool(node: Any, name: str, kind: str, ks: tuple[int, ...], strides: tuple[int, ...]) -> None:
        x = arg_node(node)
        add_layer(node, name, kind, (x,), in_shape=as_4d(shape(x)), out_shape=as_4d(shape(node)),
                  macs=prod(shape(node)) * prod(ks), kernel=max(ks), stride=max(strides))

    def gap(node: Any, name: str) -> None:
        x = arg_node(node)
        add_layer(node, name, "gap", (x,), in_shape=as_4d(shape(x)),
                  out_shape=as_4d(shape(node)), macs=prod(shape(x)))

    def resize(node: Any, name: str, mode: str) -> None:
        add_layer(node, name, "resize", (arg_node(node),),
                  macs=prod(shape(node)) * resize_factor(mode))

    def elementwise(node: Any, name: str, kind: str, act: str = "") -> None:
        add_layer(node, name, kind, (arg_node(node),), macs=prod(shape(node)), act=act)

    def concat(node: Any, name: str, args: Any) -> None:
        parts = tuple(a for a in args if isinstance(a, fx.Node) and a in src)
        add_layer(node, name, "concat", parts, macs=prod(shape(node)))

    def matmul(node: Any) -> None:
        a, b = node.args[0], node.args[1]
        if isinstance(b, fx.Node) and b.op == "get_attr" and a in src:
            w = _attr(gm, str(b.target))
            fin = int(w.shape[0])
            add_layer(node, node.name, "linear", (a,), macs=prod(shape(node)) * fin,
                      params=int(w.numel()), bias=False, cout=int(w.shape[-1]))
            fusible[node] = users(node) == 1
            return
        x, y = arg_node(node, 0), arg_node(node, 1)
        add_layer(node, node.name, "matmul", (x, y), macs=prod(shape(node)) * shape(x)[-1])

    for node in gm.graph.nodes:
        if node.op == "placeholder":
            src[node] = ""
            fusible[node] = False
        elif node.op in ("output", "get_attr") or node not in dc.live:
            continue  # constants, zero tensors and dead code are not layers
        elif node.op == "call_module":
            mod = modules[node.target]
            inner = _unwrap(mod)
            cname = type(inner).__name__
            name = str(node.target)
            if isinstance(inner, (torch.nn.Conv1d, torch.nn.Conv2d)):
                conv(node, name, inner)
            elif isinstance(inner, torch.nn.Linear):
                x = arg_node(node)
                fin, fout = inner.in_features, inner.out_features
                add_layer(node, name, "linear", (x,), macs=prod(shape(node)) * fin,
                          params=fin * fout + (fout if inner.bias is not None else 0),
                          bias=inner.bias is not None, cout=fout)
                fusible[node] = users(node) == 1
            elif isinstance(inner, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)):
                batchnorm(node, arg_node(node), name)
            elif cname in _ACT_MODULES:
                activation(node, arg_node(node), name, cname)
            elif cname in _FREE_MODULES:
                free(node, arg_node(node), reshape=cname in ("Flatten", "Unflatten"))
            elif cname in ("MaxPool1d", "MaxPool2d", "AvgPool1d", "AvgPool2d"):
                nd = int(cname[-2])
                ks = _tuple(inner.kernel_size, nd)
                strides = _tuple(inner.stride if inner.stride is not None else ks, nd)
                pool(node, name, "maxpool" if cname.startswith("Max") else "avgpool", ks, strides)
            elif cname.startswith("AdaptiveAvgPool") and set(
                _tuple(inner.output_size, int(cname[-2]))
            ) == {1}:
                gap(node, name)
            elif cname in ("Upsample", "UpsamplingNearest2d", "UpsamplingBilinear2d"):
                resize(node, name, str(inner.mode))
            elif cname in _PAD_MODULES:
                elementwise(node, name, "pad", pad_mode(cname[:-6]))
            elif cname == "Softmax":
                elementwise(node, name, "softmax")
            elif join_kind(inner) in ("add", "mul"):
                binary(node, name, JOIN_MODULES[cname])
            elif join_kind(inner) == "concat":
                concat(node, name, node.args)
            else:
                raise UnsupportedLayerError(
                    f"layer {name!r} has type {type(mod).__name__}, which edgetune's cost "
                    f"models do not support; supported: {', '.join(SUPPORTED)}. Replace it "
                    f"or describe the network with cost_models.GraphBuilder"
                )
        else:  # call_function / call_method
            fname = getattr(node.target, "__name__", str(node.target))
            join = functional_join(node)
            if join in ("add", "mul"):
                binary(node, node.name, join)
            elif join == "concat":
                concat(node, node.name, node.args[0])
            elif node.target is operator.matmul or fname in _MATMUL:
                matmul(node)
            elif fname in _ACT_FUNCS:
                activation(node, arg_node(node), node.name, fname)
            elif fname in _FREE_FUNCS or node.target is getattr:
                free(node, arg_node(node), reshape=fname in _RESHAPE_FUNCS)
            elif fname == "mean":
                x = arg_node(node)
                if _mean_dims(node, len(shape(x))):
                    gap(node, node.name)
                else:
                    add_layer(node, node.name, "reduce", (x,), macs=prod(shape(x)))
            elif fname.startswith("adaptive_avg_pool") and set(
                _tuple(node.args[1], int(fname[-2]))
            ) == {1}:
                gap(node, node.name)
            elif fname == "interpolate":
                resize(node, node.name, str(node.kwargs.get("mode", "nearest")))
            elif fname == "pad":
                mode = node.args[2] if len(node.args) > 2 else node.kwargs.get("mode")
                elementwise(node, node.name, "pad", pad_mode(str(mode or "constant")))
            elif fname == "softmax":
                elementwise(node, node.name, "softmax")
            elif fname in ("permute", "transpose"):
                elementwise(node, node.name, "transpose")
            else:
                raise UnsupportedLayerError(
                    f"operation {node.name!r} ({fname}) is not supported by edgetune's cost "
                    f"models; supported: {', '.join(SUPPORTED)}, flatten/reshape/view. Replace "
                    f"it or describe the network with cost_models.GraphBuilder"
                )

    keys = ("name", "kind", "in_shape", "out_shape", "macs", "params", "kernel", "stride",
            "groups", "inputs", "act", "reshaped", "act_after_quant")
    return LayerGraph(
        layers=tuple(Layer(**{k: v for k, v in layers[n].items() if k in keys}) for n in order),
        input_shape=(1, *input_shape),
    )


def _propagate_shapes(gm: Any, shape: tuple[int, ...]) -> None:
    """Shapes of every node, with fake tensors (no arithmetic: fast on a busy machine); falls
    back to a real forward pass for modules that fake tensors cannot run."""
    import torch
    from torch.fx.passes.shape_prop import ShapeProp

    try:
        from torch._subclasses.fake_tensor import FakeTensorMode

        mode = FakeTensorMode(allow_non_fake_inputs=True)
        with torch.no_grad():
            ShapeProp(gm, fake_mode=mode).propagate(mode.from_tensor(torch.zeros(shape)))
        return
    except Exception:  # fake tensors are best effort: compute the real shapes instead
        pass
    with torch.no_grad():
        ShapeProp(gm).propagate(torch.zeros(shape))


def _merge_common(gm: Any, modules: dict[str, Any]) -> None:
    """An op without parameters or buffers applied twice to the same inputs (NAS-Bench-201's
    ReLU-Conv-BN edges out of one node, two average pools of one tensor) is computed once, as
    onnxruntime's optimizer (common subexpression elimination) runs it. In-place functions
    are left alone."""
    seen: dict[tuple[Any, ...], Any] = {}
    for node in list(gm.graph.nodes):
        if not node.args:
            continue
        if node.op == "call_module":
            mod = modules[node.target]
            if any(True for _ in mod.parameters()) or any(True for _ in mod.buffers()):
                continue
            key: tuple[Any, ...] = ("m", repr(mod), node.args, tuple(sorted(node.kwargs.items())))
        elif node.op in ("call_function", "call_method"):
            fname = getattr(node.target, "__name__", str(node.target))
            if fname.endswith("_") and not fname.startswith("__"):  # in place
                continue
            key = ("f", node.op, node.target, node.args, tuple(sorted(node.kwargs.items())))
        else:
            continue
        try:
            hash(key)
        except TypeError:  # an unhashable argument (a list of tensors...): not merged
            continue
        if key in seen:
            node.replace_all_uses_with(seen[key])
            gm.graph.erase_node(node)
        else:
            seen[key] = node


def _tuple(v: Any, n: int) -> tuple[int, ...]:
    return tuple(int(d) for d in v) if isinstance(v, (tuple, list)) else (int(v),) * n


def _mean_dims(node: Any, rank: int) -> bool:
    """Whether a ``mean`` node averages over exactly the spatial dims (a global average pool)."""
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    if isinstance(dims, int):
        dims = (dims,)
    return isinstance(dims, (tuple, list)) and spatial_axes(dims, rank)
