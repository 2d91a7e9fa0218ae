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

A class the target was not calibrated on raises :class:`UnsupportedLayerError` (a device that
runs int8 only has no ``fp32`` classes). energy_mj = latency_ms × power_w: ``energy`` says
whether power_w was fitted to measured energy (``calibrated``) or is a published power figure
(``power_x_latency``, with ``power_source``). Peak memory and size are those of
:mod:`cost_models.analytic`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from cost_models.analytic import KernelCoefficients, peak_memory_kb, size_kb
from cost_models.base import CostModel, Measurement
from cost_models.errors import CalibrationError, UnsupportedLayerError
from cost_models.graph import Bits, Costs, Layer, LayerGraph, Precision

__all__ = ["LayerTypeConstants", "LayerTypeCostModel", "default_constants", "layer_class",
           "with_precision"]

_FLOAT = Precision()
ENERGY_KINDS = ("calibrated", "power_x_latency")
RIDGE = 1e-4


@dataclass(frozen=True)
class LayerTypeConstants:
    """A device's constants for :class:`LayerTypeCostModel`."""

    overhead_ms: float
    power_w: float
    energy: str
    power_source: str
    coefficients: tuple[KernelCoefficients, ...]

    def coefficient(self, cls: str) -> KernelCoefficients:
        for c in self.coefficients:
            if c.cls == cls:
                return c
        have = sorted(c.cls for c in self.coefficients)
        precs = sorted({c.split(":")[1] for c in have})
        raise UnsupportedLayerError(
            f"this target has no calibrated cost for layer class {cls!r}: it covers {have} "
            f"(precisions {precs}). Use a precision it runs, or calibrate it with measurements "
            f"of such layers"
        )

    @property
    def precisions(self) -> list[str]:
        return sorted({c.cls.split(":")[1] for c in self.coefficients})


def layer_class(layer: Layer, p: Precision) -> str:
    kind = layer.kind
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
    total = constants.overhead_ms
    for layer in graph.layers:
        c = constants.coefficient(layer_class(layer, bits.get(layer.name, _FLOAT)))
        total += c.fixed_ms + (c.ns_per_mac * layer.macs
                               + c.ns_per_elem * (layer.in_elems + layer.out_elems)) * 1e-6
    return total


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
        lat = layer_type_latency_ms(graph, bits, constants)
        return Costs(latency_ms=lat, energy_mj=lat * constants.power_w,
                     peak_memory_kb=peak_memory_kb(graph, bits), size_kb=size_kb(graph, bits))

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
            "overhead_ms": constants.overhead_ms, "power_w": constants.power_w,
            "energy": constants.energy, "power_source": constants.power_source,
            "coefficients": [{f.name: getattr(c, f.name) for f in fields(c)
                              if f.name != "ns_per_pixel"} for c in constants.coefficients],
        }

    def constants_from_dict(self, data: dict[str, Any]) -> Any:
        allowed = {"overhead_ms", "power_w", "energy", "power_source", "coefficients"}
        if set(data) != allowed:
            raise CalibrationError(
                f"layer-type constants must have exactly the keys {sorted(allowed)}, got "
                f"{sorted(data)}; recalibrate the target"
            )
        if data["energy"] not in ENERGY_KINDS:
            raise CalibrationError(
                f"constants.energy must be one of {ENERGY_KINDS}, got {data['energy']!r}"
            )
        try:
            coeffs = tuple(KernelCoefficients(**c) for c in data["coefficients"])
            return LayerTypeConstants(float(data["overhead_ms"]), float(data["power_w"]),
                                      str(data["energy"]), str(data["power_source"]), coeffs)
        except (TypeError, ValueError) as exc:
            raise CalibrationError(f"invalid layer-type constants: {exc}; recalibrate") from exc


def default_constants(power_w: float, power_source: str, *,
                      energy: str = "power_x_latency") -> LayerTypeConstants:
    """Unfitted constants carrying a device's power figure (the ``base`` of a first fit)."""
    if energy not in ENERGY_KINDS:
        raise CalibrationError(f"energy must be one of {ENERGY_KINDS}, got {energy!r}")
    return LayerTypeConstants(0.0, power_w, energy, power_source, ())



