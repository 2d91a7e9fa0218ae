"""What a finalize takes besides the most accurate trials: the fastest, told as the driver
tells them into a real Optuna study."""

from __future__ import annotations

from search.finalize import Finalizer, fastest_trials
from search.record import Status
from search.spec import parse_spec
from search.trial import TrialOutcome
from tests.search.test_driver import SPEC, make_driver

COSTS = {"energy_mj": 0.5, "peak_memory_kb": 50.0, "size_kb": 30.0}


def test_the_fastest_complete_feasible_trials_but_those_chosen() -> None:
    driver, study = make_driver()  # latency budget 0.2 ms, accuracy drop at most 0.05
    told: list[tuple[Status, float | None, float]] = [
        ("complete", 0.91, 0.19), ("complete", 0.90, 0.08), ("complete", 0.89, 0.12),
        ("complete", 0.60, 0.05),  # fastest, but over the accuracy drop: infeasible
        ("stopped", 0.90, 0.04), ("infeasible", None, 0.03)]
    trials = [study.ask() for _ in told]
    driver.running = {t.number: t for t in trials}
    for trial, (status, accuracy, latency) in zip(trials, told, strict=True):
        driver.tell(TrialOutcome(trial.number, status, accuracy=accuracy,
                                 costs={**COSTS, "latency_ms": latency},
                                 reason="" if status == "complete" else status))
    n = [t.number for t in trials]
    assert fastest_trials(study, 1, exclude=[n[0]]) == [n[1]]
    assert fastest_trials(study, 2, exclude=[n[1]]) == [n[2], n[0]]
    assert fastest_trials(study, 5, exclude=[]) == [n[1], n[2], n[0]]
    assert fastest_trials(study, 0, exclude=[]) == []
    # a finalize without trials named takes the most accurate, then the fastest of the rest
    spec = parse_spec({**SPEC, "finalize": {"top": 1, "fastest": 1}})
    logged: list[str] = []
    assert Finalizer(study, spec, log=logged.append).choose() == [n[0], n[1]]
    assert logged == [f"finalizing the fastest too: trial {n[1]}"]
    assert Finalizer(study, spec, log=print).choose([n[2]]) == [n[2]]  # named: as named
