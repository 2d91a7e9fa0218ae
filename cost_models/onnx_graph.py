"""ONNX (fp32 or QDQ) -> (:class:`LayerGraph`, bit-widths), per the convention in graph.py.

Gives the same layers as :func:`cost_models.from_torch` for a torch model exported with
``torch.onnx.export`` (see that module for the mapping of each op). Also reads what
``onnxruntime.quantization.quantize_static`` writes in QDQ format: int8/uint8 weights, per
channel or per tensor, count as 8 bits, int4/uint4 as 4, an int16/uint16 activation as 16 bits;
every layer's ``act_bits`` is that of the activations it reads (float if any is float). Batch norm is
folded into the conv before it when that conv's output has no other reader, else it is a ``bn``
layer; an activation right after a conv, linear or add whose output has no other reader is fused
into it (except SiLU); ``Mul(x, Sigmoid(x))`` (torch's export of SiLU) is one ``act`` layer
``silu``; Flatten/Reshape/Identity/Dropout/Squeeze/Unsqueeze and shape arithmetic (any op on
constants only, e.g. a Concat of shapes) are free. Dead code is no layer
(:mod:`cost_models.dead_code`): ``Mul`` by an all-zero constant (also through Q/DQ) is a zero
tensor, so is any node reading only zeros (the Q/DQ around them too), ``Add(a, zero)`` is ``a``,
and nodes the output does not need are dropped. ``onnx`` is imported inside :func:`from_onnx`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from cost_models.dead_code import onnx_liveness
from cost_models.errors import UnsupportedLayerError
from cost_models.graph import FLOAT_BITS, Layer, LayerGraph, Precision
from cost_models.onnx_ops import const_ints, fold_pads, merge_common, silu_pairs
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
    import onnx

__all__ = ["from_onnx"]

_ACTIVATIONS = {"Relu", "Clip", "HardSwish", "HardSigmoid", "Sigmoid", "LeakyRelu", "Tanh",
                "Elu", "Selu", "Softplus", "Gelu", "PRelu", "Mish"}
_FREE = {"Flatten", "Reshape", "Identity", "Dropout", "Squeeze", "Unsqueeze"}
_RESHAPES = {"Flatten", "Reshape", "Squeeze", "Unsqueeze"}  # kept by onnxruntime's optimizer
_ELEMENTWISE = {"Pad": "pad", "Softmax": "softmax", "Transpose": "transpose"}
SUPPORTED_OPS = ("Conv", "Gemm", "MatMul", "MaxPool", "AveragePool",
                 "GlobalAveragePool", "ReduceMean", "Add", "Mul", "Concat",
                 "BatchNormalization", "Relu and other activations", "Resize", "Upsample",
                 "Pad", "Softmax", "Transpose", "QuantizeLinear", "DequantizeLinear",
                 *sorted(_FREE))

_INT_BITS = {2: 8, 3: 8, 4: 16, 5: 16, 22: 4, 21: 4, 6: 32, 7: 64}  # onnx dtype -> bits


@dataclass
class _Val:
    """What a tensor is: a constant, or an activation produced by a layer ("" = input)."""

    const: bool = False
    producer: str = ""
    act_bits: int = FLOAT_BITS  # set when the tensor went through Q -> DQ
    weight_bits: int = FLOAT_BITS  # for constants that are dequantized weights
    fusible: bool = False  # the raw output of a conv/linear with exactly one reader
    array_shape: tuple[int, ...] = field(default=())


def from_onnx(model: onnx.ModelProto) -> tuple[LayerGraph, dict[str, Precision]]:
    """The layer graph and per-layer :class:`Precision` of an fp32 or QDQ ONNX model."""
    import onnx
    from onnx import numpy_helper

    # torch writes F.pad's pads as arithmetic on constants, which shape inference cannot follow
    model = onnx.shape_inference.infer_shapes(fold_pads(model), data_prop=True)
    g = model.graph
    shapes: dict[str, tuple[int, ...]] = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        dims = vi.type.tensor_type.shape.dim
        if dims:
            shapes[vi.name] = tuple(d.dim_value if d.dim_value > 0 else 1 for d in dims)
    vals: dict[str, _Val] = {}
    inits = {t.name: t for t in g.initializer}
    for name, t in inits.items():
        vals[name] = _Val(const=True, array_shape=tuple(t.dims))
    init_names = set(inits)
    graph_inputs = [i for i in g.input if i.name not in init_names]
    if len(graph_inputs) != 1:
        raise UnsupportedLayerError(
            f"from_onnx needs a model with exactly one input, got {len(graph_inputs)}"
        )
    in_name = graph_inputs[0].name
    vals[in_name] = _Val(producer="")
    # one node for each common subexpression, as onnxruntime runs it; then dead code: zero
    # tensors and the nodes the output does not need; readers among the rest
    merged = merge_common(g.node, [o.name for o in g.output])
    dc = onnx_liveness(merged, inits, in_name, [o.name for o in g.output])
    readers = dc.readers
    nodes = [node for k, node in enumerate(merged) if k in dc.live]

    layers: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    bits: dict[str, Precision] = {}
    used_names: set[str] = set()
    const_arrays: dict[str, Any] = {  # small constants (axes, pads, scales...)
        name: numpy_helper.to_array(t) for name, t in inits.items() if prod(t.dims) <= 16
    }
    silu = silu_pairs(nodes, readers, set(inits))

    def dtype_bits(tensor: str) -> int:
        if tensor in inits:
            return _INT_BITS.get(inits[tensor].data_type, 8)
        return 8

    def shape(t: str) -> tuple[int, ...]:
        if t not in shapes:
            raise UnsupportedLayerError(f"ONNX shape inference gave no shape for tensor {t!r}")
        return shapes[t]

    def new_layer(node: Any, kind: str, **kw: Any) -> str:
        base = node.name or f"{kind}_{len(order)}"
        name = base
        k = 1
        while name in used_names:
            name = f"{base}_{k}"
            k += 1
        used_names.add(name)
        layers[name] = {"name": name, "kind": kind, **kw}
        order.append(name)
        return name

    def act(t: str, node: Any) -> _Val:
        v = vals.get(t)
        if v is None or v.const:
            raise UnsupportedLayerError(
                f"node {node.name!r} ({node.op_type}) reads {t!r}, which is not an activation"
            )
        return v

    def simple(node: Any, kind: str, xs: tuple[_Val, ...], ish: tuple[int, ...],
               osh: tuple[int, ...], macs: int, **kw: Any) -> None:
        """A layer without weights; it reads ``act_bits`` wide if all its inputs do."""
        name = new_layer(node, kind, in_shape=ish, out_shape=osh, macs=macs,
                         inputs=tuple(x.producer for x in xs), **kw)
        ab = max(x.act_bits for x in xs)
        if ab != FLOAT_BITS:
            bits[name] = Precision(act_bits=ab)
        vals[node.output[0]] = _Val(producer=name)

    for node in nodes:
        op = node.op_type
        ins = [i for i in node.input]
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        out = node.output[0] if node.output else ""
        in_vals = [vals.get(i) for i in ins if i]
        if in_vals and all(v is not None and v.const for v in in_vals) and op not in (
            "Conv", "Gemm", "MatMul"
        ):
            # constant arithmetic (shape computations, dequantized weights)
            # an integer weight made float (DequantizeLinear, or Cast then Mul by its scale)
            # keeps its bits through the arithmetic on it
            wb = min(v.weight_bits for v in in_vals if v is not None)
            if op in ("DequantizeLinear", "Cast") and ins[0] in inits and (
                    _INT_BITS.get(inits[ins[0]].data_type, FLOAT_BITS) <= 16):
                wb = dtype_bits(ins[0])
                wb = 8 if wb == 16 else wb
            first = in_vals[0]
            ashape = first.array_shape if first is not None else ()
            for o in node.output:
                vals[o] = _Val(const=True, weight_bits=wb, array_shape=ashape)
            continue
        if op == "Constant":
            from onnx import numpy_helper as nh

            tensor = next((a.t for a in node.attribute if a.name == "value"), None)
            ashape = tuple(nh.to_array(tensor).shape) if tensor is not None else ()
            vals[out] = _Val(const=True, array_shape=ashape)
            if tensor is not None:
                const_arrays[out] = nh.to_array(tensor)
            continue
        if op == "Shape":
            vals[out] = _Val(const=True)
            continue
        if op == "QuantizeLinear":
            v = act(ins[0], node)
            zp_bits = dtype_bits(ins[2]) if len(ins) > 2 and ins[2] else 8
            if attrs.get("output_dtype"):
                zp_bits = _INT_BITS.get(int(attrs["output_dtype"]), 8)
            # Q -> DQ between a layer and its activation does not stop the fusion
            vals[out] = replace(v, act_bits=zp_bits, fusible=v.fusible and readers.get(out) == 1)
            continue
        if op == "DequantizeLinear":
            v = act(ins[0], node)
            vals[out] = replace(v, fusible=v.fusible and readers.get(out) == 1)
            continue
        if op in _FREE:
            v = act(ins[0], node)
            vals[out] = replace(v, fusible=False)
            if op in _RESHAPES and v.act_bits == FLOAT_BITS and v.producer in layers:
                layers[v.producer]["reshaped"] = True  # a quantizer after it reads the reshape
            continue
        if op in ("Conv", "Gemm", "MatMul"):
            x = act(ins[0], node)
            wv = vals.get(ins[1])
            if op == "MatMul" and wv is not None and not wv.const:
                y = act(ins[1], node)
                osh = shape(out)
                simple(node, "matmul", (x, y), shape(ins[0]), osh, prod(osh) * shape(ins[0])[-1])
                continue
            if wv is None or not wv.const:
                raise UnsupportedLayerError(
                    f"node {node.name!r} ({op}) has a non-constant weight; only layers with "
                    f"constant weights (or a MatMul of two activations) are supported"
                )
            wshape = wv.array_shape
            oshape = shape(out)
            ishape = shape(ins[0])
            has_bias = len(ins) > 2 and bool(ins[2])
            if op == "Conv":
                groups = int(attrs.get("group", 1))
                cout, cin_g, *ks = wshape
                kind = "conv" if groups == 1 else "dwconv"
                macs = prod(oshape) * cin_g * prod(ks)
                params = prod(wshape) + (cout if has_bias else 0)
                strides = attrs.get("strides", [1])
                name = new_layer(node, kind, in_shape=as_4d(ishape), out_shape=as_4d(oshape),
                                 macs=macs, params=params, kernel=max(int(k) for k in ks),
                                 stride=max(int(v) for v in strides), groups=groups,
                                 inputs=(x.producer,), bias=has_bias, cout=cout)
            else:
                fin = ishape[-1]
                fout = oshape[-1]
                name = new_layer(node, "linear", in_shape=ishape, out_shape=oshape,
                                 macs=prod(oshape) * fin,
                                 params=fin * fout + (fout if has_bias else 0),
                                 inputs=(x.producer,), bias=has_bias, cout=fout)
            p = Precision(weight_bits=wv.weight_bits, act_bits=x.act_bits)
            if p != Precision():
                bits[name] = p
            vals[out] = _Val(producer=name, fusible=readers.get(out, 0) == 1)
            continue
        if op == "BatchNormalization":
            x = act(ins[0], node)
            rec = layers.get(x.producer)
            if rec is not None and rec["kind"] in ("conv", "dwconv", "linear") and x.fusible:
                if not rec["bias"]:
                    rec["bias"] = True
                    rec["params"] += rec["cout"]
                vals[out] = replace(x, fusible=readers.get(out, 0) == 1)
            else:
                ish = shape(ins[0])
                simple(node, "bn", (x,), ish, shape(out), prod(ish), params=4 * ish[1])
            continue
        if op in _ACTIVATIONS or out in silu:
            if out in silu and op == "Sigmoid":  # the first half of a SiLU: see its Mul
                vals[out] = _Val(producer="")
                continue
            name_ = "silu" if out in silu else act_name(op)
            x = act(silu.get(out, ins[0]), node)
            fuse = x.fusible and x.producer in layers and not layers[x.producer].get("act")
            if fuse and name_ not in NEVER_FUSED_ACTS:
                layers[x.producer]["act"] = name_  # as from_torch names it
                # a Q -> DQ between them: the act runs after the layer's output quantizer
                layers[x.producer]["act_after_quant"] = (
                    x.act_bits != FLOAT_BITS and layers[x.producer]["kind"] == "add")
                vals[out] = _Val(producer=x.producer, fusible=False)
            else:
                ish = shape(silu.get(out, ins[0]))
                kind = act_kind(name_)
                simple(node, kind, (x,), ish, shape(out), prod(ish),
                       act=name_ if kind == "act" else "")
            continue
        if op == "Add" and any(dc.zero(i) for i in ins):
            v = vals[next(i for i in ins if not dc.zero(i))]  # a + zero is a
            vals[out] = replace(v, fusible=v.fusible and readers.get(out, 0) == 1)
            continue
        if op in ("Add", "Mul"):
            a, b = vals.get(ins[0]), vals.get(ins[1])
            if a is not None and b is not None and (a.const or b.const):
                x = b if a.const else a
                rec = layers.get(x.producer)
                if op == "Mul":
                    osh = shape(out)
                    simple(node, "mul", (act(ins[1] if a.const else ins[0], node),),
                           shape(ins[1] if a.const else ins[0]), osh, prod(osh))
                    continue
                if rec is not None and rec["kind"] == "linear" and not rec["bias"] and x.fusible:
                    rec["bias"] = True
                    rec["params"] += rec["cout"]
                    vals[out] = replace(x, fusible=readers.get(out, 0) == 1)
                    continue
                raise UnsupportedLayerError(
                    f"node {node.name!r}: Add of a constant is supported only as a linear "
                    f"layer's bias; fold the constant into the layer before it"
                )
            xa, xb = act(ins[0], node), act(ins[1], node)
            osh = shape(out)
            simple(node, op.lower(), (xa, xb), shape(ins[0]), osh, prod(osh))
            if op == "Add":
                vals[out] = replace(vals[out], fusible=readers.get(out, 0) == 1)
            continue
        if op == "Concat":
            parts = [i for i in ins if vals.get(i) is not None and not vals[i].const]
            osh = shape(out)
            simple(node, "concat", tuple(act(i, node) for i in parts), shape(parts[0]), osh,
                   prod(osh))
            continue
        if op in ("MaxPool", "AveragePool", "GlobalAveragePool", "ReduceMean"):
            x = act(ins[0], node)
            ish, osh = shape(ins[0]), shape(out)
            if op == "ReduceMean":
                axes = const_ints(node, attrs, 1, "axes", const_arrays)
                if axes is None or not spatial_axes(axes, len(ish)):
                    simple(node, "reduce", (x,), ish, osh, prod(ish))
                    continue
            if op in ("GlobalAveragePool", "ReduceMean"):
                simple(node, "gap", (x,), as_4d(ish), as_4d(osh), prod(ish))
            else:
                k = [int(v) for v in attrs.get("kernel_shape", [1])]
                st = [int(v) for v in attrs.get("strides", [1])]
                kind = "maxpool" if op == "MaxPool" else "avgpool"
                simple(node, kind, (x,), as_4d(ish), as_4d(osh), prod(osh) * prod(k),
                       kernel=max(k), stride=max(st))
            continue
        if op in ("Resize", "Upsample"):
            mode = attrs.get("mode", b"nearest")
            mode = mode.decode() if isinstance(mode, bytes) else str(mode)
            osh = shape(out)
            simple(node, "resize", (act(ins[0], node),), shape(ins[0]), osh,
                   prod(osh) * resize_factor(mode))
            continue
        if op in _ELEMENTWISE:
            osh = shape(out)
            mode = attrs.get("mode", b"constant") if op == "Pad" else b"constant"
            simple(node, _ELEMENTWISE[op], (act(ins[0], node),), shape(ins[0]), osh, prod(osh),
                   act=pad_mode(mode.decode() if isinstance(mode, bytes) else str(mode)))
            continue
        raise UnsupportedLayerError(
            f"ONNX node {node.name!r} has op type {op!r}, which edgetune's cost models do not "
            f"support; supported: {', '.join(SUPPORTED_OPS)}. Replace the op, or describe the "
            f"network with cost_models.GraphBuilder"
        )

    keys = ("name", "kind", "in_shape", "out_shape", "macs", "params", "kernel", "stride",
            "groups", "inputs", "act", "reshaped", "act_after_quant")
    out_layers = tuple(Layer(**{k: v for k, v in layers[n].items() if k in keys}) for n in order)
    graph = LayerGraph(layers=out_layers, input_shape=shapes.get(in_name, ()))
    return graph, bits

