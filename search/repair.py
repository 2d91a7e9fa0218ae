"""Repair: the feasible neighbour of a candidate, found on the cost model without training.

A coordinate descent over the bits of each quantization unit (a layer, stage or the model, as
the space's granularity says) minimizes the budgets' violation first, then an accuracy prior of
the bits. The cost model is cheap (well under a millisecond a prediction), so this takes
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
    from spaces.joint import JointSpace
    from spaces.student import Student
    from targets.base import Target

# An accuracy prior of a bit-width: the share of accuracy a layer is expected to lose at it.
# Ordered as fake quantization of a trained CNN usually orders them (8 bits near lossless, each
# bit below 5 much worse); only the order matters to the descent, the violation dominates it.
WEIGHT_BIT_COST = {32: 0.0, 8: 0.001, 7: 0.002, 6: 0.004, 5: 0.01, 4: 0.05, 3: 0.2, 2: 0.8}
ACT_BIT_COST = {32: 0.0, 16: 0.0005, 8: 0.003}
VIOLATION_WEIGHT = 1000.0


def _bits_prior(space: JointSpace, params: Mapping[str, Any]) -> float:
    bits = space.decode(params).bits
    return sum(
        WEIGHT_BIT_COST.get(p.weight_bits, 0.5) + ACT_BIT_COST.get(p.act_bits, 0.5)
        for p in bits.values()
    )


def _score(
    space: JointSpace, student: Student, params: dict[str, Any], target: Target, budgets: Budgets
) -> tuple[float, bool]:
    costs = target.predict(student.graph, space.decode(params).bits).as_dict()
    violation = budgets.violation(costs)
    return VIOLATION_WEIGHT * violation + _bits_prior(space, params), violation == 0.0


def repair_bits(
    space: JointSpace,
    student: Student,
    target: Target,
    budgets: Budgets,
    *,
    max_steps: int = 60,
) -> tuple[dict[str, Any], bool]:
    """Coordinate descent from ``student``'s params over each unit's bits; (params, feasible).

    ``student`` may be architecture-only: only its layer graph is priced.
    """
    params = dict(student.params)
    score, feasible = _score(space, student, params, target, budgets)
    units = space.quantization.bit_units() if space.quantization else {}
    for _ in range(max_steps):
        best: tuple[float, bool, dict[str, Any]] | None = None
        for choices in units.values():
            keys = list(choices)
            for values in product(*(choices[k] for k in keys)):
                if all(params[k] == v for k, v in zip(keys, values, strict=True)):
                    continue
                trial = {**params, **dict(zip(keys, values, strict=True))}
                s, f = _score(space, student, trial, target, budgets)
                if best is None or s < best[0]:
                    best = (s, f, trial)
        if best is None or best[0] >= score - 1e-12:
            break
        score, feasible, params = best
    return params, feasible
