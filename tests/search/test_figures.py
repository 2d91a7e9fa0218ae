"""The export's figures: the front of a study and one trial's per-layer policy, drawn from a real
study recorded as the driver records it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest

from search.figures import (
    FrontPoint,
    front_points,
    pareto_front,
    plot_front,
    plot_policy,
    plot_sensitivity,
    write_figures,
)
from search.finalize import FINALIZED
from search.record import TrialRecord
from search.spec import Spec, parse_spec
from tests.conftest import TEACHER
from tests.search.conftest import recorded_study

TEACHER_FIGURES = {
    "accuracy": 0.93,
    "latency_ms": 0.2,
    "latency_ms_predicted": 0.19,
    "size_kb": 300.0,
}
BUDGETS = {"latency_ms": 0.15, "size_kb": 60.0}
LAYERS = ["stem.0", "stage1.conv1.0", "stage1.add", "stage2.conv1.0", "classifier"]
TEACHER_CHANNELS = {"stem.0": 16, "stage1.conv1.0": 16, "stage2.conv1.0": 32, "classifier": 10}


def _spec() -> Spec:
    return parse_spec(
        {
            "name": "figures",
            "model": {"name": "resnet8", "weights": str(TEACHER)},
            "constraints": {"latency_ms": 0.15, "size_kb": 60.0, "max_accuracy_drop": 0.05},
        }
    )


def _policy(ratio: float) -> dict[str, Any]:
    kept = {n: max(1, round(c * (1 - ratio))) for n, c in TEACHER_CHANNELS.items()}
    kept["classifier"] = 10
    return {
        "bits": {n: [32 if n == "stem.0" else 8, 8 if "add" in n else 32] for n in LAYERS},
        "kept_channels": kept,
        "pruning_ratios": {"stem.0": ratio, "stage1.conv1.0": ratio, "stage2.conv1.0": ratio},
        "distillation": {"temperature": 4.0, "alpha": 0.7, "lr": 0.002, "steps": 8},
    }


def _study(folder: Path, records: list[TrialRecord]) -> optuna.Study:
    return recorded_study(folder, _spec(), records, TEACHER_FIGURES, BUDGETS)


def _trained(
    accuracy: float,
    latency_ms: float,
    *,
    feasible: bool,
    measured_ms: float | None = None,
    ratio: float = 0.5,
) -> TrialRecord:
    return TrialRecord(
        status="complete",
        accuracy=accuracy,
        predicted={"latency_ms": latency_ms, "size_kb": 40.0},
        measured={} if measured_ms is None else {"latency_ms": measured_ms},
        feasible=feasible,
        policy=_policy(ratio),
    )


RECORDS = [
    _trained(0.90, 0.10, feasible=True, measured_ms=0.11),  # 0
    TrialRecord(
        status="infeasible",
        predicted={"latency_ms": 0.3},
        reason="over budget",
        policy=_policy(0.0),
    ),  # 1: ruled out before training
    _trained(0.88, 0.12, feasible=True),  # 2: dominated by 0
    _trained(0.92, 0.14, feasible=True, measured_ms=0.13),  # 3
    _trained(0.95, 0.18, feasible=False, measured_ms=0.19),  # 4: trained, over a budget
    TrialRecord(status="stopped", predicted={"latency_ms": 0.05}, policy=_policy(0.5)),  # 5
    TrialRecord(status="failed", reason="worker died"),  # 6
    _trained(0.89, 0.08, feasible=True, ratio=0.75, measured_ms=0.09),  # 7
]


def _colours(path: Path) -> int:
    import matplotlib.image

    image = matplotlib.image.imread(str(path))
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 500
    rgb = (image[..., :3] * 255).astype(np.uint32)
    return len(np.unique(rgb[..., 0] << 16 | rgb[..., 1] << 8 | rgb[..., 2]))


def _texts(fig: Any) -> list[str]:
    return [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text"))]


def _p(number: int, latency_ms: float, accuracy: float, feasible: bool = True) -> FrontPoint:
    return FrontPoint(number, latency_ms, accuracy, feasible, measured=False)


def test_pareto_front_keeps_the_feasible_points_none_beats_by_latency() -> None:
    points = [
        _p(0, 1.0, 0.80),
        _p(1, 2.0, 0.90),
        _p(2, 2.0, 0.85),  # as fast as 1, less accurate
        _p(3, 3.0, 0.90),  # as accurate as 1, slower
        _p(4, 0.5, 0.99, feasible=False),  # would beat everything, but missed a budget
        _p(5, 4.0, 0.95),
        _p(6, 1.0, 0.80),  # a tie with 0: 0 stands for both
    ]
    assert [p.number for p in pareto_front(points)] == [0, 1, 5]
    assert pareto_front([_p(0, 1.0, 0.9, feasible=False)]) == []
    assert pareto_front([]) == []


def test_front_points_are_the_trained_trials_with_measured_latency_where_measured(
    tmp_path: Path,
) -> None:
    points = front_points(_study(tmp_path, RECORDS))
    assert [p.number for p in points] == [0, 2, 3, 4, 7]  # not infeasible, stopped or failed
    by_number = {p.number: p for p in points}
    assert by_number[0] == FrontPoint(0, 0.11, 0.90, feasible=True, measured=True)
    assert by_number[2] == FrontPoint(2, 0.12, 0.88, feasible=True, measured=False)
    assert by_number[4].feasible is False and by_number[4].latency_ms == 0.19
    assert [p.number for p in pareto_front(points)] == [7, 0, 3]


def test_write_figures_writes_two_readable_pngs(tmp_path: Path) -> None:
    study = _study(tmp_path, RECORDS)
    out = tmp_path / "export"
    names = write_figures(
        study,
        _spec(),
        out,
        trial=3,
        peers={"int8 teacher": (0.07, 0.925)},
        teacher_channels=TEACHER_CHANNELS,
    )
    assert names == {"front": "front.png", "policy": "policy.png"}
    for name in names.values():
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert _colours(out / name) > 20  # not blank: markers, bars, shading, text


def test_the_front_figure_marks_what_it_shows(tmp_path: Path) -> None:
    points = front_points(_study(tmp_path, RECORDS))
    fig = plot_front(
        points,
        path=tmp_path / "front.png",
        title="study figures on host",
        teacher=TEACHER_FIGURES,
        latency_budget_ms=0.15,
        min_accuracy=0.88,
        peers={"int8 teacher": (0.07, 0.925)},
        chosen=3,
    )
    texts = _texts(fig)
    for expected in (
        "latency measured",
        "latency predicted",
        "teacher (latency measured)",
        "trial 3, exported",
        "int8 teacher",
        "latency budget 0.15 ms",
        "front (3 feasible, non-dominated)",
        "over a budget (1 trained)",
    ):
        assert expected in texts
    assert "ms" in fig.axes[0].get_xlabel() and "accuracy" in fig.axes[0].get_ylabel()
    assert fig.axes[0].get_xlim()[0] == 0.0


def test_finalized_trials_are_drawn_at_their_finalized_accuracy(tmp_path: Path) -> None:
    """The finalize moves a trial up: a square at its finalized accuracy, and the exported
    trial's ring there; the export's figure reads them from the study."""
    study = _study(tmp_path, RECORDS)
    points = front_points(study)
    fig = plot_front(points, path=tmp_path / "front.png", title="t", chosen=3,
                     finalized={3: 0.94, 7: 0.91})
    assert "finalized (2): trained longer" in _texts(fig)
    [ring] = [c for c in fig.axes[0].collections if c.get_label() == "trial 3, exported"]
    assert np.asarray(ring.get_offsets()).tolist() == [[0.13, 0.94]]  # trial 3, measured
    write_figures(study, _spec(), tmp_path / "a", trial=3)
    study.set_user_attr(FINALIZED, {"3": {"val_accuracy": 0.94, "epochs": 2}})
    write_figures(study, _spec(), tmp_path / "b", trial=3)
    before, after = ((tmp_path / d / "front.png").read_bytes() for d in "ab")
    assert before != after


def test_a_study_without_trained_trials_still_gets_its_figures(tmp_path: Path) -> None:
    study = _study(tmp_path, RECORDS[1:2])  # trial 0, ruled out before training
    out = tmp_path / "export"
    names = write_figures(study, _spec(), out, trial=0)  # its policy, untrained
    assert _colours(out / names["front"]) > 5  # the teacher, the budgets, their shading
    assert _colours(out / names["policy"]) > 5
    empty = _study(tmp_path / "empty", [])
    write_figures(empty, _spec(), tmp_path / "empty-export", trial=0)  # no trial 0 at all
    assert _colours(tmp_path / "empty-export" / "front.png") > 5
    assert (tmp_path / "empty-export" / "policy.png").exists()
    fig = plot_front([], path=tmp_path / "front.png", title="empty", latency_budget_ms=0.15)
    assert {"no trained trial yet", "within these budgets"} <= set(_texts(fig))


def test_a_trial_without_a_policy_says_so(tmp_path: Path) -> None:
    fig = plot_policy(
        {}, tmp_path / "policy.png", title="trial 6: per-layer policy (none recorded)"
    )
    assert "no per-layer policy recorded" in _texts(fig)
    assert (tmp_path / "policy.png").exists()


def test_the_policy_figure_labels_float_layers(tmp_path: Path) -> None:
    policy = _policy(0.5)
    fig = plot_policy(
        policy,
        tmp_path / "policy.png",
        title="trial 0",
        teacher_channels=TEACHER_CHANNELS,
        sensitivity={"stem.0": 0.1, "stage2.conv1.0": 0.4},
    )
    bits_ax, channels_ax = fig.axes[0], fig.axes[1]
    floats = sum(w == 32 for w, _ in policy["bits"].values()) + sum(
        a == 32 for _, a in policy["bits"].values()
    )
    assert [t.get_text() for t in bits_ax.texts].count("float") == floats > 0
    assert "float" in [t.get_text() for t in bits_ax.get_yticklabels()]
    assert [t.get_text() for t in channels_ax.get_xticklabels()] == LAYERS  # execution order
    legend = channels_ax.get_legend()
    assert legend is not None and [t.get_text() for t in legend.get_texts()] == ["teacher", "kept"]
    assert any(ax.get_ylabel() == "sensitivity" for ax in fig.axes)


def test_writing_twice_gives_the_same_image(tmp_path: Path) -> None:
    import matplotlib.image

    study = _study(tmp_path, RECORDS)
    first = write_figures(study, _spec(), tmp_path / "a", trial=0)
    write_figures(study, _spec(), tmp_path / "b", trial=0)
    for name in first.values():
        a = matplotlib.image.imread(str(tmp_path / "a" / name))
        b = matplotlib.image.imread(str(tmp_path / "b" / name))
        assert a.shape == b.shape
        assert np.array_equal(a, b)


@pytest.mark.parametrize("n_layers", [1, 60])
def test_policy_figure_width_follows_the_layers_within_bounds(
    tmp_path: Path, n_layers: int
) -> None:
    names = [f"layer{i}" for i in range(n_layers)]
    policy = {"bits": {n: [8, 8] for n in names}, "kept_channels": {n: 4 for n in names}}
    fig = plot_policy(policy, tmp_path / "policy.png", title="many layers")
    assert 8.0 <= fig.get_figwidth() <= 20.0


def test_the_sensitivity_figure_has_a_panel_per_measured_table(tmp_path: Path) -> None:
    from search.sensitivity import Sensitivity

    sens = Sensitivity(
        0.92,
        {"stem.0": {4: 0.01, 8: 0.0}, "classifier": {4: 0.03, 8: 0.001}},
        {"stem.0": {8: 0.002}},
        {"prune.stem.0": {0.2: 0.05, 0.4: 0.3}},
        12.0,
    )
    fig = plot_sensitivity(sens, tmp_path / "s.png", title="study s")
    legends = [ax.get_legend() for ax in fig.axes]
    assert [lg.get_title().get_text() for lg in legends if lg is not None] == [
        "weight bits", "act bits", "pruning ratio"]
    assert _colours(tmp_path / "s.png") > 20
    ticks = [t.get_text() for t in fig.axes[2].get_xticklabels()]
    assert ticks == ["stem.0"]  # the group's name, without the param prefix
    empty = plot_sensitivity(Sensitivity(0.9, {}, {}, {}, 0.0), tmp_path / "e.png", title="e")
    assert any(t.startswith("nothing to measure") for t in _texts(empty))
