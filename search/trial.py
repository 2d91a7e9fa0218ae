"""One trial: the body that runs a candidate, the same in every executor.

``run_trial`` makes the student's architecture from the trial's params and prices it on the
target. A candidate over a budget stops there, in milliseconds with no training, and carries a
repaired, feasible neighbour for the driver to try next. Otherwise the student is built
(pruned, BN-folded, fake-quantized), fine-tuned with distillation (reporting validation
accuracy so the driver's stopper can end a bad trial early) and scored. Any exception becomes
a failed outcome with its reason, so the study goes on.
"""

from __future__ import annotations

import io
import math
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from search.budgets import Budgets, describe_excess
from search.errors import EdgetuneError
from search.record import Status
from search.spec import Spec

if TYPE_CHECKING:
    from torch import nn

    from search.workloads import Workload
    from spaces.joint import JointSpace
    from targets.base import Target

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


_SPACES: dict[str, tuple[nn.Module, JointSpace]] = {}


@dataclass(frozen=True)
class TrialTask:
    number: int
    params: dict[str, Any]


@dataclass(frozen=True)
class TrialOutcome:
    number: int
    status: Status
    accuracy: float | None = None
    costs: dict[str, float] = field(default_factory=dict)  # predicted on the target
    policy: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    timings_s: dict[str, float] = field(default_factory=dict)
    state_dict: bytes | None = None  # the fine-tuned student, for the artifact store
    repair: dict[str, Any] | None = None  # for an infeasible candidate: a feasible neighbour


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


def _run(
    context: TrialContext, task: TrialTask, report: Reporter, timings: dict[str, float]
) -> TrialOutcome:
    import torch

    from search.repair import repair_bits
    from spaces.distillation import FinetuneData, Stopped, accuracy, finetune
    from spaces.student import build_student, student_architecture

    spec, work, target = context.spec, context.workload, context.target
    torch.manual_seed(spec.search.seed + task.number)
    teacher, space = context.teacher_and_space()

    t = time.perf_counter()
    shape = student_architecture(teacher, task.params, space)
    costs = target.predict(shape.graph, shape.policy.bits).as_dict()
    timings["predict"] = time.perf_counter() - t
    broken = context.budgets.broken(costs)
    if broken:
        t = time.perf_counter()
        repaired, feasible = repair_bits(space, shape, target, context.budgets)
        timings["repair"] = time.perf_counter() - t
        return TrialOutcome(
            task.number,
            "infeasible",
            costs=costs,
            reason=f"over budget: {describe_excess(broken)}",
            policy=shape.summary(),
            timings_s=timings,
            repair=repaired if feasible else None,
        )

    t = time.perf_counter()
    student = build_student(
        teacher, task.params, space, calib=work.x_calib, reduce_range=context.reduce_range
    )
    assert student.model is not None  # build_student always quantizes
    data = FinetuneData(work.x_finetune, work.y_finetune, work.x_val, work.y_val)
    try:
        model = finetune(
            student.model, data, work.teacher_logits, student.policy.distillation, report=report
        )
    except Stopped as stop:
        timings["train"] = time.perf_counter() - t
        return TrialOutcome(
            task.number,
            "stopped",
            accuracy=stop.accuracy,
            costs=costs,
            policy=student.summary(),
            timings_s=timings,
            reason=f"stopped at step {stop.step}: validation accuracy "
            f"{stop.accuracy:.4f} below the median of earlier trials",
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
        policy=student.summary(),
        timings_s=timings,
        state_dict=buf.getvalue(),
    )
