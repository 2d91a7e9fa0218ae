"""Repair: the feasible neighbour of a candidate, found on the cost model without training.

:func:`repair_bits`: a coordinate descent over the bits of each quantization unit (a layer,
stage or the model, as the space's granularity says) minimizes the budgets' violation first,
then the accuracy the bits are expected to cost: the study's measured sensitivity
(:mod:`search.sensitivity`). The cost model is cheap (well under a millisecond a prediction),
so this takes milliseconds to seconds. A unit's weight and activation bits move together,
because on some runtimes only the pair (8-bit weights, 8-bit activations) is fast. The pruning
ratios (the architecture) stay as they are.

:func:`repair_pruning`: a greedy ascent of the pruning ratios, for what bits cannot fix
(latency on a runtime whose float kernels are the fastest, a budget far below the teacher).
Each step raises, by one step of the grid, the ratio of the group that removes the most
violation per point of measured accuracy loss, on an additive estimate of the costs (each
group pruned alone: :func:`pruning_table`, one pruned architecture per group and ratio, a few
tenths of a second each); the estimate is checked on the real architecture, bits repaired.
:func:`give_back` then lowers, one grid step at a time, the ratios the budgets turn out not
to need. About ten seconds for ResNet-8 from the unpruned teacher (the seeding); less from
a draw (the sampler's repair), which starts nearer a fit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from itertools import product
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

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


def _predicted(space: JointSpace, teacher: nn.Module, params: Mapping[str, Any],
               target: Target) -> dict[str, float]:
    from spaces.student import student_architecture

    shape = student_architecture(teacher, params, space)
    return dict(target.predict(shape.graph, space.decode(params).bits).as_dict())


def pruning_table(space: JointSpace, teacher: nn.Module, params: Mapping[str, Any],
                  target: Target) -> dict[str, dict[float, dict[str, float]]]:
    """The predicted costs of ``params`` unpruned but for one pruning param, at each ratio of
    the grid: ``{param: {ratio: costs}}`` (ratio 0: unpruned). One pruned architecture per
    entry; once per study."""
    if space.pruning is None:
        return {}
    names = list(space.pruning.distributions())
    unpruned = {**params, **dict.fromkeys(names, 0.0)}
    return {p: {r: _predicted(space, teacher, {**unpruned, p: r}, target)
                for r in space.pruning.grid} for p in names}


def repair_pruning(
    space: JointSpace,
    teacher: nn.Module,
    params: Mapping[str, Any],
    target: Target,
    budgets: Budgets,
    *,
    sensitivity: Sensitivity | None = None,
    weigh_loss: bool = True,
    table: Mapping[str, Mapping[float, Mapping[str, float]]] | None = None,
    max_checks: int = 12,
) -> tuple[dict[str, Any], bool]:
    """Greedy ascent of the pruning ratios from ``params`` (see the module docstring);
    (params, feasible). Without a sensitivity, or without ``weigh_loss``, each step takes the
    group that removes the most violation, whatever it costs.

    The bits of ``params`` are repaired first. The steps are chosen on an additive estimate:
    ``table`` (:func:`pruning_table`, made here when not given; any bits will do, such as the
    study's unpruned start) holds the costs with each group pruned alone, and a candidate's
    are the unpruned costs plus each group's change, scaled to agree with the real costs of
    ``params``. Once the estimate meets the budgets it is checked on the candidate's real
    architecture, bits repaired; if that misses, the estimate is scaled to the real costs
    there and the ascent goes on (at most ``max_checks`` checks)."""
    from spaces.student import student_architecture

    shape = student_architecture(teacher, params, space)
    current, feasible = repair_bits(space, shape, target, budgets, sensitivity=sensitivity)
    if space.pruning is None or feasible:
        return current, feasible
    table = table if table is not None else pruning_table(space, teacher, current, target)
    grid = space.pruning.grid
    for param in table:  # a sampler's float (0.30000000000000004) on the grid's own value
        drawn = float(current[param])
        current[param] = min(grid, key=lambda r: abs(r - drawn))
    floor = {p: float(current[p]) for p in table}
    unpruned = next(iter(table.values()))[0.0]
    scale = dict.fromkeys(unpruned, 1.0)

    def estimate(ratios: Mapping[str, Any]) -> dict[str, float]:
        return {k: scale[k] * (v + sum(table[p][float(ratios[p])][k] - v for p in table))
                for k, v in unpruned.items()}

    def rescale(real: Mapping[str, float]) -> dict[str, float]:
        """The estimate made to agree with ``real`` costs at ``current``."""
        guess = estimate(current)
        return {k: scale[k] * real[k] / guess[k] if guess[k] > 0 else scale[k] for k in scale}

    scale = rescale(_predicted(space, teacher, current, target))

    loss = pruning_loss(sensitivity, weigh_loss)
    for _ in range(max_checks):
        violation = budgets.violation(estimate(current))
        while violation > 0.0:
            best: tuple[float, str, float, float] | None = None
            for param in table:
                ratio = float(current[param])
                higher = [r for r in grid if r > ratio + 1e-9]
                if not higher:
                    continue
                v = budgets.violation(estimate({**current, param: higher[0]}))
                gain = (violation - v) / max(loss(param, higher[0]) - loss(param, ratio), 1e-3)
                if best is None or gain > best[0]:
                    best = (gain, param, higher[0], v)
            if best is None:
                return current, False  # every group at the most pruning
            _, param, ratio, violation = best
            current[param] = ratio
        shape = student_architecture(teacher, current, space)
        repaired, feasible = repair_bits(space, shape, target, budgets, sensitivity=sensitivity)
        if feasible:
            return give_back(space, teacher, repaired, floor, target, budgets,
                             sensitivity=sensitivity, loss=loss), True
        scale = rescale(target.predict(shape.graph, space.decode(repaired).bits).as_dict())
    return current, False


def pruning_loss(sensitivity: Sensitivity | None,
                 weigh_loss: bool = True) -> Callable[[str, float], float]:
    """``loss(param, ratio)``: the accuracy the study measured pruning ``param`` at ``ratio``
    to cost (the ratio itself where it measured nothing); 0 without ``weigh_loss``."""

    def loss(param: str, ratio: float) -> float:
        measured = sensitivity.pruning.get(param, {}) if sensitivity else {}
        return max(measured.get(ratio, ratio), 0.0) if weigh_loss else 0.0

    return loss


def give_back(
    space: JointSpace,
    teacher: nn.Module,
    params: dict[str, Any],
    floor: Mapping[str, float],
    target: Target,
    budgets: Budgets,
    *,
    sensitivity: Sensitivity | None,
    loss: Callable[[str, float], float],
) -> dict[str, Any]:
    """Feasible ``params`` with the pruning the budgets do not need given back.

    An ascent (:func:`repair_pruning`'s, or the least uniform ratio) moves a whole grid step
    at a time, on costs priced at its start's bits, so it ends below the budgets, sometimes far
    below (bits chosen for the unpruned model can be the slow ones for a pruned one). Here the
    group whose last step costs the most accuracy (``loss``; the most pruned group first when
    it says nothing) goes one step down, towards its ``floor`` (where the ascent started), if
    the candidate, bits repaired, still fits. A group that cannot go down is not tried again:
    lowering the others only adds cost. One architecture per try: a few seconds at most."""
    from spaces.student import student_architecture

    assert space.pruning is not None
    grid = space.pruning.grid
    stuck: set[str] = set()
    while True:
        steps = []
        for param, low in floor.items():
            ratio = float(params[param])
            lower = [r for r in grid if low - 1e-9 <= r < ratio - 1e-9]
            if lower and param not in stuck:
                steps.append((loss(param, ratio) - loss(param, lower[-1]), ratio, param, lower[-1]))
        if not steps:
            return params
        _, _, param, ratio = max(steps)
        shape = student_architecture(teacher, {**params, param: ratio}, space)
        repaired, feasible = repair_bits(space, shape, target, budgets, sensitivity=sensitivity)
        if feasible:
            params = repaired
        else:
            stuck.add(param)
