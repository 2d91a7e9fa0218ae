"""Feasible seeds: candidates the cost model predicts to fit every budget, found without training.

For each pruning ratio, from the least pruning up, a coordinate descent over the per-layer
(weight bits, activation bits) pairs minimizes the budgets' violation first, then the
expected accuracy cost of the bits. The cost model is cheap (well under a millisecond per
prediction), so this takes seconds, and a study starts with candidates that fit: even a
6-trial search returns a feasible model. The descent moves a layer's two bit-widths together,
because on some runtimes only the pair (8-bit weights, 8-bit activations) is fast.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import product
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from cost_models.graph import LayerGraph
    from search.spec import Spec
    from spaces.joint import JointSpace
    from targets.base import Target

# Expected accuracy cost of a weight bit-width, from DESIGN.md's fake-quantization of the trained
# ResNet-8 (8-6 bits keep 0.91, 5 bits 0.903, 4 bits 0.867, 3 bits 0.70, 2 bits chance).
WEIGHT_BIT_COST = {32: 0.0, 8: 0.001, 7: 0.002, 6: 0.004, 5: 0.01, 4: 0.05, 3: 0.2, 2: 0.8}
ACT_BIT_COST = {32: 0.0, 16: 0.0005, 8: 0.003}
VIOLATION_WEIGHT = 1000.0


def _coordinates(space: JointSpace) -> dict[str, dict[str, tuple[Any, ...]]]:
    """Per layer (or stage, or model): its bit params and their choices."""
    coords: dict[str, dict[str, tuple[Any, ...]]] = {}
    for name, dist in space.distributions().items():
        kind, _, layer = name.partition(".")
        if kind in ("wbits", "abits"):
            coords.setdefault(layer, {})[name] = tuple(dist.choices)  # type: ignore[attr-defined]
    return coords


def _bits_cost(params: Mapping[str, Any]) -> float:
    cost = 0.0
    for name, value in params.items():
        if name.startswith("wbits."):
            cost += WEIGHT_BIT_COST.get(int(value), 0.5)
        elif name.startswith("abits."):
            cost += ACT_BIT_COST.get(int(value), 0.5)
    return cost


def _score(
    space: JointSpace,
    graph: LayerGraph,
    params: dict[str, Any],
    target: Target,
    budgets: Mapping[str, float],
) -> tuple[float, bool]:
    costs = target.predict(graph, space.decode(params).bits).as_dict()
    violation = sum(max(0.0, costs[k] / b - 1.0) for k, b in budgets.items() if k in costs)
    return VIOLATION_WEIGHT * violation + _bits_cost(params), violation == 0.0


def descend_bits(
    space: JointSpace,
    graph: LayerGraph,
    start: dict[str, Any],
    target: Target,
    budgets: Mapping[str, float],
    max_steps: int = 60,
) -> tuple[dict[str, Any], bool]:
    """Coordinate descent over each layer's bit pair, from ``start``; (params, feasible)."""
    params = dict(start)
    score, feasible = _score(space, graph, params, target, budgets)
    coords = _coordinates(space)
    for _ in range(max_steps):
        best: tuple[float, bool, dict[str, Any]] | None = None
        for names in coords.values():
            keys = list(names)
            for values in product(*(names[k] for k in keys)):
                if all(params[k] == v for k, v in zip(keys, values, strict=True)):
                    continue
                trial = {**params, **dict(zip(keys, values, strict=True))}
                s, f = _score(space, graph, trial, target, budgets)
                if best is None or s < best[0]:
                    best = (s, f, trial)
        if best is None or best[0] >= score - 1e-12:
            break
        score, feasible, params = best
    return params, feasible


def feasible_seeds(
    space: JointSpace,
    teacher: nn.Module,
    spec: Spec,
    target: Target,
    budgets: Mapping[str, float],
    n: int,
) -> list[dict[str, Any]]:
    """Up to ``n`` candidates predicted feasible, least pruning first."""
    from cost_models import from_torch

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
        start = space.uniform_params(ratio, top_w, top_a)
        graph = from_torch(space.prune(teacher, space.decode(start)), spec.model.input_shape)
        params, feasible = descend_bits(space, graph, start, target, budgets)
        if feasible and params not in seeds:
            seeds.append(params)
            if len(seeds) >= n:
                break
    return seeds
