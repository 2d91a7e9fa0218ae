"""Evaluating one candidate: the body of a trial, the same in every executor.

``run_trial`` follows DESIGN.md's flow: prune the teacher, read the student's layer graph,
predict its costs on the target, and stop there (in milliseconds, with no training) when a
budget is broken. Otherwise quantize, fine-tune with distillation (reporting validation
accuracy so the driver's stopper can end a bad trial) and evaluate. Any exception becomes a
failed outcome with its reason, so the study goes on.
"""

from __future__ import annotations

import io
import math
import time
import traceback
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from search.errors import EdgetuneError
from search.spec import Spec

if TYPE_CHECKING:
    import torch
    from torch import nn

    from cost_models.graph import Costs, LayerGraph
    from search.workload import Workload
    from spaces.joint import JointSpace, Policy
    from targets.base import Target

Status = Literal["complete", "infeasible", "stopped", "failed"]
Reporter = Callable[[int, float], bool]


@dataclass(frozen=True)
class TrialContext:
    """What every trial of a study shares; sent to the workers once."""

    spec: Spec
    workload: Workload
    target: Target
    budgets: dict[str, float]  # absolute budgets, keyed by cost name
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
    costs: dict[str, float] = field(default_factory=dict)
    policy: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    timings_s: dict[str, float] = field(default_factory=dict)
    state_dict: bytes | None = None  # the fine-tuned student, for the artifact store
    repair: dict[str, Any] | None = None  # for an infeasible candidate: a feasible neighbour


def failed_outcome(task: TrialTask, reason: str) -> TrialOutcome:
    return TrialOutcome(number=task.number, status="failed", reason=reason)


def over_budget(costs: Mapping[str, float], budgets: Mapping[str, float]) -> dict[str, float]:
    """Each broken budget with its relative excess, e.g. ``{"latency_ms": 0.25}`` = 25% over."""
    return {k: costs[k] / b - 1.0 for k, b in budgets.items() if k in costs and costs[k] > b}


def constraint_values(costs: Mapping[str, float], budgets: Mapping[str, float]) -> dict[str, float]:
    """Optuna constraint values (<= 0 is feasible): the relative excess over each budget."""
    return {k: costs[k] / b - 1.0 for k, b in budgets.items() if k in costs}


def space_for(spec: Spec, teacher: nn.Module) -> JointSpace:
    from spaces.joint import JointSpace

    return JointSpace(teacher, spec.model.input_shape, spec.space, batch_size=spec.data.batch_size)


def quantize(pruned: nn.Module, policy: Policy, x_calib: torch.Tensor, target: Target) -> nn.Module:
    """The fake-quantized student, with the target's int8 weight range."""
    from spaces.quantization import apply

    return apply(pruned, policy.bits, x_calib, reduce_range=target.int8_reduce_range)


def predict_candidate(
    space: JointSpace,
    teacher: nn.Module,
    params: Mapping[str, Any],
    target: Target,
    input_shape: tuple[int, int, int],
) -> tuple[nn.Module, Policy, LayerGraph, Costs]:
    """Prune the teacher as ``params`` say and predict the student's costs on ``target``."""
    from cost_models import from_torch

    policy = space.decode(dict(params))
    pruned = space.prune(teacher, policy)
    graph = from_torch(pruned, input_shape)
    return pruned, policy, graph, target.predict(graph, policy.bits)


def _policy_summary(policy: Policy, student: nn.Module) -> dict[str, Any]:
    from dataclasses import asdict

    from spaces.pruning import kept_channels

    return {
        "bits": {k: [p.weight_bits, p.act_bits] for k, p in policy.bits.items()},
        "kept_channels": kept_channels(student),
        "pruning_ratios": dict(policy.ratios),
        "distillation": {
            k: v
            for k, v in asdict(policy.distillation).items()
            if k in ("temperature", "alpha", "lr", "steps")
        },
    }


def run_trial(context: TrialContext, task: TrialTask, report: Reporter) -> TrialOutcome:
    """One candidate, start to end. Never raises: a failure is a failed outcome with its reason."""
    timings: dict[str, float] = {}
    start = time.perf_counter()
    try:
        import torch

        from spaces.distillation import FinetuneData, Stopped, evaluate, finetune

        spec, work = context.spec, context.workload
        torch.manual_seed(spec.search.seed + task.number)
        teacher, space = context.teacher_and_space()
        pruned, policy, graph, predicted = predict_candidate(
            space, teacher, task.params, context.target, spec.model.input_shape
        )
        costs = predicted.as_dict()
        timings["predict"] = time.perf_counter() - start
        broken = over_budget(costs, context.budgets)
        if broken:
            from search.seeding import descend_bits

            worst = ", ".join(f"{k} {v:+.0%}" for k, v in broken.items())
            repaired, feasible = descend_bits(
                space, graph, dict(task.params), context.target, context.budgets
            )
            timings["repair"] = time.perf_counter() - start - timings["predict"]
            return TrialOutcome(
                task.number,
                "infeasible",
                costs=costs,
                reason=f"over budget: {worst}",
                policy=_policy_summary(policy, pruned),
                timings_s=timings,
                repair=repaired if feasible else None,
            )
        t = time.perf_counter()
        student = quantize(pruned, policy, work.x_calib, context.target)
        data = FinetuneData(work.x_finetune, work.y_finetune, work.x_val, work.y_val)
        try:
            student = finetune(
                student, data, work.teacher_logits, policy.distillation, report=report
            )
        except Stopped as stop:
            timings["train"] = time.perf_counter() - t
            return TrialOutcome(
                task.number,
                "stopped",
                accuracy=stop.accuracy,
                costs=costs,
                policy=_policy_summary(policy, pruned),
                timings_s=timings,
                reason=f"stopped at step {stop.step}: validation accuracy "
                f"{stop.accuracy:.4f} below the median of earlier trials",
            )
        timings["train"] = time.perf_counter() - t
        t = time.perf_counter()
        accuracy = evaluate(student, work.x_val, work.y_val, work.batch_size * 4)
        timings["eval"] = time.perf_counter() - t
        if not math.isfinite(accuracy):
            raise EdgetuneError(f"validation accuracy is {accuracy}")
        buf = io.BytesIO()
        torch.save(student.state_dict(), buf)
        timings["total"] = time.perf_counter() - start
        return TrialOutcome(
            task.number,
            "complete",
            accuracy=accuracy,
            costs=costs,
            policy=_policy_summary(policy, pruned),
            timings_s=timings,
            state_dict=buf.getvalue(),
        )
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
