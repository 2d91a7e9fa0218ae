"""Feasible seeds and the repair, on the cost model of a target with hand-set constants."""

from __future__ import annotations

from search.budgets import Budgets
from search.repair import repair_bits
from search.seeding import feasible_seeds
from search.trial import TrialContext
from spaces.student import student_architecture


def _costs(context: TrialContext, params: dict) -> dict[str, float]:
    teacher, space = context.teacher_and_space()
    student = student_architecture(teacher, params, space)
    return context.target.predict(student.graph, student.policy.bits).as_dict()


def test_seeds_are_feasible_distinct_and_least_pruned_first(context: TrialContext) -> None:
    teacher, space = context.teacher_and_space()
    seeds = feasible_seeds(space, teacher, context.spec, context.target, context.budgets, 3)
    assert 1 <= len(seeds) <= 3
    assert len({tuple(sorted(s.items())) for s in seeds}) == len(seeds)
    for params in seeds:
        assert context.budgets.broken(_costs(context, params)) == {}
    levels = [max(space.decode(s).ratios.values()) for s in seeds]
    assert levels == sorted(levels)


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
