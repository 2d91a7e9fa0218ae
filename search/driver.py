"""The driver: asks the study for candidates, hands them to an executor, tells the results.

It is the only process that writes to the study, so a crash of a worker loses one trial (which
is retried), and a crash of the driver loses nothing that was told. Each running trial beats a
heartbeat from a background thread; a driver that dies stops beating, and any driver of the
study then fails its trials and enqueues them again (:func:`fail_stale`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from search.console import Progress
from search.lifecycle import Prepared
from search.record import TrialRecord, scored_costs, set_reason
from search.refit import Refit
from search.sampling import FeasibleSampler
from search.seeding import SEED
from search.trial import Screened, TrialOutcome, TrialTask, repaired_neighbour, screen
from spaces.student import architecture_key, student_architecture

if TYPE_CHECKING:
    import optuna

    from search.budgets import Budgets
    from search.executors import Executor
    from search.spec import Spec
    from search.workloads.objects import Objects
    from spaces.joint import JointSpace
    from spaces.student import Student
    from targets.base import Target


SAMPLER_COUNTS = "sampler_draws"
"""The study user attribute counting the draws the sampler threw away (``rejected``) and the
repairs it handed on instead (``repaired``), over all its runs."""
NEAR_MISS = 0.10
"""A candidate measured over its latency share by at most this much (a tenth) has its neighbour
tried next, predicted below the share by the candidate's own measured error
(:meth:`Driver._near_miss`): near the budget's edge is where the accurate candidates are."""


def trained_count(study: optuna.Study) -> int:
    """Trials that trained to the end or were stopped early. Infeasible candidates, which the
    cost model ruled out in milliseconds with no training, do not count toward ``trials``."""
    return sum(
        r is not None and r.status in ("complete", "stopped")
        for r in map(TrialRecord.read, study.get_trials(deepcopy=False))
    )


def _infeasible_cap(target_done: int) -> int:
    """How many predicted-infeasible candidates a run may try before it gives up."""
    return 20 * target_done + 100


class Heartbeat:
    """Records a heartbeat for every trial this driver runs, from a background thread.

    When the driver dies, its trials stop beating; ``optuna.storages.fail_stale_trials`` (run
    by every driver of the study) then marks them failed and enqueues their parameters again.
    Storages without heartbeats (in memory) are left alone.
    """

    def __init__(self, storage: optuna.storages.BaseStorage, study_name: str) -> None:
        import threading

        self.storage = storage if hasattr(storage, "record_heartbeat") else None
        self.study_id = storage.get_study_id_from_name(study_name)
        self._ids: dict[int, int] = {}
        self._get_id = storage.get_trial_id_from_study_id_trial_number
        self.running: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="edgetune-heartbeat", daemon=True)

    def add(self, number: int) -> None:
        self.running.add(number)
        self.beat()

    def remove(self, number: int) -> None:
        self.running.discard(number)

    def beat(self) -> None:
        if self.storage is None:
            return
        for number in list(self.running):
            if number not in self._ids:
                self._ids[number] = self._get_id(self.study_id, number)
            self.storage.record_heartbeat(self._ids[number])  # type: ignore[attr-defined]

    def _loop(self) -> None:
        from search.study import HEARTBEAT_S

        while not self._stop.wait(HEARTBEAT_S):
            self.beat()

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
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
    """Runs trials of one study until it has ``target_done`` trained trials or time runs out.

    ``storage`` is the storage the study was opened with (heartbeats are recorded in it).
    """

    def __init__(
        self,
        study: optuna.Study,
        storage: optuna.storages.BaseStorage,
        prepared: Prepared,
        executor: Executor,
        *,
        log: Callable[[str], None],
        progress: bool,
    ) -> None:
        self.study, self.prepared, self.executor = study, prepared, executor
        self.spec = prepared.context.spec
        self.budgets = prepared.context.budgets
        self.log = log
        self.progress_enabled = progress
        self.running: dict[int, optuna.trial.Trial] = {}
        self.driver_s: dict[int, float] = {}
        self.heartbeat = Heartbeat(storage, study.study_name)
        self.space: JointSpace | None = None
        self._screened: dict[tuple[tuple[str, Any], ...], tuple[Screened, dict[str, float]]] = {}
        self._pruning_table: dict[str, dict[float, dict[str, float]]] | None = None
        self._underestimates: list[float] = []  # of measured latency ratios: Budgets.screening
        self._measured_over: set[str] = set()  # architecture_key of each measured over budget
        for trial in study.get_trials(deepcopy=False):  # a resumed study's measurements
            if (record := TrialRecord.read(trial)) is not None:
                self._note(record.predicted, record.measured, record.policy)
        context = prepared.context
        self.refit = Refit(context.target, enabled=context.measurer is not None, log=log)

    # -- callbacks from the executor -------------------------------------------------------
    def on_progress(self, number: int, step: int, accuracy: float) -> bool:
        trial = self.running.get(number)
        if trial is None or self.spec.multi_objective or trial.user_attrs.get(SEED):
            return True
        trial.report(accuracy, step)
        return not trial.should_prune()

    # -- telling ---------------------------------------------------------------------------
    def tell(self, outcome: TrialOutcome) -> str:
        """Record an outcome on its trial and tell Optuna; returns a one-line message."""
        from optuna.trial import TrialState

        start = time.perf_counter()
        trial = self.running.pop(outcome.number)
        self.heartbeat.remove(outcome.number)
        artifact = None
        if outcome.state_dict is not None:
            artifact = self._store_artifact(trial, outcome.state_dict)
        accuracy = outcome.accuracy if outcome.status == "complete" else None
        costs = scored_costs(outcome.costs, outcome.measured)
        constraints = self.budgets.constraints(costs, accuracy)
        broken = {k: v for k, v in constraints.items() if v > 0}
        reason = outcome.reason
        if broken and outcome.status == "complete":
            reason = "over budget after training: " + ", ".join(
                f"{k} {v:+.3g}" for k, v in broken.items()
            )
        record = TrialRecord(
            status=outcome.status,
            accuracy=outcome.accuracy,
            predicted=outcome.costs,
            measured=outcome.measured,
            feasible=not broken,
            reason=reason,
            policy=outcome.policy,
            timings_s=outcome.timings_s,
            artifact=artifact,
            provenance=outcome.provenance,
            # the driver's own time on this trial (ask, suggest, attributes; not the final tell)
            driver_s=self.driver_s.pop(outcome.number, 0.0) + time.perf_counter() - start,
        )
        record.write(trial)
        if outcome.status == "failed":
            self.study.tell(trial, state=TrialState.FAIL)
            return f"trial {outcome.number} failed: {outcome.reason}"
        if outcome.status == "stopped":
            self.study.tell(trial, state=TrialState.PRUNED)
            return f"trial {outcome.number} stopped early ({outcome.reason})"
        for key, value in constraints.items():
            trial.set_constraint(key, value)
        values = [
            (accuracy or 0.0) if o == "accuracy" else costs[o] for o in self.spec.objectives
        ]
        self.study.tell(trial, values=values[0] if len(values) == 1 else values)
        if outcome.status == "infeasible":
            return f"trial {outcome.number} infeasible, no training: {outcome.reason}"
        return f"trial {outcome.number}: accuracy {accuracy or 0.0:.4f}, " + ", ".join(
            f"{k} {costs[k]:.3g}" for k in ("latency_ms", "size_kb")
        ) + (" (latency measured)" if outcome.measured else "")

    def _store_artifact(self, trial: optuna.trial.Trial, state: bytes) -> str:
        from search.artifacts import upload

        return upload(trial, f"trial-{trial.number}-student.pt", state)

    # -- the loop --------------------------------------------------------------------------
    def _ask(self) -> tuple[TrialOutcome, Student] | None:
        """Sample a proposal and screen it on the cost model here: one it rules out is returned
        (with its architecture, for the repair) without ever waiting for a worker; any other
        goes to the executor."""
        start = time.perf_counter()
        trial = self.study.ask()
        self.heartbeat.add(trial.number)
        assert self.space is not None, "run() sets the space before asking"
        params = self.space.suggest(trial)
        self.running[trial.number] = trial
        task = TrialTask(trial.number, params, target=self._target())
        timings: dict[str, float] = {}
        cached = self._screened.pop(_key(params), None)  # the sampler screened it already
        if cached is None:
            screened = screen(self.prepared.context, task, timings)
        else:
            screened, timings = cached
        self.driver_s[trial.number] = time.perf_counter() - start
        if screened.ruled_out is not None:
            return screened.ruled_out, screened.shape
        self.executor.submit(replace(task, costs=screened.costs, timings_s=timings))
        return None

    def _target(self) -> Target | None:
        """The refitted target the trials started now are priced on (None: the study's)."""
        return self.refit.target if self.refit.refits else None

    def _predicted_feasible(self, params: dict[str, Any]) -> bool:
        """What :class:`FeasibleSampler` asks of each draw: predicted within the budgets
        (:meth:`_screening`'s), strictly. ``_ask`` would measure a proposal predicted a little
        over its latency budget, in case the model reads high; the sampler draws again instead,
        or the measurement rules out half the proposals at the budget's edge. ``_ask`` reuses
        the screening. A draw of an architecture measured over budget before is redrawn too."""
        assert self.space is not None
        if set(self.space.distributions()) - set(params):
            return True  # a partial draw: the driver screens the whole proposal
        timings: dict[str, float] = {}
        screened = screen(self.prepared.context, TrialTask(-1, params, target=self._target()),
                          timings)
        if self._screening().broken(screened.costs) or self._measured_before(screened.shape):
            return False
        self._screened = {_key(params): (screened, timings)}
        return True

    def _repaired(self, params: dict[str, Any],
                  budgets: Budgets | None = None) -> dict[str, Any] | None:
        """What :class:`FeasibleSampler` asks when no draw fits: the draw's feasible neighbour,
        pruning and bits repaired on the cost model within ``budgets`` (default: the
        screening's), or None if there is none."""
        from search.repair import pruning_table, repair_pruning

        context = self.prepared.context
        teacher, space = context.teacher_and_space()
        target = self._target() or context.target
        if self._pruning_table is None:  # once per run: each group pruned alone
            self._pruning_table = pruning_table(space, teacher, params, target)
        repaired, feasible = repair_pruning(space, teacher, params, target,
                                            budgets or self._screening(),
                                            sensitivity=context.sensitivity,
                                            table=self._pruning_table)
        return repaired if feasible else None

    def _near_miss(self, params: dict[str, Any], outcome: TrialOutcome) -> dict[str, Any] | None:
        """A candidate measured over its latency share by at most :data:`NEAR_MISS` (and within
        every other budget): its neighbour, pruning and bits repaired on the cost model against
        the share lowered by this candidate's own underestimate times the target's held-out
        error, where the screening's share is not lower already. None for any other outcome,
        or when the repair finds none."""
        if outcome.status != "infeasible" or not outcome.measured or not outcome.costs:
            return None
        over = self.budgets.broken(scored_costs(outcome.costs, outcome.measured))
        own = self.budgets.underestimate(outcome.costs, outcome.measured)
        screening = self._screening()
        if set(over) != {"latency_ms"} or over["latency_ms"] > NEAR_MISS or own is None:
            return None
        assert self.budgets.latency_share and screening.latency_share  # underestimate needs it
        margin = self.prepared.context.target.prediction_margin()
        share = min(screening.latency_share, self.budgets.latency_share / (own * (1 + margin)))
        return self._repaired(params, replace(screening, latency_share=share))

    def _screening(self) -> Budgets:
        """The budgets the sampler screens and repairs draws against: the study's, with the
        latency share lowered by the cost model's underestimates so far (measured proposals
        at the budget's edge otherwise fail their measurement half the time), and at least by
        the target's held-out error."""
        return self.prepared.context.screening(self._underestimates)

    def _note(self, predicted: Mapping[str, float] | None, measured: Mapping[str, Any],
              policy: Mapping[str, Any] | None) -> None:
        """Learn from a measured candidate: the cost model's underestimate, and its architecture
        if it measured over a budget (measuring it again would only rule out a second trial)."""
        found = self.budgets.underestimate(predicted or {}, measured)
        if found is not None:
            self._underestimates.append(found)
        if measured and policy and self.budgets.broken(scored_costs(predicted or {}, measured)):
            self._measured_over.add(architecture_key(policy))

    def _measured_before(self, shape: Student) -> bool:
        """Whether this architecture was measured over budget in this study."""
        return architecture_key(shape.summary()) in self._measured_over

    def _try_next(self, params: dict[str, Any] | None) -> None:
        """Enqueue a repaired neighbour, unless there is none or it was measured over budget."""
        teacher, space = self.prepared.context.teacher_and_space()
        if params is not None and not (self._measured_over and self._measured_before(
                student_architecture(teacher, params, space))):
            self.study.enqueue_trial(params, skip_if_exists=True)

    def _best(self) -> tuple[int, float | None]:
        records = [r for r in map(TrialRecord.read, self.study.get_trials(deepcopy=False)) if r]
        feasible = [r for r in records if r.feasible]
        best = max((r.accuracy for r in feasible if r.accuracy is not None), default=None)
        return len(feasible), best

    def run(self, target_done: int, timeout_s: float | None) -> None:
        """Run until the study has ``target_done`` trained (complete or stopped) trials."""
        from search.study import HEARTBEAT_S

        context = self.prepared.context
        self.space = context.teacher_and_space()[1]
        sampler = self.study.sampler
        feasible_sampling = self.spec.search.feasible_sampling
        if feasible_sampling:
            self.study.sampler = FeasibleSampler(sampler, self._predicted_feasible,
                                                 repair=self._repaired,
                                                 seed=self.spec.search.seed)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        progress = Progress(target_done, self.progress_enabled)
        counts = {"failed": 0, "infeasible": 0}
        last_stale_check = 0.0
        try:
            self.executor.start(context, self.on_progress)  # a failed start shuts down too
            with self.heartbeat:
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
                        ruled_out = self._ask()
                        if ruled_out is None:
                            want -= 1
                            continue
                        outcome, shape = ruled_out
                        done = self._settle(outcome, progress, counts)  # told at once, then:
                        if feasible_sampling:
                            self._try_next(repaired_neighbour(self.prepared.context,
                                                              self.refit.target, shape, {},
                                                              self._screening()))
                        give_up = counts["infeasible"] > _infeasible_cap(target_done)
                    if not self.running:
                        break
                    for outcome in self.executor.wait(timeout_s=2.0):
                        params = dict(self.running[outcome.number].params)
                        done = self._settle(outcome, progress, counts)
                        repair = outcome.repair  # none without feasible sampling
                        if repair is None and feasible_sampling:
                            repair = self._near_miss(params, outcome)
                        self._try_next(repair)  # this candidate's feasible neighbour
            if counts["failed"] > target_done:
                self.log(f"stopped: {counts['failed']} trials failed; see `edgetune show`")
            if counts["infeasible"] > _infeasible_cap(target_done):
                self.log(
                    f"stopped: {counts['infeasible']} candidates were over budget; the feasible "
                    "part of the space is tiny: loosen a budget or widen the space"
                )
        finally:
            filtered = self.study.sampler
            if isinstance(filtered, FeasibleSampler) and filtered.rejected:
                share = self._screening().latency_share
                lowered = (f" (latency screened at {share:.1%} of the teacher's, the share lowered "
                           "by the cost model's error)"
                           if share != self.budgets.latency_share else "")
                self.log(f"the sampler threw away {filtered.rejected} draws the cost model ruled "
                         f"out, and repaired {filtered.repaired} into feasible proposals{lowered}")
                counts_before = self.study.user_attrs.get(SAMPLER_COUNTS, {})
                self.study.set_user_attr(SAMPLER_COUNTS, {
                    "rejected": int(counts_before.get("rejected", 0)) + filtered.rejected,
                    "repaired": int(counts_before.get("repaired", 0)) + filtered.repaired,
                })
            self.study.sampler = sampler
            progress.close()
            self.executor.shutdown()
            self._fail_running()
            self.refit.flush()  # the next study starts from every candidate measured here

    def _settle(self, outcome: TrialOutcome, progress: Progress, counts: dict[str, int]) -> int:
        """Tell an outcome, count it and show it; the study's trained trials now."""
        message = self.tell(outcome)
        self.refit.add(outcome)
        self._note(outcome.costs, outcome.measured, outcome.policy)
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
        done = trained_count(self.study)
        progress.update(done, *self._best(), len(self.running), counts["infeasible"], message)
        return done

    def _fail_running(self) -> None:
        """After an error or Ctrl-C: never leave this driver's trials RUNNING."""
        from optuna.trial import TrialState

        for number, trial in list(self.running.items()):
            set_reason(trial, "interrupted before it ended; enqueued again")
            self.study.tell(trial, state=TrialState.FAIL)
            seed = {SEED: True} if trial.user_attrs.get(SEED) else None
            self.study.enqueue_trial(dict(trial.params), user_attrs=seed)
            del self.running[number]
            self.heartbeat.remove(number)


def _key(params: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(params.items()))


def run_study(
    spec: Spec,
    storage: str,
    prepare: Callable[[Executor], tuple[optuna.Study, Prepared]],
    *,
    target_done: int,
    timeout_s: float | None,
    log: Callable[[str], None],
    progress: bool,
    objects: Objects | None = None,
    workers: int | None = None,
    ray_address: str | None = None,
) -> optuna.Study:
    """What ``search`` and ``resume`` do (the CLI and the API alike): make the executor,
    prepare the study with it (``prepare(executor)`` -> (study, prepared); the sensitivity
    runs on its workers, and a failure shuts it down), drive the study to ``target_done``
    trained trials, then finalize as the spec says."""
    from search import study as studies
    from search.executors import make_executor
    from search.finalize import finalize_at_end

    executor = make_executor(spec.search.executor, workers or spec.search.workers,
                             ray_address or spec.search.ray_address)
    try:
        study, prepared = prepare(executor)
    except BaseException:
        executor.shutdown()  # a Ray started for the sensitivity is not left running
        raise
    Driver(study, studies.storage_for(storage), prepared, executor, log=log,
           progress=progress).run(target_done, timeout_s)  # shuts the executor down
    finalize_at_end(study, spec, log=log, progress=progress, objects=objects)
    return study
