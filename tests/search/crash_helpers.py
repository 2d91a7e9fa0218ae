"""Helpers for the crash tests: background edgetune runs, waiting, finding Ray workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from tests.conftest import TEACHER

# Every trial trains (no budgets), for long enough to be killed in the middle.
SPEC = f"""
name: crash
model: {{name: resnet8, weights: {TEACHER}, input_shape: [1, 28, 28]}}
data: {{finetune_size: 512, val_size: 256, calibration_size: 32, batch_size: 32}}
target: host
space:
  quantization: {{weight_bits: [8, 32], activation_bits: [32]}}
  pruning: {{max_ratio: 0.5, step: 0.25, round_to: 4}}
  distillation: {{steps: {{steps}}, eval_every: 20, lr: 0.002}}
search: {{trials: {{trials}}, workers: 1, executor: process, seed: 0, seed_trials: 1, stopper: none}}
"""


def write_spec(tmp: Path, *, steps: int = 60, trials: int = 3) -> Path:
    path = tmp / "crash.yaml"
    path.write_text(SPEC.replace("{steps}", str(steps)).replace("{trials}", str(trials)))
    return path


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, "EDGETUNE_HEARTBEAT_S": "1", "EDGETUNE_GRACE_S": "4", **extra}


def start(*args: str, **extra_env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "search.cli", *args],
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env(**extra_env),
    )


def finish(proc: subprocess.Popen[str], timeout: float = 900) -> Any:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err
    return json.loads(out)


def run(*args: str, timeout: float = 900, **extra_env: str) -> Any:
    return finish(start(*args, **extra_env), timeout)


def wait_for(
    what: str,
    check: Callable[[], Any],
    timeout: float = 300,
    every: float = 0.5,
    proc: subprocess.Popen[str] | None = None,
) -> Any:
    """Poll ``check`` until it is truthy; fail at once if ``proc`` ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            _, err = proc.communicate()
            raise AssertionError(f"edgetune ended ({proc.returncode}) before {what}: {err[-2000:]}")
        time.sleep(every)
    raise TimeoutError(f"waited {timeout} s for {what}")


def processes_titled(title: str, roots: list[int]) -> list[psutil.Process]:
    """Descendants of ``roots`` whose command line starts with ``title`` (Ray sets
    ``ray::<task>``): only this test's processes, never another Ray on the machine."""
    found = []
    for pid in roots:
        try:
            family = psutil.Process(pid).children(recursive=True)
        except psutil.NoSuchProcess:
            continue
        for p in family:
            try:
                cmd = p.cmdline()
            except psutil.Error:
                continue
            if cmd and cmd[0].startswith(title):
                found.append(p)
    return found


def trial_snapshot(storage: str, study: str) -> dict[int, tuple[Any, ...]]:
    """Every finished trial: (state, values, params, user attrs)."""
    import optuna
    from optuna.trial import TrialState

    s = optuna.load_study(study_name=study, storage=storage)
    return {
        t.number: (t.state, t.values, t.params, t.user_attrs)
        for t in s.get_trials()
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    }
