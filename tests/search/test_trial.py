"""One trial, in this process: ruled out by the cost model, trained, stopped or failed."""

from __future__ import annotations

import io

import torch

from search.trial import TrialContext, TrialTask, run_trial
from spaces.student import student_architecture


def _keep_going(step: int, accuracy: float) -> bool:
    return True


def test_a_candidate_over_budget_costs_no_training_and_carries_a_repair(
    context: TrialContext,
) -> None:
    teacher, space = context.teacher_and_space()
    params = space.uniform_params(0.0, 32, 32)  # the teacher itself: over every budget
    outcome = run_trial(context, TrialTask(0, params), _keep_going)
    assert outcome.status == "infeasible", outcome.reason
    assert outcome.reason.startswith("over budget: ")
    assert "train" not in outcome.timings_s and outcome.state_dict is None
    assert set(context.budgets.broken(outcome.costs)) <= {"latency_ms", "size_kb"}
    assert outcome.policy["kept_channels"]["stage3.conv1.0"] == 64
    # the repair keeps the architecture and finds bits the cost model prices within budget
    assert outcome.repair is not None
    repaired = student_architecture(teacher, outcome.repair, space)
    assert repaired.policy.ratios == space.decode(params).ratios
    costs = context.target.predict(repaired.graph, repaired.policy.bits).as_dict()
    assert context.budgets.broken(costs) == {}


def test_a_feasible_candidate_trains_and_returns_its_weights(context: TrialContext) -> None:
    space = context.teacher_and_space()[1]
    params = space.uniform_params(0.5, 8, 8)
    reports: list[tuple[int, float]] = []

    def report(step: int, accuracy: float) -> bool:
        reports.append((step, accuracy))
        return True

    outcome = run_trial(context, TrialTask(1, params), report)
    assert outcome.status == "complete", outcome.reason
    assert [s for s, _ in reports] == [3, 6]  # every eval_every steps and at the end
    assert outcome.accuracy is not None and 0.0 <= outcome.accuracy <= 1.0
    assert context.budgets.broken(outcome.costs) == {}
    state = torch.load(io.BytesIO(outcome.state_dict or b""), weights_only=True)
    assert state["stage3.conv1.0.layer.weight"].shape[0] == 32  # half of 64 channels kept
    assert {"predict", "train", "eval", "total"} <= set(outcome.timings_s)


def test_a_stopped_trial_keeps_its_last_accuracy(context: TrialContext) -> None:
    space = context.teacher_and_space()[1]
    outcome = run_trial(context, TrialTask(2, space.uniform_params(0.5, 8, 8)), lambda s, a: False)
    assert outcome.status == "stopped"
    assert outcome.accuracy is not None and "stopped at step 3" in outcome.reason


def test_a_failure_is_an_outcome_with_its_reason(context: TrialContext) -> None:
    space = context.teacher_and_space()[1]
    params = space.uniform_params(0.5, 8, 8)
    params.pop(next(iter(params)))
    outcome = run_trial(context, TrialTask(3, params), _keep_going)
    assert outcome.status == "failed"
    assert "params lack" in outcome.reason
