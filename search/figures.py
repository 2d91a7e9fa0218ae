"""Figures: the study's accuracy against latency and one trial's per-layer policy (for an
export), and the teacher's measured sensitivity (at the start of a study).

Matplotlib is imported only when a figure is drawn, and only its object API is used, with the
Agg canvas (never pyplot): exports running in the service's threads share no global figure
state. A study with no trained trial, or a trial with no policy, still gets its figures, which
say what is missing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from search.record import StudyRecord, TrialRecord

if TYPE_CHECKING:
    import optuna
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from search.sensitivity import Sensitivity
    from search.spec import Spec

FRONT_PNG = "front.png"
POLICY_PNG = "policy.png"
SENSITIVITY_PNG = "sensitivity.png"
DPI = 120
FEASIBLE, INFEASIBLE, FRONT_LINE, PEER = "tab:blue", "tab:red", "navy", "tab:green"
FINALIZED = "tab:purple"
FLOAT_BITS = 32
BITS_SERIES = (("weights", "tab:blue"), ("activations", "tab:orange"))
STAR: dict[str, Any] = dict(marker="*", s=260, color="gold", edgecolors="black", zorder=4)
RING: dict[str, Any] = dict(s=300, facecolors="none", edgecolors="black", linewidths=1.6)


@dataclass(frozen=True)
class FrontPoint:
    """One trained trial: its validation accuracy, its latency in ms (``measured`` on the
    device, else the cost model's prediction) and whether it met every budget."""

    number: int
    latency_ms: float
    accuracy: float
    feasible: bool
    measured: bool


def front_points(study: optuna.Study) -> list[FrontPoint]:
    """Every complete (trained) trial of the study, by trial number. The latency is the one
    the budgets held it to: measured where it was measured, predicted otherwise."""
    points = []
    for t in study.get_trials(deepcopy=False):
        record = TrialRecord.read(t)
        if record is None or record.status != "complete" or record.accuracy is None:
            continue
        latency = record.scored.get("latency_ms")
        if latency is None or not (math.isfinite(latency) and math.isfinite(record.accuracy)):
            continue
        measured = "latency_ms" in record.measured
        points.append(FrontPoint(t.number, latency, record.accuracy, record.feasible, measured))
    return sorted(points, key=lambda p: p.number)


def pareto_front(points: Iterable[FrontPoint]) -> list[FrontPoint]:
    """The feasible points no other feasible point beats (as accurate or more and as fast or
    faster, and better in one), by increasing latency. Of points with the same latency and
    accuracy, the one with the lowest trial number stands for them all."""
    feasible = [p for p in points if p.feasible]
    front: list[FrontPoint] = []
    for p in sorted(feasible, key=lambda p: (p.latency_ms, -p.accuracy, p.number)):
        if not front or p.accuracy > front[-1].accuracy:
            front.append(p)
    return front


def _figure(width_in: float, height_in: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    return FigureCanvasAgg(Figure((width_in, height_in), DPI, layout="constrained")).figure


def _xy(points: Iterable[FrontPoint]) -> tuple[list[float], list[float]]:
    listed = list(points)
    return [p.latency_ms for p in listed], [p.accuracy for p in listed]


def _say(ax: Axes, text: str) -> None:
    """Write ``text`` in the middle of an axes that has nothing to show."""
    style: dict[str, Any] = {"ha": "center", "va": "center", "fontsize": 12, "color": "grey"}
    ax.text(0.5, 0.5, text, transform=ax.transAxes, **style)


def _saying(fig: Figure, path: Path, text: str) -> Figure:
    """``fig`` with only ``text`` in it, saved to ``path``: a figure with nothing to draw."""
    ax = fig.subplots()
    ax.set_axis_off()
    _say(ax, text)
    fig.savefig(path)
    return fig


def plot_front(
    points: Sequence[FrontPoint],
    *,
    path: Path,
    title: str,
    teacher: Mapping[str, float] | None = None,
    latency_budget_ms: float | None = None,
    min_accuracy: float | None = None,
    peers: Mapping[str, tuple[float, float]] | None = None,
    chosen: int | None = None,
    finalized: Mapping[int, float] | None = None,
) -> Figure:
    """Draw validation accuracy against latency into ``path`` (PNG) and return the figure.

    Filled markers are measured latencies, hollow ones predicted; blue trials met every budget,
    red ones were trained but missed one. The feasible trials' front is a step line, the region
    within the latency budget and above ``min_accuracy`` is shaded, the ``teacher`` (its
    ``accuracy`` and ``latency_ms``) is a star, trial ``chosen`` is ringed, and each of
    ``peers`` (name -> (latency_ms, accuracy)) is a labelled diamond. Each trial in
    ``finalized`` (number -> its finalized validation accuracy) is a square there too, joined to
    its search-time point, and the ring is on the square."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    fig = _figure(9.5, 5.5)
    ax = fig.subplots()
    handles: list[Any] = []

    def key(label: str, **style: Any) -> None:
        handles.append(Line2D([], [], ls="", label=label, **{"marker": "o", **style}))

    for ok, colour, label in ((True, FEASIBLE, "feasible"), (False, INFEASIBLE, "over a budget")):
        group = [p for p in points if p.feasible is ok]
        for measured in (True, False):
            x, y = _xy(p for p in group if p.measured is measured)
            face = colour if measured else "none"
            ax.scatter(x, y, s=40, facecolors=face, edgecolors=colour, linewidths=1.3, zorder=3)
        if group:
            key(f"{label} ({len(group)} trained)", color=colour)
    if any(p.measured for p in points):
        key("latency measured", color="grey")
    if any(not p.measured for p in points):
        key("latency predicted", color="grey", mfc="none")
    if front := pareto_front(points):
        label = f"front ({len(front)} feasible, non-dominated)"
        handles += ax.plot(*_xy(front), drawstyle="steps-post", color=FRONT_LINE, label=label)
    if teacher and {"accuracy", "latency_ms"} <= teacher.keys():
        how = "measured" if "latency_ms_predicted" in teacher else "predicted"
        xy = (teacher["latency_ms"], teacher["accuracy"])
        handles.append(ax.scatter(*xy, **STAR, label=f"teacher (latency {how})"))
    finalized = finalized or {}
    done = [p for p in points if p.number in finalized]
    for p in done:
        ax.plot([p.latency_ms] * 2, [p.accuracy, finalized[p.number]], color=FINALIZED, ls=":")
    if done:
        x, y = [p.latency_ms for p in done], [finalized[p.number] for p in done]
        label = f"finalized ({len(done)}): trained longer"
        handles.append(ax.scatter(x, y, marker="s", s=45, color=FINALIZED, zorder=4, label=label))
    for p in points:
        if p.number == chosen:
            xy = (p.latency_ms, finalized.get(p.number, p.accuracy))
            handles.append(ax.scatter(*xy, **RING, label=f"trial {p.number}, exported"))
            ax.annotate(f"trial {p.number}", xy, xytext=(10, -14), textcoords="offset points")
    for name, xy in sorted((peers or {}).items()):
        ax.scatter(*xy, marker="D", s=40, color=PEER, zorder=4)
        ax.annotate(name, xy, xytext=(7, 5), textcoords="offset points", fontsize=8, color=PEER)
    if peers:
        key("peers", marker="D", color=PEER)
    if latency_budget_ms is not None:
        label = f"latency budget {latency_budget_ms:.4g} ms"
        handles.append(ax.axvline(latency_budget_ms, color="black", ls="--", lw=1, label=label))
    if min_accuracy is not None:
        label = f"lowest accuracy allowed {min_accuracy:.4g}"
        handles.append(ax.axhline(min_accuracy, color="black", ls=":", lw=1, label=label))
    if not points:
        _say(ax, "no trained trial yet")
    ax.margins(y=0.08)
    (x0, x1), (y0, y1) = (0.0, ax.get_xlim()[1] * 1.05), ax.get_ylim()  # from 0 ms, room right
    if latency_budget_ms is not None or min_accuracy is not None:
        right = x1 if latency_budget_ms is None else min(latency_budget_ms, x1)
        bottom = y0 if min_accuracy is None else max(min_accuracy, y0)
        ax.fill_between([x0, right], bottom, y1, color=FEASIBLE, alpha=0.08, lw=0, zorder=0)
        handles.append(Patch(color=FEASIBLE, alpha=0.15, label="within these budgets"))
    ax.set(xlim=(x0, x1), ylim=(y0, y1))
    ax.set(xlabel="latency (ms, batch 1)", ylabel="validation accuracy (share correct)")
    ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3)
    fig.legend(handles=handles, loc="outside right upper", fontsize=8, frameon=False)
    fig.savefig(path)
    return fig


def plot_policy(
    policy: Mapping[str, Any],
    path: Path,
    *,
    title: str,
    teacher_channels: Mapping[str, int] | None = None,
    sensitivity: Mapping[str, float] | None = None,
) -> Figure:
    """Draw one trial's per-layer policy (as ``Student.summary()`` records it: ``bits``
    {layer: [weight_bits, act_bits]}, 32 for float; ``kept_channels`` {layer: n}) into
    ``path`` (PNG) and return the figure: bits per layer above, kept output channels below,
    beside the teacher's as an outline when ``teacher_channels`` is given, and ``sensitivity``
    per layer as a line on a second axis of the bits panel. Layers run in execution order."""
    from matplotlib.patches import Patch

    bits: Mapping[str, Sequence[int]] = policy.get("bits") or {}
    kept: Mapping[str, int] = policy.get("kept_channels") or {}
    names = list(dict.fromkeys([*bits, *kept]))
    kd = policy.get("distillation") or {}
    detail = ", ".join(f"{k} {v:.3g}" for k, v in kd.items() if isinstance(v, int | float))
    fig = _figure(min(20.0, max(8.0, 3.0 + 0.5 * len(names))), 7.0 if names else 4.0)
    fig.suptitle(title + (f"\ndistillation: {detail}" if detail else ""), fontsize=11)
    if not names:
        return _saying(fig, path, "no per-layer policy recorded")
    ax_bits, ax_ch = fig.subplots(2, 1, sharex=True)
    crowded = len(names) > 12
    handles: list[Any] = []
    for side, (label, colour) in enumerate(BITS_SERIES):
        xs = [i for i, n in enumerate(names) if n in bits]
        values = [int(bits[names[i]][side]) for i in xs]
        at = [x + (side - 0.5) * 0.4 for x in xs]
        bars = ax_bits.bar(at, [v - 1 for v in values], 0.4, bottom=1, color=colour)
        for bar, v in zip(bars, values, strict=True):
            if v == FLOAT_BITS:
                bar.set(hatch="///", alpha=0.45)
        labels = ["float" if v == FLOAT_BITS else str(v) for v in values]
        ax_bits.bar_label(bars, labels, fontsize=7, padding=2, rotation=90 if crowded else 0)
        handles.append(Patch(color=colour, label=label))
    handles.append(Patch(facecolor="white", edgecolor="grey", hatch="///", label="float (32)"))
    ax_bits.set_yscale("log", base=2)
    ax_bits.set(ylim=(1, 2**8 if crowded else 2**7), ylabel="bits (log scale)")
    ax_bits.set_yticks([2, 4, 8, 16, 32], ["2", "4", "8", "16", "float"])
    if sensitivity:
        twin = ax_bits.twinx()
        ys = [sensitivity.get(n, math.nan) for n in names]
        handles += twin.plot(ys, color="tab:purple", marker="o", ms=3, label="sensitivity")
        twin.set_ylabel("sensitivity", color="tab:purple")
    ax_bits.legend(handles=handles, loc="upper left", ncols=len(handles), fontsize=8, frameon=False)
    if teacher_channels:
        xs = [i for i, n in enumerate(names) if n in teacher_channels]
        ys = [teacher_channels[names[i]] for i in xs]
        ax_ch.bar(xs, ys, 0.8, fill=False, edgecolor="black", lw=1, label="teacher")
    xs = [i for i, n in enumerate(names) if n in kept]
    bars = ax_ch.bar(xs, [kept[names[i]] for i in xs], 0.55, color="tab:green", label="kept")
    ax_ch.bar_label(bars, fontsize=7, padding=2, rotation=90 if crowded else 0)
    ax_ch.margins(y=0.2)
    ax_ch.set_ylabel("output channels")
    ax_ch.legend(loc="upper left", ncols=2, fontsize=8, frameon=False)
    ax_ch.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    for ax in (ax_bits, ax_ch):
        ax.grid(axis="y", alpha=0.3)
    fig.savefig(path)
    return fig


def plot_sensitivity(sensitivity: Sensitivity, path: Path, *, title: str) -> Figure:
    """Draw the accuracy the teacher loses with one part compressed alone into ``path`` (PNG):
    per unit at each weight and activation bit-width, per pruning group at each ratio."""
    panels = [(f"{table} bits", {u: {str(b): v for b, v in row.items()}
                                 for u, row in getattr(sensitivity, table).items()})
              for table in ("weight", "act")]
    panels.append(("pruning ratio", {p.removeprefix("prune."): {f"{r:g}": v for r, v in row.items()}
                                     for p, row in sensitivity.pruning.items()}))
    panels = [(name, rows) for name, rows in panels if rows]
    fig = _figure(11.0, 3.2 * max(1, len(panels)) + 0.6)
    fig.suptitle(title, fontsize=11)
    if not panels:
        return _saying(fig, path, "nothing to measure: the space has neither bits nor pruning")
    axes = fig.subplots(len(panels), 1, squeeze=False)[:, 0]
    for ax, (name, rows) in zip(axes, panels, strict=True):
        names = list(rows)
        for value in sorted({v for row in rows.values() for v in row}, key=float):
            ys = [100 * rows[n].get(value, math.nan) for n in names]
            ax.plot(range(len(names)), ys, marker="o", ms=3, label=f"{value}")
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=7)
        ax.set_ylabel("points lost")
        ax.legend(title=name, fontsize=7, title_fontsize=8, ncols=4, frameon=False)
        ax.grid(axis="y", alpha=0.3)
    fig.savefig(path)
    return fig


def write_figures(
    study: optuna.Study,
    spec: Spec,
    out: Path,
    *,
    trial: int,
    peers: Mapping[str, tuple[float, float]] | None = None,
    teacher_channels: Mapping[str, int] | None = None,
    sensitivity: Mapping[str, float] | None = None,
) -> dict[str, str]:
    """Write ``front.png`` (the study's trained trials, accuracy against latency, the finalized
    ones at their finalized accuracy too, with trial ``trial`` ringed) and ``policy.png`` (trial
    ``trial``'s per-layer policy, beside ``teacher_channels`` and each layer's measured
    ``sensitivity`` when given) into ``out``; return their file names relative to ``out``, by
    figure."""
    from search.finalize import finalized_records

    record = StudyRecord.read(study) or StudyRecord({})
    teacher, drop = record.teacher, spec.constraints.max_accuracy_drop
    floor = teacher["accuracy"] - drop if drop is not None and "accuracy" in teacher else None
    out.mkdir(parents=True, exist_ok=True)
    plot_front(
        front_points(study),
        path=out / FRONT_PNG,
        title=f"study {study.study_name} on {spec.target}: validation accuracy against latency",
        teacher=teacher,
        latency_budget_ms=record.budgets.get("latency_ms"),
        min_accuracy=floor,
        peers=peers,
        chosen=trial,
        finalized={n: float(f["val_accuracy"]) for n, f in finalized_records(study).items()},
    )
    frozen = next((t for t in study.get_trials(deepcopy=False) if t.number == trial), None)
    trial_record = TrialRecord.read(frozen) if frozen is not None else None
    policy = dict(trial_record.policy) if trial_record else {}
    missing = "" if policy.get("bits") or policy.get("kept_channels") else " (none recorded)"
    title = f"study {study.study_name}, trial {trial}: per-layer policy{missing}"
    plot_policy(policy, out / POLICY_PNG, title=title, teacher_channels=teacher_channels,
                sensitivity=sensitivity)
    return {"front": FRONT_PNG, "policy": POLICY_PNG}
