"""Sampling within the feasible region: the wrapped sampler's draws screened before they become
trials, on a study of Optuna's own."""

from __future__ import annotations

import optuna

from search.sampling import FeasibleSampler


def _run(sampler: optuna.samplers.BaseSampler, trials: int) -> list[float]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.enqueue_trial({"x": 0.9, "y": 0.9})  # a seed: its params are kept as they are
    xs = []
    for _ in range(trials):
        trial = study.ask()
        x, y = trial.suggest_float("x", 0, 1), trial.suggest_float("y", 0, 1)
        xs.append(x + y)
        study.tell(trial, x + y if x + y < 0.6 else 0.0)
    return xs


def test_draws_outside_the_feasible_region_are_drawn_again() -> None:
    checked: list[dict[str, float]] = []

    def feasible(params: dict[str, float]) -> bool:
        checked.append(params)
        return params["x"] + params["y"] < 0.6

    tpe = optuna.samplers.TPESampler(seed=0, multivariate=True, n_startup_trials=5)
    sampler = FeasibleSampler(tpe, feasible, tries=60, seed=0)
    sums = _run(sampler, 40)
    assert sums[0] == 1.8  # the enqueued seed, never screened
    assert all(s < 0.6 for s in sums[2:])  # after the first trial, every proposal fits
    assert sampler.rejected > 10 and len(checked) == sampler.rejected + 39
    unfiltered = _run(optuna.samplers.TPESampler(seed=0, multivariate=True, n_startup_trials=5),
                      40)
    assert sum(s >= 0.6 for s in unfiltered[2:]) > 5  # what the filter spared


def test_gives_up_after_its_tries_and_hands_on_the_last_draw() -> None:
    sampler = FeasibleSampler(optuna.samplers.RandomSampler(seed=1), lambda p: False, tries=3)
    sums = _run(sampler, 4)
    assert len(sums) == 4 and sampler.rejected == 3 * 3  # every trial after the seed


def test_when_no_draw_fits_the_repair_is_handed_on() -> None:
    def repair(params: dict[str, float]) -> dict[str, float]:
        scale = 0.5 / (params["x"] + params["y"])  # the nearest point on the feasible side
        return {k: v * scale for k, v in params.items()}

    sampler = FeasibleSampler(optuna.samplers.RandomSampler(seed=2),
                              lambda p: p["x"] + p["y"] < 0.6, tries=1, repair=repair)
    sums = _run(sampler, 30)
    assert all(s < 0.6 for s in sums[1:])
    assert sampler.repaired == sampler.rejected > 5  # every rejected draw was repaired
    assert sum(abs(s - 0.5) < 1e-9 for s in sums[1:]) == sampler.repaired
