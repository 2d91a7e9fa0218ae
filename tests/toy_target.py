"""A small real target with hand-set constants, for unit tests that must not calibrate a machine.

It is a real :class:`~targets.base.Target` on the per-layer-type cost model: every layer kind
at fp32, int8 and int16 activations has a hand-set fixed cost and per-MAC/per-element costs,
with int8 twice as fast per MAC as fp32. Its figures describe no device.
"""

from __future__ import annotations

from cost_models import LAYER_KINDS, KernelCoefficients
from cost_models.layerwise import LayerTypeConstants, LayerTypeCostModel
from targets import Provenance, Target

NS_PER_MAC = {"fp32": 1.0, "int8": 0.5, "int16": 1.5}


def toy_target(name: str = "toy", *, reduce_range: bool = False, scale: float = 1.0) -> Target:
    """``scale`` multiplies every latency coefficient."""
    kinds = [k for k in LAYER_KINDS if k != "conv"] + ["conv1", "convk"]
    coefficients = tuple(
        KernelCoefficients(
            f"{kind}:{prec}",
            fixed_ms=0.002 * scale,
            ns_per_mac=per_mac * scale,
            ns_per_elem=0.05 * scale,
        )
        for kind in kinds
        for prec, per_mac in NS_PER_MAC.items()
    )
    constants = LayerTypeConstants(
        overhead_ms=0.01 * scale,
        power_w=2.0,
        energy="power_x_latency",
        power_source="hand-set for tests",
        coefficients=coefficients,
    )
    return Target(
        name,
        "a hand-set test device",
        "none",
        LayerTypeCostModel(),
        constants,
        Provenance(source="hand-set", n_measurements=0, date="2026-01-01"),
        int8_reduce_range=reduce_range,
    )
