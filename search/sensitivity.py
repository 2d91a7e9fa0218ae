"""Sensitivity: the validation accuracy the teacher loses when one part of it is compressed alone.

Measured once per study, before the search, for the user's own teacher: for each quantization
unit (a layer, stage or the model, as the space's granularity says), each weight bit-width with
everything else at its most bits (float; on a target without float, against the model at its
most bits), and each activation bit-width likewise; for each pruning parameter, each
ratio with nothing else pruned, BatchNorm statistics re-estimated on the calibration images. No
fine-tuning, as in AMC's and HAWQ's analyses. One :class:`SensitivityJob` per param, spread
over the study's workers (``Executor.map``: a local Ray's or a cluster's). It is stored in the
study (user attribute ``sensitivity``, and its figure as a study artifact that optuna-dashboard
shows), so a resumed study reuses it, and it is the accuracy prior of the repair and the
seeding: the bits a budget forces down, and the pruning, go where they cost the least accuracy.
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
    """Store it in the study, and its figure as a study artifact (optuna-dashboard shows it)."""
    import tempfile
    from pathlib import Path

    from search.artifacts import upload
    from search.figures import SENSITIVITY_PNG, plot_sensitivity

    study.set_user_attr(ATTR, sensitivity.as_dict())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / SENSITIVITY_PNG
        plot_sensitivity(sensitivity, path, title=f"study {study.study_name}: accuracy the "
                         f"teacher loses, each part compressed alone ({sensitivity.seconds:.0f} s)")
        upload(study, SENSITIVITY_PNG, path.read_bytes(), "image/png")
    return sensitivity


@dataclass(frozen=True)
class SensitivityJob:
    """One part of the measurement, run wherever the study's trials run: the losses of one
    param at each of ``values`` (bits, or pruning ratios), from ``reference`` accuracy."""

    table: str  # "weight", "act" or "pruning"
    param: str
    values: tuple[float, ...]
    reference: float


def context_sensitivity(
    context: TrialContext,
    log: Callable[[str], None],
    run: Callable[[list[SensitivityJob]], list[list[float]]] | None = None,
) -> Sensitivity:
    """Measure the sensitivity of a study's teacher and space (its prepared context); ``run``
    spreads the jobs over the study's workers (``Executor.map`` with :func:`context_job`),
    else they run here, one after the other."""
    teacher, space = context.teacher_and_space()
    w = context.workload
    sens = measure_sensitivity(
        teacher, space, (w.x_val, w.y_val), w.x_calib, reduce_range=context.reduce_range, run=run
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


def context_job(context: TrialContext, job: SensitivityJob) -> list[float]:
    """What a worker runs: one job on the study's teacher, space and validation images."""
    teacher, space = context.teacher_and_space()
    w = context.workload
    return _losses(teacher, space, (w.x_val, w.y_val), w.x_calib, context.reduce_range, job)


def _base(space: JointSpace) -> dict[str, Any]:
    """No pruning, every unit at its most bits: what each part is compressed alone from."""
    q = space.quantization
    top_w = max(q.spec.weight_bits) if q else FLOAT_BITS
    top_a = max(q.spec.activation_bits) if q else FLOAT_BITS
    return space.uniform_params(0.0, top_w, top_a)


def _losses(
    teacher: nn.Module,
    space: JointSpace,
    val: tuple[torch.Tensor, torch.Tensor],
    calib: torch.Tensor,
    reduce_range: bool,
    job: SensitivityJob,
) -> list[float]:
    from spaces.distillation import accuracy
    from spaces.student import build_student

    base = _base(space)
    out = []
    for value in job.values:
        if job.table == "pruning":
            pruned = space.prune(teacher, space.decode({**base, job.param: value}))
            reestimate_batchnorm(pruned, calib)
            model = pruned
        else:
            student = build_student(teacher, {**base, job.param: int(value)}, space, calib=calib,
                                    reduce_range=reduce_range)
            assert student.model is not None
            model = student.model
        out.append(job.reference - accuracy(model, *val))
    return out


def measure_sensitivity(
    teacher: nn.Module,
    space: JointSpace,
    val: tuple[torch.Tensor, torch.Tensor],
    calib: torch.Tensor,
    *,
    reduce_range: bool,
    run: Callable[[list[SensitivityJob]], list[list[float]]] | None = None,
) -> Sensitivity:
    """Measure each unit's and each pruning param's accuracy loss alone (see the module doc),
    one :class:`SensitivityJob` per param: through ``run`` (on the workers), or here."""
    from spaces.distillation import accuracy
    from spaces.student import build_student

    start = time.perf_counter()
    x_val, y_val = val
    q = space.quantization
    base = _base(space)
    reference = accuracy(teacher, x_val, y_val)
    bits_reference = reference
    if q and {base[p] for p in q.distributions()} != {FLOAT_BITS}:  # without float: vs int8
        model = build_student(teacher, base, space, calib=calib, reduce_range=reduce_range).model
        assert model is not None
        bits_reference = accuracy(model, x_val, y_val)
    jobs = []
    for unit_params in (q.bit_units() if q else {}).values():
        for param, choices in unit_params.items():
            values = tuple(b for b in choices if b != base[param])
            if values:
                table = "weight" if param.startswith("wbits.") else "act"
                jobs.append(SensitivityJob(table, param, values, bits_reference))
    if space.pruning is not None:
        for param in space.pruning.distributions():
            jobs.append(SensitivityJob("pruning", param, space.pruning.grid[1:], reference))
    results = run(jobs) if run else [
        _losses(teacher, space, val, calib, reduce_range, job) for job in jobs
    ]
    unit_of = {p: u for u, ps in (q.bit_units() if q else {}).items() for p in ps}
    tables: dict[str, dict[str, dict[Any, float]]] = {"weight": {}, "act": {}, "pruning": {}}
    for job, losses in zip(jobs, results, strict=True):
        key = job.param if job.table == "pruning" else unit_of[job.param]
        row = tables[job.table].setdefault(key, {})
        for value, loss in zip(job.values, losses, strict=True):
            row[value if job.table == "pruning" else int(value)] = loss
    return Sensitivity(reference, tables["weight"], tables["act"], tables["pruning"],
                       time.perf_counter() - start)


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
