"""Energy from the work done, shared by both cost models.

    energy_mj = static_power_w × latency_ms
                + Σ over layers (pJ_per_mac[precision] × MACs + pJ_per_byte × bytes) × 1e-9

* MACs are counted for layers that multiply and accumulate (conv, dwconv, linear, matmul);
  other layers (add, pools, activations...) cost their bytes only. A layer's MAC precision is
  that of its activations: ``act_bits`` 8 → int8, 16 → int16 (priced at 4 × the int8 MAC: a
  multiplier's energy grows with the square of its operand width, as Horowitz's 8- and 32-bit
  integer multipliers, 0.2 and 3.1 pJ, do), 32 → float: fp32, or fp16 on a target whose float
  layers run in half precision (``float_bits`` 16).
* Bytes moved = weights read (``params`` at their container width: INT4, INT8 or float) +
  activations read (every input's elements at the layer's activation width) + activations
  written (the output's elements at the widest width its readers read; a graph output at the
  float width). Float width = ``float_bits`` / 8.

``EnergyConstants.source`` says where the constants come from: ``calibrated`` (fitted by
non-negative least squares to measured energy with the measured latency:
:func:`cost_models.fit.fit_energy_constants`) or ``modelled`` (published per-operation
energies, :func:`published_energy`, with the device's power figure as static power).
Constants written before this model (a bare ``power_w``) keep their old meaning: static power
only, energy = power × latency (:func:`power_only`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from cost_models.errors import CalibrationError
from cost_models.graph import FLOAT_BITS, Bits, LayerGraph, Precision

__all__ = [
    "HOROWITZ_45NM",
    "MAC_KINDS",
    "SOURCES",
    "EnergyConstants",
    "act_bytes_per_elem",
    "dynamic_energy_mj",
    "energy_features",
    "energy_mj",
    "input_elems",
    "layer_bytes",
    "power_only",
    "published_energy",
]

SOURCES = ("calibrated", "modelled")
MAC_KINDS = ("conv", "dwconv", "linear", "matmul")
INT16_MAC_FACTOR = 4.0
_FLOAT = Precision()

# Horowitz, "Computing's energy problem (and what we can do about it)", ISSCC 2014, 45 nm:
# a MAC is one multiply plus one add; memory per byte = the 64-bit access energy / 8.
HOROWITZ_45NM = {
    "int8_mac_pj": 0.2 + 0.03,
    "fp16_mac_pj": 1.1 + 0.4,
    "fp32_mac_pj": 3.7 + 0.9,
    "sram_8kb_pj_per_byte": 10.0 / 8,
    "sram_32kb_pj_per_byte": 20.0 / 8,
    "sram_1mb_pj_per_byte": 100.0 / 8,
    "dram_pj_per_byte": 1300.0 / 8,  # 1.3-2.6 nJ per 64-bit access; the low end
}


@dataclass(frozen=True)
class EnergyConstants:
    """A device's energy constants (see the module docstring). Serialisable with
    :meth:`to_dict`/:meth:`from_dict`."""

    static_power_w: float
    pj_per_mac_int8: float = 0.0
    pj_per_mac_fp16: float = 0.0
    pj_per_mac_fp32: float = 0.0
    pj_per_byte: float = 0.0
    float_bits: int = FLOAT_BITS  # float layers compute at 32 or 16 (fp16) bits
    source: str = "modelled"
    note: str = ""

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.type in ("float", float) and not (math.isfinite(v) and v >= 0):
                raise CalibrationError(
                    f"energy constants: {f.name} must be a finite number >= 0, got {v!r}; "
                    f"recalibrate the target or fix its file"
                )
        if self.source not in SOURCES:
            raise CalibrationError(
                f"energy constants: source must be one of {SOURCES}, got {self.source!r}"
            )
        if self.float_bits not in (16, FLOAT_BITS):
            raise CalibrationError(
                f"energy constants: float_bits must be 16 or 32, got {self.float_bits!r}"
            )

    @property
    def per_op(self) -> bool:
        """Whether any per-operation term is non-zero (else energy = static power × latency)."""
        return any(
            v > 0
            for v in (self.pj_per_mac_int8, self.pj_per_mac_fp16, self.pj_per_mac_fp32,
                      self.pj_per_byte)
        )

    @property
    def method(self) -> str:
        """``calibrated``, ``modelled`` (published per-operation energies) or
        ``power_x_latency`` (a power figure alone, with no per-operation terms)."""
        if self.source == "calibrated":
            return "calibrated"
        return "modelled" if self.per_op else "power_x_latency"

    @property
    def label(self) -> str:
        """What a report prints after "energy: ": ``calibrated (...)`` or ``modelled (...)``."""
        what = self.note or f"static power {self.static_power_w:.3g} W"
        if self.source == "calibrated":
            return f"calibrated ({what})"
        if not self.per_op:
            return f"modelled (power × latency: {what})"
        return f"modelled ({what})"

    def float_mac_pj(self) -> float:
        return self.pj_per_mac_fp16 if self.float_bits == 16 else self.pj_per_mac_fp32

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> EnergyConstants:
        names = {f.name for f in fields(cls)}
        if not isinstance(data, dict) or not {"static_power_w", "source"} <= set(data) <= names:
            raise CalibrationError(
                f"energy constants must be an object with static_power_w and source, and "
                f"optionally {sorted(names - {'static_power_w', 'source'})}; got "
                f"{str(data)[:200]}; recalibrate the target"
            )
        try:
            return cls(**data)
        except TypeError as exc:
            raise CalibrationError(f"invalid energy constants: {exc}; recalibrate") from exc


def power_only(power_w: float, note: str, *, source: str = "modelled") -> EnergyConstants:
    """Static power only: energy = ``power_w`` × latency (how targets computed energy before
    this model; files with a bare ``power_w`` load as this)."""
    return EnergyConstants(float(power_w), source=source, note=note)


def published_energy(
    static_power_w: float,
    *,
    node_nm: float,
    note: str,
    float_bits: int = FLOAT_BITS,
    memory: str = "sram_1mb_pj_per_byte",
) -> EnergyConstants:
    """Modelled constants: Horowitz's 45 nm per-operation energies scaled to ``node_nm`` by
    ``node_nm / 45`` (switched capacitance shrinks with the feature size while supply voltage
    has stayed near 0.8-1 V since 45 nm: a rough rule, stated), memory at ``memory`` (default
    a 1 MB on-chip SRAM, 12.5 pJ/byte at 45 nm: weights and activations of small CNNs come from
    a large cache or buffer; DRAM traffic is not modelled) and ``static_power_w`` the device's
    power figure."""
    if memory not in HOROWITZ_45NM or not memory.endswith("per_byte"):
        raise CalibrationError(f"unknown memory level {memory!r}; valid: sram_8kb_pj_per_byte, "
                               f"sram_32kb_pj_per_byte, sram_1mb_pj_per_byte, dram_pj_per_byte")
    if not node_nm > 0:
        raise CalibrationError(f"node_nm must be > 0, got {node_nm!r}")
    k = node_nm / 45.0
    h = HOROWITZ_45NM
    return EnergyConstants(
        static_power_w=float(static_power_w),
        pj_per_mac_int8=h["int8_mac_pj"] * k,
        pj_per_mac_fp16=h["fp16_mac_pj"] * k,
        pj_per_mac_fp32=h["fp32_mac_pj"] * k,
        pj_per_byte=h[memory] * k,
        float_bits=float_bits,
        source="modelled",
        note=f"{note}; per-op energies: Horowitz ISSCC 2014 45 nm x {node_nm:g}/45 "
        f"({memory.removesuffix('_pj_per_byte').replace('_', ' ')} per byte)",
    )


def act_bytes_per_elem(act_bits: int, float_bits: int = FLOAT_BITS) -> float:
    """An activation's container width in bytes: 1 (int8), 2 (int16), else the float width."""
    return {8: 1.0, 16: 2.0}.get(act_bits, float_bits / 8)


def _weight_bytes_per_param(weight_bits: int, float_bits: int) -> float:
    if 2 <= weight_bits <= 4:
        return 0.5
    if 5 <= weight_bits <= 8:
        return 1.0
    return float_bits / 8


def input_elems(graph: LayerGraph) -> dict[str, int]:
    """Layer name → the elements it reads, summed over all its inputs (a layer that lists no
    inputs reads ``in_elems``)."""
    out_elems = {la.name: la.out_elems for la in graph.layers}
    out_elems[""] = math.prod(graph.input_shape)
    return {
        la.name: sum(out_elems.get(s, la.in_elems) for s in la.inputs) if la.inputs
        else la.in_elems
        for la in graph.layers
    }


def layer_bytes(graph: LayerGraph, bits: Bits, *, float_bits: int = FLOAT_BITS) -> dict[str, float]:
    """Layer name → bytes moved: weights read + activations read + activations written, at
    their container widths (see the module docstring)."""
    readers: dict[str, list[str]] = {}
    for la in graph.layers:
        for s in la.inputs:
            readers.setdefault(s, []).append(la.name)
    reads = input_elems(graph)

    def width(name: str) -> float:
        return act_bytes_per_elem(bits.get(name, _FLOAT).act_bits, float_bits)

    out: dict[str, float] = {}
    for la in graph.layers:
        p = bits.get(la.name, _FLOAT)
        us = readers.get(la.name, [])
        w_out = max((width(u) for u in us), default=float_bits / 8)
        out[la.name] = (
            la.params * _weight_bytes_per_param(p.weight_bits, float_bits)
            + reads[la.name] * width(la.name)
            + la.out_elems * w_out
        )
    return out


def energy_features(graph: LayerGraph, bits: Bits, *, float_bits: int = FLOAT_BITS
                    ) -> dict[str, float]:
    """The work terms, in units of 1e9 (so that pJ × feature = mJ): ``mac_int8`` (int16 MACs
    count 4×), ``mac_float`` and ``bytes``."""
    mac8 = macf = 0.0
    for la in graph.layers:
        if la.kind not in MAC_KINDS:
            continue
        act = bits.get(la.name, _FLOAT).act_bits
        if act == 8:
            mac8 += la.macs
        elif act == 16:
            mac8 += INT16_MAC_FACTOR * la.macs
        else:
            macf += la.macs
    moved = sum(layer_bytes(graph, bits, float_bits=float_bits).values())
    return {"mac_int8": mac8 * 1e-9, "mac_float": macf * 1e-9, "bytes": moved * 1e-9}


def dynamic_energy_mj(graph: LayerGraph, bits: Bits, constants: EnergyConstants) -> float:
    """Σ over layers of (pJ per MAC × MACs + pJ per byte × bytes moved) × 1e-9, in mJ."""
    if not constants.per_op:
        return 0.0
    f = energy_features(graph, bits, float_bits=constants.float_bits)
    return (
        constants.pj_per_mac_int8 * f["mac_int8"]
        + constants.float_mac_pj() * f["mac_float"]
        + constants.pj_per_byte * f["bytes"]
    )


def energy_mj(graph: LayerGraph, bits: Bits, latency_ms: float,
              constants: EnergyConstants) -> float:
    """static_power_w × latency_ms + :func:`dynamic_energy_mj`."""
    return constants.static_power_w * latency_ms + dynamic_energy_mj(graph, bits, constants)
