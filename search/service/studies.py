"""What the service shows of a study: ``study.summary`` plus the run's state; and the status
cache that answers ``GET /api/studies`` and ``GET /api/studies/NAME``.

Status calls never read the storage on the request path: a background thread recomputes the
list and the detail of every study asked about in the last two minutes, about once a second
(never more than a third of the time), and serializes them once; a request returns those bytes.
Only the first call for a study computes its detail (one computation however many clients ask
at once). An action (submit, stop, resume) wakes the thread at once.

A refresh reads little: each study stays loaded between refreshes (Optuna's cached storage then
reads only the trials that are new or not finished), its trials are read once per refresh, and
the list reuses the details just computed.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, cast

from search import study as studies
from search.errors import StudyError
from search.service.files import redact, redact_text
from search.service.runs import Run, Runs
from search.spec import Spec

if TYPE_CHECKING:
    import optuna

__all__ = ["StatusCache", "Studies", "redact", "redact_text"]

REFRESH_S = 1.0
WATCH_S = 120.0
DETAIL_KEYS = ("summary", "points", "run")


class _OneRead:
    """A study whose trials are read once: ``study.summary`` and the rows read them five times."""

    def __init__(self, study: optuna.Study) -> None:
        self._study = study
        self._trials = study.get_trials(deepcopy=False)

    def get_trials(self, deepcopy: bool = False, states: Any = None) -> list[Any]:
        return [t for t in self._trials if states is None or t.state in states]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)


class Studies:
    def __init__(self, storage_url: str, runs: Runs) -> None:
        self.url = storage_url
        self.storage = studies.storage_for(storage_url)
        self.runs = runs
        self._loaded: dict[str, tuple[int, optuna.Study, Spec]] = {}
        self._lock = threading.Lock()

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

    def loaded(self, name: str) -> tuple[optuna.Study, Spec]:
        """The study and its spec, kept loaded while its id stays the same."""
        try:
            sid = self.study_id(name)
        except KeyError:
            raise StudyError(f"no study {name!r}; GET /api/studies lists them") from None
        with self._lock:
            hit = self._loaded.get(name)
        if hit is not None and hit[0] == sid:
            return hit[1], hit[2]
        study, spec = studies.load(self.storage, name, redact(self.url))
        with self._lock:
            self._loaded[name] = (sid, study, spec)
        return study, spec

    def state(self, run: Run | None, summary: dict[str, Any] | None, running_trials: int) -> str:
        state = self.runs.state(run)
        done = summary is not None and (summary["trained"] >= summary["requested_trials"])
        if state is None:  # made outside the service
            return "running" if running_trials else ("finished" if done else "stopped")
        if state == "interrupted" and done:
            return "finished"
        return state

    def overview(self, name: str, detail: bool = True, known: bool | None = None) -> dict[str, Any]:
        """The study's state, progress and best candidate; with ``detail``, its summary, every
        trial's accuracy and latency, and the run. ``known``: whether the storage has it."""
        from optuna.trial import TrialState

        run = self.runs.record(name)
        summary: dict[str, Any] | None = None
        points: list[dict[str, Any]] = []
        feasible = running = 0
        if self.exists(name) if known is None else known:
            loaded, spec = self.loaded(name)
            study = cast("optuna.Study", _OneRead(loaded))
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
            "reason": redact_text(run.reason, (self.url,)) if run else "",
        }
        if run is not None and run.pid == 0 and not run.stop_requested:
            queue = self.runs.queued()
            out["queue_position"] = queue.index(name) + 1 if name in queue else None
        if detail:
            out["summary"] = summary
            out["points"] = points
            out["run"] = run and {
                "op": run.op,
                "pid": run.pid or None,
                "started": run.started,
                "ended": run.ended,
                "exit_code": run.exit_code,
                "log_tail": self.runs.log_tail(run),
            }
        return out

    def listing(self, details: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        """Every study in the storage or with a run, without detail (``details``: overviews
        just computed, whose list entries are taken from them)."""
        stored = set(self.names())
        with self._lock:
            self._loaded = {k: v for k, v in self._loaded.items() if k in stored}
        out = []
        for name in sorted(stored | set(self.runs.studies())):
            if details and name in details:
                out.append({k: v for k, v in details[name].items() if k not in DETAIL_KEYS})
                continue
            try:
                out.append(self.overview(name, detail=False, known=name in stored))
            except StudyError:  # a study in the storage that edgetune did not make
                continue
        return out


class StatusCache:
    """The serialized list and details, refreshed by a background thread (see the module)."""

    def __init__(self, index: Studies, refresh_s: float = REFRESH_S) -> None:
        self.index, self.refresh_s = index, refresh_s
        self._list: bytes | None = None
        self._details: dict[str, bytes] = {}
        self._asked: dict[str, float] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._wake, self._ready, self._stop = (
            threading.Event(),
            threading.Event(),
            threading.Event(),
        )
        self._thread = threading.Thread(target=self._loop, name="edgetune-status", daemon=True)
        self.last_refresh_s = 0.0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(10)

    def kick(self) -> None:
        """Refresh now (after an action changed a state)."""
        self._wake.set()

    def peek_listing(self) -> bytes | None:
        """The list as last refreshed, or None before the first refresh (never blocks)."""
        return self._list

    def peek_detail(self, name: str) -> bytes | None:
        """The study's detail as last refreshed, or None if not computed yet (never blocks)."""
        self._asked[name] = time.monotonic()
        return self._details.get(name)

    def listing(self) -> bytes:
        """``{"studies": [...]}``; waits for the first refresh only."""
        body = self._list
        if body is None:
            self._ready.wait(60)
            body = self._list
        if body is None:  # the thread failed: compute here rather than answer nothing
            body = self._list = self._list_bytes()
        return body

    def detail(self, name: str) -> bytes:
        """The study's detail; raises StudyError (404) for a study that does not exist."""
        self._asked[name] = time.monotonic()
        body = self._details.get(name)
        if body is not None:
            return body
        with self._guard:
            lock = self._locks.setdefault(name, threading.Lock())
        with lock:  # one computation however many ask at once
            body = self._details.get(name)
            if body is None:
                try:
                    body = self._detail_bytes(name)
                except StudyError:
                    self._asked.pop(name, None)
                    raise
                self._details[name] = body
            return body

    def _list_bytes(self, details: dict[str, dict[str, Any]] | None = None) -> bytes:
        return json.dumps({"studies": self.index.listing(details)}, default=str).encode()

    def _detail_bytes(self, name: str) -> bytes:
        return json.dumps(self.index.overview(name), default=str).encode()

    def refresh(self) -> None:
        """Recompute the details asked for recently, then the list (reusing them)."""
        now = time.monotonic()
        details: dict[str, dict[str, Any]] = {}
        for name, asked in list(self._asked.items()):
            if now - asked > WATCH_S:
                self._asked.pop(name, None)
                self._details.pop(name, None)
                continue
            try:
                details[name] = self.index.overview(name)
            except StudyError:
                self._details.pop(name, None)
                continue
            self._details[name] = json.dumps(details[name], default=str).encode()
        self._list = self._list_bytes(details)
        with self._guard:  # names asked about once and never again
            self._locks = {k: v for k, v in self._locks.items() if k in self._asked}

    def _loop(self) -> None:
        failures = 0
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                self.refresh()
                failures = 0
            except Exception as exc:  # keep the last good answers; say why once in a while
                failures += 1
                if failures in (1, 10, 100):
                    message = redact_text(f"{type(exc).__name__}: {exc}"[:300], (self.index.url,))
                    print(f"edgetune service: status refresh failed: {message}", file=sys.stderr)
            self._ready.set()
            self.last_refresh_s = time.monotonic() - t0
            # at most a third of the time refreshing, however large the studies
            self._wake.wait(max(self.refresh_s, 2 * self.last_refresh_s))
            self._wake.clear()
