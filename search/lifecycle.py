"""A study's lifecycle: preparing a run, starting a study, resuming one.

:func:`prepare` loads what every trial shares (teacher, data subsets, teacher logits, target)
and resolves the budgets. :func:`start_study` checks that the budgets can be met at all,
creates the study with its record and enqueues feasible seeds; :func:`resume_prepared` keeps
the budgets the study was started with and fails the trials of a driver that died.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from search.budgets import (
    MEASURED_COSTS,
    Budgets,
    cheapest_costs,
    corner_params,
    require_reachable,
    teacher_costs,
)
from search.errors import SpecError, StudyError
from search.onnx_export import onnx_bytes
from search.record import StudyRecord
from search.sensitivity import (
    SensitivityJob,
    context_job,
    context_sensitivity,
    store_sensitivity,
    stored_sensitivity,
)
from search.spec import COST_KEYS, Spec, spec_to_json
from search.trial import TrialContext

if TYPE_CHECKING:
    import optuna

    from search.executors import Executor
    from search.workloads.objects import Objects
    from targets.base import Target
    from targets.measurer import Measurer


@dataclass(frozen=True)
class Prepared:
    """What the driver builds once per run: the shared context plus the teacher's figures
    (validation accuracy and predicted costs)."""

    context: TrialContext
    teacher_record: dict[str, float]


def choose_measurer(spec: Spec, target: Target) -> Measurer | None:
    """The target's measurer as ``search.measure`` asks: none for ``never``; for ``always``, an
    error when the target has none."""
    from targets.measurer import measurer_for

    if spec.search.measure == "never":
        return None
    measurer = measurer_for(target)
    if measurer is None and spec.search.measure == "always":
        raise SpecError(
            f"search.measure: always, but target {target.name!r} has no measurer (it is not "
            "this machine and its file names no agent server); set search.measure to auto or "
            "never, or register the device's agent (README: A device in the loop)"
        )
    return measurer


def measure_latency_ms(measurer: Measurer, models: list[bytes]) -> list[float]:
    """Latency of each ONNX model on the measurer's device, in one interleaved run."""
    return [r.latency_ms for r in measurer.measure(models, seconds=4.0, min_runs=200)]


def prepare(spec: Spec, log: Callable[[str], None], objects: Objects | None = None) -> Prepared:
    """Load the teacher, data and target (the model and data from ``objects`` where the spec
    says so); cut the space to the precisions the target prices; compute teacher logits, its
    figures and the budgets.

    With a measurer, the teacher is measured on the device, and relative latency budgets are
    shares of that measurement (the teacher record keeps the prediction beside it)."""
    import targets
    from search.precision import restrict_to_target
    from search.workloads import build_workload, load_data, load_teacher
    from search.workloads.augment import resolve_augment
    from spaces.distillation import accuracy

    t = time.perf_counter()
    target = targets.get(spec.target)
    restriction = restrict_to_target(spec, target)
    spec = restriction.spec
    for note in restriction.notes:
        log(f"space: {note}")
    measurer = choose_measurer(spec, target)
    resolve_augment(spec.data, spec.model.input_shape)  # a bad data.augment stops it here
    teacher = load_teacher(spec, objects)
    given = objects.data if objects else None
    workload = build_workload(spec, teacher, load_data(spec.data, spec.model, given))
    predicted = teacher_costs(teacher, spec, target)
    record = dict(predicted)
    record["accuracy"] = accuracy(teacher, workload.x_val, workload.y_val)
    measured: dict[str, float] = {}
    teacher_onnx = None
    if measurer is not None:
        teacher_onnx = onnx_bytes(teacher, spec.model.input_shape)
        (measured["latency_ms"],) = measure_latency_ms(measurer, [teacher_onnx])
        record["latency_ms"] = measured["latency_ms"]
        record["latency_ms_predicted"] = predicted["latency_ms"]
    margin = target.prediction_margin()
    budgets = Budgets.resolve(spec.constraints, predicted, margin=margin, measured=measured)
    log(
        f"teacher: val accuracy {record['accuracy']:.4f}, "
        + ", ".join(f"{k} {record[k]:.4g}" for k in COST_KEYS)
        + (
            f" (latency measured on {measurer.where}; predicted {predicted['latency_ms']:.4g})"
            if measurer
            else ""
        )
        + f"  ({time.perf_counter() - t:.1f} s to load)"
    )
    if budgets.limits:
        log("budgets: " + ", ".join(f"{k} <= {v:.4g}" for k, v in budgets.limits.items()))
        lowered = [k for k in MEASURED_COSTS if k in budgets.limits and k not in measured]
        if lowered and margin > 0:
            log(
                f"({' and '.join(lowered)} lowered by {margin:.1%}, the {target.name} cost "
                "model's median error on held-out measurements)"
            )
    context = TrialContext(
        spec, workload, target, budgets, target.int8_reduce_range, measurer, teacher_onnx
    )
    return Prepared(context, record)


def cheapest_scored(prepared: Prepared) -> dict[str, float]:
    """Each cost's lowest value over the cheapest corners of the space: predicted, and with a
    measurer the corners' latency measured (a cost model can be wrong exactly there)."""
    ctx = prepared.context
    teacher, space = ctx.teacher_and_space()
    cheapest = cheapest_costs(space, teacher, ctx.spec, ctx.target)
    if ctx.measurer is not None and ctx.teacher_onnx is not None:
        from spaces.student import build_student

        corners = []
        for p in corner_params(space, ctx.spec):
            model = build_student(
                teacher, p, space, calib=ctx.workload.x_calib, reduce_range=ctx.reduce_range
            ).model
            assert model is not None
            corners.append(onnx_bytes(model, ctx.spec.model.input_shape))
        *latencies, teacher_ms = measure_latency_ms(ctx.measurer, [*corners, ctx.teacher_onnx])
        cheapest["latency_ms"] = min(latencies)
        cheapest["latency_ratio"] = min(latencies) / teacher_ms
    return cheapest


def start_study(
    spec: Spec,
    storage: str,
    name: str,
    *,
    log: Callable[[str], None],
    objects: Objects | None = None,
    executor: Executor | None = None,
) -> tuple[optuna.Study, Prepared]:
    """Create the study for a spec: check that the budgets can be met, measure the teacher's
    sensitivity (on ``executor``'s workers when given) if the study uses it, enqueue feasible
    seeds."""
    from search import study as studies
    from search.seeding import SEED, feasible_seeds

    studies.require_new(studies.storage_for(storage), storage, name)  # before loading anything
    prepared = prepare(spec, log, objects)
    ctx = prepared.context
    spec = ctx.spec  # cut to the precisions the target prices
    teacher, space = ctx.teacher_and_space()
    require_reachable(ctx.budgets, cheapest_scored(prepared))
    sensitivity = (context_sensitivity(ctx, log, _on_workers(executor, ctx))
                   if uses_sensitivity(spec) else None)
    prepared = Prepared(replace(ctx, sensitivity=sensitivity), prepared.teacher_record)
    # aimed below a latency share by the cost model's held-out error: nothing is measured yet
    seeds = feasible_seeds(space, teacher, spec, ctx.target, ctx.screening(),
                           spec.search.seed_trials, sensitivity=sensitivity)
    study = studies.create(spec, storage, name)
    StudyRecord(
        spec_to_json(spec),
        prepared.teacher_record,
        ctx.budgets.as_dict(),
        int8_reduce_range=ctx.reduce_range,
    ).write(study)
    if sensitivity is not None:
        store_sensitivity(study, sensitivity)
    for params in seeds:
        study.enqueue_trial(params, user_attrs={SEED: True})
    log(f"study {name!r} in {storage}: {len(seeds)} feasible seed candidates enqueued")
    return study, prepared


def resume_prepared(
    study: optuna.Study,
    spec: Spec,
    *,
    log: Callable[[str], None],
    objects: Objects | None = None,
    executor: Executor | None = None,
) -> Prepared:
    """Prepare a run of an existing study, with the teacher figures, budgets and weight range it
    started with (they were resolved against the teacher's costs then; a recalibrated target
    must not move them under the trials already told)."""
    from search.driver import fail_stale

    prepared = prepare(spec, log, objects)
    record = StudyRecord.read(study)
    if record is not None:
        ctx = prepared.context
        prepared = Prepared(
            TrialContext(
                ctx.spec,
                ctx.workload,
                ctx.target,
                record.budgets_for(spec) if record.budgets else ctx.budgets,
                ctx.reduce_range if record.int8_reduce_range is None else record.int8_reduce_range,
                ctx.measurer,
                ctx.teacher_onnx,
            ),
            dict(record.teacher) or prepared.teacher_record,
        )
    fail_stale(study, log)
    ctx = prepared.context
    sensitivity = stored_sensitivity(study)
    if sensitivity is None and uses_sensitivity(spec):  # a study of an earlier release
        sensitivity = store_sensitivity(
            study, context_sensitivity(ctx, log, _on_workers(executor, ctx)))
    return Prepared(replace(ctx, sensitivity=sensitivity), prepared.teacher_record)


def uses_sensitivity(spec: Spec) -> bool:
    """Whether a study needs its teacher's sensitivity: for its seeds, or to repair proposals
    over budget. Plain sampling with no seeds (a random-search baseline) does not measure it."""
    return spec.search.seed_trials > 0 or spec.search.feasible_sampling


def _on_workers(
    executor: Executor | None, context: TrialContext
) -> Callable[[list[SensitivityJob]], list[list[float]]] | None:
    """The sensitivity's jobs spread over ``executor``'s workers (None: run them here)."""
    if executor is None:
        return None
    return lambda jobs: executor.map(context_job, context, jobs)


def ensure_trials_left(done: int, target_done: int, name: str) -> None:
    if done >= target_done:
        raise StudyError(
            f"study {name!r} already has {done} finished trials of the "
            f"{target_done} its spec asked for; pass --trials N to run N more"
        )
