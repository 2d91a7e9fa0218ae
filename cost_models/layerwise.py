"""A per-layer-type linear cost model, for devices known only by whole-network (or per-layer)
latencies and not by the kernels their runtime runs.

latency_ms = overhead_ms + Σ over layers l of
             fixed_ms[c(l)] + (ns_per_mac[c(l)]·l.macs + ns_per_elem[c(l)]·(in + out elements))·1e-6

where the class ``c(l) = "<type>:<precision>"``: type is ``conv1`` (1×1 conv), ``convk`` (any
larger kernel), ``dwconv``, ``linear``, ``add``, ``relu``, ``avgpool``, ``maxpool``, ``gap``;
precision is ``int8`` (act_bits 8), ``int16`` (act_bits 16) or ``fp32`` (float activations; a
weight-only-quantized layer computes in float too). This is the additive per-op model of
nn-Meter/HW-NAS-Bench's LUT predictors, with the op's cost linear in its MACs and memory traffic
instead of a table entry, so that it extrapolates to widths it was not measured at.

A layer kind without fitted coefficients (``bn``, ``mul``, ``concat``, a standalone activation
``"<act>:<prec>"``...) at a precision the target was calibrated at is priced from the bytes it
moves and the target's fitted bandwidth (:func:`cost_models.analytic.bandwidth_coefficient`:
ns per byte and fixed cost from the target's add and relu classes at that precision) and named
in ``Costs.approximated``. A class at a precision the target was never calibrated at raises
:class:`UnsupportedLayerError` (a device that runs int8 only has no ``fp32`` classes).
energy_mj is :mod:`cost_models.energy`'s. Peak memory and size are those of
:mod:`cost_models.analytic`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from cost_models.analytic import (
    ELEM_BYTES,
    MEMORY_BOUND_KINDS,
    KernelCoefficients,
    bandwidth_coefficient,
    peak_memory_kb,
    size_kb,
)
from cost_models.base import CostModel, Measurement
from cost_models.energy import MAC_KINDS, EnergyConstants, energy_mj, input_elems, power_only
from cost_models.errors import CalibrationError, UnsupportedLayerError
from cost_models.graph import Bits, Costs, Layer, LayerGraph, Precision

__all__ = ["LayerTypeConstants", "LayerTypeCostModel", "default_constants", "layer_class",
           "with_precision"]

_FLOAT = Precision()
ENERGY_KINDS = ("calibrated", "power_x_latency")
RIDGE = 1e-4


@dataclass(frozen=True, init=False)
class LayerTypeConstants:
    """A device's constants for :class:`LayerTypeCostModel`: latency coefficients and
    :mod:`cost_models.energy` constants.

    The constructor also takes the form written before the energy constants,
    ``LayerTypeConstants(overhead_ms, power_w, energy, power_source, coefficients)``: static
    power only (energy = power × latency, their old meaning), source ``calibrated`` if
    ``energy`` says so, else ``modelled``, with ``power_source`` as the note.
    """

    overhead_ms: float
    coefficients: tuple[KernelCoefficients, ...]
    energy_constants: EnergyConstants

    def __init__(
        self,
        overhead_ms: float,
        power_w: float | None = None,
        energy: str | None = None,
        power_source: str | None = None,
        coefficients: tuple[KernelCoefficients, ...] = (),
        *,
        energy_constants: EnergyConstants | None = None,
    ) -> None:
        if energy_constants is None:
            if power_w is None:
                raise CalibrationError(
                    "layer-type constants need energy_constants (or a legacy power_w)"
                )
            energy_constants = _legacy_energy(power_w, energy or "power_x_latency",
                                              power_source or "")
        elif power_w is not None or energy is not None or power_source is not None:
            raise CalibrationError(
                "give layer-type constants energy_constants or the legacy power_w, energy, "
                "power_source, not both"
            )
        object.__setattr__(self, "overhead_ms", overhead_ms)
        object.__setattr__(self, "coefficients", tuple(coefficients))
        object.__setattr__(self, "energy_constants", energy_constants)

    @property
    def power_w(self) -> float:
        """The static power (W) of the energy constants."""
        return self.energy_constants.static_power_w

    @property
    def energy(self) -> str:
        """How energy is had: ``calibrated``, ``modelled`` or ``power_x_latency``."""
        return self.energy_constants.method

    @property
    def power_source(self) -> str:
        """Where the energy constants come from (their note)."""
        return self.energy_constants.note

    @property
    def energy_label(self) -> str:
        """``calibrated (...)`` or ``modelled (...)``: print it after "energy: "."""
        return self.energy_constants.label

    def priced(self, cls: str) -> tuple[KernelCoefficients, bool]:
        """The coefficients of ``cls`` and whether they are approximated from bytes (a class
        this target lacks, at a precision it was calibrated at)."""
        for c in self.coefficients:
            if c.cls == cls:
                return c, False
        prec = cls.split(":")[-1]
        peers = [c for c in self.coefficients if c.cls.split(":")[-1] == prec]
        approx = bandwidth_coefficient(
            cls, peers, refs=tuple(f"{k}:{prec}" for k in MEMORY_BOUND_KINDS),
            gemm=f"linear:{prec}", elem_bytes=ELEM_BYTES.get(prec, 4.0),
        )
        if approx is None:
            have = sorted(c.cls for c in self.coefficients)
            raise UnsupportedLayerError(
                f"this target has no calibrated cost for layer class {cls!r}: it covers {have} "
                f"(precisions {self.precisions}). Use a precision it runs, or calibrate it "
                f"with measurements of such layers"
            )
        return approx, True

    @property
    def precisions(self) -> list[str]:
        return sorted({c.cls.split(":")[1] for c in self.coefficients})


def _legacy_energy(power_w: float, energy: str, power_source: str) -> EnergyConstants:
    if energy not in ENERGY_KINDS:
        raise CalibrationError(
            f"constants.energy must be one of {ENERGY_KINDS}, got {energy!r}; recalibrate"
        )
    source = "calibrated" if energy == "calibrated" else "modelled"
    return power_only(float(power_w), power_source, source=source)


def layer_class(layer: Layer, p: Precision) -> str:
    """``"<type>:<precision>"``; a standalone activation's type is the activation it applies
    (``sigmoid:fp32``)."""
    kind = layer.kind
    if kind == "act":
        kind = layer.act or "act"
    if kind == "conv":
        kind = "conv1" if layer.kernel == 1 else "convk"
    prec = {8: "int8", 16: "int16"}.get(p.act_bits, "fp32")
    return f"{kind}:{prec}"


def _weighted(cls: str) -> bool:
    return cls.split(":")[0] in ("conv1", "convk", "dwconv", "linear")


def layer_type_features(graph: LayerGraph, bits: Bits) -> dict[str, float]:
    """The linear features of the latency model, named ``"<class>.<coefficient>"``."""
    f: dict[str, float] = {"overhead_ms": 1.0}
    for layer in graph.layers:
        cls = layer_class(layer, bits.get(layer.name, _FLOAT))
        f[f"{cls}.fixed_ms"] = f.get(f"{cls}.fixed_ms", 0.0) + 1.0
        f[f"{cls}.ns_per_elem"] = (f.get(f"{cls}.ns_per_elem", 0.0)
                                   + (layer.in_elems + layer.out_elems) * 1e-6)
        if _weighted(cls):
            f[f"{cls}.ns_per_mac"] = f.get(f"{cls}.ns_per_mac", 0.0) + layer.macs * 1e-6
    return f


def layer_type_latency_ms(graph: LayerGraph, bits: Bits, constants: LayerTypeConstants) -> float:
    """Predicted latency at batch 1 (overhead + Σ per-layer costs)."""
    return layer_type_latency_and_approximated(graph, bits, constants)[0]


def layer_type_latency_and_approximated(
    graph: LayerGraph, bits: Bits, constants: LayerTypeConstants
) -> tuple[float, tuple[str, ...]]:
    """Predicted latency, and the layers priced from the bytes they move (in graph order).

    A priced-from-bytes layer touches the elements of all its inputs and its output, and
    reads its parameters (a standalone batch norm's 4 × C) at the element width."""
    total = constants.overhead_ms
    approx: list[str] = []
    reads = None
    for layer in graph.layers:
        c, approximated = constants.priced(layer_class(layer, bits.get(layer.name, _FLOAT)))
        elems, macs = layer.in_elems + layer.out_elems, layer.macs
        if approximated:
            reads = reads or input_elems(graph)
            elems = reads[layer.name] + layer.out_elems + layer.params
            macs = layer.macs if layer.kind in MAC_KINDS else 0  # elementwise: bytes only
            approx.append(layer.name)
        total += c.fixed_ms + (c.ns_per_mac * macs + c.ns_per_elem * elems) * 1e-6
    return total, tuple(approx)


def with_precision(constants: LayerTypeConstants, src: str, dst: str,
                   factor: float) -> LayerTypeConstants:
    """``constants`` plus ``dst`` classes costing ``factor`` × their ``src`` classes (e.g. fp32
    from int8 where only a measured fp32/int8 ratio is known)."""
    extra = tuple(
        replace(c, cls=c.cls.split(":")[0] + ":" + dst, fixed_ms=c.fixed_ms * factor,
                ns_per_mac=c.ns_per_mac * factor, ns_per_elem=c.ns_per_elem * factor)
        for c in constants.coefficients if c.cls.endswith(":" + src)
    )
    kept = tuple(c for c in constants.coefficients if not c.cls.endswith(":" + dst))
    return replace(constants, coefficients=kept + extra)


class LayerTypeCostModel(CostModel):
    """:mod:`cost_models.layerwise` as a :class:`CostModel`."""

    name = "layer-type"

    def predict(self, graph: LayerGraph, bits: Bits, constants: Any) -> Costs:
        lat, approx = layer_type_latency_and_approximated(graph, bits, constants)
        return Costs(latency_ms=lat,
                     energy_mj=energy_mj(graph, bits, lat, constants.energy_constants),
                     peak_memory_kb=peak_memory_kb(graph, bits), size_kb=size_kb(graph, bits),
                     approximated=approx)

    def fit(self, measurements: Sequence[Measurement], base: Any) -> Any:
        from cost_models.fit import fit_linear

        if len(measurements) < 3:
            raise CalibrationError(
                f"fitting needs at least 3 measurements, got {len(measurements)}; measure more"
            )
        values = fit_linear([layer_type_features(g, b) for g, b, _ in measurements],
                            [float(t) for _, _, t in measurements], ridge=RIDGE)
        classes = sorted({n.rsplit(".", 1)[0] for n in values if n != "overhead_ms"})
        coeffs = tuple(
            KernelCoefficients(cls, fixed_ms=values.get(f"{cls}.fixed_ms", 0.0),
                               ns_per_mac=values.get(f"{cls}.ns_per_mac", 0.0),
                               ns_per_elem=values.get(f"{cls}.ns_per_elem", 0.0))
            for cls in classes
        )
        return replace(base, overhead_ms=values.get("overhead_ms", 0.0), coefficients=coeffs)

    def constants_to_dict(self, constants: Any) -> dict[str, Any]:
        return {
            "overhead_ms": constants.overhead_ms,
            "energy": constants.energy_constants.to_dict(),
            "coefficients": [{f.name: getattr(c, f.name) for f in fields(c)
                              if f.name != "ns_per_pixel"} for c in constants.coefficients],
        }

    def constants_from_dict(self, data: dict[str, Any]) -> Any:
        """The current form (``overhead_ms``, ``energy`` constants, ``coefficients``), or the
        one written before the energy constants (``power_w``, ``energy`` kind,
        ``power_source``), read with its old meaning: static power only."""
        current = {"overhead_ms", "energy", "coefficients"}
        legacy = {"overhead_ms", "power_w", "energy", "power_source", "coefficients"}
        if set(data) not in (current, legacy):
            raise CalibrationError(
                f"layer-type constants must have exactly the keys {sorted(current)} (or, "
                f"written before the energy model, {sorted(legacy)}); got {sorted(data)}; "
                f"recalibrate the target"
            )
        try:
            coeffs = tuple(KernelCoefficients(**c) for c in data["coefficients"])
            if set(data) == legacy:
                return LayerTypeConstants(float(data["overhead_ms"]), float(data["power_w"]),
                                          str(data["energy"]), str(data["power_source"]), coeffs)
            return LayerTypeConstants(float(data["overhead_ms"]), coefficients=coeffs,
                                      energy_constants=EnergyConstants.from_dict(data["energy"]))
        except (TypeError, ValueError) as exc:
            raise CalibrationError(f"invalid layer-type constants: {exc}; recalibrate") from exc


def default_constants(power_w: float, power_source: str, *, energy: str = "power_x_latency",
                      energy_constants: EnergyConstants | None = None) -> LayerTypeConstants:
    """Unfitted constants carrying a device's energy constants (the ``base`` of a first fit):
    ``energy_constants`` if given, else ``power_w`` as static power only."""
    if energy_constants is not None:
        return LayerTypeConstants(0.0, energy_constants=energy_constants)
    return LayerTypeConstants(0.0, power_w, energy, power_source, ())
