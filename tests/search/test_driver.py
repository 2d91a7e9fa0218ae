"""The driver's decisions, against a real Optuna study: trial stopping and telling."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

import targets
from search.budgets import Budgets
from search.console import Progress
from search.driver import Driver, trained_count
from search.executors import InProcessExecutor
from search.lifecycle import Prepared
from search.record import TrialRecord
from search.seeding import SEED
from search.spec import parse_spec
from search.study import directions, rows, stopper_for
from search.trial import TrialContext, TrialOutcome, TrialTask, screen
from spaces.student import student_architecture

SPEC = {
    "name": "d",
    "model": {"name": "resnet8"},
    "constraints": {"latency_ms": "50%", "size_kb": 40, "max_accuracy_drop": 0.05},
    "search": {"stopper": "median"},
}


def make_driver(
    storage: optuna.storages.BaseStorage | None = None, *, measured: bool = False
) -> tuple[Driver, optuna.Study]:
    """A driver of a new study in ``storage`` (or of the one it holds); ``measured``: the
    teacher's latency measured at 0.3 ms, so the 50% latency budget is a share of it."""
    spec = parse_spec(SPEC)
    storage = storage or optuna.storages.InMemoryStorage()
    study = optuna.create_study(
        storage=storage, directions=directions(spec), pruner=stopper_for(spec),
        study_name="d", load_if_exists=True,
    )
    teacher = {
        "latency_ms": 0.4,
        "size_kb": 300.0,
        "energy_mj": 1.0,
        "peak_memory_kb": 100.0,
        "accuracy": 0.92,
    }
    budgets = Budgets.resolve(spec.constraints, teacher,
                              measured={"latency_ms": 0.3} if measured else None)
    # the driver never touches the workload (telling needs only the budgets); of the target,
    # only the held-out error that lowers the screening before anything is measured
    context = TrialContext(spec, None, targets.get("host"), budgets,  # type: ignore[arg-type]
                           reduce_range=False)
    prepared = Prepared(context, teacher)
    driver = Driver(study, storage, prepared, InProcessExecutor(), log=print, progress=False)
    return driver, study


def test_median_stopper_stops_a_trial_below_the_median() -> None:
    driver, study = make_driver()
    for acc in (0.90, 0.91, 0.92, 0.89, 0.90, 0.91):  # earlier trials, reported at step 50
        t = study.ask()
        t.report(acc, 50)
        study.tell(t, acc)
    good, bad = study.ask(), study.ask()
    driver.running = {good.number: good, bad.number: bad}
    assert driver.on_progress(good.number, 50, 0.95) is True
    assert driver.on_progress(bad.number, 50, 0.30) is False


def test_a_feasible_seed_is_never_stopped() -> None:
    """A seed trains to the end however far below the median it starts (a fast seed learns
    slowly), and keeps its mark when an interruption enqueues it again."""
    driver, study = make_driver()
    for acc in (0.90, 0.91, 0.92, 0.89):
        t = study.ask()
        t.report(acc, 50)
        study.tell(t, acc)
    study.enqueue_trial({}, user_attrs={SEED: True})
    seed, other = study.ask(), study.ask()
    driver.running = {seed.number: seed, other.number: other}
    assert driver.on_progress(seed.number, 50, 0.30) is True
    assert driver.on_progress(other.number, 50, 0.30) is False
    driver._fail_running()
    assert study.ask().user_attrs == {SEED: True}


def test_tell_records_feasibility_reason_and_constraints() -> None:
    driver, study = make_driver()
    costs = {"latency_ms": 0.1, "energy_mj": 0.5, "peak_memory_kb": 50.0, "size_kb": 30.0}
    ok, low, slow, stopped, failed = (study.ask() for _ in range(5))
    driver.running = {t.number: t for t in (ok, low, slow, stopped, failed)}
    driver.tell(TrialOutcome(ok.number, "complete", accuracy=0.91, costs=costs))
    driver.tell(TrialOutcome(low.number, "complete", accuracy=0.80, costs=costs))
    slow_costs = {**costs, "latency_ms": 0.3}
    driver.tell(TrialOutcome(slow.number, "infeasible", costs=slow_costs, reason="over budget"))
    driver.tell(TrialOutcome(stopped.number, "stopped", accuracy=0.5, costs=costs, reason="low"))
    driver.tell(TrialOutcome(failed.number, "failed", reason="NaN loss"))
    by_number = {r.trial: r for r in rows(study)}
    assert by_number[ok.number].feasible
    assert not by_number[low.number].feasible  # accuracy drop 0.12 > 0.05
    assert "accuracy_drop" in by_number[low.number].reason
    assert by_number[slow.number].status == "infeasible" and not by_number[slow.number].feasible
    assert study.trials[slow.number].value == 0.0
    assert by_number[stopped.number].status == "stopped"
    assert by_number[failed.number].status == "failed"
    assert by_number[failed.number].reason == "NaN loss"
    records = [TrialRecord.read(t) for t in study.trials]
    assert all(r is not None and r.driver_s is not None for r in records)
    assert trained_count(study) == 3  # two complete and one stopped; not infeasible, not failed


def test_the_models_underestimates_lower_the_share_proposals_are_screened_against() -> None:
    """Measured candidates the cost model read low (predicted at 45% of the teacher's
    latency, measured at 47-50%) make the sampler screen below the 50% budget, in this run and
    in the next driver of the study (a resume)."""
    driver, study = make_driver(measured=True)
    margin = targets.get("host").prediction_margin()  # nothing measured yet: the held-out error
    assert 0 < margin < 0.15
    assert driver._screening().latency_share == pytest.approx(0.5 / (1 + margin))
    costs = {"latency_ms": 0.18, "energy_mj": 0.5, "peak_memory_kb": 50.0, "size_kb": 30.0}
    for ratio in (0.47, 0.49, 0.50):  # the teacher is predicted at 0.4 ms: 0.18 ms is 45%
        trial = study.ask()
        driver.running[trial.number] = trial
        driver._settle(TrialOutcome(trial.number, "infeasible", costs=costs,
                                    measured={"latency_ms": 0.3 * ratio, "ratio_to_teacher": ratio},
                                    reason="over budget (measured)"),
                       Progress(3, False), {"infeasible": 0})
    lowered = driver._screening().latency_share
    assert lowered is not None and lowered == pytest.approx(0.5 * 0.45 / 0.50)  # the top of 3
    assert driver.budgets.latency_share == 0.5  # the trials are still held to the budget
    resumed, _ = make_driver(study._storage, measured=True)
    assert resumed._screening().latency_share == pytest.approx(lowered)


class Recording(InProcessExecutor):
    """The in-process executor, noting which trials reach it."""

    def __init__(self) -> None:
        super().__init__()
        self.submitted: list[int] = []

    def submit(self, task: TrialTask) -> None:
        self.submitted.append(task.number)
        super().submit(task)


def test_a_proposal_the_cost_model_rules_out_never_reaches_a_worker(
    context: TrialContext, artifacts: Path
) -> None:
    from dataclasses import replace

    spec = context.spec
    teacher, space = context.teacher_and_space()
    # a tight size budget: most proposals of the sampler are over it
    eight = student_architecture(teacher, space.uniform_params(0.25, 8, 8), space)
    size = context.target.predict(eight.graph, eight.policy.bits).as_dict()["size_kb"]
    tight = replace(context, budgets=Budgets({"size_kb": size}))
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, directions=directions(spec),
                                sampler=optuna.samplers.RandomSampler(seed=3))
    executor = Recording()
    Driver(study, storage, Prepared(tight, {"accuracy": 0.9}), executor, log=print,
           progress=False).run(target_done=1, timeout_s=None)
    records = {t.number: r for t in study.trials if (r := TrialRecord.read(t)) is not None}
    ruled_out = {n for n, r in records.items() if "(predicted)" in r.reason}
    assert ruled_out, "the tight budget rules some proposals out"
    assert not ruled_out & set(executor.submitted)  # told by the driver, no worker involved
    assert trained_count(study) == 1
    # the trial that was trained fits the budget
    trained = [r for r in records.values() if r.status in ("complete", "stopped")]
    assert trained and all(r.feasible for r in trained if r.status == "complete")


@pytest.mark.slow  # a minute: each repair prices a dozen pruned architectures
def test_the_sampler_draws_within_the_budget_or_repairs_its_draw(
    context: TrialContext, artifacts: Path
) -> None:
    """Under a budget most random draws break, the proposals still fit: the sampler's draws are
    screened on the cost model, and one that cannot be redrawn within budget is repaired."""
    from dataclasses import replace

    from search.driver import SAMPLER_COUNTS

    teacher, space = context.teacher_and_space()
    pruned = student_architecture(teacher, space.uniform_params(0.4, 32, 32), space)
    latency = context.target.predict(pruned.graph, pruned.policy.bits).as_dict()["latency_ms"]
    tight = replace(context, budgets=Budgets({"latency_ms": latency * 1.02}))
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, directions=directions(context.spec),
                                sampler=optuna.samplers.RandomSampler(seed=5))
    study.enqueue_trial(space.uniform_params(0.5, 32, 32))  # a first trial: the space is known
    Driver(study, storage, Prepared(tight, {"accuracy": 0.9}), Recording(), log=print,
           progress=False).run(target_done=4, timeout_s=None)
    draws = study.user_attrs[SAMPLER_COUNTS]
    assert draws["rejected"] > 0 and draws["repaired"] > 0
    records = [r for t in study.trials if (r := TrialRecord.read(t)) is not None]
    assert not [r for r in records if "(predicted)" in r.reason]  # no proposal ruled out
    assert len(records) == 4


def test_without_feasible_sampling_the_draws_are_proposed_as_drawn(
    context: TrialContext, artifacts: Path
) -> None:
    """``search.feasible_sampling: false`` (plain Optuna, the benchmark's random search): draws
    over budget become proposals the cost model rules out, and nothing repairs them."""
    from dataclasses import replace

    from search.driver import SAMPLER_COUNTS

    teacher, space = context.teacher_and_space()
    pruned = student_architecture(teacher, space.uniform_params(0.4, 32, 32), space)
    latency = context.target.predict(pruned.graph, pruned.policy.bits).as_dict()["latency_ms"]
    search = context.spec.search.model_copy(update={"feasible_sampling": False})
    plain = replace(context, budgets=Budgets({"latency_ms": latency * 1.02}),
                    spec=context.spec.model_copy(update={"search": search}))
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, directions=directions(context.spec),
                                sampler=optuna.samplers.RandomSampler(seed=5))
    study.enqueue_trial(space.uniform_params(0.5, 32, 32))
    Driver(study, storage, Prepared(plain, {"accuracy": 0.9}), Recording(), log=print,
           progress=False).run(target_done=2, timeout_s=None)
    assert SAMPLER_COUNTS not in study.user_attrs
    records = [r for t in study.trials if (r := TrialRecord.read(t)) is not None]
    assert [r for r in records if "(predicted)" in r.reason]  # ruled out, as drawn
    enqueued = [t for t in study.trials if "fixed_params" in t.system_attrs]
    assert len(enqueued) == 1  # only the first trial: no repaired neighbour was enqueued
    assert trained_count(study) == 2


def test_on_a_measured_device_the_sampler_keeps_only_draws_predicted_within_budget(
    context: TrialContext,
) -> None:
    """A proposal predicted a little over a latency budget that a device measures is measured
    rather than ruled out (the model may read high); the sampler, which can draw again, keeps
    only draws predicted within the budget."""
    from dataclasses import replace

    from targets.measurer import HostMeasurer

    teacher, space = context.teacher_and_space()
    params = space.uniform_params(0.25, 32, 32)
    shape = student_architecture(teacher, params, space)
    latency = context.target.predict(shape.graph, shape.policy.bits).as_dict()["latency_ms"]
    measured = replace(context, budgets=Budgets({"latency_ms": latency / 1.05}),
                       measurer=HostMeasurer())  # 5% over: within the model's doubt
    assert screen(measured, TrialTask(0, params), {}).ruled_out is None  # _ask would measure it
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, directions=directions(context.spec))
    driver = Driver(study, storage, Prepared(measured, {"accuracy": 0.9}), InProcessExecutor(),
                    log=print, progress=False)
    driver.space = space
    assert not driver._predicted_feasible(params)
    assert driver._predicted_feasible(space.uniform_params(0.5, 32, 32))


def test_a_candidate_measured_a_little_over_its_share_has_its_neighbour_tried_next(
    context: TrialContext,
) -> None:
    """A candidate the cost model read 5% low, measured just over the 50% share: its neighbour
    prunes at least as much, and is predicted below the share by that 5% and the target's
    held-out error (its bits or pruning moved), so it measures within. One measured 30% over gets none (a structural error,
    not the budget's edge), nor one over another budget."""
    from dataclasses import replace

    teacher, space = context.teacher_and_space()
    target = context.target
    full = student_architecture(teacher, space.uniform_params(0.0, 32, 32), space)
    teacher_ms = target.predict(full.graph, full.policy.bits).as_dict()["latency_ms"]
    params = space.uniform_params(0.5, 32, 32)
    shape = student_architecture(teacher, params, space)
    costs = target.predict(shape.graph, shape.policy.bits).as_dict()
    predicted = costs["latency_ms"] / teacher_ms
    share = predicted * 1.02
    budgets = Budgets({"latency_ms": 1.0, "size_kb": costs["size_kb"] * 1.5}, latency_share=share,
                      teacher_latency_predicted=teacher_ms)
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, directions=directions(context.spec))
    driver = Driver(study, storage, Prepared(replace(context, budgets=budgets), {}),
                    InProcessExecutor(), log=print, progress=False)
    driver.space = space

    def measured_at(ratio: float, **more: float) -> TrialOutcome:
        return TrialOutcome(0, "infeasible", costs={**costs, **more},
                            measured={"latency_ms": ratio, "ratio_to_teacher": ratio})

    neighbour = driver._near_miss(params, measured_at(predicted * 1.05))
    assert neighbour is not None
    moved = student_architecture(teacher, neighbour, space)
    ratio = target.predict(moved.graph, moved.policy.bits).as_dict()["latency_ms"] / teacher_ms
    margin = target.prediction_margin()
    assert ratio * 1.05 <= share / (1 + margin) + 1e-9
    pruned = {k: v for k, v in params.items() if k.startswith("prune.")}
    assert all(neighbour[k] >= v for k, v in pruned.items())
    assert neighbour != params
    assert driver._near_miss(params, measured_at(predicted * 1.35)) is None
    assert (driver._near_miss(params, measured_at(predicted * 1.05, size_kb=costs["size_kb"] * 2))
            is None)


def test_an_architecture_measured_over_budget_is_not_proposed_again(
    context: TrialContext,
) -> None:
    """A student measured over its latency budget (the cost model read it well within): a draw
    of the same student, with other distillation settings, is redrawn, and a repair that lands on
    it is not enqueued, in this run and after a resume; another student is proposed as before."""
    from dataclasses import replace

    from spaces.distillation import PREFIX

    teacher, space = context.teacher_and_space()
    params = space.uniform_params(0.5, 32, 32)
    shape = student_architecture(teacher, params, space)
    costs = context.target.predict(shape.graph, shape.policy.bits).as_dict()
    other = space.uniform_params(0.25, 32, 32)
    wider = student_architecture(teacher, other, space)
    budget = 1.2 * context.target.predict(wider.graph, wider.policy.bits).as_dict()["latency_ms"]
    within = replace(context, budgets=Budgets({"latency_ms": budget}))  # both predicted within
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, directions=directions(context.spec))

    def driver() -> Driver:
        made = Driver(study, storage, Prepared(within, {"accuracy": 0.9}), InProcessExecutor(),
                      log=print, progress=False)
        made.space = space
        return made

    first = driver()
    assert first._predicted_feasible(params)
    trial = study.ask()
    first.running[trial.number] = trial
    first._settle(TrialOutcome(trial.number, "infeasible", costs=costs,
                               measured={"latency_ms": budget * 1.2},
                               policy=shape.summary(), reason="over budget (measured)"),
                  Progress(3, False), {"infeasible": 0})
    knob, dist = next((k, d) for k, d in space.distributions().items() if k.startswith(PREFIX))
    assert isinstance(dist, optuna.distributions.FloatDistribution)
    same_student = {**params, knob: dist.high if params[knob] != dist.high else dist.low}
    for current in (first, driver()):  # the driver that measured it, and a resumed one
        assert not current._predicted_feasible(params)
        assert not current._predicted_feasible(same_student)
        assert current._predicted_feasible(other)

    def enqueued() -> list[dict[str, object]]:
        return [t.system_attrs["fixed_params"] for t in study.trials
                if t.state == optuna.trial.TrialState.WAITING]

    first._try_next(same_student)
    assert enqueued() == []
    first._try_next(other)
    assert enqueued() == [other]
