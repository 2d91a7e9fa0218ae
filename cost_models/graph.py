"""The layer graph: what every cost model reads, whether it came from torch or from ONNX.

A :class:`LayerGraph` lists the compute layers of a network at batch 1, in topological order,
with their shapes, MACs and parameter counts, and which layers feed each one (``inputs``, in
the op's argument order; constants are not listed). Batch norm right after a conv/linear whose
output has no other reader is folded into it, and an activation right after a conv, linear or
add layer whose output has no other reader is fused into it (as onnxruntime does; ``act`` names
it), so neither is a layer of its own. Reshape, flatten, view, squeeze, unsqueeze, dropout and
identity are free and not listed.

Dead code is not listed either (:mod:`cost_models.dead_code`), as the devices' compilers remove
it: a product by an all-zero constant (NAS-Bench-201's ``none`` edge, ``x * 0``) is a zero
tensor, an op reading only zero tensors is a folded constant (taken as zero: BN(0), its bias,
added to an activation costs nothing), ``a + zero`` is ``a``, a concat lists only its non-zero
parts in ``inputs``, and ops the output does not need are dropped. A network whose output is
constant has no layers (every cost model prices it at its fixed overhead).

The kinds (:data:`LAYER_KINDS`) and how their MACs are counted (``E`` = output elements):

* ``conv``/``dwconv`` (``groups > 1``, depthwise or grouped): ``E × in_channels/groups × kernel
  area``, exact for any kernel, stride, padding and dilation; ``kernel``/``stride`` are the
  largest side. A 1-D conv (and pool, gap) has shapes ``(1, C, 1, L)``, ``kernel`` its length.
* ``linear`` (Gemm/MatMul by a constant): ``E × in_features``; ``matmul`` (of two
  activations): ``E × K`` (M×N×K per batch).
* ``maxpool``/``avgpool``: ``E × kernel area``; ``gap`` (mean over all spatial axes):
  input elements; ``reduce`` (a mean over other axes): input elements.
* ``add`` (shapes may broadcast), ``mul`` (two activations, e.g. squeeze-and-excitation's
  ``(N,C,H,W)×(N,C,1,1)``, or an activation by a constant: one input), ``concat`` (all
  producers in ``inputs``, in order), ``pad`` (``act`` "" for a constant pad, else its mode:
  ``reflect``, ``edge``, ``wrap``), ``softmax``, ``transpose`` (a copy): ``E``.
* ``bn`` (a batch norm that is not folded: per-channel scale and shift): ``E``; ``params`` =
  4 × channels (scale, bias, mean and variance, as the ONNX node stores them).
* ``resize`` (Resize/Upsample/interpolate): ``E`` × 1 for nearest, × 4 for (bi)linear, × 16
  for cubic (the input points read per output).
* ``relu`` (a ReLU that is not fused): ``E``; ``act`` (any other activation that is not
  fused): ``E``, with ``Layer.act`` naming the op: ``sigmoid``, ``hardsigmoid``,
  ``hardswish``, ``silu``, ``clip`` (ReLU6), ``tanh``, ``leakyrelu``, ``gelu``... SiLU is
  ``act`` ``silu`` in both builders (torch exports it as ``Mul(x, Sigmoid(x))``, which
  :func:`from_onnx` reads back as one ``silu``), and is never fused into its producer.

Bit-widths are separate from the graph: a :data:`Bits` mapping gives each layer's
:class:`Precision` by layer name; a layer not in the mapping is float (32/32).

Layer names are the torch module's qualified name (``layer1.0.conv1``) for layers that are
modules, and a stable name derived from the graph for functional ops (``add``, ``add_1``...).

The QDQ ONNX convention (written by ``search.onnx_export``, read by :func:`from_onnx`):

* a conv/linear layer with ``weight_bits`` in 5..8 has its weight stored as an INT8 initializer,
  per output channel, symmetric (zero point 0), followed by ``DequantizeLinear(axis=0)``; with
  ``weight_bits`` in 2..4 the same with INT4; with 32 the weight stays float. In a layer with
  float activations (weight-only quantization) the integer weight is made float by ``Cast``
  and a ``Mul`` by its per-channel scale instead, which onnxruntime folds at load;
* a layer with ``act_bits`` 8 (or 16) has its input passed through ``QuantizeLinear`` then
  ``DequantizeLinear`` with a per-tensor UINT8 (or INT16) scale and zero point; with 32 the
  input stays float;
* an ``Add`` with ``act_bits`` 8 has its two inputs and its output in QDQ form, so onnxruntime
  can fuse it into ``QLinearAdd``; so do the other ops with an int8 kernel (``Mul``, ``Concat``,
  ``Sigmoid``, ``Softmax``, ``MatMul``...) as ``quantize_static`` writes them. A layer without
  weights reads ``act_bits`` 8 when all its activation inputs are in QDQ form.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from cost_models.errors import UnsupportedLayerError

FLOAT_BITS = 32

# The kinds of layer a cost model must know. Anything else raises UnsupportedLayerError.
LAYER_KINDS = ("conv", "dwconv", "linear", "add", "maxpool", "avgpool", "gap", "relu", "bn",
               "mul", "concat", "act", "reduce", "resize", "pad", "matmul", "softmax",
               "transpose")


@dataclass(frozen=True)
class Layer:
    """One compute layer at batch 1. Shapes are NCHW (or NC for linear layers)."""

    name: str
    kind: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    macs: int = 0
    params: int = 0
    kernel: int = 1
    stride: int = 1
    groups: int = 1
    inputs: tuple[str, ...] = field(default=())  # producer layer names; "" is the graph input
    act: str = ""  # the activation fused into this layer ("relu", "clip" for ReLU6...; "" none);
    # for an ``act`` layer, the activation it is
    reshaped: bool = False  # its output is reshaped (Flatten, Reshape, Squeeze...) before a
    # quantizer reads it, as edgetune exports a GAP -> Flatten -> quantized Linear head: no
    # runtime fuses that quantizer into it
    act_after_quant: bool = False  # its ``act`` runs after its own 8-bit output quantizer, as
    # edgetune exports a quantized add followed by a ReLU: a runtime dequantizes the output,
    # applies the act in float (a ReLU or ReLU6 read only at 8 bits: in the readers' quantizer)
    # and quantizes it again for its readers

    @property
    def out_elems(self) -> int:
        n = 1
        for d in self.out_shape:
            n *= d
        return n

    @property
    def in_elems(self) -> int:
        n = 1
        for d in self.in_shape:
            n *= d
        return n


@dataclass(frozen=True)
class LayerGraph:
    """The compute layers of one network, in topological order."""

    layers: tuple[Layer, ...]
    input_shape: tuple[int, ...]

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)


@dataclass(frozen=True)
class Precision:
    """The bit-widths of one layer: its weights, and the activations it reads."""

    weight_bits: int = FLOAT_BITS
    act_bits: int = FLOAT_BITS

    @property
    def weights_at_load(self) -> bool:
        """Whether the layer's weights are float once a runtime has loaded the model: float
        weights, or quantized ones read by a float layer (weight-only), which the QDQ
        convention writes as ``Cast`` and ``Mul`` for the runtime to fold."""
        return self.weight_bits == FLOAT_BITS or self.act_bits == FLOAT_BITS


Bits = Mapping[str, Precision]


@dataclass(frozen=True)
class Costs:
    """What a cost model predicts for one candidate on one target."""

    latency_ms: float
    energy_mj: float
    peak_memory_kb: float
    size_kb: float
    approximated: tuple[str, ...] = ()
    """Layers priced without fitted coefficients (from the bytes they move and the target's
    fitted bandwidth): the latency and energy are rougher for them. Empty when none were."""

    def as_dict(self) -> dict[str, float]:
        return {
            "latency_ms": self.latency_ms,
            "energy_mj": self.energy_mj,
            "peak_memory_kb": self.peak_memory_kb,
            "size_kb": self.size_kb,
        }


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


def consumers(graph: LayerGraph) -> dict[str, list[Layer]]:
    """Layer name (and "" for the graph input) -> the layers that read its output."""
    out: dict[str, list[Layer]] = {"": []}
    for layer in graph.layers:
        out.setdefault(layer.name, [])
        for src in layer.inputs:
            out.setdefault(src, []).append(layer)
    return out
