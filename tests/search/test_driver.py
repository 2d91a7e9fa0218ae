"""The driver's decisions, against a real Optuna study: trial stopping, telling, budgets."""

from __future__ import annotations

import optuna
import pytest

from search.driver import Driver, Prepared, check_reachable, resolve_budgets
from search.errors import InfeasibleSpecError
from search.evaluate import TrialContext, TrialOutcome, constraint_values, over_budget
from search.executors import InProcessExecutor
from search.spec import parse_spec
from search.study import directions, rows, stopper_for

SPEC = {
    "name": "d",
    "model": {"name": "resnet8"},
    "constraints": {"latency_ms": "50%", "size_kb": 40, "max_accuracy_drop": 0.05},
    "search": {"stopper": "median"},
}


def make_driver() -> tuple[Driver, optuna.Study]:
    spec = parse_spec(SPEC)
    study = optuna.create_study(directions=directions(spec), pruner=stopper_for(spec))
    budgets = resolve_budgets(
        spec, {"latency_ms": 0.4, "size_kb": 300.0, "energy_mj": 1.0, "peak_memory_kb": 100.0}
    )
    context = TrialContext(spec=spec, workload=None, target=None, budgets=budgets)  # type: ignore[arg-type]
    prepared = Prepared(context, {"accuracy": 0.92})
    return Driver(study, prepared, InProcessExecutor(), log=print, progress=False), study


def test_budgets_resolve_relative_and_absolute() -> None:
    budgets = resolve_budgets(parse_spec(SPEC), {"latency_ms": 0.4, "size_kb": 300.0})
    assert budgets == pytest.approx({"latency_ms": 0.2, "size_kb": 40.0})


def test_over_budget_and_constraints() -> None:
    assert over_budget(
        {"latency_ms": 0.3, "size_kb": 10}, {"latency_ms": 0.2, "size_kb": 40}
    ) == pytest.approx({"latency_ms": 0.5})
    c = constraint_values({"latency_ms": 0.1, "size_kb": 50}, {"latency_ms": 0.2, "size_kb": 40})
    assert c["latency_ms"] < 0 < c["size_kb"]


def test_unreachable_budget_says_by_how_much() -> None:
    with pytest.raises(InfeasibleSpecError, match=r"latency_ms: .* 50% over the budget"):
        check_reachable({"latency_ms": 0.2}, {"latency_ms": 0.3, "size_kb": 1.0})


def test_median_stopper_stops_a_trial_below_the_median() -> None:
    driver, study = make_driver()
    for acc in (0.90, 0.91, 0.92, 0.89, 0.90, 0.91):  # earlier trials, reported at step 50
        t = study.ask()
        t.report(acc, 50)
        study.tell(t, acc)
    good, bad = study.ask(), study.ask()
    driver.running = {good.number: good, bad.number: bad}
    assert driver.on_progress(good.number, 50, 0.95) is True
    assert driver.on_progress(bad.number, 50, 0.30) is False


def test_tell_records_feasibility_reason_and_constraints() -> None:
    driver, study = make_driver()
    costs = {"latency_ms": 0.1, "energy_mj": 0.5, "peak_memory_kb": 50.0, "size_kb": 30.0}
    ok, low, slow = study.ask(), study.ask(), study.ask()
    driver.running = {t.number: t for t in (ok, low, slow)}
    driver.tell(TrialOutcome(ok.number, "complete", accuracy=0.91, costs=costs))
    driver.tell(TrialOutcome(low.number, "complete", accuracy=0.80, costs=costs))
    driver.tell(
        TrialOutcome(
            slow.number,
            "infeasible",
            costs={**costs, "latency_ms": 0.3},
            reason="over budget: latency_ms +50%",
        )
    )
    by_number = {r.trial: r for r in rows(study)}
    assert by_number[ok.number].feasible
    assert not by_number[low.number].feasible  # accuracy drop 0.12 > 0.05
    assert "accuracy_drop" in study.trials[low.number].user_attrs["reason"]
    assert by_number[slow.number].status == "infeasible" and not by_number[slow.number].feasible
    assert study.trials[slow.number].value == 0.0
    for t in study.trials:
        assert "driver_s" in t.user_attrs


def test_latency_budget_keeps_the_targets_error_margin() -> None:
    budgets = resolve_budgets(parse_spec(SPEC), {"latency_ms": 0.4, "size_kb": 300.0}, margin=0.1)
    assert budgets["latency_ms"] == pytest.approx(0.18)  # 50% of 0.4, less 10%
    assert budgets["size_kb"] == pytest.approx(40.0)  # size is computed exactly: no margin
