"""ONNX (fp32 or QDQ) -> (:class:`LayerGraph`, bit-widths), per the convention in graph.py.

Also reads what ``onnxruntime.quantization.quantize_static`` writes in QDQ format: int8/uint8
weights, per channel or per tensor, count as 8 bits, int4/uint4 as 4, an int16/uint16
activation as 16 bits. Batch norm is folded into the conv before it; an activation right after
a conv, linear or add whose output has no other reader is fused into it; Flatten/Reshape/Identity/
Dropout/Squeeze/Unsqueeze and shape arithmetic are free. ``onnx`` is imported inside
:func:`from_onnx`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from cost_models.errors import UnsupportedLayerError
from cost_models.graph import FLOAT_BITS, Layer, LayerGraph, Precision

if TYPE_CHECKING:
    import onnx

__all__ = ["from_onnx"]

_ACTIVATIONS = {"Relu", "Clip", "HardSwish", "HardSigmoid", "Sigmoid", "LeakyRelu", "Tanh",
                "Elu", "Selu", "Softplus", "Gelu", "PRelu", "Mish"}
_FREE = {"Flatten", "Reshape", "Identity", "Dropout", "Squeeze", "Unsqueeze"}
_SHAPE_OPS = {"Shape", "Gather", "Concat", "Cast", "Constant", "Slice", "Mul", "Div", "Unsqueeze",
              "Squeeze", "ConstantOfShape", "Range", "Sub", "Add"}
SUPPORTED_OPS = ("Conv", "Gemm", "MatMul (constant weight)", "MaxPool", "AveragePool",
                 "GlobalAveragePool", "ReduceMean over H,W", "Add", "BatchNormalization",
                 "Relu and other activations", "QuantizeLinear", "DequantizeLinear",
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

    model = onnx.shape_inference.infer_shapes(model)
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
    readers: dict[str, int] = {}
    for node in g.node:
        for i in node.input:
            readers[i] = readers.get(i, 0) + 1
    for o in g.output:
        readers[o.name] = readers.get(o.name, 0) + 1

    layers: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    bits: dict[str, Precision] = {}
    used_names: set[str] = set()
    const_arrays: dict[str, Any] = {}

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

    for node in g.node:
        op = node.op_type
        ins = [i for i in node.input]
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        out = node.output[0] if node.output else ""
        in_vals = [vals.get(i) for i in ins if i]
        if in_vals and all(v is not None and v.const for v in in_vals) and op not in (
            "Conv", "Gemm", "MatMul"
        ):
            # constant arithmetic (shape computations, dequantized weights)
            wb = FLOAT_BITS
            if op == "DequantizeLinear":
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
            continue
        if op in ("Conv", "Gemm", "MatMul"):
            x = act(ins[0], node)
            wv = vals.get(ins[1])
            if wv is None or not wv.const:
                raise UnsupportedLayerError(
                    f"node {node.name!r} ({op}) has a non-constant weight; only layers with "
                    f"constant weights are supported"
                )
            wshape = wv.array_shape
            oshape = shape(out)
            ishape = shape(ins[0])
            has_bias = len(ins) > 2 and bool(ins[2])
            if op == "Conv":
                groups = int(attrs.get("group", 1))
                cout, cin_g, kh, kw = wshape
                kind = "conv" if groups == 1 else "dwconv"
                macs = _prod(oshape) * cin_g * kh * kw
                params = _prod(wshape) + (cout if has_bias else 0)
                strides = attrs.get("strides", [1, 1])
                name = new_layer(node, kind, in_shape=ishape, out_shape=oshape, macs=macs,
                                 params=params, kernel=int(kh), stride=int(strides[0]),
                                 groups=groups, inputs=(x.producer,), bias=has_bias, cout=cout)
            else:
                fin = ishape[-1]
                fout = oshape[-1]
                name = new_layer(node, "linear", in_shape=ishape, out_shape=oshape,
                                 macs=fin * fout, params=fin * fout + (fout if has_bias else 0),
                                 inputs=(x.producer,), bias=has_bias, cout=fout)
            p = Precision(weight_bits=wv.weight_bits, act_bits=x.act_bits)
            if p != Precision():
                bits[name] = p
            vals[out] = _Val(producer=name, fusible=readers.get(out, 0) == 1)
            continue
        if op == "BatchNormalization":
            x = act(ins[0], node)
            rec = layers.get(x.producer)
            if rec is None or rec["kind"] not in ("conv", "dwconv", "linear") or not x.fusible:
                raise UnsupportedLayerError(
                    f"node {node.name!r}: BatchNormalization must follow a conv or linear "
                    f"layer (it is folded into it), got input {ins[0]!r}"
                )
            if not rec["bias"]:
                rec["bias"] = True
                rec["params"] += rec["cout"]
            vals[out] = replace(x, fusible=readers.get(out, 0) == 1)
            continue
        if op in _ACTIVATIONS:
            x = act(ins[0], node)
            if x.fusible and x.producer in layers and not layers[x.producer].get("act"):
                layers[x.producer]["act"] = op.lower()  # as from_torch names it
                vals[out] = _Val(producer=x.producer, fusible=False)
            else:
                ish = shape(ins[0])
                name = new_layer(node, "relu", in_shape=ish, out_shape=shape(out),
                                 macs=_prod(ish), inputs=(x.producer,))
                if x.act_bits != FLOAT_BITS:
                    bits[name] = Precision(act_bits=x.act_bits)
                vals[out] = _Val(producer=name)
            continue
        if op == "Add":
            a, b = vals.get(ins[0]), vals.get(ins[1])
            if a is not None and b is not None and (a.const or b.const):
                x = b if a.const else a
                rec = layers.get(x.producer)
                if rec is not None and rec["kind"] == "linear" and not rec["bias"] and x.fusible:
                    rec["bias"] = True
                    rec["params"] += rec["cout"]
                    vals[out] = replace(x, fusible=readers.get(out, 0) == 1)
                    continue
                raise UnsupportedLayerError(
                    f"node {node.name!r}: Add of a constant is supported only as a linear "
                    f"layer's bias"
                )
            xa, xb = act(ins[0], node), act(ins[1], node)
            osh = shape(out)
            name = new_layer(node, "add", in_shape=shape(ins[0]), out_shape=osh,
                             macs=_prod(osh), inputs=(xa.producer, xb.producer))
            ab = xa.act_bits if xa.act_bits == xb.act_bits else max(xa.act_bits, xb.act_bits)
            if ab != FLOAT_BITS:
                bits[name] = Precision(act_bits=ab)
            vals[out] = _Val(producer=name, fusible=readers.get(out, 0) == 1)
            continue
        if op in ("MaxPool", "AveragePool", "GlobalAveragePool", "ReduceMean"):
            x = act(ins[0], node)
            ish, osh = shape(ins[0]), shape(out)
            if op == "ReduceMean":
                axes = attrs.get("axes")
                if axes is None and len(ins) > 1 and ins[1] in inits:
                    axes = numpy_helper.to_array(inits[ins[1]]).tolist()
                elif axes is None and len(ins) > 1 and ins[1] in const_arrays:
                    axes = const_arrays[ins[1]].tolist()
                if sorted(int(a) % 4 for a in (axes or [])) != [2, 3]:
                    raise UnsupportedLayerError(
                        f"node {node.name!r}: ReduceMean is supported only over H and W "
                        f"(axes 2, 3), got {axes}"
                    )
            if op in ("GlobalAveragePool", "ReduceMean"):
                name = new_layer(node, "gap", in_shape=ish, out_shape=osh, macs=_prod(ish),
                                 inputs=(x.producer,))
            else:
                k = attrs.get("kernel_shape", [1, 1])
                s = attrs.get("strides", [1, 1])
                kind = "maxpool" if op == "MaxPool" else "avgpool"
                name = new_layer(node, kind, in_shape=ish, out_shape=osh,
                                 macs=_prod(osh) * int(k[0]) * int(k[1]), kernel=int(k[0]),
                                 stride=int(s[0]), inputs=(x.producer,))
            if x.act_bits != FLOAT_BITS:
                bits[name] = Precision(act_bits=x.act_bits)
            vals[out] = _Val(producer=name)
            continue
        raise UnsupportedLayerError(
            f"ONNX node {node.name!r} has op type {op!r}, which edgetune's cost models do not "
            f"support; supported: {', '.join(SUPPORTED_OPS)}"
        )

    keys = ("name", "kind", "in_shape", "out_shape", "macs", "params", "kernel", "stride",
            "groups", "inputs", "act")
    out_layers = tuple(Layer(**{k: v for k, v in layers[n].items() if k in keys}) for n in order)
    graph = LayerGraph(layers=out_layers, input_shape=shapes.get(in_name, ()))
    return graph, bits


def _prod(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n
