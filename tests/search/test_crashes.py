"""Crashes lose at most the trials that were running, and those are retried.

Each test kills a real process (a Ray worker, the driver) in the middle of a study and checks
what the storage holds afterwards.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from optuna.trial import TrialState

from tests.search.crash_helpers import (
    finish,
    processes_titled,
    run,
    start,
    trial_snapshot,
    wait_for,
    write_spec,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("needs_fashion_mnist", "edgetune_home")]


def test_a_killed_ray_worker_is_retried_once_then_failed(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, steps=60, trials=2)
    storage = f"sqlite:///{tmp_path}/s.db"
    proc = start(
        "search", str(spec), "--storage", storage, "--executor", "ray", "--workers", "1", "--json"
    )
    killed = []
    for _ in range(2):  # the first attempt, then Ray's retry of the same trial
        worker = wait_for(
            "a Ray worker running a trial",
            lambda: [
                p for p in processes_titled("ray::_remote_trial", [proc.pid]) if p.pid not in killed
            ],
            timeout=600,
            proc=proc,
        )[0]
        worker.send_signal(signal.SIGKILL)
        killed.append(worker.pid)
    out = finish(proc)
    assert out["states"]["failed"] == 1
    assert out["trained"] == 2, "the study still reaches its trial count"
    failed = [v for v in trial_snapshot(storage, "crash").values() if v[0] == TrialState.FAIL]
    assert "worker died" in failed[0][3]["reason"]


def test_driver_killed_then_resumed_on_postgres(tmp_path: Path, postgres_url: str) -> None:
    import optuna

    spec = write_spec(tmp_path, steps=60, trials=3)
    proc = start("search", str(spec), "--storage", postgres_url, "--json")

    def told_and_running() -> bool:
        try:
            s = optuna.load_study(study_name="crash", storage=postgres_url)
        except KeyError:
            return False
        states = [t.state for t in s.get_trials()]
        return TrialState.COMPLETE in states and TrialState.RUNNING in states

    wait_for("one told trial and one running", told_and_running, timeout=600, proc=proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    before = trial_snapshot(postgres_url, "crash")
    running = [
        t
        for t in optuna.load_study(study_name="crash", storage=postgres_url).get_trials()
        if t.state == TrialState.RUNNING
    ]
    assert before and len(running) == 1

    out = run("resume", "crash", "--storage", postgres_url, "--json")
    after = trial_snapshot(postgres_url, "crash")
    for number, record in before.items():  # every trial told before the kill is kept, unchanged
        assert after[number] == record
    lost = after[running[0].number]
    assert lost[0] == TrialState.FAIL  # detected by its stopped heartbeat
    retried = [r for n, r in after.items() if n not in before and r[2] == running[0].params]
    assert retried, "the running trial's parameters were enqueued again and run"
    assert out["trained"] == 3
    final = optuna.load_study(study_name="crash", storage=postgres_url)
    assert not [t for t in final.get_trials() if t.state == TrialState.RUNNING]


def test_two_drivers_resume_the_same_study_at_once(tmp_path: Path, postgres_url: str) -> None:
    import optuna

    spec = write_spec(tmp_path, steps=20, trials=1)
    run("search", str(spec), "--storage", postgres_url, "--json")
    a = start("resume", "crash", "--storage", postgres_url, "--trials", "2", "--json")
    b = start("resume", "crash", "--storage", postgres_url, "--trials", "2", "--json")
    finish(a)
    finish(b)
    trials = optuna.load_study(study_name="crash", storage=postgres_url).get_trials()
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    # neither driver failed the other's live trials: nothing was lost or duplicated
    assert not [t for t in trials if t.state == TrialState.FAIL]
    assert 3 <= len(trials) <= 5
