"""The kernel-level analytic cost model (used by the ``host`` target and onnxruntime CPU devices).

latency_ms = session_ms + Σ over kernels k of
             fixed_ms[k.cls] + (ns_per_mac[k.cls]·k.macs + ns_per_elem[k.cls]·k.elems
                                + ns_per_pixel[k.cls]·k.pixels
                                + ns_per_tail_mac[k.cls]·k.tail_macs
                                + ns_per_call[k.cls]·k.calls
                                + ns_per_edge_tap[k.cls]·k.edge_taps)·1e-6

with the kernels of :func:`cost_models.kernels.kernels` (what onnxruntime runs after its QDQ
fusions) for the target's NCHWc channel block (``KernelConstants.nchwc_block``: 8 on AVX2, 16
with AVX-512F). A kernel class the target has no coefficients for, at a precision it was
calibrated at, is priced from the bytes it moves (:func:`bandwidth_coefficient`) and named in
``Costs.approximated``; at a precision it was never calibrated at it raises
:class:`UnsupportedLayerError`. energy_mj is :mod:`cost_models.energy`'s (static power ×
latency + per-MAC and per-byte energy). peak_memory_kb = weights in their container + the largest sum of live activations
over the topological schedule, each activation in its container width. size_kb = the bits a
QDQ export packs: a quantized conv/linear's weights at ``weight_bits`` each (not their INT8/INT4
container) plus a float32 scale and a float32 bias per output channel, a float layer's
parameters at 32 bits, and 4 bytes of scale plus an ``act_bits``-wide zero point per activation
quantizer (three for an add or a mul, inputs + 1 for a concat); the parameters of a layer
without weights that has some (a standalone batch norm's 4 × C) count at 32 bits.
1 kB = 1024 bytes.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from cost_models.base import CostModel, Measurement
from cost_models.energy import EnergyConstants, energy_mj, power_only
from cost_models.errors import CalibrationError, UnsupportedLayerError
from cost_models.graph import (
    FLOAT_BITS,
    Bits,
    Costs,
    Layer,
    LayerGraph,
    Precision,
    consumers,
    weight_container_bits,
)
from cost_models.kernels import (
    NCHWC_BLOCK,
    NCHWC_BLOCKS,
    WEIGHTED_KERNEL_KINDS,
    WEIGHTED_KINDS,
    Kernel,
    kernels,
)

__all__ = [
    "MEMORY_BOUND_KINDS",
    "KernelCoefficients",
    "KernelConstants",
    "KernelCostModel",
    "bandwidth_coefficient",
    "kernel_features",
    "kernel_precision",
    "latency_ms",
    "peak_memory_kb",
    "predict",
    "size_kb",
]

_FLOAT = Precision()
MEMORY_BOUND_KINDS = ("add", "relu")
_MAC_CLASS_KINDS = ("linear", "matmul")  # GEMMs: a missing one pays the linear rate
ELEM_BYTES = {"int8": 1.0, "int16": 2.0, "fp32": 4.0}


@dataclass(frozen=True)
class KernelCoefficients:
    """The cost of one kernel class: fixed ms per call, ns per MAC, per element, per pixel."""

    cls: str
    fixed_ms: float = 0.0
    ns_per_mac: float = 0.0
    ns_per_elem: float = 0.0
    ns_per_pixel: float = 0.0
    ns_per_tail_mac: float = 0.0
    ns_per_call: float = 0.0
    ns_per_edge_tap: float = 0.0


@dataclass(frozen=True, init=False)
class KernelConstants:
    """A device's constants for :class:`KernelCostModel`.

    ``nchwc_block`` is the MLAS NCHWc channel block of the device's CPU (8 on AVX2, 16 with
    AVX-512F); it decides which kernels run, so it is fixed before a fit, not fitted.
    ``energy_constants`` are the :mod:`cost_models.energy` constants. The constructor also
    takes the form written before them, ``KernelConstants(session_ms, power_w, coefficients)``:
    a bare ``power_w`` means static power only (energy = power × latency, source modelled).
    """

    session_ms: float
    coefficients: tuple[KernelCoefficients, ...]
    nchwc_block: int
    energy_constants: EnergyConstants

    def __init__(
        self,
        session_ms: float,
        power_w: float | None = None,
        coefficients: tuple[KernelCoefficients, ...] = (),
        nchwc_block: int = NCHWC_BLOCK,
        *,
        energy_constants: EnergyConstants | None = None,
    ) -> None:
        object.__setattr__(self, "session_ms", session_ms)
        object.__setattr__(self, "coefficients", tuple(coefficients))
        object.__setattr__(self, "nchwc_block", nchwc_block)
        object.__setattr__(self, "energy_constants", _energy_arg(power_w, energy_constants))
        if self.nchwc_block not in NCHWC_BLOCKS:
            raise CalibrationError(
                f"nchwc_block must be one of {NCHWC_BLOCKS} (8 on AVX2, 16 with AVX-512F), "
                f"got {self.nchwc_block!r}; recalibrate the target"
            )

    @property
    def power_w(self) -> float:
        """The static power (W) of the energy constants."""
        return self.energy_constants.static_power_w

    @property
    def energy_label(self) -> str:
        """``calibrated (...)`` or ``modelled (...)``: print it after "energy: "."""
        return self.energy_constants.label

    def priced(self, cls: str) -> tuple[KernelCoefficients, bool]:
        """The coefficients of ``cls`` and whether they are approximated: a class this target
        lacks, at a precision it was calibrated at, gets :func:`bandwidth_coefficient`'s."""
        for c in self.coefficients:
            if c.cls == cls:
                return c, False
        prec = kernel_precision(cls)
        # the precisions a target runs are those of its compute kernels ("<kind>:<mode>"):
        # quantize/dequantize conversions alone do not make a float target an int8 one
        peers = [c for c in self.coefficients
                 if ":" in c.cls and kernel_precision(c.cls) == prec]
        tag = {"fp32": "f32", "int8": "q8"}.get(prec, "")
        approx = bandwidth_coefficient(
            cls, peers, refs=tuple(f"{k}:{tag}" for k in MEMORY_BOUND_KINDS),
            gemm=f"linear:{tag}", elem_bytes=ELEM_BYTES[prec],
        )
        if approx is None:
            raise UnsupportedLayerError(
                f"kernel class {cls!r} computes at {prec}, a precision this target was never "
                f"calibrated at (it covers {sorted(c.cls for c in self.coefficients)}); use "
                f"bit-widths it runs, or recalibrate it with measurements at {prec}"
            )
        return approx, True


def _energy_arg(power_w: float | None, energy: EnergyConstants | None) -> EnergyConstants:
    if (power_w is None) == (energy is None):
        raise CalibrationError(
            "give constants either energy_constants or (for files written before them) "
            f"power_w, not both or neither (got power_w={power_w!r}, energy_constants="
            f"{energy!r})"
        )
    if energy is not None:
        return energy
    return power_only(float(power_w or 0.0), f"{power_w} W power figure")


def kernel_precision(cls: str) -> str:
    """The precision a kernel class computes at: ``int8`` (``q8`` kernels and conversions),
    ``int16`` (``q16``/``dq16``) or ``fp32`` (float kernels, weight dequantization, reorders)."""
    mode = cls.split(":")[-1]
    if mode in ("q8", "q8s", "dq8"):
        return "int8"
    if mode in ("q16", "dq16"):
        return "int16"
    return "fp32"


def bandwidth_coefficient(
    cls: str,
    peers: Sequence[KernelCoefficients],
    *,
    refs: tuple[str, ...],
    gemm: str,
    elem_bytes: float,
) -> KernelCoefficients | None:
    """Coefficients for class ``cls``, which the target lacks, from ``peers`` (its fitted
    classes at the same precision); None when there are none (the target never ran it).

    The rule: ns_per_byte = the median, over the memory-bound elementwise classes ``refs``
    among the peers (add and relu; if it has neither, every peer with a per-element cost), of
    ns_per_elem / ``elem_bytes`` (the element width at that precision: 4 bytes for fp32, 2
    for int16, 1 for int8); fixed_ms = the median fixed_ms of the same classes. The class
    costs ns_per_byte × ``elem_bytes`` per element it touches; a GEMM (a linear or matmul class)
    also pays the fitted ns_per_mac of the precision's GEMM class ``gemm`` for its MACs, when
    the target has one."""
    if not peers:
        return None
    chosen = [c for c in peers if c.cls in refs] or [c for c in peers if c.ns_per_elem > 0]
    chosen = chosen or list(peers)
    ns_per_byte = statistics.median(c.ns_per_elem / elem_bytes for c in chosen)
    mac = next((c.ns_per_mac for c in peers if c.cls == gemm), 0.0)
    if cls.split(":")[0] not in _MAC_CLASS_KINDS:
        mac = 0.0  # an elementwise op's "MACs" are its elements: it pays for bytes only
    return KernelCoefficients(
        cls,
        fixed_ms=statistics.median(c.fixed_ms for c in chosen),
        ns_per_mac=mac,
        ns_per_elem=ns_per_byte * elem_bytes,
    )


def _kernel_ms(kernel: Kernel, c: KernelCoefficients) -> float:
    return c.fixed_ms + (
        c.ns_per_mac * kernel.macs
        + c.ns_per_elem * kernel.elems
        + c.ns_per_pixel * kernel.pixels
        + c.ns_per_tail_mac * kernel.tail_macs
        + c.ns_per_call * kernel.calls
        + c.ns_per_edge_tap * kernel.edge_taps
    ) * 1e-6


def kernel_latency_ms(kernel: Kernel, constants: KernelConstants) -> float:
    """One kernel's latency (approximated from bytes if the target lacks its class)."""
    return _kernel_ms(kernel, constants.priced(kernel.cls)[0])


def kernel_latency_and_approximated(
    graph: LayerGraph, bits: Bits, constants: KernelConstants
) -> tuple[float, tuple[str, ...]]:
    """Predicted latency, and the layers with a kernel priced from bytes (in graph order)."""
    total = constants.session_ms
    approx: dict[str, None] = {}
    for k in kernels(graph, bits, nchwc_block=constants.nchwc_block):
        c, approximated = constants.priced(k.cls)
        total += _kernel_ms(k, c)
        if approximated:
            approx[k.layer] = None
    return total, tuple(approx)


def latency_ms(graph: LayerGraph, bits: Bits, constants: KernelConstants) -> float:
    """Predicted latency at batch 1 (session overhead + Σ kernel costs)."""
    return kernel_latency_and_approximated(graph, bits, constants)[0]


def quantizer_count(layer: Layer) -> int:
    """Activation quantizers of a layer at act_bits < 32: one per input and one for the
    output of an add or mul (3) or a concat (inputs + 1); one (its input) otherwise."""
    if layer.kind in ("add", "mul"):
        return 3
    if layer.kind == "concat":
        return max(2, len(layer.inputs)) + 1
    return 1


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
    scale and its zero point (:func:`quantizer_count`). A layer without weights that has
    parameters (a standalone batch norm) keeps them in float: 32 bits each.
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
        else:
            total += layer.params * 4
        if p.act_bits != FLOAT_BITS:
            total += quantizer_count(layer) * (4 + p.act_bits / 8)
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
    """All four costs of ``graph`` at ``bits`` (and the layers priced from bytes)."""
    lat, approx = kernel_latency_and_approximated(graph, bits, constants)
    return Costs(
        latency_ms=lat,
        energy_mj=energy_mj(graph, bits, lat, constants.energy_constants),
        peak_memory_kb=peak_memory_kb(graph, bits),
        size_kb=size_kb(graph, bits),
        approximated=approx,
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
        if k.calls:
            add(f"{k.cls}.ns_per_call", k.calls * 1e-6)
            add(f"{k.cls}.ns_per_edge_tap", k.edge_taps * 1e-6)
    return f


class KernelCostModel(CostModel):
    """:mod:`cost_models.analytic` as a :class:`CostModel`."""

    name = "kernel"

    def predict(self, graph: LayerGraph, bits: Bits, constants: Any) -> Costs:
        return predict(graph, bits, constants)

    def fit(self, measurements: Sequence[Measurement], base: Any) -> Any:
        from cost_models.fit import fit_kernel_constants

        return fit_kernel_constants(
            measurements, energy_constants=base.energy_constants, nchwc_block=base.nchwc_block
        )

    def constants_to_dict(self, constants: Any) -> dict[str, Any]:
        return {
            "session_ms": constants.session_ms,
            "nchwc_block": constants.nchwc_block,
            "energy": constants.energy_constants.to_dict(),
            "coefficients": [
                {f.name: getattr(c, f.name) for f in fields(c)} for c in constants.coefficients
            ],
        }

    def constants_from_dict(self, data: dict[str, Any]) -> Any:
        required = {"session_ms", "coefficients"}
        # "energy" (the energy constants), or "power_w" in files written before them (read as
        # static power only: energy = power × latency, as those files meant); "nchwc_block"
        # absent in targets calibrated before it was recorded: 8
        optional = {"nchwc_block", "energy", "power_w"}
        if not required <= set(data) <= required | optional or ("energy" in data) == (
            "power_w" in data
        ):
            raise CalibrationError(
                f"kernel constants must have the keys {sorted(required)}, one of energy or "
                f"power_w, and optionally nchwc_block; got {sorted(data)}; recalibrate the target"
            )
        block = data.get("nchwc_block", NCHWC_BLOCK)
        if not isinstance(block, int) or isinstance(block, bool):
            raise CalibrationError(
                f"kernel constants: nchwc_block must be an integer, got {block!r}; recalibrate"
            )
        try:
            coeffs = tuple(KernelCoefficients(**c) for c in data["coefficients"])
            if "energy" in data:
                energy = EnergyConstants.from_dict(data["energy"])
            else:
                energy = power_only(float(data["power_w"]), "power figure of a target file "
                                    "written before the energy model")
            return KernelConstants(
                float(data["session_ms"]), None, coeffs, block, energy_constants=energy
            )
        except (TypeError, ValueError) as exc:
            raise CalibrationError(f"invalid kernel constants: {exc}; recalibrate") from exc
