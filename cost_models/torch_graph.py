"""torch ``nn.Module`` -> :class:`LayerGraph`, with ``torch.fx`` tracing and shape propagation.

Mapping (batch 1, NCHW):

* ``Conv2d`` -> ``conv`` when ``groups == 1``, else ``dwconv``: every grouped conv (depthwise
  or not) counts as ``dwconv``, because onnxruntime runs all grouped convs with the same
  grouped kernel; its MACs are exact (``out_elems × in_channels/groups × kh × kw``). ``kernel``
  is the kernel height.
* ``Linear`` -> ``linear``; ``MaxPool2d``/``AvgPool2d`` -> ``maxpool``/``avgpool``;
  ``AdaptiveAvgPool2d(1)`` and ``x.mean((2, 3))`` -> ``gap``; ``+``, ``torch.add`` and any
  module whose class is named ``Add`` -> ``add``.
* BatchNorm is folded into the conv/linear before it (which then has a bias); an activation
  (ReLU, ReLU6, Hardswish, ...) right after a conv, linear or add whose output nothing else
  reads is fused into it (onnxruntime fuses conv+add+ReLU in fp32, and drops the ReLU before a
  QuantizeLinear in int8); any other activation is a ``relu`` layer. Flatten/reshape/view/dropout/
  identity are free.
* A wrapper module with a ``.layer`` attribute that is a ``Conv2d``/``Linear`` (the
  quantization knob's ``QuantConv2d``/``QuantLinear``) is that layer, named after the wrapper.
* Anything else raises :class:`UnsupportedLayerError`.

MACs of non-weighted layers (counted the same way by :func:`cost_models.from_onnx`): add = out
elements, pools = out elements × kernel area, gap = in elements, relu = elements.
"""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING, Any

from cost_models.errors import UnsupportedLayerError
from cost_models.graph import Layer, LayerGraph

if TYPE_CHECKING:
    from torch import nn

__all__ = ["from_torch"]

_ACT_MODULES = ("ReLU", "ReLU6", "Hardswish", "Hardsigmoid", "SiLU", "Sigmoid", "GELU",
                "LeakyReLU", "Tanh", "ELU", "Mish", "PReLU")
_FREE_MODULES = ("Flatten", "Dropout", "Dropout2d", "Identity", "Unflatten")
_ACT_FUNCS = ("relu", "relu_", "relu6", "hardswish", "hardsigmoid", "silu", "sigmoid", "gelu",
              "leaky_relu", "tanh", "elu", "mish", "clamp")
_FREE_FUNCS = ("flatten", "reshape", "view", "dropout", "contiguous", "squeeze", "unsqueeze",
               "size", "dim")
SUPPORTED = ("Conv2d", "Linear", "BatchNorm1d/2d", "MaxPool2d", "AvgPool2d",
             "AdaptiveAvgPool2d(1)", "Add (module or +)", *_ACT_MODULES, *_FREE_MODULES)


def _unwrap(mod: Any) -> Any:
    from torch import nn

    inner = getattr(mod, "layer", None)
    if isinstance(inner, (nn.Conv2d, nn.Linear)):
        return inner
    return mod


def _is_leaf(mod: Any) -> bool:
    from torch import nn

    if isinstance(mod, nn.Sequential):
        return False
    return (
        type(mod).__name__ == "Add"
        or _unwrap(mod) is not mod
        or mod.__module__.startswith("torch.nn")
    )


def _pair(v: Any) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


def from_torch(model: nn.Module, input_shape: tuple[int, int, int]) -> LayerGraph:
    """The layer graph of ``model`` for one input of shape ``(C, H, W)``."""
    import torch
    from torch import fx

    class _Tracer(fx.Tracer):
        def is_leaf_module(self, m: torch.nn.Module, qualname: str) -> bool:
            return _is_leaf(m)

    was_training = model.training
    model.eval()
    try:
        tracer = _Tracer()
        try:
            fx_graph = tracer.trace(model)
        except Exception as exc:  # fx raises many types; re-raise as ours with the cause
            raise UnsupportedLayerError(
                f"torch.fx could not trace {type(model).__name__}: {exc}. edgetune needs a "
                f"model whose forward has no data-dependent control flow"
            ) from exc
        gm = fx.GraphModule(model, fx_graph)
        _propagate_shapes(gm, (1, *input_shape))
    finally:
        model.train(was_training)

    modules = dict(model.named_modules())
    layers: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    src: dict[Any, str] = {}  # fx node -> producer layer name ("" = graph input)
    fusible: dict[Any, bool] = {}  # fx node -> raw conv/linear output read only by this node

    def shape(node: Any) -> tuple[int, ...]:
        meta = node.meta.get("tensor_meta")
        return tuple(int(d) for d in meta.shape)

    def elems(s: tuple[int, ...]) -> int:
        n = 1
        for d in s:
            n *= d
        return n

    def arg_node(node: Any, i: int = 0) -> Any:
        a = node.args[i] if len(node.args) > i else None
        if not isinstance(a, fx.Node):
            raise UnsupportedLayerError(f"{node.name}: expected a tensor argument, got {a!r}")
        return a

    def add_layer(node: Any, name: str, kind: str, ins: tuple[Any, ...], **kw: Any) -> None:
        layers[name] = {
            "name": name, "kind": kind, "in_shape": shape(ins[0]), "out_shape": shape(node),
            "inputs": tuple(src[i] for i in ins), **kw,
        }
        order.append(name)
        src[node] = name
        fusible[node] = False

    def activation(node: Any, x: Any, name: str, act: str) -> None:
        if fusible.get(x) and len(x.users) == 1:
            # named as the ONNX op it exports to (ReLU6 and clamp are Clip)
            act = act.lower().replace("_", "")
            layers[src[x]]["act"] = "clip" if act in ("relu6", "clamp", "hardtanh") else act
            src[node] = src[x]
            fusible[node] = False
            return
        add_layer(node, name, "relu", (x,), macs=elems(shape(x)))

    def free(node: Any, x: Any) -> None:
        src[node] = src[x]
        fusible[node] = False

    for node in gm.graph.nodes:
        if node.op == "placeholder":
            src[node] = ""
            fusible[node] = False
        elif node.op in ("output", "get_attr"):
            continue
        elif node.op == "call_module":
            mod = modules[node.target]
            inner = _unwrap(mod)
            cname = type(inner).__name__
            name = str(node.target)
            if isinstance(inner, torch.nn.Conv2d):
                x = arg_node(node)
                kh, kw = _pair(inner.kernel_size)
                cout, groups = inner.out_channels, inner.groups
                add_layer(
                    node, name, "conv" if groups == 1 else "dwconv", (x,),
                    macs=elems(shape(node)) * (inner.in_channels // groups) * kh * kw,
                    params=inner.weight.numel() + (cout if inner.bias is not None else 0),
                    kernel=kh, stride=_pair(inner.stride)[0], groups=groups,
                    bias=inner.bias is not None, cout=cout,
                )
                fusible[node] = len(node.users) == 1
            elif isinstance(inner, torch.nn.Linear):
                x = arg_node(node)
                fin, fout = inner.in_features, inner.out_features
                add_layer(node, name, "linear", (x,), macs=fin * fout,
                          params=fin * fout + (fout if inner.bias is not None else 0),
                          bias=inner.bias is not None, cout=fout)
                fusible[node] = len(node.users) == 1
            elif isinstance(inner, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)):
                x = arg_node(node)
                rec = layers.get(src[x])
                if rec is None or not fusible.get(x):
                    raise UnsupportedLayerError(
                        f"layer {name!r} (BatchNorm) must directly follow a conv or linear "
                        f"layer to be folded; it follows {x.name!r}"
                    )
                if not rec["bias"]:
                    rec["bias"] = True
                    rec["params"] += rec["cout"]
                src[node] = src[x]
                fusible[node] = len(node.users) == 1
            elif cname in _ACT_MODULES:
                activation(node, arg_node(node), name, cname)
            elif cname in _FREE_MODULES:
                free(node, arg_node(node))
            elif cname in ("MaxPool2d", "AvgPool2d"):
                x = arg_node(node)
                kh, kw = _pair(inner.kernel_size)
                stride = _pair(inner.stride if inner.stride is not None else inner.kernel_size)
                add_layer(node, name, "maxpool" if cname == "MaxPool2d" else "avgpool", (x,),
                          macs=elems(shape(node)) * kh * kw, kernel=kh, stride=stride[0])
            elif cname == "AdaptiveAvgPool2d" and _pair(inner.output_size) == (1, 1):
                x = arg_node(node)
                add_layer(node, name, "gap", (x,), macs=elems(shape(x)))
            elif cname == "Add":
                a, b = arg_node(node, 0), arg_node(node, 1)
                add_layer(node, name, "add", (a, b), macs=elems(shape(node)))
                fusible[node] = len(node.users) == 1
            else:
                raise UnsupportedLayerError(
                    f"layer {name!r} has type {type(mod).__name__}, which edgetune's cost "
                    f"models do not support; supported: {', '.join(SUPPORTED)}"
                )
        else:  # call_function / call_method
            fname = getattr(node.target, "__name__", str(node.target))
            is_add = node.target in (operator.add, operator.iadd, torch.add) or fname in (
                "add", "add_", "__add__", "iadd")
            if is_add and all(isinstance(a, fx.Node) for a in node.args[:2]):
                a, b = arg_node(node, 0), arg_node(node, 1)
                add_layer(node, node.name, "add", (a, b), macs=elems(shape(node)))
                fusible[node] = len(node.users) == 1
            elif fname in _ACT_FUNCS:
                activation(node, arg_node(node), node.name, fname)
            elif fname in _FREE_FUNCS or node.target is getattr:
                free(node, arg_node(node))
            elif fname == "mean" and _mean_hw(node):
                x = arg_node(node)
                add_layer(node, node.name, "gap", (x,), macs=elems(shape(x)))
            elif fname == "adaptive_avg_pool2d" and _pair(node.args[1]) == (1, 1):
                x = arg_node(node)
                add_layer(node, node.name, "gap", (x,), macs=elems(shape(x)))
            else:
                raise UnsupportedLayerError(
                    f"operation {node.name!r} ({fname}) is not supported by edgetune's cost "
                    f"models; supported: {', '.join(SUPPORTED)}, flatten/reshape/view"
                )

    keys = ("name", "kind", "in_shape", "out_shape", "macs", "params", "kernel", "stride",
            "groups", "inputs", "act")
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


def _mean_hw(node: Any) -> bool:
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    if isinstance(dims, int):
        dims = (dims,)
    return isinstance(dims, (tuple, list)) and sorted(int(d) % 4 for d in dims) == [2, 3]
