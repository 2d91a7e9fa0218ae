"""Feasible seeds: candidates the cost model predicts to fit every budget, found without training.

They are spread over the ways of meeting the budgets, so that the sampler learns from each:

1. pruning where the study's measured sensitivity says it costs the least accuracy per unit of
   budget it saves (:func:`search.repair.repair_pruning`), bits repaired at each step;
2. the least uniform pruning ratio whose repaired bits fit, with the pruning the budgets do not
   need given back where it costs the most accuracy (:func:`search.repair.give_back`);
3. the first, held to :data:`FAST_LATENCY` of the latency budget (or, where the space cannot
   go so fast, as fast as the first's ascent gets, most often every group at its most pruning):
   a faster candidate, so that the trained candidates (and the front) reach below the budget,
   where a student pruned further loses little once it is finalized;
4. pruning where it saves the most budget, whatever its sensitivity;
5. then the next uniform ratios up.

The bits of each are those the repair (:mod:`search.repair`) finds to fit the budgets at the
least expected accuracy cost. So a study starts with candidates that fit, and even a short
search returns a feasible model.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from search.repair import give_back, pruning_loss, pruning_table, repair_bits, repair_pruning

if TYPE_CHECKING:
    from torch import nn

    from search.budgets import Budgets
    from search.sensitivity import Sensitivity
    from search.spec import Spec
    from spaces.joint import JointSpace
    from targets.base import Target

FAST_LATENCY = 0.6
"""The share of the latency budget the fast seed is held to."""
SEED = "feasible_seed"
"""The user attribute that marks a trial enqueued as a feasible seed: the trial stopper lets it
train to the end, or the seeds' spread would be lost to a median set by the most accurate."""


def feasible_seeds(
    space: JointSpace,
    teacher: nn.Module,
    spec: Spec,
    target: Target,
    budgets: Budgets,
    n: int,
    *,
    sensitivity: Sensitivity | None = None,
) -> list[dict[str, Any]]:
    """Up to ``n`` candidates predicted feasible, in the order of the module docstring, their
    bits where the study's measured ``sensitivity`` says they cost the least accuracy."""
    from spaces.student import student_architecture

    if n <= 0:
        return []
    q = spec.space.quantization
    top_w = max(q.weight_bits) if q else 32
    top_a = max(q.activation_bits) if q else 32
    ratios = space.pruning.grid if space.pruning else (0.0,)
    seeds: list[dict[str, Any]] = []

    def add(params: dict[str, Any], feasible: bool) -> None:
        if feasible and params not in seeds and len(seeds) < n:
            seeds.append(params)

    @functools.cache  # ratio 0 is the start of the ascents and the first uniform seed
    def uniform(ratio: float) -> tuple[dict[str, Any], bool]:
        start = student_architecture(teacher, space.uniform_params(ratio, top_w, top_a), space)
        return repair_bits(space, start, target, budgets, sensitivity=sensitivity)

    unpruned, fits = uniform(0.0)
    table = None if fits else pruning_table(space, teacher, unpruned, target)
    add(*repair_pruning(space, teacher, unpruned, target, budgets, sensitivity=sensitivity,
                        table=table))
    rest = iter(ratios)
    for ratio in rest:  # the least uniform ratio that fits, what it does not need given back
        params, feasible = uniform(ratio)
        if feasible:
            floor = dict.fromkeys(space.pruning.distributions() if space.pruning else (), 0.0)
            given = give_back(space, teacher, params, floor, target, budgets,
                              sensitivity=sensitivity, loss=pruning_loss(sensitivity))
            add(params if given in seeds else given, True)  # where the first seed is: as is
            break
    fast = budgets.latency_times(FAST_LATENCY)
    if len(seeds) < n and fast != budgets:
        params, fits = repair_pruning(space, teacher, unpruned, target, fast,
                                      sensitivity=sensitivity, table=table)
        if not fits:  # the space goes no faster: as fast as it goes, if that fits the budgets
            params, fits = repair_bits(space, student_architecture(teacher, params, space),
                                       target, budgets, sensitivity=sensitivity)
        add(params, fits)
    if len(seeds) < n and space.pruning is not None:
        add(*repair_pruning(space, teacher, unpruned, target, budgets, sensitivity=sensitivity,
                            weigh_loss=False, table=table))
    for ratio in rest:
        if len(seeds) >= n:
            break
        add(*uniform(ratio))
    return seeds
