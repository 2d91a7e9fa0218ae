"""One trial, in this process: ruled out by the cost model, trained, stopped or failed."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from search.budgets import Budgets
from search.trial import TrialContext, TrialTask, run_trial
from spaces.student import student_architecture
from targets.measurer import HostMeasurer
from tests.toy_target import toy_target


def _keep_going(step: int, accuracy: float) -> bool:
    return True


def test_a_candidate_over_budget_costs_no_training_and_carries_a_repair(
    context: TrialContext,
) -> None:
    teacher, space = context.teacher_and_space()
    params = space.uniform_params(0.0, 32, 32)  # the teacher itself: over every budget
    outcome = run_trial(context, TrialTask(0, params), _keep_going)
    assert outcome.status == "infeasible", outcome.reason
    assert outcome.reason.startswith("over budget (predicted): ")
    assert "train" not in outcome.timings_s and outcome.state_dict is None
    assert set(context.budgets.broken(outcome.costs)) <= {"latency_ms", "size_kb"}
    assert outcome.policy["kept_channels"]["stage3.conv1.0"] == 64
    # the repair keeps the architecture and finds bits the cost model prices within budget
    assert outcome.repair is not None
    repaired = student_architecture(teacher, outcome.repair, space)
    assert repaired.policy.ratios == space.decode(params).ratios
    costs = context.target.predict(repaired.graph, repaired.policy.bits).as_dict()
    assert context.budgets.broken(costs) == {}


def test_the_repair_of_a_ruled_out_candidate_keeps_below_the_share_by_the_models_error(
    context: TrialContext,
) -> None:
    """On a measured device (a latency share) whose latency model is held out at 10% error,
    the repaired neighbour is priced within the share lowered by that error, as the seeds and
    the sampler's draws are, so that it still fits when its latency is measured."""
    target = replace(context.target, provenance=replace(
        context.target.provenance, fidelity={"mdape": 10.0}))
    limit = context.budgets.limits["latency_ms"]  # 60% of the teacher's predicted latency
    budgets = replace(context.budgets, latency_share=0.6, teacher_latency_predicted=limit / 0.6)
    wary = replace(context, target=target, budgets=budgets)
    teacher, space = wary.teacher_and_space()
    screening = wary.screening()
    assert screening.latency_share == pytest.approx(0.6 / 1.1)
    outcome = run_trial(wary, TrialTask(0, space.uniform_params(0.0, 32, 32)), _keep_going)
    assert outcome.status == "infeasible" and outcome.repair is not None
    repaired = student_architecture(teacher, outcome.repair, space)
    costs = target.predict(repaired.graph, repaired.policy.bits).as_dict()
    assert screening.broken(costs) == {}


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


def test_a_measured_candidate_is_scored_by_its_measurement(
    context: TrialContext, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With a measurer (onnxruntime on this machine), the untrained student is measured before
    its fine-tune, and its measured latency is what the budget holds it to."""
    monkeypatch.setenv("EDGETUNE_HOME", str(tmp_path))
    space = context.teacher_and_space()[1]
    params = space.uniform_params(0.5, 8, 8)

    roomy = replace(context, measurer=HostMeasurer(), budgets=Budgets({"latency_ms": 1000.0}))
    outcome = run_trial(roomy, TrialTask(4, params), _keep_going)
    assert outcome.status == "complete", outcome.reason
    assert (
        outcome.measured["latency_ms"] > 0
        and "p10 of chunk medians" in outcome.measured["protocol"]
    )
    assert outcome.timings_s["measure"] > 0 and outcome.provenance["measured_on"]

    # predicted far within a 1 µs budget by a target that believes in nanoseconds, but
    # measured over it: ruled out before training, on the measurement
    fooled = replace(
        context,
        target=toy_target(scale=1e-6),
        measurer=HostMeasurer(),
        budgets=Budgets({"latency_ms": 0.001}),
    )
    outcome = run_trial(fooled, TrialTask(5, params), _keep_going)
    assert outcome.status == "infeasible"
    assert outcome.reason.startswith("over budget (measured): latency_ms")
    assert outcome.costs["latency_ms"] < 0.001 < outcome.measured["latency_ms"]
    assert "train" not in outcome.timings_s
