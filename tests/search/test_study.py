"""Which trials a study calls best: the search-time ranking chooses what to finalize; once
trials are finalized, the export takes the one finalized to the best validation accuracy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from search.export import choose_trial
from search.finalize import (
    FINALIZED,
    SHORTLISTED,
    Finalized,
    Finalizer,
    finalize_at_end,
    finalize_choice,
)
from search.record import TrialRecord
from search.report import study_text
from search.spec import Spec, parse_spec
from search.study import best_rows, summary
from tests.conftest import TEACHER
from tests.search.conftest import recorded_study

TEACHER_FIGURES = {"accuracy": 0.92, "latency_ms": 0.2, "size_kb": 300.0}


def _spec(**extra: Any) -> Spec:
    return parse_spec({
        "name": "ranking",
        "model": {"name": "resnet8", "weights": str(TEACHER)},
        "constraints": {"latency_ms": 0.15, "size_kb": 60.0},
        "finalize": {"epochs": 3, "top": 2},
        **extra,
    })


def _trained(accuracy: float, latency_ms: float) -> TrialRecord:
    return TrialRecord(status="complete", accuracy=accuracy, feasible=True,
                       predicted={"latency_ms": latency_ms, "size_kb": 40.0},
                       artifact=f"trial-at-{accuracy}.pt")


RECORDS = [_trained(0.80, 0.14), _trained(0.78, 0.12), _trained(0.75, 0.10)]


def _finalize(study: Any, trial: int, val_accuracy: float) -> None:
    """Record ``trial`` as finalized, as :meth:`search.finalize.Finalizer.run` does."""
    done = dict(study.user_attrs.get(FINALIZED, {}))
    done[str(trial)] = Finalized(trial, 3, 300, 1000, RECORDS[trial].accuracy, val_accuracy,
                                 f"trial-{trial}-finalized.pt", 1.0, 0.002).as_dict()
    study.set_user_attr(FINALIZED, done)


def test_export_takes_the_trial_finalized_to_the_best_validation_accuracy(
    tmp_path: Path,
) -> None:
    spec = _spec()
    study = recorded_study(tmp_path, spec, RECORDS, TEACHER_FIGURES, {})
    assert [r.trial for r in best_rows(study, spec)] == [0, 1, 2]
    assert finalize_choice(study, spec, None) == [0, 1]  # the spec's top 2 by search accuracy

    _finalize(study, 0, 0.88)
    _finalize(study, 1, 0.90)  # the runner-up of the search trained to the better student
    assert [r.trial for r in best_rows(study, spec)] == [1, 0, 2]
    assert choose_trial(study, spec, None)[0].number == 1
    shown = study_text(summary(study, spec, "sqlite://"))
    assert "0.9000 after 3 epochs from learning rate 0.002 (export takes it)" in shown
    assert "0.8800 after 3 epochs from learning rate 0.002 (`export --trial 0` uses it)" in shown
    # what to finalize is still chosen on the search-time ranking, so a resume finds the same
    # two, finalized already for the spec's epochs: nothing is trained again
    assert finalize_choice(study, spec, None) == [0, 1]
    logged: list[str] = []
    assert finalize_at_end(study, spec, log=logged.append) == []
    assert logged == ["finalize: trial 0, trial 1 finalized already for 3 epochs; kept"]


def test_with_several_objectives_the_top_k_of_the_front_are_finalized(tmp_path: Path) -> None:
    spec = _spec(objectives=["accuracy", "latency_ms"])
    study = recorded_study(tmp_path, spec, RECORDS, TEACHER_FIGURES, {})
    assert len(best_rows(study, spec)) == 3  # each is faster or more accurate than the others
    assert finalize_choice(study, spec, None) == [0, 1]


def test_a_shortlist_chooses_what_to_finalize_by_its_longer_training(tmp_path: Path) -> None:
    spec = _spec(finalize={"epochs": 3, "top": 1, "shortlist": 3, "shortlist_epochs": 2})
    study = recorded_study(tmp_path, spec, RECORDS, TEACHER_FIGURES, {})
    # as a shortlist run by an earlier search of this study left them: the search's third
    # trained to the best student in 2 epochs
    study.set_user_attr(SHORTLISTED, {
        "0": {"epochs": 2, "val_accuracy": 0.86, "seconds": 1.0},
        "1": {"epochs": 2, "val_accuracy": 0.85, "seconds": 1.0},
        "2": {"epochs": 2, "val_accuracy": 0.88, "seconds": 1.0},
    })
    logged: list[str] = []
    # nothing is trained again: these trials have no stored weights to train from
    assert Finalizer(study, spec, log=logged.append).choose() == [2]
    assert logged == ["shortlist: trial 0 0.8600, trial 1 0.8500, trial 2 0.8800 after 2 "
                      "epochs; finalizing trial 2"]
    assert Finalizer(study, spec, log=logged.append).choose(top=2) == [2, 0]
    assert Finalizer(study, spec, log=logged.append).choose(top=3) == [0, 1, 2]  # no shortlist
    assert Finalizer(study, spec, log=logged.append).choose([1]) == [1]
    shown = study_text(summary(study, spec, "sqlite://"))
    assert "shortlisted trial 2: validation accuracy 0.8800 after 2 epochs" in shown
