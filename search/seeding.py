"""Feasible seeds: candidates the cost model predicts to fit every budget, found without training.

For each pruning ratio, from the least pruning up, the repair (:mod:`search.repair`) finds the
bits that fit the budgets at the least expected accuracy cost. So a study starts with
candidates that fit, and even a short search returns a feasible model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from search.repair import repair_bits

if TYPE_CHECKING:
    from torch import nn

    from search.budgets import Budgets
    from search.sensitivity import Sensitivity
    from search.spec import Spec
    from spaces.joint import JointSpace
    from targets.base import Target


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
    """Up to ``n`` candidates predicted feasible, least pruning first, their bits where the
    study's measured ``sensitivity`` says they cost the least accuracy."""
    from spaces.student import student_architecture

    if n <= 0:
        return []
    p, q = spec.space.pruning, spec.space.quantization
    ratios = [0.0]
    if p is not None:
        ratios = [round(i * p.step, 6) for i in range(int(p.max_ratio / p.step + 1e-9) + 1)]
    top_w = max(q.weight_bits) if q else 32
    top_a = max(q.activation_bits) if q else 32
    seeds: list[dict[str, Any]] = []
    for ratio in ratios:
        start = student_architecture(teacher, space.uniform_params(ratio, top_w, top_a), space)
        params, feasible = repair_bits(space, start, target, budgets, sensitivity=sensitivity)
        if feasible and params not in seeds:
            seeds.append(params)
            if len(seeds) >= n:
                break
    return seeds
