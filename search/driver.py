"""The driver: asks the study for candidates, hands them to an executor, tells the results.

It is the only process that writes to the study, so a crash of a worker loses one trial (which
is retried), and a crash of the driver loses nothing that was told. On a new study it first
enqueues a few candidates the cost model predicts to be feasible, so even a short search ends
with a feasible model.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from search.errors import InfeasibleSpecError, StudyError
from search.evaluate import (
    TrialContext,
    TrialOutcome,
    TrialTask,
    constraint_values,
    over_budget,
    predict_candidate,
)
from search.seeding import feasible_seeds
from search.spec import COST_KEYS, Spec

if TYPE_CHECKING:
    import optuna
    from torch import nn

    from search.executors import Executor
    from spaces.joint import JointSpace
    from targets.base import Target


@dataclass(frozen=True)
class Prepared:
    """What the driver builds once per run: the shared context plus the teacher's figures."""

    context: TrialContext
    teacher_record: dict[str, float]


def teacher_costs(teacher: nn.Module, spec: Spec, target: Target) -> dict[str, float]:
    from cost_models import from_torch

    return target.predict(from_torch(teacher, spec.model.input_shape), {}).as_dict()


MEASURED_COSTS = ("latency_ms", "energy_mj")  # fitted to measurements; the others are exact


def resolve_budgets(spec: Spec, teacher: dict[str, float], margin: float = 0.0) -> dict[str, float]:
    """Absolute budgets: relative ones against the teacher's predicted costs, and latency and
    energy lowered by the target's prediction ``margin`` (its held-out median error)."""
    return {
        k: b.resolve(teacher[k]) * (1.0 - margin if k in MEASURED_COSTS else 1.0)
        for k, b in spec.constraints.budgets().items()
    }


def prepare(spec: Spec, log: Callable[[str], None]) -> Prepared:
    """Load the teacher, data and target; compute teacher logits and the teacher's figures."""
    import targets
    from search.workload import build_workload, load_data, load_teacher
    from spaces.distillation import evaluate

    t = time.perf_counter()
    target = targets.get(spec.target)
    teacher = load_teacher(spec)
    data = load_data(spec.data)
    workload = build_workload(spec, teacher, data)
    record = teacher_costs(teacher, spec, target)
    record["accuracy"] = evaluate(teacher, workload.x_val, workload.y_val, 512)
    budgets = resolve_budgets(spec, record, target.prediction_margin())
    log(
        f"teacher: val accuracy {record['accuracy']:.4f}, "
        + ", ".join(f"{k} {record[k]:.4g}" for k in COST_KEYS)
        + f"  ({time.perf_counter() - t:.1f} s to load)"
    )
    if budgets:
        log("budgets: " + ", ".join(f"{k} <= {v:.4g}" for k, v in budgets.items()))
        if any(k in budgets for k in MEASURED_COSTS) and target.prediction_margin() > 0:
            log(
                f"(latency and energy budgets lowered by {target.prediction_margin():.1%}, the "
                f"{target.name} cost model's median error on held-out measurements)"
            )
    return Prepared(TrialContext(spec, workload, target, budgets), record)


def corner_params(
    space: JointSpace, spec: Spec, ratio: float | None = None
) -> list[dict[str, Any]]:
    """Uniform candidates at one pruning ratio (default: the largest), one per bit setting."""
    q, p = spec.space.quantization, spec.space.pruning
    r = ratio if ratio is not None else (p.max_ratio if p else 0.0)
    wbits = q.weight_bits if q else (32,)
    abits = q.activation_bits if q else (32,)
    return [space.uniform_params(r, w, a) for w in wbits for a in abits]


def cheapest_costs(
    space: JointSpace, teacher: nn.Module, spec: Spec, target: Target
) -> dict[str, float]:
    """Each cost's lowest prediction over the cheapest corners of the space: the most pruning,
    at every uniform bit setting (fewest bits is not always fastest: on a CPU without fast
    int4 kernels, 4-bit weights run slower than 8-bit or float)."""
    best: dict[str, float] = {}
    for params in corner_params(space, spec):
        *_, costs = predict_candidate(space, teacher, params, target, spec.model.input_shape)
        for key, value in costs.as_dict().items():
            best[key] = min(value, best.get(key, value))
    return best


def check_reachable(budgets: dict[str, float], cheapest: dict[str, float]) -> None:
    broken = over_budget(cheapest, budgets)
    if broken:
        parts = [
            f"{k}: the cheapest candidate predicts {cheapest[k]:.4g}, {v:.0%} over the budget "
            f"{budgets[k]:.4g}"
            for k, v in broken.items()
        ]
        raise InfeasibleSpecError(
            "no candidate can meet the budgets: "
            + "; ".join(parts)
            + "; loosen the budget or widen the space"
        )


class Progress:
    """A one-line progress bar on stderr: trials done, feasible, best accuracy, elapsed."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled = total, enabled
        self.start = time.monotonic()
        self.tty = sys.stderr.isatty()

    def update(
        self,
        done: int,
        feasible: int,
        best: float | None,
        running: int,
        infeasible: int,
        last: str = "",
    ) -> None:
        if not self.enabled:
            return
        width = 24
        filled = int(width * min(done, self.total) / max(self.total, 1))
        el = int(time.monotonic() - self.start)
        best_s = f"{best:.4f}" if best is not None else "-"
        line = (
            f"[{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} trained | "
            f"feasible {feasible} | best acc {best_s} | running {running} | "
            f"ruled out {infeasible} | "
            f"{el // 60:02d}:{el % 60:02d} elapsed"
        )
        if self.tty:
            sys.stderr.write("\r" + line + "\033[K")
            if last:
                sys.stderr.write(f"\n  {last}\n")
        else:
            sys.stderr.write(line + (f"  <- {last}" if last else "") + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            sys.stderr.write("\n")


def trained_count(study: optuna.Study) -> int:
    """Trials that trained to the end or were stopped early. Infeasible candidates, which the
    cost model ruled out in milliseconds with no training, do not count toward ``trials``."""
    from optuna.trial import TrialState

    return sum(
        t.state == TrialState.PRUNED or t.user_attrs.get("status") != "infeasible"
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    )


def _infeasible_cap(target_done: int) -> int:
    """How many predicted-infeasible candidates a run may try before it gives up."""
    return 20 * target_done + 100


class Heartbeat:
    """Records a heartbeat for every trial this driver runs, from a background thread.

    When the driver dies, its trials stop beating; ``optuna.storages.fail_stale_trials`` (run
    by every driver of the study) then marks them failed and enqueues their parameters again.
    """

    def __init__(self, study: optuna.Study, running: dict[int, optuna.trial.Trial]) -> None:
        import threading

        self.study, self.running = study, running
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="edgetune-heartbeat", daemon=True)

    def beat(self) -> None:
        storage = self.study._storage
        for trial in list(self.running.values()):
            storage.record_heartbeat(trial._trial_id)  # type: ignore[attr-defined]

    def _loop(self) -> None:
        from search.study import HEARTBEAT_S

        while not self._stop.wait(HEARTBEAT_S):
            self.beat()

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def fail_stale(study: optuna.Study, log: Callable[[str], None]) -> None:
    """Fail the trials of drivers that stopped beating, and enqueue them again (once)."""
    from optuna.storages import fail_stale_trials
    from optuna.trial import TrialState

    before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    fail_stale_trials(study)
    after = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    if before - after:
        log(f"trials {sorted(before - after)} lost their driver: marked failed, enqueued again")


class Driver:
    """Runs trials of one study until it has ``target_done`` trained trials or time runs out."""

    def __init__(
        self,
        study: optuna.Study,
        prepared: Prepared,
        executor: Executor,
        *,
        log: Callable[[str], None],
        progress: bool,
    ) -> None:
        self.study, self.prepared, self.executor = study, prepared, executor
        self.spec = prepared.context.spec
        self.log = log
        self.progress_enabled = progress
        self.running: dict[int, optuna.trial.Trial] = {}
        self.driver_s: dict[int, float] = {}
        self.space: JointSpace | None = None

    # -- callbacks from the executor -------------------------------------------------------
    def on_progress(self, number: int, step: int, accuracy: float) -> bool:
        trial = self.running.get(number)
        if trial is None or self.spec.multi_objective:
            return True
        trial.report(accuracy, step)
        return not trial.should_prune()

    # -- telling ---------------------------------------------------------------------------
    def tell(self, outcome: TrialOutcome) -> str:
        from optuna.trial import TrialState

        start = time.perf_counter()
        trial = self.running.pop(outcome.number)
        budgets = self.prepared.context.budgets
        for key in ("status", "reason"):
            value = getattr(outcome, key)
            if value:
                trial.set_user_attr(key, value)
        for key, value in outcome.costs.items():
            trial.set_user_attr(key, value)
        if outcome.policy:
            trial.set_user_attr("policy", outcome.policy)
        if outcome.timings_s:
            trial.set_user_attr("timings_s", {k: round(v, 3) for k, v in outcome.timings_s.items()})
        if outcome.accuracy is not None:
            trial.set_user_attr("accuracy", outcome.accuracy)
        if outcome.state_dict is not None:
            self._store_artifact(trial, outcome.state_dict)
        # the driver's own time on this trial (ask, suggest, attributes; not the final tell)
        trial.set_user_attr(
            "driver_s", self.driver_s.pop(outcome.number, 0.0) + time.perf_counter() - start
        )
        if outcome.status == "failed":
            self.study.tell(trial, state=TrialState.FAIL)
            return f"trial {outcome.number} failed: {outcome.reason}"
        if outcome.status == "stopped":
            self.study.tell(trial, state=TrialState.PRUNED)
            return f"trial {outcome.number} stopped early ({outcome.reason})"
        accuracy = outcome.accuracy if outcome.status == "complete" and outcome.accuracy else 0.0
        constraints = constraint_values(outcome.costs, budgets)
        drop = self.spec.constraints.max_accuracy_drop
        if drop is not None:
            teacher_acc = self.prepared.teacher_record["accuracy"]
            constraints["accuracy_drop"] = (teacher_acc - accuracy) - drop
        for key, value in constraints.items():
            trial.set_constraint(key, value)
        broken = {k: v for k, v in constraints.items() if v > 0}
        trial.set_user_attr("feasible", not broken)
        if broken and outcome.status == "complete":
            trial.set_user_attr(
                "reason",
                "over budget after training: "
                + ", ".join(f"{k} {v:+.3g}" for k, v in broken.items()),
            )
        values = [accuracy if o == "accuracy" else outcome.costs[o] for o in self.spec.objectives]
        self.study.tell(trial, values=values[0] if len(values) == 1 else values)
        if outcome.status == "infeasible":
            return f"trial {outcome.number} infeasible, no training: {outcome.reason}"
        return f"trial {outcome.number}: accuracy {accuracy:.4f}, " + ", ".join(
            f"{k} {outcome.costs[k]:.3g}" for k in ("latency_ms", "size_kb")
        )

    def _store_artifact(self, trial: optuna.trial.Trial, state: bytes) -> None:
        from optuna.artifacts import upload_artifact

        from search.artifacts import artifact_store

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"trial-{trial.number}-student.pt"
            path.write_bytes(state)
            artifact_id = upload_artifact(
                artifact_store=artifact_store(),
                file_path=str(path),
                study_or_trial=trial,
                mimetype="application/octet-stream",
            )
        trial.set_user_attr("artifact", artifact_id)

    # -- the loop --------------------------------------------------------------------------
    def _ask(self) -> None:
        start = time.perf_counter()
        trial = self.study.ask()
        self.study._storage.record_heartbeat(trial._trial_id)  # type: ignore[attr-defined]
        assert self.space is not None
        params = self.space.suggest(trial)
        self.running[trial.number] = trial
        self.driver_s[trial.number] = time.perf_counter() - start
        self.executor.submit(TrialTask(trial.number, params))

    def _best(self) -> tuple[int, float | None]:
        from search.study import rows

        feasible = [r for r in rows(self.study) if r.feasible]
        best = max((r.accuracy for r in feasible if r.accuracy is not None), default=None)
        return len(feasible), best

    def run(self, target_done: int, timeout_s: float | None) -> None:
        """Run until the study has ``target_done`` trained (complete or stopped) trials."""
        from search.study import HEARTBEAT_S

        context = self.prepared.context
        self.space = context.teacher_and_space()[1]
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        progress = Progress(target_done, self.progress_enabled)
        counts = {"failed": 0, "infeasible": 0}
        last_stale_check = 0.0
        self.executor.start(context, self.on_progress)
        try:
            with Heartbeat(self.study, self.running):
                done = trained_count(self.study)
                progress.update(done, *self._best(), 0, 0)
                while True:
                    if time.monotonic() - last_stale_check > HEARTBEAT_S:
                        fail_stale(self.study, self.log)
                        last_stale_check = time.monotonic()
                    give_up = (
                        (deadline is not None and time.monotonic() >= deadline)
                        or counts["failed"] > target_done
                        or counts["infeasible"] > _infeasible_cap(target_done)
                    )
                    want = target_done - done - len(self.running)
                    while not give_up and want > 0 and len(self.running) < self.executor.capacity:
                        self._ask()
                        want -= 1
                    if not self.running:
                        break
                    for outcome in self.executor.wait(timeout_s=2.0):
                        message = self.tell(outcome)
                        counts[outcome.status] = counts.get(outcome.status, 0) + 1
                        if outcome.repair is not None:
                            # the cost model's feasible neighbour of this candidate: tried next
                            self.study.enqueue_trial(outcome.repair, skip_if_exists=True)
                        done = trained_count(self.study)
                        progress.update(
                            done, *self._best(), len(self.running), counts["infeasible"], message
                        )
            if counts["failed"] > target_done:
                self.log(f"stopped: {counts['failed']} trials failed; see `edgetune show`")
            if counts["infeasible"] > _infeasible_cap(target_done):
                self.log(
                    f"stopped: {counts['infeasible']} candidates were over budget; the feasible "
                    "part of the space is tiny: loosen a budget or widen the space"
                )
        finally:
            progress.close()
            self.executor.shutdown()
            self._fail_running()

    def _fail_running(self) -> None:
        """After an error or Ctrl-C: never leave this driver's trials RUNNING."""
        from optuna.trial import TrialState

        for number, trial in list(self.running.items()):
            trial.set_user_attr("reason", "interrupted before it ended; enqueued again")
            self.study.tell(trial, state=TrialState.FAIL)
            self.study.enqueue_trial(dict(trial.params))
            del self.running[number]


def start_study(
    spec: Spec, storage: str, name: str, *, log: Callable[[str], None]
) -> tuple[optuna.Study, Prepared]:
    """Create the study for a spec: check that the budgets can be met, enqueue feasible seeds."""
    from search import study as studies

    prepared = prepare(spec, log)
    ctx = prepared.context
    teacher, space = ctx.teacher_and_space()
    check_reachable(ctx.budgets, cheapest_costs(space, teacher, spec, ctx.target))
    seeds = feasible_seeds(space, teacher, spec, ctx.target, ctx.budgets, spec.search.seed_trials)
    study = studies.create(spec, storage, name)
    study.set_user_attr("teacher", prepared.teacher_record)
    study.set_user_attr("budgets", ctx.budgets)
    for params in seeds:
        study.enqueue_trial(params)
    log(f"study {name!r} in {storage}: {len(seeds)} feasible seed candidates enqueued")
    return study, prepared


def resume_prepared(study: optuna.Study, spec: Spec, *, log: Callable[[str], None]) -> Prepared:
    prepared = prepare(spec, log)
    stored = study.user_attrs.get("budgets")
    if stored is not None and stored != prepared.context.budgets:
        # The budgets were resolved against the teacher's costs when the study started; keep them.
        ctx = prepared.context
        prepared = Prepared(
            TrialContext(ctx.spec, ctx.workload, ctx.target, dict(stored)),
            dict(study.user_attrs.get("teacher", prepared.teacher_record)),
        )
    fail_stale(study, log)
    return prepared


def ensure_trials_left(done: int, target_done: int, name: str) -> None:
    if done >= target_done:
        raise StudyError(
            f"study {name!r} already has {done} finished trials of the "
            f"{target_done} its spec asked for; pass --trials N to run N more"
        )
