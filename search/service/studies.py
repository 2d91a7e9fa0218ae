"""What the service shows of a study: ``study.summary`` plus the run's state, and a short cache.

Reads go through one storage object. A list or detail is computed at most once a second
however many clients poll (a lock lets one thread compute while the others wait for it).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from search import study as studies
from search.errors import StudyError
from search.service.runs import Run, Runs
from search.spec import Spec

if TYPE_CHECKING:
    import optuna

CACHE_S = 1.0


def redact(url: str) -> str:
    """A storage URL without its password."""
    if "@" not in url:
        return url
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


class _Cache:
    """Values recomputed at most every ``CACHE_S``; while one thread recomputes, the others get
    the previous value at once (or wait for the first one)."""

    def __init__(self) -> None:
        self._values: dict[str, tuple[float, Any]] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def fresh(self, key: str) -> Any | None:
        hit = self._values.get(key)
        return hit[1] if hit and time.monotonic() - hit[0] < CACHE_S else None

    def get(self, key: str, make: Callable[[], Any]) -> Any:
        value = self.fresh(key)
        if value is not None:
            return value
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        if not lock.acquire(blocking=False):
            stale = self._values.get(key)
            if stale is not None:
                return stale[1]
            lock.acquire()
        try:
            value = self.fresh(key)
            if value is None:
                value = make()
                self._values[key] = (time.monotonic(), value)
            return value
        finally:
            lock.release()

    def clear(self) -> None:
        self._values.clear()


class Studies:
    def __init__(self, storage_url: str, runs: Runs) -> None:
        self.url = storage_url
        self.storage = studies.storage_for(storage_url)
        self.runs = runs
        self.cache = _Cache()

    def names(self) -> list[str]:
        return sorted(s.study_name for s in self.storage.get_all_studies())

    def exists(self, name: str) -> bool:
        return name in self.names()

    def open(self, name: str) -> tuple[optuna.Study, Spec]:
        if not self.exists(name):
            raise StudyError(f"no study {name!r}; GET /api/studies lists them")
        return studies.load(self.storage, name, redact(self.url))

    def study_id(self, name: str) -> int:
        """The storage's id of a study: a study made again under the same name gets a new one."""
        return self.storage.get_study_id_from_name(name)

    def state(self, run: Run | None, summary: dict[str, Any] | None, running_trials: int) -> str:
        state = self.runs.state(run)
        done = summary is not None and (summary["trained"] >= summary["requested_trials"])
        if state is None:  # made outside the service
            return "running" if running_trials else ("finished" if done else "stopped")
        if state == "interrupted" and done:
            return "finished"
        return state

    def _overview(self, name: str, detail: bool) -> dict[str, Any]:
        from optuna.trial import TrialState

        run = self.runs.record(name)
        summary: dict[str, Any] | None = None
        points: list[dict[str, Any]] = []
        feasible = running = 0
        if self.exists(name):
            study, spec = self.open(name)
            summary = studies.summary(study, spec, redact(self.url))
            all_rows = studies.rows(study)
            feasible = sum(r.feasible for r in all_rows)
            running = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
            points = [
                {
                    "trial": r.trial,
                    "status": r.status,
                    "accuracy": r.accuracy,
                    "latency_ms": r.costs.get("latency_ms"),
                    "feasible": r.feasible,
                }
                for r in all_rows
            ]
        elif run is None:
            raise StudyError(f"no study {name!r}; GET /api/studies lists them")
        best = summary["best"][0] if summary and summary["best"] else None
        out: dict[str, Any] = {
            "study": name,
            "url": f"/api/studies/{name}",
            "state": self.state(run, summary, running),
            "n_trials": summary["n_trials"] if summary else 0,
            # as the driver counts them (study.summary's "trained")
            "done": summary["trained"] if summary else 0,
            "requested_trials": summary["requested_trials"] if summary else None,
            "running_trials": running,
            "feasible": feasible,
            "best": best and {k: v for k, v in best.items() if k != "params"},
            "reason": run.reason if run else "",
        }
        if detail:
            out["summary"] = summary
            out["points"] = points
            out["run"] = run and {
                "op": run.op,
                "pid": run.pid,
                "started": run.started,
                "ended": run.ended,
                "exit_code": run.exit_code,
                "log_tail": self.runs.log_tail(run),
            }
        return out

    def overview(self, name: str) -> dict[str, Any]:
        return self.cache.get(f"detail:{name}", lambda: self._overview(name, detail=True))  # type: ignore[no-any-return]

    def listing(self) -> list[dict[str, Any]]:
        def make() -> list[dict[str, Any]]:
            out = []
            for name in sorted(set(self.names()) | set(self.runs.studies())):
                try:
                    out.append(self._overview(name, detail=False))
                except StudyError:  # a study in the storage that edgetune did not make
                    continue
            return out

        return self.cache.get("list", make)  # type: ignore[no-any-return]
