"""A small real study context for unit tests of the trial, the seeding and the export: the
trained ResNet-8 teacher, a few hundred Fashion-MNIST images and a target with hand-set
constants. No Ray, no calibration, a few fine-tune steps at most."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import optuna
import pytest

from search.budgets import Budgets, teacher_costs
from search.record import StudyRecord, TrialRecord
from search.spec import Spec, parse_spec, spec_to_json
from search.trial import TrialContext
from tests.conftest import FASHION_MNIST, TEACHER
from tests.toy_target import toy_target


def small_spec(**constraints: object) -> Spec:
    return parse_spec(
        {
            "name": "small",
            "model": {"name": "resnet8", "weights": str(TEACHER)},
            "data": {"finetune_size": 256, "val_size": 256, "calibration_size": 64},
            "constraints": constraints or {"latency_ms": "60%", "size_kb": "15%"},
            "space": {
                "quantization": {"weight_bits": [4, 8, 32], "activation_bits": [8, 32]},
                "pruning": {"max_ratio": 0.5, "step": 0.25, "round_to": 4},
                "distillation": {"steps": 6, "eval_every": 3, "lr": 0.002},
            },
            "search": {"executor": "process", "seed": 0},
        }
    )


def small_context(spec: Spec) -> TrialContext:
    """The context a driver would prepare for ``spec`` on the hand-set target."""
    from search.workloads import build_workload, load_data, load_teacher

    if not (FASHION_MNIST / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("Debian dataset-fashion-mnist is not installed (make test installs it)")
    target = toy_target()
    teacher = load_teacher(spec)
    workload = build_workload(spec, teacher, load_data(spec.data))
    figures = {**teacher_costs(teacher, spec, target), "accuracy": 0.9}
    budgets = Budgets.resolve(spec.constraints, figures)
    return TrialContext(spec, workload, target, budgets, reduce_range=False)


@pytest.fixture(scope="session")
def context() -> TrialContext:
    return small_context(small_spec())


@pytest.fixture
def artifacts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("EDGETUNE_ARTIFACTS", str(tmp_path / "artifacts"))
    return tmp_path / "artifacts"


def recorded_study(
    folder: Path,
    spec: Spec,
    records: list[TrialRecord],
    teacher: Mapping[str, float],
    budgets: Mapping[str, float],
) -> optuna.Study:
    """A study of ``spec`` in a SQLite file in ``folder``, with its study record (``teacher``'s
    figures and the absolute ``budgets``) and ``records`` told as the driver tells them (user
    attributes first, then the state)."""
    folder.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        storage=f"sqlite:///{folder / 'studies.db'}",
        study_name=spec.study_name,
        directions=["maximize" if o == "accuracy" else "minimize" for o in spec.objectives],
    )
    StudyRecord(spec_to_json(spec), dict(teacher), dict(budgets), int8_reduce_range=False).write(
        study
    )
    for record in records:
        trial = study.ask()
        record.write(trial)
        if record.status == "stopped":
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        elif record.status == "failed":
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, [record.accuracy or 0.0] + [
                record.predicted.get(o, 0.0) for o in spec.objectives if o != "accuracy"])
    return study
