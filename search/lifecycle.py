"""A study's lifecycle: preparing a run, starting a study, resuming one.

:func:`prepare` loads what every trial shares (teacher, data subsets, teacher logits, target)
and resolves the budgets. :func:`start_study` checks that the budgets can be met at all,
creates the study with its record and enqueues feasible seeds; :func:`resume_prepared` keeps
the budgets the study was started with and fails the trials of a driver that died.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from search.budgets import MEASURED_COSTS, Budgets, cheapest_costs, require_reachable, teacher_costs
from search.errors import StudyError
from search.record import StudyRecord
from search.spec import COST_KEYS, Spec, spec_to_json
from search.trial import TrialContext

if TYPE_CHECKING:
    import optuna


@dataclass(frozen=True)
class Prepared:
    """What the driver builds once per run: the shared context plus the teacher's figures
    (validation accuracy and predicted costs)."""

    context: TrialContext
    teacher_record: dict[str, float]


def prepare(spec: Spec, log: Callable[[str], None]) -> Prepared:
    """Load the teacher, data and target; compute teacher logits, its figures and the budgets."""
    import targets
    from search.workloads import build_workload, load_data, load_teacher
    from spaces.distillation import accuracy

    t = time.perf_counter()
    target = targets.get(spec.target)
    teacher = load_teacher(spec)
    workload = build_workload(spec, teacher, load_data(spec.data))
    record = teacher_costs(teacher, spec, target)
    record["accuracy"] = accuracy(teacher, workload.x_val, workload.y_val, 512)
    margin = target.prediction_margin()
    budgets = Budgets.resolve(spec.constraints, record, margin=margin)
    log(
        f"teacher: val accuracy {record['accuracy']:.4f}, "
        + ", ".join(f"{k} {record[k]:.4g}" for k in COST_KEYS)
        + f"  ({time.perf_counter() - t:.1f} s to load)"
    )
    if budgets.limits:
        log("budgets: " + ", ".join(f"{k} <= {v:.4g}" for k, v in budgets.limits.items()))
        if any(k in budgets.limits for k in MEASURED_COSTS) and margin > 0:
            log(
                f"(latency and energy budgets lowered by {margin:.1%}, the {target.name} cost "
                "model's median error on held-out measurements)"
            )
    context = TrialContext(spec, workload, target, budgets, target.int8_reduce_range)
    return Prepared(context, record)


def start_study(
    spec: Spec, storage: str, name: str, *, log: Callable[[str], None]
) -> tuple[optuna.Study, Prepared]:
    """Create the study for a spec: check that the budgets can be met, enqueue feasible seeds."""
    from search import study as studies
    from search.seeding import feasible_seeds

    prepared = prepare(spec, log)
    ctx = prepared.context
    teacher, space = ctx.teacher_and_space()
    require_reachable(ctx.budgets, cheapest_costs(space, teacher, spec, ctx.target))
    seeds = feasible_seeds(space, teacher, spec, ctx.target, ctx.budgets, spec.search.seed_trials)
    study = studies.create(spec, storage, name)
    StudyRecord(
        spec_to_json(spec),
        prepared.teacher_record,
        ctx.budgets.as_dict(),
        int8_reduce_range=ctx.reduce_range,
    ).write(study)
    for params in seeds:
        study.enqueue_trial(params)
    log(f"study {name!r} in {storage}: {len(seeds)} feasible seed candidates enqueued")
    return study, prepared


def resume_prepared(study: optuna.Study, spec: Spec, *, log: Callable[[str], None]) -> Prepared:
    """Prepare a run of an existing study, with the teacher figures, budgets and weight range it
    started with (they were resolved against the teacher's costs then; a recalibrated target
    must not move them under the trials already told)."""
    from search.driver import fail_stale

    prepared = prepare(spec, log)
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
            ),
            dict(record.teacher) or prepared.teacher_record,
        )
    fail_stale(study, log)
    return prepared


def ensure_trials_left(done: int, target_done: int, name: str) -> None:
    if done >= target_done:
        raise StudyError(
            f"study {name!r} already has {done} finished trials of the "
            f"{target_done} its spec asked for; pass --trials N to run N more"
        )
