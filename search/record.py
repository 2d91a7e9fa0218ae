"""The trial record and the study record: what edgetune stores in a study, written and read once.

Everything edgetune keeps on a trial (status, accuracy, predicted and measured costs,
feasibility and its reason, the per-layer policy, timings, the artifact of the fine-tuned
weights) goes through :class:`TrialRecord`; what belongs to the whole study (the spec, the
teacher's accuracy and costs, the resolved budgets) through :class:`StudyRecord`. Both are
stored as Optuna user attributes, so optuna-dashboard shows them, under the keys below; the
keys are those of earlier releases, so their studies still load. Every reader (reports, the
export, the service, benchmarks) uses these two classes, never the attribute names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from search.spec import COST_KEYS

if TYPE_CHECKING:
    import optuna

    from search.budgets import Budgets
    from search.spec import Spec

Status = Literal["complete", "infeasible", "stopped", "failed"]
STATUSES: tuple[Status, ...] = ("complete", "infeasible", "stopped", "failed")


def scored_costs(predicted: Mapping[str, float], measured: Mapping[str, Any]) -> dict[str, float]:
    """The costs a candidate is held to: the latency measured on the device where it was
    measured, the predictions for the rest."""
    costs = dict(predicted)
    if "latency_ms" in measured:
        costs["latency_ms"] = float(measured["latency_ms"])
    if "ratio_to_teacher" in measured:
        costs["latency_ratio"] = float(measured["ratio_to_teacher"])
    return costs


@dataclass(frozen=True)
class TrialRecord:
    """One told trial.

    ``status``: ``complete`` (trained), ``infeasible`` (ruled out before training, by the
    cost model or by a measurement), ``stopped`` (trial stopping ended its fine-tune) or
    ``failed``. ``predicted``: the target's cost model's costs; ``measured``: what was
    measured on the device, if it was (``latency_ms`` and the protocol's figures).
    ``feasible``: within every budget (a complete trial only). ``provenance``: the calibration
    the costs were predicted with, where it was measured, the worker's CPU and versions.
    """

    status: Status
    accuracy: float | None = None
    predicted: Mapping[str, float] = field(default_factory=dict)
    measured: Mapping[str, float] = field(default_factory=dict)
    feasible: bool = False
    reason: str = ""
    policy: Mapping[str, Any] = field(default_factory=dict)
    timings_s: Mapping[str, float] = field(default_factory=dict)
    artifact: str | None = None
    driver_s: float | None = None
    provenance: Mapping[str, Any] = field(default_factory=dict)

    @property
    def scored(self) -> dict[str, float]:
        """The costs the budgets held it to (see :func:`scored_costs`)."""
        return scored_costs(self.predicted, self.measured)

    def write(self, trial: optuna.trial.Trial) -> None:
        """Store the record on a running trial (before ``study.tell``)."""
        attrs: dict[str, Any] = {"status": self.status, **self.predicted}
        if self.status in ("complete", "infeasible"):
            attrs["feasible"] = self.feasible
        optional = {
            "accuracy": self.accuracy,
            "measured": dict(self.measured) or None,
            "reason": self.reason or None,
            "policy": dict(self.policy) or None,
            "timings_s": {k: round(v, 3) for k, v in self.timings_s.items()} or None,
            "artifact": self.artifact,
            "driver_s": self.driver_s,
            "provenance": dict(self.provenance) or None,
        }
        attrs.update({k: v for k, v in optional.items() if v is not None})
        for key, value in attrs.items():
            trial.set_user_attr(key, value)

    @classmethod
    def read(cls, trial: optuna.trial.FrozenTrial) -> TrialRecord | None:
        """The record of a finished trial; None for one still running or waiting."""
        from optuna.trial import TrialState

        attrs = trial.user_attrs
        status: Status
        if trial.state == TrialState.PRUNED:
            status = "stopped"
        elif trial.state == TrialState.FAIL:
            status = "failed"
        elif trial.state == TrialState.COMPLETE:
            stored = attrs.get("status", "complete")
            status = stored if stored in ("complete", "infeasible") else "complete"
        else:
            return None
        accuracy = attrs.get("accuracy")
        return cls(
            status=status,
            accuracy=None if accuracy is None else float(accuracy),
            predicted={k: float(attrs[k]) for k in COST_KEYS if k in attrs},
            measured=dict(attrs.get("measured", {})),
            feasible=status == "complete" and bool(attrs.get("feasible", False)),
            reason=str(attrs.get("reason", "")),
            policy=dict(attrs.get("policy", {})),
            timings_s=dict(attrs.get("timings_s", {})),
            artifact=attrs.get("artifact"),
            driver_s=attrs.get("driver_s"),
            provenance=dict(attrs.get("provenance", {})),
        )


def set_reason(trial: optuna.trial.Trial, reason: str) -> None:
    """Record why a running trial ends (one the driver fails without an outcome)."""
    trial.set_user_attr("reason", reason)


@dataclass(frozen=True)
class StudyRecord:
    """What edgetune stores on the study: the spec (as JSON), the teacher's validation
    accuracy and predicted costs, the budgets resolved to absolute values, and whether its
    students keep 8-bit weights in ±63 (``int8_reduce_range``, from the target when the study
    started: a rebuilt student must be quantized as it was trained; None in studies of
    earlier releases, which then follow the target)."""

    spec: Mapping[str, Any]
    teacher: Mapping[str, float] = field(default_factory=dict)
    budgets: Mapping[str, float] = field(default_factory=dict)
    int8_reduce_range: bool | None = None

    def write(self, study: optuna.Study) -> None:
        study.set_user_attr("spec", dict(self.spec))
        if self.teacher:
            study.set_user_attr("teacher", dict(self.teacher))
        if self.budgets:
            study.set_user_attr("budgets", dict(self.budgets))
        if self.int8_reduce_range is not None:
            study.set_user_attr("int8_reduce_range", self.int8_reduce_range)

    @classmethod
    def read(cls, study: optuna.Study) -> StudyRecord | None:
        """The record of a study edgetune made; None for a study without an edgetune spec."""
        attrs = study.user_attrs
        if "spec" not in attrs:
            return None
        return cls(
            spec=dict(attrs["spec"]),
            teacher={k: float(v) for k, v in attrs.get("teacher", {}).items()},
            budgets={k: float(v) for k, v in attrs.get("budgets", {}).items()},
            int8_reduce_range=attrs.get("int8_reduce_range"),
        )

    def budgets_for(self, spec: Spec) -> Budgets:
        """The study's budgets, as resolved when it started."""
        from search.budgets import Budgets

        latency = spec.constraints.latency_ms
        measured = "latency_ms_predicted" in self.teacher  # the teacher was measured
        share = latency.value if latency and latency.relative and measured else None
        return Budgets(
            dict(self.budgets),
            spec.constraints.max_accuracy_drop,
            self.teacher.get("accuracy"),
            share,
            self.teacher.get("latency_ms_predicted") if share else None,
        )
