"""From (layer graph, bit-widths) to the kernels onnxruntime's CPU EP runs after its QDQ fusions.

The rules below were read off onnxruntime 1.32's optimized graphs (``optimized_model_filepath``)
of the host micro-benchmark suite on x86-64:

* conv/linear with ``weight_bits`` 5..8 (or float: onnxruntime then quantizes the weight
  itself) and ``act_bits`` 8 whose output is re-quantized to 8 bits by every consumer becomes
  one fused ``QLinearConv``/``QGemm`` (mode ``q8``); its input must be quantized and its output
  stays quantized;
* an ``add`` with ``act_bits`` 8 becomes ``QLinearAdd`` (``q8``); pools and ReLUs with
  ``act_bits`` 8 whose producer is fused and whose consumers all read 8 bits run on uint8
  (``q8``): an average pool as ``QLinearAveragePool``, whatever its window, stride and
  padding, channels-last (``avgpool:q8``) when all its readers are int8 kernels, else in NCHW
  after a transpose back (``avgpool:q8p``, ~1.4x slower per tap: a 16x28x28 3x3 pool takes
  ~100 vs ~140 us); its taps in the channels past the last full vector of 16
  (:data:`POOL_VECTOR`) are ``tail_macs`` (timed: 8 or 12 channels cost ~1.4x as much per
  element as 16, 32 or 48). Such a ReLU (one its producer cannot absorb, e.g. a NAS-Bench-201 edge's
  ReLU on a tensor other layers read) has no kernel: onnxruntime drops it into the
  ``QuantizeLinear`` after it, and the ``DequantizeLinear`` -> ``QuantizeLinear`` pair from its
  producer's scale to its own (a calibrating quantizer gives it a scale of its own) runs: a
  ``dq8`` and a ``q8`` kernel over its elements (onnxruntime gives each reader of a quantized
  tensor its own ``DequantizeLinear``);
* a max or average pool's ``elems`` are its input's elements plus every window tap it reads
  (output elements x kernel area, its MACs): a 3x3 stride-1 pool reads 9 taps per output, a
  2x2 stride-2 one 4. A float pool outside NCHWc runs onnxruntime's generic pool loop, about
  ten times slower per tap than the NCHWc kernel: class ``<pool>:f32p``;
* weight-only quantized layers run as float ones (``Cast``, ``Mul`` folded at load:
  ``Precision.weights_at_load``); other unfused quantized-weight conv/linears (16-bit acts,
  int8 output not re-quantized) run a *runtime* ``DequantizeLinear`` (``dqw8``/``dqw4``) and
  an fp32 kernel without pre-packed weights (mode ``rt``); float weights, mode ``f32``;
* an unfused layer with ``act_bits`` 8 or 16 reads its input through ``QuantizeLinear`` and
  ``DequantizeLinear`` kernels that really execute (``q8``/``dq8``, ``q16``/``dq16``); a fused
  layer reading a float tensor needs a ``q8`` kernel, a float layer reading a quantized tensor a
  ``dq8`` kernel. Each boundary tensor is converted once, however many layers read it (edgetune's
  exporter, like ``quantize_static``, gives them one Q -> DQ pair; a layer's Q -> DQ copy is a
  tensor of its own, reordered into NCHWc apart from its source). An 8-bit add whose ReLU runs
  after its output quantizer (``Layer.act_after_quant``, as edgetune exports one) is followed by
  a ``dq8`` (and a ``relu:f32`` unless only 8-bit layers read it): its readers read a float tensor.
  (The NHWC transposes onnxruntime adds around quantized regions are counted in ``q8``/``dq8``.)
* conv + ReLU is one kernel (the graph already fuses it). A float conv (NCHWc or plain, float
  weights) applies HardSigmoid, Sigmoid, Tanh and LeakyRelu in its kernel too (an NCHWc
  ``Conv`` or a ``FusedConv`` with that ``activation``), and an NCHWc conv HardSwish as well: no
  kernel of their own. A plain float conv's HardSwish runs as the op's function body,
  ``HardSigmoid`` then ``Mul``: two passes over the output (class ``act:f32`` each). ReLU6
  (Clip) on a float output costs one ``act:f32`` pass (onnxruntime fuses it into the conv too;
  the pass prices its clipping there). Other convs (weight-only quantized, ``rt``) pay one
  ``act:f32`` per activation but ReLU. An 8-bit output clips in its quantizer for free (ReLU,
  ReLU6), but any other activation (HardSigmoid, HardSwish, Sigmoid...) runs in float between
  a DQ and a Q: one ``act:f32`` as well.
* a fused int8 conv runs on MLAS's *symmetric* indirect-conv kernels (mode ``q8s``, faster)
  when its weights are symmetric, as edgetune and ``quantize_static`` write them, and the
  shapes fit the x86 kernels: a dense conv with input channels a multiple of 4 and output
  channels a multiple of 8 and at least 16 (MACs counted with output channels padded to 16),
  or a depthwise conv with channels a multiple of 16. Otherwise (mode ``q8``) a dense conv runs
  im2col + u8s8 GEMM, and a depthwise one the generic kernel, which does 8 channels per vector
  and the rest one by one (``tail_macs``). Read off by sweeping channel counts one at a time.
* 1x1 convs have kernels of their own (``pwconv:<mode>``): no im2col, a pointwise NCHWc kernel;
  but an NCHWc one whose input has < ``B`` channels (plain NCHW) runs MLAS's direct NCHW-input
  kernel (``pwconv:f32n``), timed at about twice the pointwise kernel's time per MAC.
* fp32 convs run in MLAS's NCHWc layout, whose channel block ``B`` depends on the CPU: 8 with
  AVX2, 16 with AVX-512F (``nchwc_block``, a constant of the target; :data:`NCHWC_BLOCK` = 8 is
  the default). An unfused conv with float weights (whatever its ``act_bits``: a quantized
  input reaches it through a ``DequantizeLinear``, as a float tensor) runs in NCHWc (classes
  ``conv:f32``/``dwconv:f32``, MACs counted with channels padded to a multiple of ``B``) when
  ``groups == 1`` and its input has < ``B`` or a multiple of 4 channels, or when it is
  depthwise with a multiple of 4 channels; otherwise it runs im2col + GEMM
  (``conv:f32p``/``dwconv:f32p``). Those, like the ``q8`` and
  ``rt`` convs, count MACs with the GEMM's output channels padded to 16 and its depth (input
  channels x kernel area) to 4, as MLAS packs them. Such a grouped (or depthwise) conv, float
  (``f32p``) or ``rt``, runs one group at a time, an im2col and a one-row GEMM per group
  (MLAS's x86 build has no float depthwise kernel outside NCHWc): one more kernel, class
  ``im2col:f32``, whose ``elems`` are the im2col rows it copies (groups x kernel area x output
  rows; timed on 3x3/5x5 depthwise convs, 6..90 channels, 4x4..28x28 maps, this and the MACs
  explain the time within ~5%, the MACs alone within ~25%: a 90-channel 5x5 one on a 4x4
  map takes ~90 us). A dense one but a 1x1 stride-1 conv copies its input into an im2col
  matrix that MLAS packs again: ``im2col:dense``, ``elems`` its input channels x kernel area
  x output positions (:func:`~cost_models.kernel_layout.im2col`). A ``reorder`` converts a
  tensor into (for a conv with >= ``B`` input channels) or out of NCHWc. An fp32 add whose input is
  the sole output of an NCHWc conv is fused into it (``add:fused``), and so is a ReLU after
  that add (``relu:fused``); a ReLU after an fp32 add that no conv absorbs (its output is
  the add's ``act``) runs as a ``Relu`` of its own (``relu:f32``), unless only 8-bit layers
  read it: the ``QuantizeLinear`` they read it through clips it. An fp32 add one of whose
  inputs is the sole output of a plain float conv (``f32p``/``rt``, no activation of its own)
  is summed in that conv (a ``FusedConv`` with a sum input, and the add's ReLU as its
  activation): ``add:fused`` too. Unfused pools with a multiple of ``B`` channels run in
  NCHWc if they read an NCHWc tensor or the float graph input (not through a Q/DQ pair); adds
  and ReLUs do when all their inputs are NCHWc. A dense conv with < ``B`` input channels reads
  plain NCHW; a depthwise conv always reads NCHWc.
* a layer whose output is reshaped before it is quantized (``Layer.reshaped``: a GAP, then
  Flatten, then the classifier's input quantizer, as edgetune exports it) is not fused with
  that quantizer: onnxruntime runs such a GAP in float between a ``dq8`` and a ``q8`` (a
  ``quantize_static`` graph quantizes the GAP's output before the Flatten: a fused
  ``QLinearGlobalAveragePool``).
* the graph output of an 8-bit layer is taken to be in QDQ form (as ``quantize_static``
  writes it), so an int8 classifier is a fused ``QGemm`` followed by a ``dq8``.

* the other kinds (see :mod:`cost_models.graph`) run one kernel each, of class ``"<kind>:f32"``
  (an ``act`` layer: ``"<act>:f32"``, e.g. ``sigmoid:f32``, ``hardswish:f32``), with the
  conversions above around it when it reads or is read at 8 bits, and ``elems`` = all its
  inputs' elements + its output's. In a QDQ graph onnxruntime fuses (read off its optimized
  graphs) ``Mul``, ``Concat``, ``Softmax``, ``MatMul`` of two activations, ``Sigmoid``,
  ``LeakyRelu`` and SiLU into ``QLinearMul``/``QLinearConcat``/``QLinearSoftmax``/
  ``QLinearMatMul``/``QLinearSigmoid``/``QLinearLeakyRelu`` (SiLU: ``QLinearSigmoid`` +
  ``QLinearMul``) and runs ``Resize``/``Transpose`` on uint8: those get mode ``q8``
  (:data:`Q8_KINDS`, :data:`Q8_ACTS`) when their ``act_bits`` are 8 and their output is
  re-quantized, as an ``add`` does. BatchNormalization, Pad, ReduceMean, HardSigmoid,
  HardSwish, Tanh... have no int8 kernel: they run in float between a ``dq8`` and a ``q8``.
  In fp32, onnxruntime's NCHWc pass keeps in NCHWc (no ``reorder``): a ``bn`` on an NCHWc
  tensor, whatever its channel count (it runs as an NCHWc depthwise 1x1 conv with its channels
  padded to ``B``: class ``bn:f32``; a ``bn`` on a plain tensor, e.g. a concat of parts that
  are not whole blocks, runs the plain kernel, ``bn:f32p``); an ``add``/``mul`` of two
  NCHWc tensors of the same shape (a broadcast runs in NCHW); a Sigmoid/Tanh/HardSigmoid/
  HardSwish/SiLU ``act`` on an NCHWc tensor; a ``concat`` along channels of NCHWc parts of a
  multiple of ``B`` channels each. Resize (at opset 21, as edgetune exports; onnxruntime runs
  opset <= 19 resizes as an NCHWc ``Upsample``), Pad, Transpose, Softmax, ReduceMean, MatMul and
  LeakyRelu run in NCHW. An fp32 add can be fused
  into an NCHWc ``bn`` as into a conv, and a ReLU/Sigmoid/Tanh/HardSigmoid/HardSwish after a
  fused add or an NCHWc ``bn`` (read by it alone) is fused into that kernel (``<act>:fused``).
  An fp32 ``mul`` by a constant right after a float conv that it alone reads is folded into
  the conv's weights (onnxruntime's
  ``ConvMulFusion``), and an fp32 zero ``pad`` (``act`` ""; a reflect/edge/wrap pad names its
  mode in ``act``) read by a float conv alone into the conv's pads (``PadFusion``): neither
  has a kernel.

Each kernel has a class ``"<kind>:<mode>"`` (``conv:f32``, ``pwconv:q8s``, ``conv:rt``...) or a
conversion class (``q8``, ``dq8``, ``q16``, ``dq16``, ``dqw8``, ``dqw4``, ``act:f32``), a MAC
count, an element count (input + output elements; for conversions the converted elements), for
convs the number of output positions, the MACs of a scalar remainder loop, and for NCHWc float
convs the kernel calls (one per output row, filter set and input channel block) and the taps
of the output columns whose window reads the left or right padding, which MLAS computes one
output at a time (:func:`cost_models.kernel_layout.nchwc_calls`). Timed on one 3x3 fp32 conv
with the same pixel count on maps of 10x49, 49x10 and 98x5, the time grows with the number of
rows; not so for 1x1 or fused int8 convs.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

from cost_models.errors import UnsupportedLayerError
from cost_models.graph import (
    FLOAT_BITS,
    LAYER_KINDS,
    Bits,
    Layer,
    LayerGraph,
    Precision,
    consumers,
    weight_container_bits,
)
from cost_models.kernel_layout import (
    gemm_padded_macs,
    im2col,
    nchwc_calls,
    nchwc_conv,
    nchwc_layer,
    padded_macs,
    sym_conv,
    sym_padded_macs,
)

__all__ = [
    "NCHWC_BLOCK",
    "NCHWC_BLOCKS",
    "Q8_ACTS",
    "Q8_KINDS",
    "WEIGHTED_KERNEL_KINDS",
    "WEIGHTED_KINDS",
    "Kernel",
    "kernels",
]

WEIGHTED_KINDS = ("conv", "dwconv", "linear")
# kernel kinds: a 1x1 conv's kernels are "pwconv:<mode>"
WEIGHTED_KERNEL_KINDS = ("conv", "pwconv", "dwconv", "linear")
_FLOAT = Precision()
# MLAS's NCHWc channel block: 8 on AVX2 (the default), 16 with AVX-512F.
NCHWC_BLOCK = 8
NCHWC_BLOCKS = (8, 16)


@dataclass(frozen=True)
class Kernel:
    """One kernel onnxruntime executes: its cost class, MACs and elements touched."""

    cls: str
    layer: str
    macs: int = 0
    elems: int = 0
    pixels: int = 0  # output positions (H x W) of a conv; 0 for other kernels
    tail_macs: int = 0  # MACs in a scalar remainder loop (channels past the last full vector)
    calls: int = 0  # an NCHWc float conv's kernel calls (see kernel_layout.nchwc_calls)
    edge_taps: int = 0  # its taps computed one output at a time (output columns on padding)


# kinds whose kernel elems are its first input + its output (fitted constants rely on it)
_CLASSIC_KINDS = ("conv", "dwconv", "linear", "add", "maxpool", "avgpool", "gap", "relu")
# kinds with an int8 kernel in onnxruntime's QDQ fusions: QLinearMul, QLinearConcat,
# QLinearSoftmax, QLinearMatMul; Resize and Transpose run on uint8 (their Q/DQ dropped)
Q8_KINDS = ("mul", "concat", "softmax", "matmul", "resize", "transpose")
# activations with an int8 kernel: QLinearSigmoid, QLinearLeakyRelu, QLinearSigmoid +
# QLinearMul (SiLU); others (HardSigmoid, HardSwish, Tanh...) run in float between DQ and Q
Q8_ACTS = ("sigmoid", "leakyrelu", "silu")
# channels per vector of onnxruntime's QLinearAveragePool
POOL_VECTOR = 16
# activations a float conv (NCHWc or not) applies in its kernel: no pass over the output
FLOAT_CONV_ACTS = ("relu", "hardsigmoid", "sigmoid", "tanh", "leakyrelu")
# activations an NCHWc conv applies after a fused add (conv + sum + activation in one kernel)
NCHWC_FUSED_ACTS = ("relu", "sigmoid", "tanh", "hardsigmoid", "hardswish")


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


def kernels(graph: LayerGraph, bits: Bits, *, nchwc_block: int = NCHWC_BLOCK) -> list[Kernel]:
    """The kernels onnxruntime runs for ``graph`` at ``bits``, in execution order, on a CPU
    whose MLAS NCHWc channel block is ``nchwc_block`` (8 on AVX2, 16 with AVX-512F)."""
    block = nchwc_block
    users = consumers(graph)
    by_name = {layer.name: layer for layer in graph.layers}
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
        if layer.reshaped:  # its quantizer reads a reshape of it: not fusable
            return False
        us = users[layer.name]
        if not us:  # a graph output: quantized exporters write it in QDQ form as well
            return prec[layer.name].act_bits == 8
        return all(prec[u.name].act_bits == 8 for u in us)

    fused: dict[str, bool] = {}
    for layer in graph.layers:
        p = prec[layer.name]
        if layer.kind in WEIGHTED_KINDS:
            fused[layer.name] = (
                (5 <= p.weight_bits <= 8 or p.weight_bits == FLOAT_BITS)
                and p.act_bits == 8 and requantized(layer)
            )
        elif layer.kind == "add":
            fused[layer.name] = p.act_bits == 8
        elif layer.kind in ("maxpool", "avgpool", "gap", "relu"):
            # a GAP reading any quantized layer output fuses (QLinearGlobalAveragePool); the
            # others need a fused producer
            fused[layer.name] = (
                p.act_bits == 8 and requantized(layer)
                and all(fused.get(s, False) or (layer.kind == "gap" and s in by_name)
                        for s in layer.inputs or ("",))
            )
        elif layer.kind in Q8_KINDS or (layer.kind == "act" and layer.act in Q8_ACTS):
            fused[layer.name] = p.act_bits == 8 and requantized(layer)
        else:
            fused[layer.name] = False
    # fp32 Mul by a constant right after a float conv read by it alone: folded into the weights;
    # an fp32 zero Pad read by a float conv alone: folded into the conv's pads
    folded = {
        la.name: "" for la in graph.layers
        if la.kind == "pad" and not la.act and prec[la.name].act_bits == FLOAT_BITS
        and len(users[la.name]) == 1 and users[la.name][0].kind in ("conv", "dwconv")
        and not fused[users[la.name][0].name]
        and prec[users[la.name][0].name].act_bits == FLOAT_BITS
    } | {
        la.name: la.inputs[0] for la in graph.layers
        if la.kind == "mul" and len(la.inputs) == 1 and not fused[la.name]
        and prec[la.name].act_bits == FLOAT_BITS and la.inputs[0] in by_name
        and by_name[la.inputs[0]].kind in ("conv", "dwconv") and not by_name[la.inputs[0]].act
        and len(users[la.inputs[0]]) == 1 and not fused[la.inputs[0]]
        and prec[la.inputs[0]].weights_at_load
    }

    shapes: dict[str, tuple[int, ...]] = {"": graph.input_shape}
    for layer in graph.layers:
        shapes[layer.name] = layer.out_shape
    # NCHWc domain of fp32 layers (see the module docstring)
    nchwc: dict[str, bool] = {"": False}
    fused_into: dict[str, str] = {}
    for layer in graph.layers:
        p = prec[layer.name]
        float_layer = not fused[layer.name] and p.act_bits == FLOAT_BITS
        if layer.kind in ("conv", "dwconv"):
            nchwc[layer.name] = (
                not fused[layer.name]
                and p.weights_at_load
                and nchwc_conv(layer, block)
            )
        elif layer.kind in ("maxpool", "avgpool", "gap"):
            srcs = layer.inputs or ("",)
            nchwc[layer.name] = (
                not fused[layer.name] and layer.in_shape[1] % block == 0
                and all((s == "" and p.act_bits == FLOAT_BITS) or nchwc.get(s, False)
                        for s in srcs)
            )
        elif folded.get(layer.name):  # a mul folded into its conv
            nchwc[layer.name] = nchwc[folded[layer.name]]
        elif layer.name in folded:  # a pad folded into the conv that reads it
            nchwc[layer.name] = nchwc.get(layer.inputs[0], False)
        else:
            nchwc[layer.name] = float_layer and nchwc_layer(layer, nchwc, shapes, block)
        if layer.kind == "add" and nchwc[layer.name]:
            for s in layer.inputs:
                conv = folded.get(s) or s
                src_layer = by_name.get(conv)
                if (src_layer is not None and len(users[s]) == 1
                        and (src_layer.kind in ("conv", "dwconv") or src_layer.kind == "bn")
                        and nchwc.get(conv, False) and conv not in fused_into.values()
                        and (conv == s or len(users[conv]) == 1)):
                    fused_into[layer.name] = conv
                    break
        elif layer.kind == "add" and float_layer:  # a plain float conv's FusedConv sums it
            for s in layer.inputs:
                src_layer = by_name.get(s)
                if (src_layer is not None and src_layer.kind in ("conv", "dwconv")
                        and len(users[s]) == 1 and not src_layer.act and not nchwc[s]
                        and not fused[s] and s not in fused_into.values()):
                    fused_into[layer.name] = s
                    break
        act = "relu" if layer.kind == "relu" else layer.act if layer.kind == "act" else ""
        first = layer.inputs[0] if layer.inputs else ""
        if act in NCHWC_FUSED_ACTS and nchwc[layer.name] and len(users[first]) == 1:
            if first in fused_into:
                fused_into[layer.name] = fused_into[first]
            elif first in by_name and by_name[first].kind == "bn" and nchwc[first]:
                fused_into[layer.name] = first  # the NCHWc conv a batch norm runs as

    out: list[Kernel] = []
    converted: set[tuple[str, str]] = set()

    def convert(src: str, cls: str, by: str, copy: str = "") -> None:
        if (src + copy, cls) not in converted:  # copy: a Q -> DQ copy of src, not src itself
            converted.add((src + copy, cls))
            out.append(Kernel(cls, by, elems=prod(shapes[src])))

    # fused layers whose act runs after their output quantizer: their readers read it in float
    requant = {la.name for la in graph.layers if fused[la.name] and la.act_after_quant and la.act}
    for layer in graph.layers:
        p = prec[layer.name]
        is_fused = fused[layer.name]
        if layer.name in folded:
            continue
        nchw_in = layer.kind == "conv" and layer.groups == 1 and layer.in_shape[1] < block
        for src in layer.inputs or ("",):
            src_quant = src != "" and fused.get(src, False) and src not in requant
            copy = ""
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
                    copy = "/q" + tag
            elif src_quant:
                convert(src, "dq8", layer.name)
            if nchwc[layer.name] and not nchw_in and not nchwc.get(src, False):
                convert(src, "reorder", layer.name, copy)
            if nchwc.get(src, False) and (nchw_in or not nchwc[layer.name]):
                convert(src, "reorder", layer.name)
        if is_fused and layer.kind == "relu":
            # onnxruntime drops a quantized ReLU into the QuantizeLinear after it; the
            # DequantizeLinear -> QuantizeLinear pair from its producer's scale to its own runs
            out.append(Kernel("dq8", layer.name, elems=layer.in_elems))
            out.append(Kernel("q8", layer.name, elems=layer.out_elems))
            continue
        sym = is_fused and layer.kind in ("conv", "dwconv") and sym_conv(layer)
        if is_fused:
            mode = "q8s" if sym else "q8"
            if layer.kind == "avgpool" and not (
                    users[layer.name] and all(fused[u.name] for u in users[layer.name])):
                mode = "q8p"  # NCHW (transposed back) when a float layer reads it
        elif layer.kind in WEIGHTED_KINDS and not p.weights_at_load:
            mode = "rt"
            wbits = weight_container_bits(p.weight_bits)
            out.append(Kernel(f"dqw{wbits}", layer.name, elems=layer.params))
        elif layer.name in fused_into:
            mode = "fused"
        elif layer.kind in ("conv", "dwconv", "bn", "maxpool", "avgpool") and not nchwc[
                layer.name]:
            mode = "f32p"
        else:
            mode = "f32"
        macs = layer.macs
        if sym:
            macs = sym_padded_macs(layer)
        elif nchwc[layer.name] and layer.kind in ("conv", "dwconv"):
            macs = padded_macs(layer, block)
        elif layer.kind in ("conv", "dwconv"):
            macs = gemm_padded_macs(layer)
        pixels = layer.out_elems // layer.out_shape[1] if layer.kind in ("conv", "dwconv") else 0
        tail = 0
        if mode == "q8" and layer.kind == "dwconv":
            # the generic u8 depthwise kernel runs 8 channels per vector, the rest one by one
            tail = layer.macs * (layer.out_shape[1] % 8) // layer.out_shape[1]
            macs = layer.macs - tail
        if mode in ("q8", "q8p") and layer.kind == "avgpool":
            # QLinearAveragePool vectorizes across channels: the taps of the channels past the
            # last full vector run slower
            tail = layer.macs * (layer.out_shape[1] % POOL_VECTOR) // layer.out_shape[1]
        calls, edge = 0, 0
        if mode == "f32" and nchwc[layer.name] and layer.kind in ("conv", "dwconv"):
            calls, edge = nchwc_calls(layer, block)
        # MLAS runs 1x1 convs on their own code paths (no im2col; a pointwise NCHWc kernel)
        kind = "pwconv" if layer.kind == "conv" and layer.kernel == 1 else layer.kind
        if kind == "pwconv" and mode == "f32" and nchwc[layer.name] and nchw_in:
            mode = "f32n"  # a plain NCHW input: MLAS's direct kernel, not the pointwise one
        elems = layer.in_elems + layer.out_elems
        if layer.kind in ("maxpool", "avgpool"):  # its input and every window tap it reads
            elems = layer.in_elems + layer.macs
        if layer.kind not in _CLASSIC_KINDS:  # every input counts
            kind = layer.act if layer.kind == "act" else kind
            elems = sum(prod(shapes[s]) for s in layer.inputs or ("",)) + layer.out_elems
        out.append(
            Kernel(f"{kind}:{mode}", layer.name, macs=macs, elems=elems, pixels=pixels,
                   tail_macs=tail, calls=calls, edge_taps=edge)
        )
        unfold = im2col(layer) if mode in ("f32p", "rt") else None
        if unfold:  # the im2col a conv outside NCHWc runs before its GEMM
            out.append(Kernel(unfold[0], layer.name, elems=unfold[1]))
        read_8 = bool(users[layer.name]) and all(
            prec[u.name].act_bits == 8 for u in users[layer.name])
        if layer.kind == "add" and layer.act == "relu" and mode == "f32" and not read_8:
            # onnxruntime fuses a ReLU into a conv (and the add it sums) but not into an Add;
            # one read only by 8-bit layers clips in their QuantizeLinear (ReluQuantFusion)
            out.append(Kernel("relu:f32", layer.name, elems=2 * layer.out_elems))
        if layer.name in requant:
            # its act runs after its output quantizer (Layer.act_after_quant): the output is
            # dequantized, a ReLU/ReLU6 runs unless 8-bit readers' quantizers clip it, and the
            # readers quantize the float tensor again (other acts: the passes below)
            out.append(Kernel("dq8", layer.name, elems=layer.out_elems))
            if layer.act in ("relu", "clip") and not read_8:
                cls, n = ("relu:f32", 2) if layer.act == "relu" else ("act:f32", 1)
                out.append(Kernel(cls, layer.name, elems=n * layer.out_elems))
        passes = int(layer.act not in ("", "relu") and (
            layer.act != "clip" or mode not in ("q8", "q8s")))
        if mode in ("f32", "f32p") and layer.kind in ("conv", "dwconv"):
            # a float conv applies these in its kernel; HardSwish only an NCHWc one (a plain
            # conv's runs as its function body: HardSigmoid, then Mul)
            if layer.act in FLOAT_CONV_ACTS or layer.act == "hardswish":
                passes = 2 if layer.act == "hardswish" and mode == "f32p" else 0
        for _ in range(passes if layer.kind != "act" else 0):
            # ReLU6 (Clip) on a float output: a pass; a quantized output clips in its
            # quantizer, any other activation runs in float between DQ and Q
            out.append(Kernel("act:f32", layer.name, elems=layer.out_elems))
    if graph.layers and fused[graph.layers[-1].name] and graph.layers[-1].name not in requant:
        convert(graph.layers[-1].name, "dq8", graph.layers[-1].name)
    if graph.layers and nchwc[graph.layers[-1].name]:
        convert(graph.layers[-1].name, "reorder", graph.layers[-1].name)
    return out
