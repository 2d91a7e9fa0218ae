"""Budgets: the one place that decides what "within budget" means.

A spec's constraints are resolved once per study into absolute :class:`Budgets`: a relative
budget (``latency_ms: 60%``) against the teacher's own predicted cost on the target, and the
budgets of costs the target fits to measurements (latency, energy) lowered by the target's
prediction margin (its median error on held-out measurements), so that a candidate predicted
just under a budget still meets it on the device. Every caller asks this module: the driver
(Optuna constraints, feasibility of a told trial), the trial (ruling a candidate out before
training), the seeding and repair (violation), ``check``, the export, the service and the
dashboard (through the trial record).

:func:`check_spec` is ``edgetune check``: the teacher's costs, the cheapest corner of the space
and whether the budgets can be met at all.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from search.errors import InfeasibleSpecError
from search.spec import COST_KEYS, Constraints, Spec

if TYPE_CHECKING:
    from torch import nn

    from cost_models.graph import Costs
    from spaces.joint import JointSpace
    from targets.base import Target

MEASURED_COSTS = ("latency_ms", "energy_mj")
"""Costs a target fits to measurements; the others (size, peak memory) are exact counts."""

ACCURACY_DROP = "accuracy_drop"
LATENCY_RATIO = "latency_ratio"
"""A measured candidate's latency over the teacher's, measured in the same run."""


@dataclass(frozen=True)
class Budgets:
    """Absolute limits by cost key, and the largest accuracy drop below the teacher.

    ``limits`` holds only the costs the spec budgets. ``teacher_accuracy`` is the validation
    accuracy the drop is measured from (needed only with ``max_accuracy_drop``).
    """

    limits: Mapping[str, float] = field(default_factory=dict)
    max_accuracy_drop: float | None = None
    teacher_accuracy: float | None = None
    latency_share: float | None = None
    """A relative latency budget on a measured device (``latency_ms: 60%`` is 0.6): a measured
    candidate is held to its latency over the teacher's, both measured in the same run, so a
    machine that changes speed between runs moves neither."""
    teacher_latency_predicted: float | None = None
    """With a :attr:`latency_share`: the teacher's predicted latency. A candidate priced on the
    cost model alone is held to its predicted latency over this one, so the cost model's error
    on the network (which its students share) cancels, as it does in a measured ratio."""

    @classmethod
    def resolve(
        cls,
        constraints: Constraints,
        teacher: Mapping[str, float],
        *,
        margin: float = 0.0,
        measured: Mapping[str, float] | None = None,
    ) -> Budgets:
        """Absolute budgets from a spec's constraints and the teacher's costs (and
        ``accuracy``). A cost in ``measured`` (the teacher measured on the device) is what
        relative budgets are shares of, and candidates are held to it by measurement too, so
        it keeps its full budget; ``margin`` lowers the budgets of the other
        :data:`MEASURED_COSTS`, which candidates are held to by prediction alone."""
        measured = measured or {}
        latency = constraints.latency_ms
        share = latency.value if latency and latency.relative and "latency_ms" in measured else None
        limits = {}
        for key, budget in constraints.budgets().items():
            base = measured.get(key, teacher[key])
            value = budget.value * base if budget.relative else budget.value
            lowered = key in MEASURED_COSTS and key not in measured
            limits[key] = value * (1.0 - margin if lowered else 1.0)
        return cls(limits, constraints.max_accuracy_drop, teacher.get("accuracy"), share,
                   teacher["latency_ms"] if share else None)

    def excess(self, costs: Mapping[str, float]) -> dict[str, float]:
        """Each budgeted cost's relative excess over its budget (``0.25`` = 25% over; <= 0 is
        within budget). Costs missing from ``costs`` are left out. With a
        :attr:`latency_share` and a measured ``latency_ratio`` (to the teacher, same run), the
        latency's excess is the ratio's over the share; without one (a prediction), the
        predicted latency's over the teacher's predicted latency, when it is known."""
        out = {k: costs[k] / b - 1.0 for k, b in self.limits.items() if k in costs}
        if "latency_ms" in out and self.latency_share:
            ratio = costs.get(LATENCY_RATIO)
            if ratio is None and self.teacher_latency_predicted:
                ratio = costs["latency_ms"] / self.teacher_latency_predicted
            if ratio is not None:
                out["latency_ms"] = ratio / self.latency_share - 1.0
        return out

    def broken(self, costs: Mapping[str, float]) -> dict[str, float]:
        """Only the budgets ``costs`` break, with their relative excess."""
        return {k: v for k, v in self.excess(costs).items() if v > 0}

    def violation(self, costs: Mapping[str, float]) -> float:
        """The summed relative excess over every broken budget (0 when all are met)."""
        return sum(self.broken(costs).values())

    def constraints(self, costs: Mapping[str, float], accuracy: float | None) -> dict[str, float]:
        """Optuna constraint values (<= 0 is feasible): the cost excesses and, with
        ``max_accuracy_drop``, how far the drop below the teacher exceeds it."""
        values = self.excess(costs)
        if self.max_accuracy_drop is not None and self.teacher_accuracy is not None:
            drop = self.teacher_accuracy - (accuracy or 0.0)
            values[ACCURACY_DROP] = drop - self.max_accuracy_drop
        return values

    def feasible(self, costs: Mapping[str, float], accuracy: float | None) -> bool:
        return all(v <= 0 for v in self.constraints(costs, accuracy).values())

    def screening(self, underestimates: Sequence[float], *, prior: float = 0.0,
                  miss: float = 0.2, most: float = 0.15) -> Budgets:
        """The budgets a study's proposals are screened against before they are measured: the
        latency share lowered by how much the cost model underestimated the measured latency
        ratio of the study's measured candidates (``underestimates``: measured ratio over
        predicted ratio), from 3 measurements on, and by at least ``prior`` (the target's
        held-out error, say: a proposal predicted at the share's edge fails its measurement
        half the time through noise alone), by a factor of at most ``1 + most``. These budgets
        as they are without a share.

        Of n underestimates the factor is the k-th smallest, k = ceil((n + 1)(1 - miss)), or
        the largest when k > n: a split-conformal bound, so a proposal at the lowered share's
        edge measures over it with a probability of at most ``miss`` when the study's
        underestimates are alike (1 / (n + 1) for the largest: 1 in 4 of 3, under ``miss``
        from 4 on). A sample quantile (the 75th percentile of 8 is the 6th) would be exceeded
        1 time in 3."""
        if not self.latency_share:
            return self
        factor = 1.0 + prior
        if len(underestimates) >= 3:
            n = len(underestimates)
            # (n + 1)(1 - miss) a hair over a whole number in floats must not round up
            k = min(math.ceil((n + 1) * (1.0 - miss) - 1e-9), n)
            factor = max(factor, sorted(underestimates)[k - 1])
        factor = min(factor, 1.0 + most)
        return replace(self, latency_share=self.latency_share / factor) if factor > 1 else self

    def latency_times(self, factor: float) -> Budgets:
        """These budgets with the latency budget (and its share) ``factor`` times as large;
        these budgets as they are when latency has no budget."""
        if "latency_ms" not in self.limits:
            return self
        limits = {**self.limits, "latency_ms": self.limits["latency_ms"] * factor}
        share = self.latency_share * factor if self.latency_share else None
        return replace(self, limits=limits, latency_share=share)

    def underestimate(self, predicted: Mapping[str, float],
                      measured: Mapping[str, Any]) -> float | None:
        """A measured candidate's latency ratio over its predicted one (what :meth:`screening`
        takes); None without a share, a measured ratio or a prediction."""
        ratio = measured.get("ratio_to_teacher")
        if not (self.latency_share and self.teacher_latency_predicted and ratio
                and "latency_ms" in predicted):
            return None
        return float(ratio) / (predicted["latency_ms"] / self.teacher_latency_predicted)

    def as_dict(self) -> dict[str, float]:
        """The absolute cost limits, as the study records and the reports show them."""
        return dict(self.limits)


def describe_excess(excess: Mapping[str, float]) -> str:
    """``latency_ms +26%, size_kb +3%``."""
    return ", ".join(f"{k} {v:+.0%}" for k, v in excess.items())


def teacher_costs(teacher: nn.Module, spec: Spec, target: Target) -> dict[str, float]:
    """The teacher's predicted costs on the target, as the target runs it (in int8 on a device
    that runs nothing else): what relative budgets are shares of. Its size is always the
    float teacher's."""
    return _teacher_prediction(teacher, spec, target).as_dict()


def _teacher_prediction(teacher: nn.Module, spec: Spec, target: Target) -> Costs:
    """:func:`teacher_costs` as :class:`Costs`, which also names the layers priced from bytes
    (``approximated``: the target has no fitted coefficients for them)."""
    from dataclasses import replace

    from cost_models import from_torch, size_kb

    graph = from_torch(teacher, spec.model.input_shape)
    return replace(target.predict(graph, {}), size_kb=size_kb(graph, {}))


def corner_params(space: JointSpace, spec: Spec) -> list[dict[str, Any]]:
    """The cheapest corners of the space: the most pruning, at every uniform bit setting."""
    q, p = spec.space.quantization, spec.space.pruning
    ratio = p.max_ratio if p else 0.0
    wbits = q.weight_bits if q else (32,)
    abits = q.activation_bits if q else (32,)
    return [space.uniform_params(ratio, w, a) for w in wbits for a in abits]


def cheapest_costs(
    space: JointSpace, teacher: nn.Module, spec: Spec, target: Target
) -> dict[str, float]:
    """Each cost's lowest prediction over the cheapest corners (fewest bits is not always
    fastest: on a runtime without fast int4 kernels, 4-bit weights run slower than 8-bit)."""
    from spaces.student import student_architecture

    best: dict[str, float] = {}
    for params in corner_params(space, spec):
        student = student_architecture(teacher, params, space)
        for key, value in target.predict(student.graph, student.policy.bits).as_dict().items():
            best[key] = min(value, best.get(key, value))
    return best


def require_reachable(budgets: Budgets, cheapest: Mapping[str, float]) -> None:
    """InfeasibleSpecError when even the cheapest corner breaks a budget."""
    broken = budgets.broken(cheapest)
    if broken:
        parts = []
        for k, v in broken.items():
            if k == "latency_ms" and budgets.latency_share and LATENCY_RATIO in cheapest:
                parts.append(
                    f"latency_ms: the cheapest candidate measures {cheapest[LATENCY_RATIO]:.0%} "
                    f"of the teacher's latency, {v:.0%} over the budget of "
                    f"{budgets.latency_share:.0%}"
                )
            else:
                parts.append(
                    f"{k}: the cheapest candidate predicts {cheapest[k]:.4g}, {v:.0%} over the "
                    f"budget {budgets.limits[k]:.4g}"
                )
        raise InfeasibleSpecError(
            "no candidate can meet the budgets: "
            + "; ".join(parts)
            + "; loosen the budget or widen the space"
        )


@dataclass(frozen=True)
class CheckResult:
    """What ``edgetune check`` reports for a spec."""

    teacher: dict[str, float]
    cheapest: dict[str, float]
    budgets: Budgets
    restricted: tuple[str, ...] = ()
    """How the space was cut to the precisions the target prices, and why."""
    energy: str = ""
    """How the target's energy figures are made (``Target.energy_label``)."""
    approximated: tuple[str, ...] = ()
    """The teacher's layers priced without fitted coefficients (from the bytes they move)."""
    in_float: tuple[str, ...] | None = None
    """The joins and ops left in float in the exported fewest-bits corner (None: no
    quantization in the space)."""

    @property
    def broken(self) -> dict[str, float]:
        return self.budgets.broken(self.cheapest)

    def as_dict(self) -> dict[str, Any]:
        return {
            "teacher": self.teacher,
            "cheapest": self.cheapest,
            "budgets": self.budgets.as_dict(),
            "feasible": not self.broken,
            "over_budget": {k: round(v, 4) for k, v in self.broken.items()},
            "restricted": list(self.restricted),
            "energy": self.energy,
            "approximated": list(self.approximated),
            "in_float": None if self.in_float is None else list(self.in_float),
        }

    def text(self) -> str:
        lines = [f"space: {note}" for note in self.restricted]
        lines.append("cost | teacher | cheapest candidate | budget")
        limits = self.budgets.limits
        for k in COST_KEYS:
            budget = f"{limits[k]:.4g}" if k in limits else "-"
            lines.append(f"{k} | {self.teacher[k]:.4g} | {self.cheapest[k]:.4g} | {budget}")
        if self.broken:
            lines.append(
                "infeasible: "
                + "; ".join(
                    f"{k}: the cheapest candidate is {v:.0%} over budget"
                    for k, v in self.broken.items()
                )
            )
        else:
            lines.append("the budgets can be met (by the cheapest corner of the space at least)")
        if self.energy:
            lines.append(f"energy: {self.energy}")
        if self.approximated:
            lines.append(
                f"priced from the bytes they move (no fitted coefficients on this target): "
                f"{', '.join(self.approximated)}"
            )
        if self.in_float:
            lines.append(
                "exported in float at the fewest bits (nothing to quantize them with: an op on "
                f"a constant, or a kind edgetune does not quantize): {', '.join(self.in_float)}"
            )
        elif self.in_float is not None:
            lines.append("exported at the fewest bits: every conv, linear, add, mul and concat "
                         "quantized")
        return "\n".join(lines)


def check_spec(spec: Spec, target: Target, model: nn.Module) -> CheckResult:
    """The teacher's costs, the cheapest candidate's and the budgets. Costs depend on the
    architecture only, so ``model`` may be untrained (the teacher's accuracy is not needed)."""
    from search.precision import restrict_to_target
    from spaces.joint import JointSpace

    restriction = restrict_to_target(spec, target)
    spec = restriction.spec
    predicted = _teacher_prediction(model, spec, target)
    teacher = predicted.as_dict()
    budgets = Budgets.resolve(spec.constraints, teacher, margin=target.prediction_margin())
    space = JointSpace(model, spec.model.input_shape, spec.space, batch_size=spec.data.batch_size)
    cheapest = cheapest_costs(space, model, spec, target)
    return CheckResult(
        teacher, cheapest, budgets, restriction.notes, target.energy_label, predicted.approximated,
        export_fewest_bits(space, model, spec),
    )


# layer kinds that read two or more activations, or that onnxruntime has an int8 kernel for
_QUANTIZABLE_KINDS = ("conv", "dwconv", "linear", "add", "mul", "concat", "matmul")


def export_fewest_bits(space: JointSpace, model: nn.Module, spec: Spec) -> tuple[str, ...] | None:
    """Quantize and export the fewest-bits corner, pruned the most (calibrated on random inputs:
    this checks the path, not the accuracy), and list its layers left in float. Raises the
    path's own error (ExportError, UnsupportedLayerError...) naming the layer at fault."""
    import torch

    from cost_models.graph import Precision
    from search.onnx_export import to_onnx
    from spaces.student import build_student

    q, p = spec.space.quantization, spec.space.pruning
    if q is None:
        return None
    params = space.uniform_params(
        p.max_ratio if p else 0.0, min(q.weight_bits), min(q.activation_bits)
    )
    calib = torch.randn(8, *spec.model.input_shape, generator=torch.Generator().manual_seed(0))
    student = build_student(model, params, space, calib=calib, reduce_range=False)
    assert student.model is not None
    to_onnx(student.model, spec.model.input_shape)
    float_precision = Precision()
    return tuple(
        f"{layer.name} ({layer.kind})"
        for layer in student.graph.layers
        if layer.kind in _QUANTIZABLE_KINDS
        and student.policy.bits.get(layer.name, float_precision) == float_precision
    )
