"""The search space a target can price: a study searches only the precisions its target was
calibrated for.

A device calibrated for float only (a phone's CPU, a Raspberry Pi, a Jetson) keeps every weight
bit-width of the space, but below 32 bits as *storage-only* quantization: the weights are kept in
low bits in the file and dequantized when the model loads, so a layer is priced at float latency
and counted at its bits in the size. Its activations stay float. A device that runs int8 only
(an Edge TPU, an int8 TFLite build) gets 8-bit activations and at most 8-bit weights everywhere,
and its teacher is priced as that device runs it: int8. Relative latency and energy budgets are
shares of that; a relative size budget stays a share of the float teacher's size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cost_models.graph import FLOAT_BITS
from search.spec import Spec
from spaces.config import QuantizationSpace

if TYPE_CHECKING:
    from targets.base import Target

__all__ = ["Restriction", "restrict_to_target"]


@dataclass(frozen=True)
class Restriction:
    """The spec with its space restricted to the target, and a line per change, saying why."""

    spec: Spec
    notes: tuple[str, ...] = ()


def runs_float(act_bits: tuple[int, ...]) -> bool:
    return FLOAT_BITS in act_bits


def restrict_to_target(spec: Spec, target: Target) -> Restriction:
    """``spec`` with its quantization space cut to the activation bit-widths ``target`` prices
    (see the module docstring). Applying it twice changes nothing the second time."""
    runs = target.act_bits
    precs = ", ".join("fp32" if a == FLOAT_BITS else f"int{a}" for a in runs)
    why = f"target {target.name} is calibrated for {precs} only"
    q = spec.space.quantization
    notes: list[str] = []
    if not runs_float(runs):
        notes.append(
            "the teacher is priced as this target runs it (int8): relative latency and energy "
            "budgets are shares of that; a relative size budget stays a share of its fp32 size"
        )
    if q is None:
        if runs_float(runs):
            return Restriction(spec)
        new = QuantizationSpace(weight_bits=(8,), activation_bits=(min(runs),))
        notes.append(f"every layer is quantized to 8-bit weights and activations: {why}")
    else:
        acts = tuple(a for a in q.activation_bits if a in runs) or (
            (FLOAT_BITS,) if runs_float(runs) else (min(runs),)
        )
        weights = q.weight_bits
        if not runs_float(runs):
            weights = tuple(w for w in weights if w != FLOAT_BITS) or (8,)
        if acts != q.activation_bits:
            notes.append(f"activation_bits {list(q.activation_bits)} -> {list(acts)}: {why}")
        if weights != q.weight_bits:
            notes.append(f"weight_bits {list(q.weight_bits)} -> {list(weights)}: {why}")
        if acts == (FLOAT_BITS,) and any(w != FLOAT_BITS for w in weights):
            notes.append(
                "weight bits below 32 are storage-only quantization on this target: weights "
                "are kept in low bits in the file and dequantized when the model loads "
                "(priced at fp32 latency, counted at their bits in the size)"
            )
        if (weights, acts) == (q.weight_bits, q.activation_bits):
            return Restriction(spec, tuple(notes))
        new = q.model_copy(update={"weight_bits": weights, "activation_bits": acts})
    space = spec.space.model_copy(update={"quantization": new})
    return Restriction(spec.model_copy(update={"space": space}), tuple(notes))
