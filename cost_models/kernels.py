"""From (layer graph, bit-widths) to the kernels onnxruntime's CPU EP runs after its QDQ fusions.

The rules below were read off onnxruntime 1.32's optimized graphs (``optimized_model_filepath``)
of the host micro-benchmark suite:

* conv/linear with ``weight_bits`` 5..8 and ``act_bits`` 8 whose output is re-quantized to 8 bits
  by every consumer becomes one fused ``QLinearConv``/``QGemm`` (mode ``q8``); its input must be
  quantized and its output stays quantized;
* an ``add`` with ``act_bits`` 8 becomes ``QLinearAdd`` (``q8``); pools with ``act_bits`` 8 whose
  consumers all read 8 bits run on uint8 (``q8``);
* any other conv/linear with quantized weights (weight-only int8, int4 weights, 16-bit
  activations, or an int8 layer whose output is not re-quantized) runs as a *runtime*
  ``DequantizeLinear`` of its weights (kernel ``dqw8``/``dqw4``) plus an fp32 kernel that
  cannot use pre-packed weights (mode ``rt``); float-weight layers run the pre-packed fp32
  kernel (mode ``f32``);
* an unfused layer with ``act_bits`` 8 or 16 reads its input through ``QuantizeLinear`` and
  ``DequantizeLinear`` kernels that really execute (``q8``/``dq8``, ``q16``/``dq16``); a fused
  layer reading a float tensor needs a ``q8`` kernel, a float layer reading a quantized tensor a
  ``dq8`` kernel. Each boundary tensor is converted once, however many layers read it.
  (The NHWC transposes onnxruntime adds around quantized regions are counted in ``q8``/``dq8``.)
* conv + ReLU is one kernel (the graph already fuses it).

Each kernel has a class ``"<kind>:<mode>"`` (``conv:f32``, ``conv:q8``, ``conv:rt``...) or a
conversion class (``q8``, ``dq8``, ``q16``, ``dq16``, ``dqw8``, ``dqw4``), a MAC count and an
element count (input + output elements; for conversions the converted elements).
"""

from __future__ import annotations

from dataclasses import dataclass

from cost_models.graph import FLOAT_BITS, LAYER_KINDS, Bits, Layer, LayerGraph, Precision
from search.errors import UnsupportedLayerError

__all__ = ["WEIGHTED_KINDS", "Kernel", "kernels", "weight_container_bits"]

WEIGHTED_KINDS = ("conv", "dwconv", "linear")
_FLOAT = Precision()


@dataclass(frozen=True)
class Kernel:
    """One kernel onnxruntime executes: its cost class, MACs and elements touched."""

    cls: str
    layer: str
    macs: int = 0
    elems: int = 0


def weight_container_bits(weight_bits: int) -> int:
    """The storage width of a weight: INT4 for 2..4 bits, INT8 for 5..8, float otherwise."""
    if 2 <= weight_bits <= 4:
        return 4
    if 5 <= weight_bits <= 8:
        return 8
    if weight_bits == FLOAT_BITS:
        return FLOAT_BITS
    raise UnsupportedLayerError(
        f"weight_bits must be 2..8 or 32, got {weight_bits}; give a supported bit-width"
    )


def _check_precision(layer: Layer, p: Precision) -> None:
    if layer.kind not in LAYER_KINDS:
        raise UnsupportedLayerError(
            f"layer {layer.name!r} has kind {layer.kind!r}; supported kinds: "
            f"{', '.join(LAYER_KINDS)}"
        )
    if p.act_bits not in (8, 16, FLOAT_BITS):
        raise UnsupportedLayerError(
            f"layer {layer.name!r}: act_bits must be 8, 16 or 32, got {p.act_bits}"
        )
    weight_container_bits(p.weight_bits)
    if p.weight_bits != FLOAT_BITS and layer.kind not in WEIGHTED_KINDS:
        raise UnsupportedLayerError(
            f"layer {layer.name!r} ({layer.kind}) has no weights, but weight_bits is "
            f"{p.weight_bits}; give weight_bits only to conv/dwconv/linear layers"
        )


def consumers(graph: LayerGraph) -> dict[str, list[Layer]]:
    """Layer name (and "" for the graph input) -> the layers that read its output."""
    out: dict[str, list[Layer]] = {"": []}
    for layer in graph.layers:
        out.setdefault(layer.name, [])
        for src in layer.inputs:
            out.setdefault(src, []).append(layer)
    return out


def _elems(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def kernels(graph: LayerGraph, bits: Bits) -> list[Kernel]:
    """The kernels onnxruntime runs for ``graph`` at ``bits``, in execution order."""
    users = consumers(graph)
    prec = {layer.name: bits.get(layer.name, _FLOAT) for layer in graph.layers}
    for layer in graph.layers:
        _check_precision(layer, prec[layer.name])
    unknown = sorted(set(bits) - set(prec))
    if unknown:
        raise UnsupportedLayerError(
            f"bits name layers that are not in the graph: {unknown[:5]}; "
            f"layer names are: {[la.name for la in graph.layers][:8]}..."
        )

    def requantized(layer: Layer) -> bool:
        us = users[layer.name]
        return bool(us) and all(prec[u.name].act_bits == 8 for u in us)

    fused: dict[str, bool] = {}
    for layer in graph.layers:
        p = prec[layer.name]
        if layer.kind in WEIGHTED_KINDS:
            fused[layer.name] = (
                5 <= p.weight_bits <= 8 and p.act_bits == 8 and requantized(layer)
            )
        elif layer.kind == "add":
            fused[layer.name] = p.act_bits == 8
        elif layer.kind in ("maxpool", "avgpool", "gap", "relu"):
            fused[layer.name] = p.act_bits == 8 and requantized(layer)
        else:
            fused[layer.name] = False

    shapes: dict[str, tuple[int, ...]] = {"": graph.input_shape}
    for layer in graph.layers:
        shapes[layer.name] = layer.out_shape

    out: list[Kernel] = []
    converted: set[tuple[str, str]] = set()

    def convert(src: str, cls: str, by: str) -> None:
        if (src, cls) not in converted:
            converted.add((src, cls))
            out.append(Kernel(cls, by, elems=_elems(shapes[src])))

    for layer in graph.layers:
        p = prec[layer.name]
        is_fused = fused[layer.name]
        for src in layer.inputs or ("",):
            src_quant = src != "" and fused.get(src, False)
            if is_fused:
                if not src_quant:
                    convert(src, "q8", layer.name)
            elif p.act_bits in (8, 16):
                tag = str(p.act_bits)
                if src_quant and p.act_bits == 8:
                    convert(src, "dq8", layer.name)
                else:
                    if src_quant:
                        convert(src, "dq8", layer.name)
                    convert(src, "q" + tag, layer.name)
                    convert(src, "dq" + tag, layer.name)
            elif src_quant:
                convert(src, "dq8", layer.name)
        if is_fused:
            mode = "q8"
        elif layer.kind in WEIGHTED_KINDS and p.weight_bits != FLOAT_BITS:
            mode = "rt"
            wbits = weight_container_bits(p.weight_bits)
            out.append(Kernel(f"dqw{wbits}", layer.name, elems=layer.params))
        else:
            mode = "f32"
        out.append(
            Kernel(f"{layer.kind}:{mode}", layer.name, macs=layer.macs,
                   elems=layer.in_elems + layer.out_elems)
        )
    if graph.layers and fused[graph.layers[-1].name]:
        convert(graph.layers[-1].name, "dq8", graph.layers[-1].name)
    return out
