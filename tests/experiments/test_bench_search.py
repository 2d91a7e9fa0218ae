"""The search benchmark's scoring and the studies it compares: the hypervolume, and random
search and uniform pruning as plain baselines of the same spec."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from experiments.bench_search import (
    FASTEST,
    HYPERBAND,
    SPECS,
    Point,
    arm_spec,
    ceiling,
    choose_winner,
    hypervolume,
    verdicts,
)
from search.spec import load_spec, parse_spec

RESNET8 = SPECS / "resnet8_host.yaml"


def test_hypervolume_is_the_area_dominated_within_the_teacher_latency() -> None:
    assert hypervolume([], 2.0) == 0.0
    assert hypervolume([(0.8, 1.0)], 2.0) == pytest.approx(0.4)  # (2 - 1) * 0.8 / 2
    # a second point adds its strip above the first; a dominated one adds nothing
    two = hypervolume([(0.8, 1.0), (0.9, 1.5), (0.7, 1.2)], 2.0)
    assert two == pytest.approx((1.0 * 0.8 + 0.5 * 0.1) / 2.0)
    assert hypervolume([(0.95, 2.5)], 2.0) == 0.0  # slower than the teacher: outside


def test_the_baselines_share_the_spec_but_not_edgetunes_machinery() -> None:
    edgetune = parse_spec(arm_spec(RESNET8, "edgetune", 2, None, 3))
    random = parse_spec(arm_spec(RESNET8, "random search", 2, None, 3))
    uniform = parse_spec(arm_spec(RESNET8, "uniform pruning", 2, None, 3))
    assert edgetune.search.sampler == "tpe" and edgetune.search.seed_trials > 0
    assert edgetune.search.feasible_sampling
    assert edgetune.constraints.latency_ms is not None
    assert edgetune.constraints.latency_ms.value == pytest.approx(0.5)  # the goal point's
    for spec in (random, uniform):
        assert spec.search.sampler == "random" and spec.search.seed_trials == 0
        assert not spec.search.feasible_sampling
        assert spec.constraints == edgetune.constraints and spec.space == edgetune.space
        assert spec.finalize == edgetune.finalize and spec.search.seed == 2
    assert random.search.trials == edgetune.search.trials
    assert uniform.search.trials == 1 and uniform.search.measure == "never"
    assert edgetune.finalize is not None and edgetune.finalize.epochs == 3
    example = load_spec(RESNET8).finalize
    assert example is not None and edgetune.finalize.top == example.top  # the spec's, as is
    hyperband = parse_spec(arm_spec(RESNET8, HYPERBAND, 2, None, 3))
    assert hyperband.search.stopper == "hyperband" and edgetune.search.stopper == "median"
    assert hyperband.model_copy(update={"search": edgetune.search, "name": edgetune.name}) == (
        edgetune)  # the stopper is all that differs
    names = {s.study_name for s in (edgetune, random, uniform, hyperband)}
    assert len(names) == 4


def test_the_winner_is_the_finalized_model_best_on_validation_as_export_takes_it() -> None:
    def point(name: str, finalized: bool, val: float) -> Point:
        return Point("edgetune", name, finalized, val, test_accuracy=0.9)

    searched = point("trial 0", False, 0.95)  # search-time weights: not what is exported
    first, second = point("trial 0 finalized", True, 0.90), point("trial 3 finalized", True, 0.91)
    assert choose_winner([searched, first, second]) is second
    assert choose_winner([searched, point("trial 1", False, 0.80)]) is searched  # none finalized
    assert choose_winner([]) is None


def test_the_ceiling_is_the_best_accuracy_at_the_fastest_students_latency() -> None:
    def point(method: str, acc: float, ratio: float) -> Point:
        return Point(method, method, False, None, acc, latency_ratio=ratio)

    points = [point("teacher", 0.917, 1.0), point("edgetune", 0.921, 0.45),
              point("random search", 0.90, 0.25),  # faster than the fastest: no matter
              point(FASTEST, 0.35, 0.30), point(FASTEST, 0.99, 0.55)]  # untrained: no accuracy
    top = ceiling(points)
    assert top["latency_ratio"] == 0.30 and top["accuracy"] == 0.921
    assert top["hypervolume"] == pytest.approx(0.921 * 0.70)
    # it bounds the hypervolume of any method's points within it
    assert hypervolume([(0.921, 0.30), (0.90, 0.45)], 1.0) <= top["hypervolume"] + 1e-12


def _run(edgetune: list[tuple[float, float, bool]],
         int8: tuple[float, float]) -> dict[str, Any]:
    points = [{"method": "edgetune", "test_accuracy": a, "latency_ms": lat, "finalized": f}
              for a, lat, f in edgetune]
    winner = next(p for p in points if p["finalized"])
    methods: dict[str, dict[str, Any]] = {
        m: {"hypervolume": 0.2, "winner": None} for m in ("random search", "uniform pruning")}
    methods["edgetune"] = {"hypervolume": 0.3, "winner": {
        **winner, "latency_ratio": winner["latency_ms"], "size_ratio": 0.1}}
    methods["onnxruntime int8"] = {"hypervolume": 0.1, "winner": {
        "test_accuracy": int8[0], "latency_ms": int8[1]}}
    return {"workload": "resnet8", "methods": methods, "points": points,
            "ceiling": {"hypervolume": 0.5}}


def test_the_verdicts_follow_the_issue_targets() -> None:
    runs = [
        _run([(0.91, 0.45, True), (0.88, 0.3, False)], (0.917, 0.65)),  # goal met, beats int8
        _run([(0.89, 0.45, True)], (0.917, 0.65)),  # 0.89 < 0.917 - 0.01: neither
    ]
    v = verdicts(runs)["resnet8"]
    assert v["runs"] == 2
    assert v["hypervolume_edgetune_over_random"] == pytest.approx(1.5)
    assert v["ceiling_over_random"] == pytest.approx(2.5)  # 0.5 / 0.2
    assert v["edgetune_point_beats_int8"] == [True, False]
    assert v["goal_point_met"] == [True, False]


def test_the_proposal_counts_come_from_the_stored_study(tmp_path: Path) -> None:
    """Ruled-out shares by half and before any redraw, trials stopped early and the measured
    proposals' latency ratios, read back from a study's records as the driver stores them."""
    import optuna

    from experiments.bench_finalize import ruled_out_stats
    from search.driver import SAMPLER_COUNTS
    from search.record import StudyRecord, TrialRecord

    url = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(storage=url, study_name="b", direction="maximize")
    StudyRecord({}, teacher={"latency_ms": 0.5, "latency_ms_predicted": 0.4}).write(study)
    study.set_user_attr(SAMPLER_COUNTS, {"rejected": 6, "repaired": 1})
    records = [  # one of two ruled out in each half, one by prediction, one measured
        TrialRecord("complete", 0.8, {"latency_ms": 0.18}, {"ratio_to_teacher": 0.47},
                    feasible=True),
        TrialRecord("infeasible", None, {"latency_ms": 0.4}, reason="over budget (predicted)"),
        TrialRecord("infeasible", None, {"latency_ms": 0.19}, {"ratio_to_teacher": 0.55},
                    reason="over budget (measured)"),
        TrialRecord("stopped", 0.4, {"latency_ms": 0.16}, {"ratio_to_teacher": 0.42}),
    ]
    for record in records:  # told as the driver tells them
        trial = study.ask()
        record.write(trial)
        if record.status == "stopped":
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, 0.0)
    stats = ruled_out_stats(url, "b")
    assert stats["proposals"] == 4 and stats["stopped"] == 1
    assert (stats["ruled_out_by_prediction"], stats["ruled_out_measured"]) == (1, 1)
    assert stats["ruled_out_share_first_half"] == 0.5
    assert stats["ruled_out_share_second_half"] == 0.5
    assert stats["draws_over_budget_share"] == pytest.approx(8 / 10)  # 6 redrawn + 2 of 4
    assert [(r["trial"], r["status"]) for r in stats["latency_ratios"]] == [
        (0, "complete"), (2, "infeasible"), (3, "stopped")]
    assert stats["latency_ratios"][1]["predicted"] == pytest.approx(0.19 / 0.4)
    assert stats["latency_ratios"][1]["measured"] == 0.55
