"""One trial: the body that runs a candidate, the same in every executor.

``run_trial`` makes the student's architecture from the trial's params and prices it on the
target. A candidate clearly over a budget stops there, in milliseconds with no training, and
carries a repaired, feasible neighbour for the driver to try next. Otherwise the student is
built (pruned, BN-folded, fake-quantized). Where the target has a measurer, the untrained
student is exported to ONNX and measured on the device first (latency does not depend on the
weights' values): over budget, it stops there, in seconds; within, the measured latency is its
score. Then it is fine-tuned with distillation (reporting validation accuracy so the driver's
stopper can end a bad trial early) and scored. Any exception becomes a failed outcome with its
reason, so the study goes on.
"""

from __future__ import annotations

import functools
import io
import math
import time
import traceback
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from search.budgets import Budgets, describe_excess
from search.errors import EdgetuneError
from search.record import Status, scored_costs
from search.spec import Spec

if TYPE_CHECKING:
    from torch import nn

    from search.sensitivity import Sensitivity
    from search.workloads import Workload
    from search.workloads.augment import Augment
    from spaces.joint import JointSpace
    from spaces.student import Student
    from targets.base import Target
    from targets.measurer import Measurer

Reporter = Callable[[int, float], bool]
"""(fine-tune step, validation accuracy) -> keep going?"""


@dataclass(frozen=True)
class TrialContext:
    """What every trial of a study shares; sent to the workers once."""

    spec: Spec
    workload: Workload
    target: Target
    budgets: Budgets
    reduce_range: bool  # 8-bit weights in ±63 (the study's, see StudyRecord.int8_reduce_range)
    measurer: Measurer | None = None  # candidates are measured on the device before training
    teacher_onnx: bytes | None = None  # measured beside each candidate, in the same run
    sensitivity: Sensitivity | None = None  # the study's accuracy prior of the repair
    key: str = field(default_factory=lambda: uuid.uuid4().hex)  # one per driver run

    def teacher_and_space(self) -> tuple[nn.Module, JointSpace]:
        """The teacher and its search space, built once per worker process and reused."""
        cached = _SPACES.get(self.key)
        if cached is None:
            teacher = self.workload.teacher()
            cached = (teacher, space_for(self.spec, teacher))
            _SPACES.clear()  # a worker serves one study at a time
            _SPACES[self.key] = cached
        return cached

    def screening(self, underestimates: Sequence[float] = ()) -> Budgets:
        """The budgets proposals are screened against before they are measured: the latency
        share lowered by the cost model's ``underestimates`` on the study's measured
        candidates, and at least by the target's held-out error (:meth:`Budgets.screening`)."""
        return self.budgets.screening(underestimates, prior=self.target.prediction_margin())

    def augmentation(self) -> Augment | None:
        """The function ``data.augment`` names (None for null), resolved and tried once per
        worker process (:func:`~search.workloads.augment.resolve_augment`)."""
        from search.workloads.augment import resolve_augment

        key = (self.key, self.spec.data.augment, tuple(self.spec.model.input_shape))
        if key not in _AUGMENTS:
            fn = resolve_augment(self.spec.data, self.spec.model.input_shape)
            _AUGMENTS.clear()  # a worker serves one study at a time
            _AUGMENTS[key] = fn
        return _AUGMENTS[key]


_SPACES: dict[str, tuple[nn.Module, JointSpace]] = {}
_AUGMENTS: dict[tuple[str, str | None, tuple[int, ...]], Augment | None] = {}


@dataclass(frozen=True)
class TrialTask:
    number: int
    params: dict[str, Any]
    target: Target | None = None  # the target refitted during the study, if it was
    # predicted costs from the driver's screening (same params, same target), and its
    # timings: the trial does not price them again
    costs: dict[str, float] | None = None
    timings_s: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class TrialOutcome:
    number: int
    status: Status
    accuracy: float | None = None
    costs: dict[str, float] = field(default_factory=dict)  # predicted on the target
    measured: dict[str, Any] = field(default_factory=dict)  # measured on the device, if it was
    policy: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    timings_s: dict[str, float] = field(default_factory=dict)
    state_dict: bytes | None = None  # the fine-tuned student, for the artifact store
    repair: dict[str, Any] | None = None  # for an infeasible candidate: a feasible neighbour
    provenance: dict[str, Any] = field(default_factory=dict)  # what the figures came from
    onnx: bytes | None = None  # the measured model, a calibration row for the target's refit



def failed_outcome(task: TrialTask, reason: str) -> TrialOutcome:
    return TrialOutcome(number=task.number, status="failed", reason=reason)


def space_for(spec: Spec, teacher: nn.Module) -> JointSpace:
    """The joint search space of a spec, for its teacher."""
    from spaces.joint import JointSpace

    return JointSpace(teacher, spec.model.input_shape, spec.space, batch_size=spec.data.batch_size)


def run_trial(context: TrialContext, task: TrialTask, report: Reporter) -> TrialOutcome:
    """One candidate, start to end. Never raises: a failure is a failed outcome with its reason."""
    timings: dict[str, float] = {}
    start = time.perf_counter()
    try:
        return _run(context, task, report, timings)
    except EdgetuneError as exc:
        return TrialOutcome(task.number, "failed", reason=str(exc), timings_s=timings)
    except Exception as exc:  # a trial's crash must not end the study; its reason is recorded
        where = traceback.extract_tb(exc.__traceback__)[-1]
        return TrialOutcome(
            task.number,
            "failed",
            timings_s=timings,
            reason=f"{type(exc).__name__}: {exc} (at {where.filename}:{where.lineno})",
        )
    finally:
        timings["total"] = time.perf_counter() - start


CLEAR_EXCESS = 0.10
"""With a measurer, a candidate predicted over its latency budget by less than this (or twice
the target's prediction margin, if larger) is measured rather than ruled out."""


def _clearly_broken(
    context: TrialContext, target: Target, broken: Mapping[str, float]
) -> dict[str, float]:
    """The broken budgets that rule a candidate out without measuring it."""
    if context.measurer is None:
        return dict(broken)
    doubt = max(CLEAR_EXCESS, 2 * target.prediction_margin())
    return {k: v for k, v in broken.items() if not (k == "latency_ms" and v <= doubt)}


@dataclass(frozen=True)
class Screened:
    """A proposal priced on the cost model: its architecture, predicted costs and, when the
    prediction rules it out clearly, its infeasible outcome (without a repair yet)."""

    shape: Student
    costs: dict[str, float]
    ruled_out: TrialOutcome | None


def screen(context: TrialContext, task: TrialTask, timings: dict[str, float]) -> Screened:
    """Price a proposal on its layer graph only, in a fraction of a second: the driver screens
    each one this way before a worker sees it (a trial given no costs screens itself)."""
    from spaces.student import student_architecture

    target = task.target or context.target
    teacher, space = context.teacher_and_space()
    t = time.perf_counter()
    shape = student_architecture(teacher, task.params, space)
    costs = target.predict(shape.graph, shape.policy.bits).as_dict()
    timings["predict"] = time.perf_counter() - t
    broken = _clearly_broken(context, target, context.budgets.broken(costs))
    if not broken:
        return Screened(shape, costs, None)
    outcome = TrialOutcome(
        task.number,
        "infeasible",
        costs=costs,
        reason=f"over budget (predicted): {describe_excess(broken)}",
        policy=shape.summary(),
        timings_s=timings,
        provenance=trial_provenance(context, target),
    )
    return Screened(shape, costs, outcome)


def repaired_neighbour(
    context: TrialContext,
    target: Target,
    shape: Student,
    timings: dict[str, float],
    budgets: Budgets,
) -> dict[str, Any] | None:
    """The params of the feasible neighbour of a ruled-out candidate (its bits repaired on the
    cost model within ``budgets``, the screening's), or None when the repair finds none."""
    from search.repair import repair_bits

    t = time.perf_counter()
    _, space = context.teacher_and_space()
    repaired, feasible = repair_bits(
        space, shape, target, budgets, sensitivity=context.sensitivity
    )
    timings["repair"] = time.perf_counter() - t
    return repaired if feasible else None


def _run(
    context: TrialContext, task: TrialTask, report: Reporter, timings: dict[str, float]
) -> TrialOutcome:
    import torch

    from spaces.distillation import FinetuneData, Stopped, accuracy, finetune
    from spaces.student import build_student

    spec, work = context.spec, context.workload
    target = task.target or context.target
    torch.manual_seed(spec.search.seed + task.number)
    teacher, space = context.teacher_and_space()
    augment = context.augmentation()  # a bad data.augment fails every trial: fail it first

    costs = task.costs
    timings.update(task.timings_s)
    if costs is None:
        screened = screen(context, task, timings)
        costs = screened.costs
        if screened.ruled_out is not None:
            repair = (repaired_neighbour(context, target, screened.shape, timings,
                                         context.screening())
                      if spec.search.feasible_sampling else None)
            return replace(screened.ruled_out, repair=repair)
    provenance = trial_provenance(context, target)

    t = time.perf_counter()
    student = build_student(
        teacher, task.params, space, calib=work.x_calib, reduce_range=context.reduce_range
    )
    assert student.model is not None  # build_student always quantizes
    timings["build"] = time.perf_counter() - t
    measured: dict[str, Any] = {}
    onnx_bytes = None
    if context.measurer is not None:
        from search.onnx_export import onnx_bytes as serialized

        t = time.perf_counter()
        onnx_bytes = serialized(student.model, spec.model.input_shape)
        measured = measure_beside_teacher(context.measurer, onnx_bytes, context.teacher_onnx)
        timings["measure"] = time.perf_counter() - t
        over = context.budgets.broken(scored_costs(costs, measured))
        if over:
            return TrialOutcome(
                task.number,
                "infeasible",
                costs=costs,
                measured=measured,
                reason=f"over budget (measured): {describe_excess(over)}; latency measured "
                f"{measured['latency_ms']:.4g} ms, predicted {costs['latency_ms']:.4g} ms",
                policy=student.summary(),
                timings_s=timings,
                provenance=provenance,
                onnx=onnx_bytes,
            )

    t = time.perf_counter()
    data = FinetuneData(work.x_finetune, work.y_finetune, work.x_val, work.y_val)
    try:
        model = finetune(
            student.model,
            data,
            work.teacher_logits,
            student.policy.distillation,
            report=report,
            augment=augment,
            teacher=teacher,
        )
    except Stopped as stop:
        timings["train"] = time.perf_counter() - t
        return TrialOutcome(
            task.number,
            "stopped",
            accuracy=stop.accuracy,
            costs=costs,
            measured=measured,
            policy=student.summary(),
            timings_s=timings,
            reason=f"stopped at step {stop.step}: validation accuracy "
            f"{stop.accuracy:.4f} below the median of earlier trials",
            provenance=provenance,
            onnx=onnx_bytes,
        )
    timings["train"] = time.perf_counter() - t
    t = time.perf_counter()
    val_accuracy = accuracy(model, work.x_val, work.y_val, work.batch_size * 4)
    timings["eval"] = time.perf_counter() - t
    if not math.isfinite(val_accuracy):
        raise EdgetuneError(f"validation accuracy is {val_accuracy}")
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return TrialOutcome(
        task.number,
        "complete",
        accuracy=val_accuracy,
        costs=costs,
        measured=measured,
        policy=student.summary(),
        timings_s=timings,
        state_dict=buf.getvalue(),
        provenance=provenance,
        onnx=onnx_bytes,
    )


def measure_beside_teacher(
    measurer: Measurer, onnx_bytes: bytes, teacher_onnx: bytes | None
) -> dict[str, Any]:
    """A candidate's measurement, with the teacher measured in the same run (interleaved) and
    the ratio of the two: raw figures, and a ratio that the machine's speed does not move."""
    if teacher_onnx is None:
        (result,) = measurer.measure([onnx_bytes])
        return result.as_dict()
    candidate, teacher = measurer.measure([onnx_bytes, teacher_onnx])
    return {
        **candidate.as_dict(),
        "teacher_latency_ms": teacher.latency_ms,
        "ratio_to_teacher": candidate.latency_ms / teacher.latency_ms,
    }


def trial_provenance(context: TrialContext, target: Target) -> dict[str, Any]:
    """What a trial's figures came from: the target's calibration, where it was measured, the
    worker's CPU and the library versions."""
    calibration = target.provenance
    return {
        "target": target.name,
        "calibration": {"date": calibration.date, "source": calibration.source},
        "measured_on": context.measurer.where if context.measurer else None,
        **_worker_machine(),
    }


@functools.cache
def _worker_machine() -> dict[str, Any]:
    """The worker's CPU and library versions: read once per process, not once per trial (a
    trial the cost model rules out takes milliseconds)."""
    import onnxruntime
    import torch

    from targets.agent import device_info
    from targets.host import cpu_flags_digest

    return {
        "worker_cpu": device_info(threads=1).get("cpu_model"),
        "worker_cpu_flags": cpu_flags_digest(),
        "onnxruntime": onnxruntime.__version__,
        "torch": torch.__version__,
    }
