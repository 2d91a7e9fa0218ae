"""The layer graph: what every cost model reads, whether it came from torch or from ONNX.

A :class:`LayerGraph` lists the compute layers of a network at batch 1, in topological order,
with their shapes, MACs and parameter counts, and which layers feed each one. Batch norm is
folded into the conv before it, and an activation right after a conv, linear or add layer is
fused into it (as onnxruntime does), so neither is a layer of its own. Reshapes and flattens are free
and not listed.

Bit-widths are separate from the graph: a :data:`Bits` mapping gives each layer's
:class:`Precision` by layer name; a layer not in the mapping is float (32/32).

Layer names are the torch module's qualified name (``layer1.0.conv1``) for layers that are
modules, and a stable name derived from the graph for functional ops (``add``, ``add_1``...).

The QDQ ONNX convention (written by ``search.onnx_export``, read by :func:`from_onnx`):

* a conv/linear layer with ``weight_bits`` in 5..8 has its weight stored as an INT8 initializer,
  per output channel, symmetric (zero point 0), followed by ``DequantizeLinear(axis=0)``; with
  ``weight_bits`` in 2..4 the same with INT4; with 32 the weight stays float;
* a layer with ``act_bits`` 8 (or 16) has its input passed through ``QuantizeLinear`` then
  ``DequantizeLinear`` with a per-tensor UINT8 (or INT16) scale and zero point; with 32 the
  input stays float;
* an ``Add`` with ``act_bits`` 8 has its two inputs and its output in QDQ form, so onnxruntime
  can fuse it into ``QLinearAdd``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

FLOAT_BITS = 32

# The kinds of layer a cost model must know. Anything else raises UnsupportedLayerError.
LAYER_KINDS = ("conv", "dwconv", "linear", "add", "maxpool", "avgpool", "gap", "relu")


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
    act: str = ""  # the activation fused into this layer: "relu", "clip" (ReLU6), ...; "" none

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


Bits = Mapping[str, Precision]


@dataclass(frozen=True)
class Costs:
    """What a cost model predicts for one candidate on one target."""

    latency_ms: float
    energy_mj: float
    peak_memory_kb: float
    size_kb: float

    def as_dict(self) -> dict[str, float]:
        return {
            "latency_ms": self.latency_ms,
            "energy_mj": self.energy_mj,
            "peak_memory_kb": self.peak_memory_kb,
            "size_kb": self.size_kb,
        }
