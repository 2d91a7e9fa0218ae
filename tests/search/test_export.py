"""The export rebuilds a finished trial's student from its params and stored weights."""

from __future__ import annotations

import io
from pathlib import Path

import optuna
import pytest
import torch

from search.budgets import Budgets
from search.driver import Driver
from search.errors import ExportError, StudyError
from search.executors import InProcessExecutor
from search.export import choose_trial, rebuild
from search.lifecycle import Prepared
from search.record import TrialRecord
from search.study import directions
from search.trial import TrialContext, TrialOutcome, TrialTask, run_trial


def _told(
    context: TrialContext, params_list: list[dict]
) -> tuple[optuna.Study, list[TrialOutcome]]:
    """Run each candidate as a trial in this process and tell it, as a driver does."""
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, directions=directions(context.spec))
    driver = Driver(
        study,
        storage,
        Prepared(context, {"accuracy": 0.9}),
        InProcessExecutor(),
        log=print,
        progress=False,
    )
    outcomes = []
    for params in params_list:
        study.enqueue_trial(params)
        trial = study.ask()
        driver.running[trial.number] = trial
        suggested = context.teacher_and_space()[1].suggest(trial)  # the enqueued params
        outcome = run_trial(context, TrialTask(trial.number, suggested), lambda s, a: True)
        driver.tell(outcome)
        outcomes.append(outcome)
    return study, outcomes


def test_rebuilt_student_is_the_trials_fine_tuned_student(
    context: TrialContext, artifacts: Path
) -> None:
    teacher, space = context.teacher_and_space()
    study, (outcome,) = _told(context, [space.uniform_params(0.25, 8, 8)])
    assert outcome.status == "complete"
    trial, record = choose_trial(study, context.spec, None)
    assert record.artifact is not None and any(artifacts.iterdir())
    student = rebuild(
        context.spec,
        trial,
        record,
        teacher,
        context.workload.x_calib,
        reduce_range=context.reduce_range,
    )
    assert student.model is not None
    trained = torch.load(io.BytesIO(outcome.state_dict or b""), weights_only=True)
    rebuilt = student.model.state_dict()
    assert rebuilt.keys() == trained.keys()
    for key, tensor in trained.items():
        assert torch.equal(rebuilt[key], tensor), key
    x, y = context.workload.x_val, context.workload.y_val
    with torch.no_grad():
        logits = student.model.eval()(x)
    # the trial scored its own student on the same images: the same predictions
    assert (logits.argmax(1) == y).float().mean().item() == pytest.approx(outcome.accuracy)
    assert student.summary()["kept_channels"] == record.policy["kept_channels"]


def test_export_refuses_a_trial_without_weights(context: TrialContext, artifacts: Path) -> None:
    space = context.teacher_and_space()[1]
    study, (outcome,) = _told(context, [space.uniform_params(0.0, 32, 32)])
    assert outcome.status == "infeasible"
    with pytest.raises(StudyError, match="no feasible complete trial"):
        choose_trial(study, context.spec, None)
    with pytest.raises(StudyError, match="trial 0 is infeasible"):
        choose_trial(study, context.spec, 0)
    with pytest.raises(StudyError, match="has no trial 7"):
        choose_trial(study, context.spec, 7)
    assert TrialRecord.read(study.trials[0]) is not None
    assert Budgets.resolve(context.spec.constraints, {"latency_ms": 1.0, "size_kb": 1.0}).limits


def test_export_refuses_a_folder_that_holds_files(context: TrialContext, tmp_path: Path) -> None:
    from search.export import export_trial

    out = tmp_path / "out"
    out.mkdir()
    (out / "model.onnx").write_text("an earlier export")
    with pytest.raises(ExportError, match="already exists and is not an empty folder"):
        export_trial(optuna.create_study(), context.spec, out, number=None)
    assert [p.name for p in out.iterdir()] == ["model.onnx"]  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary folder left


def test_a_search_refuses_a_taken_name_before_loading_anything(tmp_path: Path) -> None:
    from search import study as studies
    from search.lifecycle import start_study
    from search.spec import parse_spec

    url = f"sqlite:///{tmp_path / 's.db'}"
    optuna.create_study(storage=studies.storage_for(url), study_name="taken")
    # the weights do not exist: loading them would fail with another error
    spec = parse_spec({"name": "taken", "model": {"name": "resnet8", "weights": "/nope.pt"}})
    with pytest.raises(StudyError, match="already exists"):
        start_study(spec, url, "taken", log=print)
