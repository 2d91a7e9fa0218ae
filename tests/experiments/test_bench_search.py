"""The search benchmark's scoring and the studies it compares: the hypervolume, and random
search and uniform pruning as plain baselines of the same spec."""

from __future__ import annotations

from typing import Any

import pytest

from experiments.bench_search import HYPERBAND, SPECS, arm_spec, hypervolume, verdicts
from search.spec import parse_spec

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
    hyperband = parse_spec(arm_spec(RESNET8, HYPERBAND, 2, None, 3))
    assert hyperband.search.stopper == "hyperband" and edgetune.search.stopper == "median"
    assert hyperband.model_copy(update={"search": edgetune.search, "name": edgetune.name}) == (
        edgetune)  # the stopper is all that differs
    names = {s.study_name for s in (edgetune, random, uniform, hyperband)}
    assert len(names) == 4


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
    return {"workload": "resnet8", "methods": methods, "points": points}


def test_the_verdicts_follow_the_issue_targets() -> None:
    runs = [
        _run([(0.91, 0.45, True), (0.88, 0.3, False)], (0.917, 0.65)),  # goal met, beats int8
        _run([(0.89, 0.45, True)], (0.917, 0.65)),  # 0.89 < 0.917 - 0.01: neither
    ]
    v = verdicts(runs)["resnet8"]
    assert v["runs"] == 2
    assert v["hypervolume_edgetune_over_random"] == pytest.approx(1.5)
    assert v["edgetune_point_beats_int8"] == [True, False]
    assert v["goal_point_met"] == [True, False]
