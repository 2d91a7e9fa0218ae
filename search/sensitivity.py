"""Sensitivity: the validation accuracy the teacher loses when one part of it is compressed alone.

Measured once per study, before the search, for the user's own teacher: for each quantization
unit (a layer, stage or the model, as the space's granularity says), each weight bit-width with
everything else at its most bits (float; on a target without float, against the model at its
most bits), and each activation bit-width likewise; for each pruning parameter, each
ratio with nothing else pruned, BatchNorm statistics re-estimated on the calibration images. No
fine-tuning, as in AMC's and HAWQ's analyses. It is stored in the study (user attribute
``sensitivity``), so a resumed study reuses it, and it is the accuracy prior of the repair and
the seeding: the bits a budget forces down go where they cost the least accuracy.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna
    import torch
    from torch import nn

    from search.trial import TrialContext
    from spaces.joint import JointSpace

ATTR = "sensitivity"
FLOAT_BITS = 32


@dataclass(frozen=True)
class Sensitivity:
    """Accuracy lost (teacher's validation accuracy minus the compressed model's; negative when
    it gained) by unit and bit-width (``weight``, ``act``) and by pruning param and ratio."""

    teacher_accuracy: float
    weight: Mapping[str, Mapping[int, float]]
    act: Mapping[str, Mapping[int, float]]
    pruning: Mapping[str, Mapping[float, float]]
    seconds: float

    def bits_loss(self, space: JointSpace, params: Mapping[str, Any]) -> float:
        """The summed loss of a params dict's bits, each unit's as measured alone (a unit at its
    most bits: 0)."""
        if space.quantization is None:
            return 0.0
        total = 0.0
        for unit, unit_params in space.quantization.bit_units().items():
            for param in unit_params:
                table = self.weight if param.startswith("wbits.") else self.act
                # the most bits a unit may have is the reference: not in the table, loss 0
                total += max(table.get(unit, {}).get(int(params[param]), 0.0), 0.0)
        return total

    def per_unit(self, bits: Mapping[str, tuple[int, int] | list[int]]) -> dict[str, float]:
        """The loss of each unit at the given (weight, activation) bits, for the policy chart
        (units measured per layer only: a stage's or the model's bits name no layer)."""
        return {
            unit: self.weight.get(unit, {}).get(int(w), 0.0)
            + self.act.get(unit, {}).get(int(a), 0.0)
            for unit, (w, a) in bits.items()
            if unit in self.weight or unit in self.act
        }

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (keys as strings), as the study stores it."""
        return {
            "teacher_accuracy": self.teacher_accuracy,
            "weight": {u: {str(b): v for b, v in t.items()} for u, t in self.weight.items()},
            "act": {u: {str(b): v for b, v in t.items()} for u, t in self.act.items()},
            "pruning": {p: {str(r): v for r, v in t.items()} for p, t in self.pruning.items()},
            "seconds": self.seconds,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Sensitivity:
        return cls(
            float(raw["teacher_accuracy"]),
            {u: {int(b): float(v) for b, v in t.items()} for u, t in raw["weight"].items()},
            {u: {int(b): float(v) for b, v in t.items()} for u, t in raw["act"].items()},
            {p: {float(r): float(v) for r, v in t.items()} for p, t in raw["pruning"].items()},
            float(raw["seconds"]),
        )


def stored_sensitivity(study: optuna.Study) -> Sensitivity | None:
    """The sensitivity a study stored when it started (None for a study of an earlier
    release)."""
    raw = study.user_attrs.get(ATTR)
    return Sensitivity.from_dict(raw) if raw else None


def store_sensitivity(study: optuna.Study, sensitivity: Sensitivity) -> Sensitivity:
    study.set_user_attr(ATTR, sensitivity.as_dict())
    return sensitivity


def context_sensitivity(context: TrialContext, log: Callable[[str], None]) -> Sensitivity:
    """Measure the sensitivity of a study's teacher and space (its prepared context)."""
    teacher, space = context.teacher_and_space()
    w = context.workload
    sens = measure_sensitivity(
        teacher, space, (w.x_val, w.y_val), w.x_calib, reduce_range=context.reduce_range
    )
    worst = sorted(
        ((loss, f"{u} {b}-bit weights") for u, tab in sens.weight.items() for b, loss in tab.items()),
        reverse=True,
    )[:3]
    log(
        f"sensitivity of the teacher measured in {sens.seconds:.1f} s"
        + (": most sensitive alone " + ", ".join(f"{n} -{loss:.1%}" for loss, n in worst)
           if worst else "")
    )
    return sens


def measure_sensitivity(
    teacher: nn.Module,
    space: JointSpace,
    val: tuple[torch.Tensor, torch.Tensor],
    calib: torch.Tensor,
    *,
    reduce_range: bool,
) -> Sensitivity:
    """Measure each unit's and each pruning param's accuracy loss alone (see the module doc)."""
    from spaces.distillation import accuracy
    from spaces.student import build_student

    start = time.perf_counter()
    x_val, y_val = val
    q = space.quantization
    top_w = max(q.spec.weight_bits) if q else FLOAT_BITS
    top_a = max(q.spec.activation_bits) if q else FLOAT_BITS
    base = space.uniform_params(0.0, top_w, top_a)  # no pruning, every unit at its most bits
    reference = accuracy(teacher, x_val, y_val)
    bits_reference = reference
    if (top_w, top_a) != (FLOAT_BITS, FLOAT_BITS):  # a target without float: against int8
        model = build_student(teacher, base, space, calib=calib, reduce_range=reduce_range).model
        assert model is not None
        bits_reference = accuracy(model, x_val, y_val)
    weight: dict[str, dict[int, float]] = {}
    act: dict[str, dict[int, float]] = {}
    units = q.bit_units() if q else {}
    for unit, unit_params in units.items():
        for param, choices in unit_params.items():
            table = weight if param.startswith("wbits.") else act
            for bits in choices:
                if bits == base[param]:
                    continue
                student = build_student(
                    teacher, {**base, param: bits}, space, calib=calib, reduce_range=reduce_range
                )
                assert student.model is not None
                loss = bits_reference - accuracy(student.model, x_val, y_val)
                table.setdefault(unit, {})[bits] = loss
    pruning: dict[str, dict[float, float]] = {}
    if space.pruning is not None:
        for param in space.pruning.distributions():
            for ratio in space.pruning.grid[1:]:
                policy = space.decode({**base, param: ratio})
                pruned = space.prune(teacher, policy)
                reestimate_batchnorm(pruned, calib)
                loss = reference - accuracy(pruned, x_val, y_val)
                pruning.setdefault(param, {})[ratio] = loss
    return Sensitivity(reference, weight, act, pruning, time.perf_counter() - start)


def reestimate_batchnorm(model: nn.Module, x: torch.Tensor, batch: int = 128) -> None:
    """Replace every BatchNorm's running statistics with those of ``x`` (a cumulative average
    over its batches), in place; the model is left in eval mode."""
    import torch
    from torch import nn

    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches
    model.train()
    with torch.no_grad():
        for i in range(0, len(x), batch):
            model(x[i : i + batch])
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    model.eval()
