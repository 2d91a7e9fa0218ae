"""The trial and study records: one codec, round trips, and studies of an earlier release."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import optuna
import pytest
import torch

from search import study as studies
from search.record import StudyRecord, TrialRecord
from search.workloads.models import resnet8

LEGACY = Path(__file__).parent / "data" / "legacy_study"
TEACHER = (
    Path(__file__).resolve().parents[2] / "experiments" / "fashion_mnist" / "resnet8_teacher.pt"
)


def test_trial_record_round_trip() -> None:
    study = optuna.create_study()
    written = TrialRecord(
        status="complete",
        accuracy=0.9,
        predicted={"latency_ms": 0.1, "size_kb": 20.0},
        measured={"latency_ms": 0.12},
        feasible=True,
        reason="",
        policy={"bits": {"conv": [8, 8]}},
        timings_s={"train": 1.23456},
        artifact="abc",
        driver_s=0.01,
    )
    trial = study.ask()
    written.write(trial)
    study.tell(trial, 0.9)
    read = TrialRecord.read(study.trials[0])
    assert read == TrialRecord(**{**written.__dict__, "timings_s": {"train": 1.235}})


@pytest.mark.parametrize(
    ("status", "state", "feasible"),
    [("infeasible", "complete", False), ("stopped", "pruned", False), ("failed", "fail", False)],
)
def test_status_follows_the_trial_state(status: str, state: str, feasible: bool) -> None:
    study = optuna.create_study()
    trial = study.ask()
    TrialRecord(status=status, feasible=True, reason="why").write(trial)  # type: ignore[arg-type]
    if state == "complete":
        study.tell(trial, 0.0)
    else:
        study.tell(trial, state=optuna.trial.TrialState[state.upper()])
    read = TrialRecord.read(study.trials[0])
    assert read is not None and read.status == status and read.reason == "why"
    # only a complete (trained) trial is ever feasible
    assert read.feasible is feasible
    study.ask()
    assert TrialRecord.read(study.trials[-1]) is None  # still running: no record yet


def test_study_record_round_trip() -> None:
    study = optuna.create_study()
    StudyRecord({"name": "x"}, {"accuracy": 0.9, "latency_ms": 1.0}, {"latency_ms": 0.5}).write(
        study
    )
    assert StudyRecord.read(study) == StudyRecord(
        {"name": "x"}, {"accuracy": 0.9, "latency_ms": 1.0}, {"latency_ms": 0.5}
    )
    assert StudyRecord.read(optuna.create_study()) is None  # not made by edgetune


@pytest.fixture
def legacy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A copy of the study an earlier release wrote (the storage may be upgraded on open)."""
    shutil.copy(LEGACY / "studies.db", tmp_path / "studies.db")
    shutil.copytree(LEGACY / "artifacts", tmp_path / "artifacts")
    monkeypatch.setenv("EDGETUNE_ARTIFACTS", str(tmp_path / "artifacts"))
    return f"sqlite:///{tmp_path / 'studies.db'}"


def test_a_study_of_the_earlier_release_loads(legacy: str) -> None:
    study, spec = studies.open_study("legacy", legacy)
    summary = studies.summary(study, spec, legacy)
    assert summary["states"] == {"complete": 3, "infeasible": 4, "stopped": 1, "failed": 0}
    assert summary["trained"] == 4
    # what that release printed for it (show.txt)
    assert [b["trial"] for b in summary["best"]] == [5, 2, 0]
    assert summary["best"][0]["accuracy"] == pytest.approx(0.3574, abs=1e-4)
    assert summary["best"][0]["latency_ms"] == pytest.approx(0.1144, abs=1e-4)
    assert summary["teacher"]["accuracy"] == pytest.approx(0.9316, abs=1e-4)
    assert summary["budgets"] == pytest.approx({"latency_ms": 0.1257, "size_kb": 45.36}, abs=5e-3)
    record = StudyRecord.read(study)
    assert record is not None
    budgets = record.budgets_for(spec)
    for row in studies.rows(study):
        if row.status in ("complete", "infeasible"):
            assert row.feasible == budgets.feasible(row.costs, row.accuracy)


def test_students_of_the_earlier_release_rebuild(legacy: str) -> None:
    """Each complete trial's weights load into the student the current recipe makes from its
    params, and reproduce the validation accuracy the trial recorded."""
    from search.artifacts import download
    from search.trial import space_for
    from search.workloads import load_data, split
    from spaces.distillation import accuracy
    from spaces.student import build_student

    study, spec = studies.open_study("legacy", legacy)
    teacher = resnet8((1, 28, 28)).eval()
    teacher.load_state_dict(torch.load(TEACHER, weights_only=True))
    space = space_for(spec, teacher)
    complete = [t for t in study.trials if (r := TrialRecord.read(t)) and r.status == "complete"]
    assert len(complete) == 3
    parts = None
    if Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists():
        parts = split(load_data(spec.data), spec.data, spec.search.seed)
    for trial in complete:
        record = TrialRecord.read(trial)
        assert record is not None and record.artifact is not None
        calib = parts["x_calib"] if parts else torch.zeros(8, 1, 28, 28)
        # the study was made on a CPU with VNNI: full-range 8-bit weights (an earlier release
        # did not record it; the current one does, in StudyRecord.int8_reduce_range)
        student = build_student(teacher, trial.params, space, calib=calib, reduce_range=False)
        assert student.model is not None
        state = torch.load(io.BytesIO(download(record.artifact)), weights_only=True)
        student.model.load_state_dict(state)  # strict: every tensor fits
        assert student.summary()["kept_channels"] == record.policy["kept_channels"]
        if parts is not None:
            got = accuracy(student.model.eval(), parts["x_val"], parts["y_val"])
            assert got == pytest.approx(record.accuracy, abs=1e-6)
