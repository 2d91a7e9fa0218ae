"""Repair: the feasible neighbour of a candidate, found on the cost model without training.

A coordinate descent over the bits of each quantization unit (a layer, stage or the model, as
the space's granularity says) minimizes the budgets' violation first, then the accuracy the
bits are expected to cost: the study's measured sensitivity (:mod:`search.sensitivity`). The cost model is cheap (well under a millisecond a prediction), so this takes
milliseconds to seconds. A unit's weight and activation bits move together, because on some
runtimes only the pair (8-bit weights, 8-bit activations) is fast. The pruning ratios (the
architecture) stay as they are; the seeding repairs each pruning level in turn.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import product
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from search.budgets import Budgets
    from search.sensitivity import Sensitivity
    from spaces.joint import JointSpace
    from spaces.student import Student
    from targets.base import Target

VIOLATION_WEIGHT = 1000.0
ORDER_WEIGHT = 1e-6
FLOAT_BITS = 32


def _bits_prior(
    space: JointSpace, params: Mapping[str, Any], sensitivity: Sensitivity | None
) -> float:
    """The accuracy the bits are expected to cost: the study's measured sensitivity, summed
    over the units; and, to break ties (and alone where nothing was measured), fewer bits
    cost more."""
    bits = space.decode(params).bits.values()
    order = sum(2 * FLOAT_BITS - p.weight_bits - p.act_bits for p in bits) / FLOAT_BITS
    measured = sensitivity.bits_loss(space, params) if sensitivity else 0.0
    return measured + ORDER_WEIGHT * order


def _score(
    space: JointSpace,
    student: Student,
    params: dict[str, Any],
    target: Target,
    budgets: Budgets,
    sensitivity: Sensitivity | None,
) -> tuple[float, bool]:
    costs = target.predict(student.graph, space.decode(params).bits).as_dict()
    violation = budgets.violation(costs)
    return (
        VIOLATION_WEIGHT * violation + _bits_prior(space, params, sensitivity),
        violation == 0.0,
    )


def repair_bits(
    space: JointSpace,
    student: Student,
    target: Target,
    budgets: Budgets,
    *,
    sensitivity: Sensitivity | None = None,
    max_steps: int = 60,
) -> tuple[dict[str, Any], bool]:
    """Coordinate descent from ``student``'s params over each unit's bits; (params, feasible).

    ``student`` may be architecture-only: only its layer graph is priced. ``sensitivity`` is
    the study's measured accuracy prior (see :mod:`search.sensitivity`).
    """
    params = dict(student.params)
    score, feasible = _score(space, student, params, target, budgets, sensitivity)
    units = space.quantization.bit_units() if space.quantization else {}
    for _ in range(max_steps):
        best: tuple[float, bool, dict[str, Any]] | None = None
        for choices in units.values():
            keys = list(choices)
            for values in product(*(choices[k] for k in keys)):
                if all(params[k] == v for k, v in zip(keys, values, strict=True)):
                    continue
                trial = {**params, **dict(zip(keys, values, strict=True))}
                s, f = _score(space, student, trial, target, budgets, sensitivity)
                if best is None or s < best[0]:
                    best = (s, f, trial)
        if best is None or best[0] >= score - 1e-12:
            break
        score, feasible, params = best
    return params, feasible
