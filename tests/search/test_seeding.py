"""Feasible seeds and the repair, on the cost model of a target with hand-set constants."""

from __future__ import annotations

from search.budgets import Budgets
from search.repair import repair_bits, repair_pruning
from search.seeding import FAST_LATENCY, feasible_seeds
from search.sensitivity import Sensitivity
from search.trial import TrialContext
from spaces.student import student_architecture


def _costs(context: TrialContext, params: dict) -> dict[str, float]:
    teacher, space = context.teacher_and_space()
    student = student_architecture(teacher, params, space)
    return context.target.predict(student.graph, student.policy.bits).as_dict()


def test_seeds_are_feasible_and_distinct(context: TrialContext) -> None:
    teacher, space = context.teacher_and_space()
    seeds = feasible_seeds(space, teacher, context.spec, context.target, context.budgets, 4)
    assert 1 <= len(seeds) <= 4
    assert len({tuple(sorted(s.items())) for s in seeds}) == len(seeds)
    for params in seeds:
        assert context.budgets.broken(_costs(context, params)) == {}


def test_one_seed_is_held_well_below_the_latency_budget(context: TrialContext) -> None:
    """The seeds spread along latency: of the first two, one is at the budget's edge and one
    is predicted within :data:`FAST_LATENCY` of it (here the uniform seeds would not be)."""
    teacher, space = context.teacher_and_space()
    budgets = context.budgets
    fast = budgets.latency_times(FAST_LATENCY)
    seeds = feasible_seeds(space, teacher, context.spec, context.target, budgets, 2)
    assert [fast.broken(_costs(context, s)) == {} for s in seeds] == [False, True]


def test_the_fast_seed_is_the_most_pruned_student_when_the_space_cannot_reach_its_share(
    context: TrialContext,
) -> None:
    """A latency budget above the space's fastest student, but less than 1 / FAST_LATENCY
    times it: no candidate meets the fast seed's share, and the seeds hold one with every group
    at its most pruning (its bits repaired to the budget) instead of none."""
    teacher, space = context.teacher_and_space()
    assert space.pruning is not None and space.quantization is not None
    q = space.quantization.spec
    most = space.pruning.grid[-1]
    fastest = space.uniform_params(most, min(q.weight_bits), min(q.activation_bits))
    floor = _costs(context, fastest)["latency_ms"]
    budgets = Budgets({"latency_ms": floor * (1 + FAST_LATENCY) / (2 * FAST_LATENCY)})
    assert budgets.latency_times(FAST_LATENCY).limits["latency_ms"] < floor
    seeds = feasible_seeds(space, teacher, context.spec, context.target, budgets, 3)
    assert all(budgets.broken(_costs(context, s)) == {} for s in seeds)
    groups = list(space.pruning.distributions())
    assert any(all(s[p] == most for p in groups) for s in seeds)


def _latency_needs_pruning(context: TrialContext) -> tuple[Budgets, str, Sensitivity]:
    """A latency budget that bits alone cannot meet, and a sensitivity in which one group's
    pruning costs nothing and every other group's costs 20 points."""
    _, space = context.teacher_and_space()
    assert space.pruning is not None
    params = list(space.pruning.distributions())
    cheap = params[-1]
    grid = space.pruning.grid[1:]
    sens = Sensitivity(0.9, {}, {}, {
        p: {r: (0.0 if p == cheap else 0.2) * r for r in grid} for p in params
    }, 1.0)
    assert space.quantization is not None
    spec = space.quantization.spec

    def fastest(ratio: float) -> float:
        """The least latency at any uniform bits, the cheap group pruned at ``ratio``."""
        return min(
            _costs(context, {**space.uniform_params(0.0, w, a), cheap: ratio})["latency_ms"]
            for w in spec.weight_bits for a in spec.activation_bits
        )

    unpruned, pruned = fastest(0.0), fastest(grid[-1])
    assert pruned < unpruned
    return Budgets({"latency_ms": (unpruned + pruned) / 2}), cheap, sens


def test_pruning_repair_prunes_where_the_sensitivity_says_it_is_cheap(
    context: TrialContext,
) -> None:
    teacher, space = context.teacher_and_space()
    budgets, cheap, sens = _latency_needs_pruning(context)
    start = space.uniform_params(0.0, 32, 32)
    params, feasible = repair_pruning(space, teacher, start, context.target, budgets,
                                      sensitivity=sens)
    # a sampler's floats are off the grid by a rounding error: the same repair
    drawn = {k: v + 1e-12 if k.startswith("prune.") else v for k, v in start.items()}
    assert repair_pruning(space, teacher, drawn, context.target, budgets,
                          sensitivity=sens) == (params, feasible)
    assert feasible and budgets.broken(_costs(context, params)) == {}
    pruned = {k for k, v in params.items() if k.startswith("prune.") and v > 0}
    assert pruned == {cheap}
    # the same descent blind to the sensitivity meets the budget another way, and the seeds
    # hold both, the sensitive one first
    blind, ok = repair_pruning(space, teacher, start, context.target, budgets,
                               sensitivity=sens, weigh_loss=False)
    assert ok
    seeds = feasible_seeds(space, teacher, context.spec, context.target, budgets, 4,
                           sensitivity=sens)
    assert seeds[0] == params and blind in seeds


def test_no_seed_when_nothing_fits(context: TrialContext) -> None:
    teacher, space = context.teacher_and_space()
    impossible = Budgets({"size_kb": 0.001})
    assert feasible_seeds(space, teacher, context.spec, context.target, impossible, 3) == []


def test_repair_changes_bits_only(context: TrialContext) -> None:
    teacher, space = context.teacher_and_space()
    start = student_architecture(teacher, space.uniform_params(0.5, 32, 32), space)
    params, feasible = repair_bits(space, start, context.target, context.budgets)
    assert feasible and context.budgets.broken(_costs(context, params)) == {}
    assert {k: v for k, v in params.items() if not k.startswith(("wbits.", "abits."))} == {
        k: v for k, v in start.params.items() if not k.startswith(("wbits.", "abits."))
    }
    # the size budget is met without dropping every layer to the fewest bits
    assert {v for k, v in params.items() if k.startswith("wbits.")} != {4}
    # already feasible: nothing to repair
    again, ok = repair_bits(
        space, student_architecture(teacher, params, space), context.target, context.budgets
    )
    assert ok and again == params


def test_the_pruning_repair_gives_back_the_pruning_the_budgets_do_not_need(
    context: TrialContext,
) -> None:
    """No group of a repaired candidate can go one grid step down and still fit: the ascent's
    coarse steps, priced at its start's bits, are given back where they are not needed."""
    teacher, space = context.teacher_and_space()
    assert space.pruning is not None
    grid = space.pruning.grid
    needs_pruning, _, sens = _latency_needs_pruning(context)
    start = space.uniform_params(0.0, 32, 32)
    unpruned = _costs(context, start)
    for budgets in [needs_pruning] + [  # budgets the ascent overshoots
        Budgets({"latency_ms": unpruned["latency_ms"] * share,
                 "size_kb": unpruned["size_kb"] * 0.1}) for share in (0.3, 0.5)
    ]:
        for weigh_loss in (True, False):
            params, feasible = repair_pruning(space, teacher, start, context.target, budgets,
                                              sensitivity=sens, weigh_loss=weigh_loss)
            assert feasible
            for name in space.pruning.distributions():
                if params[name] == 0.0:
                    continue
                lower = max(r for r in grid if r < params[name] - 1e-9)
                shape = student_architecture(teacher, {**params, name: lower}, space)
                assert not repair_bits(space, shape, context.target, budgets,
                                       sensitivity=sens)[1], (name, weigh_loss)
