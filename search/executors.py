"""Executors run trials for the driver: in this process, or as Ray tasks.

The driver is the only process that writes to the study. An executor takes
:class:`~search.trial.TrialTask` objects, runs :func:`search.trial.run_trial` somewhere,
relays the trial's intermediate accuracies to the driver's ``on_progress`` callback (whose
answer ``False`` asks the trial to stop), and hands back :class:`~search.trial.TrialOutcome`
objects. A worker that dies is retried once; a second death is a failed outcome with its reason.
"""

from __future__ import annotations

import contextlib
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from search.errors import EdgetuneError
from search.trial import TrialContext, TrialOutcome, TrialTask, failed_outcome, run_trial

ProgressCallback = Callable[[int, int, float], bool]
"""(trial number, fine-tune step, validation accuracy) -> keep going?"""


class Executor(ABC):
    """Where trials run. ``start`` is called once per driver run, before any ``submit``."""

    capacity: int = 1

    @abstractmethod
    def start(self, context: TrialContext, on_progress: ProgressCallback) -> None:
        """Share the study's context (teacher, data, target) with the workers, once."""

    @abstractmethod
    def submit(self, task: TrialTask) -> None:
        """Queue one trial. The driver never submits more than ``capacity`` at once."""

    @abstractmethod
    def wait(self, timeout_s: float) -> list[TrialOutcome]:
        """Outcomes of trials that ended, waiting up to ``timeout_s`` for the first one."""

    def map(self, fn: Callable[[TrialContext, Any], Any], context: TrialContext,
            items: Sequence[Any]) -> list[Any]:
        """``[fn(context, item) for item in items]``, spread over the workers (before
        ``start`` or after it): the once-per-study work, such as the sensitivity."""
        return [fn(context, item) for item in items]

    def shutdown(self) -> None:
        """Release workers. Called once, also after an error."""


class InProcessExecutor(Executor):
    """Runs one trial at a time in the driver's own process (tests, debugging, one worker)."""

    def __init__(self, threads: int | None = None) -> None:
        self.capacity = 1
        self._threads = threads
        self._queue: list[TrialTask] = []
        self._context: TrialContext | None = None
        self._on_progress: ProgressCallback | None = None

    def start(self, context: TrialContext, on_progress: ProgressCallback) -> None:
        self._context, self._on_progress = context, on_progress
        if self._threads:
            import torch

            torch.set_num_threads(self._threads)

    def submit(self, task: TrialTask) -> None:
        self._queue.append(task)

    def wait(self, timeout_s: float) -> list[TrialOutcome]:
        if not self._queue:
            return []
        assert self._context is not None and self._on_progress is not None, "start() first"
        task = self._queue.pop(0)
        callback = self._on_progress
        return [run_trial(self._context, task, lambda step, acc: callback(task.number, step, acc))]


def _ray_env() -> dict[str, str]:
    """Settings every Ray process needs: no usage stats, and a local Ray that binds to loopback
    only (Ray otherwise binds to the machine's network address)."""
    return {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """``values`` in ``os.environ`` for the block, then each variable as it was."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _code_modules() -> list[Any]:
    """edgetune's packages, shipped to every Ray node (so no node needs edgetune installed)."""
    import cost_models
    import search
    import spaces
    import targets

    return [search, spaces, cost_models, targets]


def trial_memory_bytes(context: TrialContext) -> int:
    """What one trial asks Ray for: torch's own footprint plus the shared data, with headroom."""
    w = context.workload
    tensors = [*w.teacher_state.values(), w.x_finetune, w.x_val, w.teacher_logits]
    data_bytes = sum(t.nbytes for t in tensors)  # streamed images: 0
    return int(700 * 2**20 + 3 * data_bytes)


def _task_options(context: TrialContext) -> dict[str, Any]:
    """Ray's options for a task of the study's: one CPU, the memory a trial asks for, retried
    once if its worker dies."""
    return {"num_cpus": 1, "memory": trial_memory_bytes(context), "max_retries": 1,
            "retry_exceptions": False}


def _remote_call(context: TrialContext, fn: Callable[[TrialContext, Any], Any], item: Any) -> Any:
    """The Ray task body of :meth:`Executor.map`: one item on one CPU."""
    import torch

    torch.set_num_threads(1)
    return fn(context, item)


def _remote_trial(context: TrialContext, task: TrialTask, channel: Any) -> TrialOutcome:
    """The Ray task body: one trial on one CPU, reporting progress through the channel actor."""
    import ray
    import torch

    torch.set_num_threads(1)

    def report(step: int, accuracy: float) -> bool:
        try:
            stop: bool = ray.get(channel.report.remote(task.number, step, accuracy), timeout=60)
        except ray.exceptions.RayError:
            return True  # the driver's channel is gone: train on; the driver decides at the end
        return not stop

    return run_trial(context, task, report)


class _Channel:
    """A Ray actor between workers and the driver: progress goes up, stop requests come down."""

    def __init__(self) -> None:
        self._messages: list[tuple[int, int, float]] = []
        self._stopped: set[int] = set()

    def report(self, number: int, step: int, accuracy: float) -> bool:
        self._messages.append((number, step, accuracy))
        return number in self._stopped

    def drain(self) -> list[tuple[int, int, float]]:
        out, self._messages = self._messages, []
        return out

    def stop(self, number: int) -> None:
        self._stopped.add(number)


class RayExecutor(Executor):
    """Trials as Ray tasks: on a local Ray started here (loopback only), or on a cluster."""

    def __init__(self, workers: int, address: str | None = None) -> None:
        self.capacity = workers
        self._address = address or os.environ.get("RAY_ADDRESS") or None
        self._pending: dict[Any, TrialTask] = {}
        self._started_ray = False
        self._context_ref: Any = None
        self._channel: Any = None
        self._remote: Any = None
        self._on_progress: ProgressCallback | None = None

    def start(self, context: TrialContext, on_progress: ProgressCallback) -> None:
        with _environment(_ray_env()):  # for Ray's own processes; the caller's is left as it was
            self._start(context, on_progress)

    def _start(self, context: TrialContext, on_progress: ProgressCallback) -> None:
        import ray

        self._on_progress = on_progress
        self._connect()
        self._context_ref = self._put(context)
        self._channel = self._new_channel()
        self._remote = ray.remote(**_task_options(context))(_remote_trial)

    def map(self, fn: Callable[[TrialContext, Any], Any], context: TrialContext,
            items: Sequence[Any]) -> list[Any]:
        import ray

        with _environment(_ray_env()):
            self._connect()
        ref = self._put(context)
        remote = ray.remote(**_task_options(context))(_remote_call)
        try:
            return list(ray.get([remote.remote(ref, fn, item) for item in items]))
        except ray.exceptions.RayError as exc:
            lines = str(exc).strip().splitlines()
            raise EdgetuneError(
                f"a worker failed ({type(exc).__name__}: {(lines[-1] if lines else '')[:300]});"
                " check the Ray cluster, or use search.executor: process"
            ) from None

    def _put(self, context: TrialContext) -> Any:
        import ray

        try:
            return ray.put(context)
        except Exception as exc:  # a model or data object given from Python that cannot pickle
            raise EdgetuneError(
                f"the study's teacher and data cannot be sent to Ray's workers "
                f"({type(exc).__name__}: {str(exc)[:200]}); a model or data given as an object "
                "must pickle (no open files, locks or sessions in it), or run the trials in "
                "this process with search.executor: process"
            ) from None

    def _connect(self) -> None:
        """Join the cluster, or start a local Ray, unless this process already has one."""
        import logging

        import ray

        if not ray.is_initialized():
            try:
                if self._address:
                    ray.init(
                        address=self._address,
                        logging_level=logging.WARNING,
                        log_to_driver=False,
                        runtime_env={"py_modules": _code_modules(), "env_vars": _ray_env()},
                    )
                else:
                    ray.init(
                        address="local",  # a new Ray of our own, never a cluster found on /tmp
                        num_cpus=self.capacity,
                        include_dashboard=False,
                        logging_level=logging.WARNING,
                        log_to_driver=False,
                        runtime_env={"env_vars": _ray_env()},
                    )
            except Exception as exc:
                where = self._address or "a local Ray"
                raise EdgetuneError(
                    f"cannot start or join {where} ({type(exc).__name__}: "
                    f"{str(exc)[:300]}); check --ray-address, or use "
                    "search.executor: process"
                ) from None
            self._started_ray = True

    def submit(self, task: TrialTask) -> None:
        ref = self._remote.remote(self._context_ref, task, self._channel)
        self._pending[ref] = task

    @staticmethod
    def _new_channel() -> Any:
        """A progress channel on the driver's node (preferred, not required)."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
        return ray.remote(_Channel).options(num_cpus=0, scheduling_strategy=here).remote()

    def _relay_progress(self) -> None:
        import ray

        assert self._on_progress is not None
        try:
            messages = ray.get(self._channel.drain.remote(), timeout=30)
        except ray.exceptions.RayError:
            # its node died: trials already running report into the void and train to the
            # end (no trial stopping for them); new trials get a new channel
            self._channel = self._new_channel()
            return
        for number, step, acc in messages:
            if not self._on_progress(number, step, acc):
                self._channel.stop.remote(number)

    def wait(self, timeout_s: float) -> list[TrialOutcome]:
        import ray

        if not self._pending:
            return []
        deadline = time.monotonic() + timeout_s
        while True:
            ready, _ = ray.wait(list(self._pending), num_returns=1, timeout=0.5)
            self._relay_progress()
            if ready or time.monotonic() >= deadline:
                break
        outcomes = []
        for ref in ready:
            task = self._pending.pop(ref)
            try:
                outcomes.append(ray.get(ref))
            except ray.exceptions.RayError as exc:
                reason = (
                    str(exc).strip().splitlines()[0][:300]
                    if str(exc).strip()
                    else type(exc).__name__
                )
                outcomes.append(
                    failed_outcome(
                        task, f"worker died twice (retried once): {type(exc).__name__}: {reason}"
                    )
                )
        return outcomes

    def shutdown(self) -> None:
        import ray

        for ref in list(self._pending):
            ray.cancel(ref, force=True)
        self._pending.clear()
        if self._started_ray and ray.is_initialized():
            ray.shutdown()


def make_executor(kind: str, workers: int, address: str | None) -> Executor:
    if kind == "process" and not address:
        return InProcessExecutor(threads=None)
    return RayExecutor(workers=workers, address=address)
