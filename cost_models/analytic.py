"""The kernel-level analytic cost model (used by the ``host`` target and onnxruntime CPU devices).

latency_ms = session_ms + Σ over kernels k of
             fixed_ms[k.cls] + (ns_per_mac[k.cls]·k.macs + ns_per_elem[k.cls]·k.elems
                                + ns_per_pixel[k.cls]·k.pixels
                                + ns_per_tail_mac[k.cls]·k.tail_macs)·1e-6

with the kernels of :func:`cost_models.kernels.kernels` (what onnxruntime runs after its QDQ
fusions) for the target's NCHWc channel block (``KernelConstants.nchwc_block``: 8 on AVX2, 16
with AVX-512F). energy_mj = latency_ms × power_w (the target names where its power figure
comes from). peak_memory_kb = weights in their container + the largest sum of live activations
over the topological schedule, each activation in its container width. size_kb = the bits a
QDQ export packs: a quantized conv/linear's weights at ``weight_bits`` each (not their INT8/INT4
container) plus a float32 scale and a float32 bias per output channel, a float layer's
parameters at 32 bits, and 4 bytes of scale plus an ``act_bits``-wide zero point per activation
quantizer (three for an add). 1 kB = 1024 bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from cost_models.base import CostModel, Measurement
from cost_models.errors import CalibrationError, UnsupportedLayerError
from cost_models.graph import FLOAT_BITS, Bits, Costs, LayerGraph, Precision
from cost_models.kernels import (
    NCHWC_BLOCK,
    NCHWC_BLOCKS,
    WEIGHTED_KERNEL_KINDS,
    WEIGHTED_KINDS,
    Kernel,
    consumers,
    kernels,
    weight_container_bits,
)

__all__ = [
    "KernelCoefficients",
    "KernelConstants",
    "KernelCostModel",
    "kernel_features",
    "latency_ms",
    "peak_memory_kb",
    "predict",
    "size_kb",
]

_FLOAT = Precision()


@dataclass(frozen=True)
class KernelCoefficients:
    """The cost of one kernel class: fixed ms per call, ns per MAC, per element, per pixel."""

    cls: str
    fixed_ms: float = 0.0
    ns_per_mac: float = 0.0
    ns_per_elem: float = 0.0
    ns_per_pixel: float = 0.0
    ns_per_tail_mac: float = 0.0


@dataclass(frozen=True)
class KernelConstants:
    """A device's constants for :class:`KernelCostModel`.

    ``nchwc_block`` is the MLAS NCHWc channel block of the device's CPU (8 on AVX2, 16 with
    AVX-512F); it decides which kernels run, so it is fixed before a fit, not fitted.
    """

    session_ms: float
    power_w: float
    coefficients: tuple[KernelCoefficients, ...]
    nchwc_block: int = NCHWC_BLOCK

    def __post_init__(self) -> None:
        if self.nchwc_block not in NCHWC_BLOCKS:
            raise CalibrationError(
                f"nchwc_block must be one of {NCHWC_BLOCKS} (8 on AVX2, 16 with AVX-512F), "
                f"got {self.nchwc_block!r}; recalibrate the target"
            )

    def coefficient(self, cls: str) -> KernelCoefficients:
        for c in self.coefficients:
            if c.cls == cls:
                return c
        raise UnsupportedLayerError(
            f"no fitted latency coefficient for kernel class {cls!r}; this target covers "
            f"{sorted(c.cls for c in self.coefficients)}. Recalibrate the target with a suite "
            f"that contains such a kernel, or use other bit-widths for that layer"
        )


def kernel_latency_ms(kernel: Kernel, constants: KernelConstants) -> float:
    c = constants.coefficient(kernel.cls)
    return c.fixed_ms + (
        c.ns_per_mac * kernel.macs
        + c.ns_per_elem * kernel.elems
        + c.ns_per_pixel * kernel.pixels
        + c.ns_per_tail_mac * kernel.tail_macs
    ) * 1e-6


def latency_ms(graph: LayerGraph, bits: Bits, constants: KernelConstants) -> float:
    """Predicted latency at batch 1 (session overhead + Σ kernel costs)."""
    return constants.session_ms + sum(
        kernel_latency_ms(k, constants)
        for k in kernels(graph, bits, nchwc_block=constants.nchwc_block)
    )


def _act_bytes_per_elem(act_bits: int) -> int:
    return {8: 1, 16: 2}.get(act_bits, 4)


def _weight_bytes(graph: LayerGraph, bits: Bits) -> float:
    total = 0.0
    for layer in graph.layers:
        p = bits.get(layer.name, _FLOAT)
        total += layer.params * weight_container_bits(p.weight_bits) / 8
    return total


def size_kb(graph: LayerGraph, bits: Bits) -> float:
    """The bits actually packed, as ``search.onnx_export.packed_size_bytes`` counts them.

    A quantized conv/linear layer: its weights at ``weight_bits`` each, plus a float32 scale
    and a float32 bias per output channel (``params`` counts the bias, folded from batch norm);
    a float layer: every parameter at 32 bits. Each activation quantizer adds its float32
    scale and its zero point (an add has three: both inputs and its output).
    """
    total = 0.0
    for layer in graph.layers:
        p = bits.get(layer.name, _FLOAT)
        if layer.kind in WEIGHTED_KINDS:
            channels = layer.out_shape[1]
            if p.weight_bits == FLOAT_BITS:
                total += layer.params * 4
            else:
                total += (layer.params - channels) * p.weight_bits / 8 + channels * 8
        if p.act_bits != FLOAT_BITS:
            quantizers = 3 if layer.kind == "add" else 1
            total += quantizers * (4 + p.act_bits / 8)
    return total / 1024


def peak_memory_kb(graph: LayerGraph, bits: Bits) -> float:
    """Weights in their container + the most activation bytes live at once.

    A layer's output lives from its layer until its last consumer ran; it is stored at the
    widest ``act_bits`` its consumers read (a graph output at 32 bits). The graph input is
    stored at the width its readers read.
    """
    users = consumers(graph)
    order = {layer.name: i for i, layer in enumerate(graph.layers)}

    def width(name: str) -> int:
        us = users.get(name, [])
        if not us:
            return 4
        return max(_act_bytes_per_elem(bits.get(u.name, _FLOAT).act_bits) for u in us)

    def last_use(name: str) -> int:
        us = users.get(name, [])
        return max((order[u.name] for u in us), default=len(graph.layers))

    n_in = 1
    for d in graph.input_shape:
        n_in *= d
    live: dict[str, float] = {"": n_in * width("")}
    peak = 0.0
    for i, layer in enumerate(graph.layers):
        live[layer.name] = layer.out_elems * width(layer.name)
        peak = max(peak, sum(live.values()))
        for name in [n for n in live if last_use(n) <= i]:
            del live[name]
    return (_weight_bytes(graph, bits) + peak) / 1024


def predict(graph: LayerGraph, bits: Bits, constants: KernelConstants) -> Costs:
    """All four costs of ``graph`` at ``bits``."""
    lat = latency_ms(graph, bits, constants)
    return Costs(
        latency_ms=lat,
        energy_mj=lat * constants.power_w,
        peak_memory_kb=peak_memory_kb(graph, bits),
        size_kb=size_kb(graph, bits),
    )


def kernel_features(
    graph: LayerGraph, bits: Bits, *, nchwc_block: int = NCHWC_BLOCK
) -> dict[str, float]:
    """The linear features of the latency model, named ``"<class>.<coefficient>"``: kernel
    counts, and MACs, elements, pixels and tail MACs (·1e-6)."""
    f: dict[str, float] = {"session_ms": 1.0}

    def add(name: str, value: float) -> None:
        f[name] = f.get(name, 0.0) + value

    for k in kernels(graph, bits, nchwc_block=nchwc_block):
        add(f"{k.cls}.fixed_ms", 1.0)
        add(f"{k.cls}.ns_per_elem", k.elems * 1e-6)
        if k.cls.split(":")[0] in WEIGHTED_KERNEL_KINDS:  # elsewhere MACs are elements
            add(f"{k.cls}.ns_per_mac", k.macs * 1e-6)
            add(f"{k.cls}.ns_per_pixel", k.pixels * 1e-6)
        if k.tail_macs:
            add(f"{k.cls}.ns_per_tail_mac", k.tail_macs * 1e-6)
    return f


class KernelCostModel(CostModel):
    """:mod:`cost_models.analytic` as a :class:`CostModel`."""

    name = "kernel"

    def predict(self, graph: LayerGraph, bits: Bits, constants: Any) -> Costs:
        return predict(graph, bits, constants)

    def fit(self, measurements: Sequence[Measurement], base: Any) -> Any:
        from cost_models.fit import fit_kernel_constants

        return fit_kernel_constants(
            measurements, power_w=base.power_w, nchwc_block=base.nchwc_block
        )

    def constants_to_dict(self, constants: Any) -> dict[str, Any]:
        return {
            "session_ms": constants.session_ms,
            "power_w": constants.power_w,
            "nchwc_block": constants.nchwc_block,
            "coefficients": [
                {f.name: getattr(c, f.name) for f in fields(c)} for c in constants.coefficients
            ],
        }

    def constants_from_dict(self, data: dict[str, Any]) -> Any:
        required = {"session_ms", "power_w", "coefficients"}
        optional = {"nchwc_block"}  # absent in targets calibrated before it was recorded: 8
        if not required <= set(data) <= required | optional:
            raise CalibrationError(
                f"kernel constants must have the keys {sorted(required)} (and optionally "
                f"{sorted(optional)}), got {sorted(data)}; recalibrate the target"
            )
        block = data.get("nchwc_block", NCHWC_BLOCK)
        if not isinstance(block, int) or isinstance(block, bool):
            raise CalibrationError(
                f"kernel constants: nchwc_block must be an integer, got {block!r}; recalibrate"
            )
        try:
            coeffs = tuple(KernelCoefficients(**c) for c in data["coefficients"])
            out = KernelConstants(
                float(data["session_ms"]), float(data["power_w"]), coeffs, nchwc_block=block
            )
        except (TypeError, ValueError) as exc:
            raise CalibrationError(f"invalid kernel constants: {exc}; recalibrate") from exc
        return replace(out)
