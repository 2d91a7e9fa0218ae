"""Budgets: resolving, excess, the accuracy drop, reachability and ``check``, on a real target
with hand-set constants."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from search.budgets import Budgets, check_spec, require_reachable
from search.errors import InfeasibleSpecError
from search.spec import parse_spec
from search.workloads import build_model
from search.workloads.models import resnet8
from spaces.functional import modularize
from tests.toy_target import toy_target

SPEC = {
    "name": "b",
    "model": {"name": "resnet8"},
    "constraints": {"latency_ms": "50%", "size_kb": 40, "max_accuracy_drop": 0.05},
}
TEACHER = {"latency_ms": 0.4, "size_kb": 300.0, "energy_mj": 1.0, "peak_memory_kb": 100.0}


def test_resolve_relative_and_absolute() -> None:
    budgets = Budgets.resolve(parse_spec(SPEC).constraints, TEACHER)
    assert budgets.limits == pytest.approx({"latency_ms": 0.2, "size_kb": 40.0})


def test_margin_lowers_only_measured_costs() -> None:
    budgets = Budgets.resolve(parse_spec(SPEC).constraints, TEACHER, margin=0.1)
    assert budgets.limits["latency_ms"] == pytest.approx(0.18)  # 50% of 0.4, less 10%
    assert budgets.limits["size_kb"] == pytest.approx(40.0)  # counted exactly: no margin


def test_excess_broken_violation() -> None:
    budgets = Budgets({"latency_ms": 0.2, "size_kb": 40.0})
    costs = {"latency_ms": 0.3, "size_kb": 10.0, "energy_mj": 9.0}
    assert budgets.excess(costs) == pytest.approx({"latency_ms": 0.5, "size_kb": -0.75})
    assert budgets.broken(costs) == pytest.approx({"latency_ms": 0.5})
    assert budgets.violation(costs) == pytest.approx(0.5)
    assert not budgets.feasible(costs, accuracy=0.9)
    assert budgets.feasible({"latency_ms": 0.2, "size_kb": 40.0}, accuracy=None)  # at the edge


def test_a_study_that_measures_nothing_keeps_absolute_latency_limits() -> None:
    unmeasured = Budgets.resolve(parse_spec(SPEC).constraints, TEACHER)
    assert unmeasured.latency_share is None and unmeasured.teacher_latency_predicted is None
    assert unmeasured.excess({"latency_ms": 0.22})["latency_ms"] == pytest.approx(0.1)


def test_accuracy_drop_is_a_constraint() -> None:
    budgets = Budgets.resolve(parse_spec(SPEC).constraints, {**TEACHER, "accuracy": 0.92})
    costs = {"latency_ms": 0.1, "size_kb": 30.0}
    assert budgets.feasible(costs, accuracy=0.90)
    low = budgets.constraints(costs, accuracy=0.80)
    assert low["accuracy_drop"] == pytest.approx(0.07)  # dropped 0.12, 0.05 allowed
    assert not budgets.feasible(costs, accuracy=0.80)
    assert not budgets.feasible(costs, accuracy=None)  # never trained: no accuracy


def test_unreachable_budget_says_by_how_much() -> None:
    with pytest.raises(InfeasibleSpecError, match=r"latency_ms: .* 50% over the budget 0.2"):
        require_reachable(Budgets({"latency_ms": 0.2}), {"latency_ms": 0.3, "size_kb": 1.0})
    require_reachable(Budgets({"latency_ms": 0.2}), {"latency_ms": 0.2})


def test_check_spec_prices_teacher_and_cheapest_corner() -> None:
    spec = parse_spec(
        {
            **SPEC,
            "constraints": {"latency_ms": "60%", "size_kb": "15%"},
            "space": {
                "quantization": {"weight_bits": [4, 8, 32], "activation_bits": [8, 32]},
                "pruning": {"max_ratio": 0.5, "step": 0.25},
            },
        }
    )
    result = check_spec(spec, toy_target(), resnet8((1, 28, 28)).eval())
    for key in ("latency_ms", "size_kb", "peak_memory_kb", "energy_mj"):
        assert result.cheapest[key] < result.teacher[key]
    assert result.budgets.limits["size_kb"] == pytest.approx(0.15 * result.teacher["size_kb"])
    assert not result.broken and result.as_dict()["feasible"]
    assert "the budgets can be met" in result.text()

    tight = parse_spec({**SPEC, "constraints": {"size_kb": "1%"}})
    result = check_spec(tight, toy_target(), resnet8((1, 28, 28)).eval())
    assert set(result.broken) == {"size_kb"}
    assert "infeasible: size_kb" in result.text()


def test_relative_latency_on_a_measured_device_is_a_ratio_to_the_teacher() -> None:
    constraints = parse_spec(SPEC).constraints  # latency_ms: 50%
    budgets = Budgets.resolve(constraints, TEACHER, margin=0.1, measured={"latency_ms": 0.3})
    assert budgets.limits["latency_ms"] == pytest.approx(0.15)  # 50% of the measured teacher
    assert budgets.latency_share == 0.5
    # a slow run: both measured 40% slower than at the start, the ratio is what counts
    slow = {"latency_ms": 0.21 * 1.4, "latency_ratio": 0.21 / 0.3, "size_kb": 10.0}
    assert budgets.excess(slow)["latency_ms"] == pytest.approx(0.4)
    fine = {"latency_ms": 0.2, "latency_ratio": 0.45, "size_kb": 10.0}
    assert budgets.feasible(fine, accuracy=None)  # 0.2 ms > 0.15 ms, but 45% < 50%
    # predicted only (no ratio): the ratio to the teacher's prediction (0.4 ms), so that the
    # cost model's error on the network cancels: 0.22 ms is 55%, over; 0.18 ms is 45%, within
    # (though over the 0.15 ms the measurement set)
    assert budgets.teacher_latency_predicted == pytest.approx(0.4)
    assert budgets.excess({"latency_ms": 0.22})["latency_ms"] == pytest.approx(0.1)
    assert budgets.feasible({"latency_ms": 0.18, "size_kb": 10.0}, accuracy=None)
    # an absolute budget stays absolute
    absolute = Budgets.resolve(
        parse_spec({**SPEC, "constraints": {"latency_ms": 0.2}}).constraints,
        TEACHER,
        measured={"latency_ms": 0.3},
    )
    assert absolute.latency_share is None
    assert not absolute.feasible({"latency_ms": 0.25, "latency_ratio": 0.1}, accuracy=None)


def test_latency_times_scales_the_latency_budget_and_its_share_only() -> None:
    budgets = Budgets.resolve(parse_spec(SPEC).constraints, TEACHER, measured={"latency_ms": 0.3})
    fast = budgets.latency_times(0.6)
    assert fast.limits == pytest.approx({"latency_ms": 0.09, "size_kb": 40.0})
    assert fast.latency_share == pytest.approx(0.3)
    # 40% of the teacher's predicted latency: within the 50% budget, over the fast one's 30%
    assert budgets.feasible({"latency_ms": 0.16, "size_kb": 10.0}, accuracy=None)
    assert fast.broken({"latency_ms": 0.16, "size_kb": 10.0}) == {
        "latency_ms": pytest.approx(1 / 3)}
    no_latency = {**SPEC, "constraints": {"size_kb": 40}}
    sized = Budgets.resolve(parse_spec(no_latency).constraints, TEACHER)
    assert sized.latency_times(0.6) is sized


def test_proposals_are_screened_below_the_share_by_the_models_underestimates() -> None:
    constraints = parse_spec(SPEC).constraints  # latency_ms: 50%
    budgets = Budgets.resolve(constraints, TEACHER, measured={"latency_ms": 0.3})
    # the teacher is predicted at 0.4 ms: a candidate predicted 0.18 ms is at 45%
    assert budgets.underestimate({"latency_ms": 0.18}, {"ratio_to_teacher": 0.495}) == (
        pytest.approx(1.1))
    assert budgets.underestimate({"latency_ms": 0.18}, {}) is None  # not measured
    assert budgets.screening([1.1, 1.1]) is budgets  # too few measurements to go by
    # of three, the largest: the model read up to 8% low; the share becomes 50% / 1.08
    screened = budgets.screening([0.95, 1.08, 1.02])
    assert screened.latency_share == pytest.approx(0.5 / 1.08)
    nine = [1.01, 1.02, 1.03, 1.04, 1.05, 1.06, 1.07, 1.08, 1.09]  # of nine, the 8th smallest
    assert budgets.screening(nine).latency_share == pytest.approx(0.5 / 1.08)
    assert not screened.feasible({"latency_ms": 0.19, "size_kb": 10.0}, accuracy=None)
    assert budgets.feasible({"latency_ms": 0.19, "size_kb": 10.0}, accuracy=None)
    assert screened.limits == budgets.limits  # only the screening moves, not the budget
    assert budgets.screening([0.9, 0.95, 0.97]) is budgets  # a model reading high: unchanged
    assert budgets.screening([2.0, 2.0, 2.0]).latency_share == pytest.approx(0.5 / 1.15)
    absolute = Budgets.resolve(constraints, TEACHER)  # nothing measured: no share to lower
    assert absolute.screening([1.3, 1.3, 1.3]) is absolute
    # the target's held-out error: before three measurements, and as the least margin after
    assert budgets.screening([1.1], prior=0.05).latency_share == pytest.approx(0.5 / 1.05)
    assert budgets.screening([], prior=0.4).latency_share == pytest.approx(0.5 / 1.15)
    assert budgets.screening([0.9, 0.95, 0.97], prior=0.05).latency_share == pytest.approx(
        0.5 / 1.05)
    assert budgets.screening([0.95, 1.02, 1.08], prior=0.05).latency_share == (
        pytest.approx(0.5 / 1.08))
    assert budgets.screening([0.95, 1.02, 1.08, 1.3]).latency_share == pytest.approx(0.5 / 1.15)


@pytest.mark.parametrize("n", [4, 6, 9, 15])
def test_a_proposal_at_the_screenings_edge_measures_over_it_at_most_one_time_in_five(
        n: int) -> None:
    """Studies whose underestimates are alike (drawn from one skewed distribution): a new
    candidate predicted at the lowered share's edge reads low by more than the screening
    allowed in at most 20% of the studies (a 75th-percentile rule: in about a third)."""
    budgets = Budgets.resolve(parse_spec(SPEC).constraints, TEACHER, measured={"latency_ms": 0.3})
    rng = np.random.default_rng(n)
    over = 0
    studies = 4000
    for _ in range(studies):
        drawn = 1.0 + rng.lognormal(-3.0, 0.5, size=n + 1)  # 5% low, a long tail
        share = budgets.screening(list(drawn[:n]), most=1.0).latency_share
        assert share is not None
        over += drawn[n] > 0.5 / share
    assert 0.1 < over / studies <= 0.22


class _HalfScaled(nn.Module):
    """A conv, an SE-style product of two activations, and a product by a constant."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.gate = nn.Conv2d(8, 8, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(8, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        x = x * torch.sigmoid(self.gate(x))
        return self.head(torch.flatten(self.pool(x * 0.5), 1))


def test_check_exports_the_fewest_bits_corner_and_names_what_stays_float() -> None:
    spec = parse_spec({**SPEC, "model": {"name": "mobilenetv3"}, "constraints": {}})
    result = check_spec(spec, toy_target(), build_model(spec.model).eval())
    assert result.in_float == ()  # functional SE products, residual adds: all quantized
    assert "every conv, linear, add, mul and concat quantized" in result.text()

    result = check_spec(spec, toy_target(), modularize(_HalfScaled()).eval())
    assert result.in_float == ("mul_1 (mul)",)  # by a constant: nothing to quantize it with
    assert "exported in float at the fewest bits" in result.text()
    assert result.as_dict()["in_float"] == ["mul_1 (mul)"]


def test_check_without_quantization_reports_no_export() -> None:
    spec = parse_spec({**SPEC, "constraints": {}, "space": {"quantization": None}})
    assert check_spec(spec, toy_target(), resnet8((1, 28, 28)).eval()).in_float is None
