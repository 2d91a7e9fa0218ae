"""Background runs: one ``edgetune search`` or ``edgetune resume`` child process per study,
at most ``Limits.max_runs`` at a time; the others wait in a queue.

A run is the command line itself (``python -m search.cli OP ARGS``, that is
``edgetune OP ARGS`` with the storage URL taken from the environment), so resuming from the
page is the same operation as ``edgetune resume``. Stop sends SIGTERM, which ends a run like
Ctrl-C: the trials running are marked failed and enqueued again, everything told is kept. Stop
on a queued run takes it out of the queue; a queued run starts when a running one ends.

Each run is recorded in ``$EDGETUNE_HOME/service/runs-<storage hash>/<study>.json`` (pid,
start, exit code, whether Stop was asked for; written atomically), and its output, redacted,
goes to ``.../logs/<study>.log``. A record that says a run was going, left by a service that
went down, shows as ``interrupted``; a queued one stays queued and starts after the restart.
Children get SIGTERM when the service dies (``PR_SET_PDEATHSIG``), so no run outlives it.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from search.errors import StudyError
from search.service.config import ServiceConfig, service_home
from search.service.files import LogCopier, open_private, private_dir, redact_text, write_atomic
from search.study import STORAGE_ENV

EXIT_INTERRUPTED = 130
STATES = ("queued", "running", "stopping", "finished", "stopped", "failed", "interrupted")
CHILD = "search.cli"


class LimitError(StudyError):
    """The service is at one of its limits (the run queue, exports): try again later."""


def default_max_runs() -> int:
    """One run per two cores, at least one."""
    return max(1, (os.cpu_count() or 1) // 2)


@dataclass(frozen=True)
class Limits:
    """How much the service does at once. Beyond ``max_runs`` studies wait in a queue of at
    most ``max_queued``; exports run one per study and ``max_exports`` in all."""

    max_runs: int = field(default_factory=default_max_runs)
    max_queued: int = 16
    max_exports: int = 2
    export_timeout_s: float = 900.0


@dataclass
class Run:
    study: str
    op: str
    pid: int  # 0 while queued
    started: float
    log: str
    log_offset: int = 0
    ended: float | None = None
    exit_code: int | None = None
    stop_requested: bool = False
    interrupted: bool = False
    reason: str = ""
    queued: float | None = None
    args: list[str] = field(default_factory=list)


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the service's process goes away."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def last_error(log: Path, offset: int) -> str:
    """The last ``edgetune: ...`` line this run wrote: the CLI's one-line error."""
    try:
        with log.open("rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    lines = [ln.strip() for ln in text.splitlines() if ln.startswith("edgetune:")]
    return lines[-1] if lines else ""


def child_env(cfg: ServiceConfig) -> dict[str, str]:
    """A child's environment: the storage URL in it, the service's token out of it."""
    env = {k: v for k, v in os.environ.items() if k != "EDGETUNE_TOKEN"}
    env.update(PYTHONUNBUFFERED="1", **{STORAGE_ENV: cfg.storage})
    return env


def spawn(
    cfg: ServiceConfig, op: str, args: list[str], log: Path, title: str
) -> tuple[subprocess.Popen[bytes], LogCopier, int]:
    """Start ``edgetune OP ARGS --json`` with its output copied, redacted, to ``log``. Call from
    the event-loop (main) thread: the parent-death signal follows the thread that forked."""
    cmd = [sys.executable, "-m", CHILD, op, *args]
    if cfg.ray_address and op in ("search", "resume"):
        cmd += ["--ray-address", cfg.ray_address]
    cmd.append("--json")
    f = open_private(log)
    f.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} edgetune {op} {title}\n".encode())
    f.flush()
    offset = f.tell()
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=child_env(cfg),
        preexec_fn=_die_with_parent,
        start_new_session=True,
    )
    assert proc.stdout is not None
    return proc, LogCopier(proc.stdout, f, (cfg.storage,)), offset


class Runs:
    """The service's child processes, their queue and their records. Thread-safe; ``start``
    and ``schedule`` must be called from the event-loop thread."""

    def __init__(self, cfg: ServiceConfig, limits: Limits | None = None) -> None:
        self.cfg = cfg
        self.limits = limits or Limits()
        digest = hashlib.sha256(cfg.storage.encode()).hexdigest()[:10]
        base = private_dir(service_home(cfg.home))
        self.dir = private_dir(base / f"runs-{digest}")
        self.logs = private_dir(self.dir / "logs")
        self.specs = private_dir(self.dir / "specs")
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._copiers: dict[str, LogCopier] = {}
        self._lock = threading.RLock()
        self._queue: list[str] = []
        self._adopted: set[str] = set()
        queued: list[Run] = []
        for study in self.studies():
            run = self._load(study)
            if run is None:
                continue
            if run.pid == 0 and not run.stop_requested:
                queued.append(run)
            elif run.exit_code is None and not run.interrupted and self._adoptable(run):
                self._adopted.add(study)
        self._queue = [r.study for r in sorted(queued, key=lambda r: r.queued or 0.0)]

    # -- records ---------------------------------------------------------------------------
    def _path(self, study: str) -> Path:
        return self.dir / f"{study}.json"

    def _save(self, run: Run) -> None:
        write_atomic(self._path(run.study), json.dumps(asdict(run), indent=1))

    def _load(self, study: str) -> Run | None:
        try:
            return Run(**json.loads(self._path(study).read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def record(self, study: str) -> Run | None:
        """The study's latest run, brought up to date (reaps a finished child)."""
        with self._lock:
            run = self._load(study)
            if run is None or run.pid == 0 or run.exit_code is not None or run.interrupted:
                return run
            proc = self._procs.get(study)
            if proc is not None and proc.pid == run.pid:
                code = proc.poll()
                if code is None:
                    return run
                del self._procs[study]
                copier = self._copiers.pop(study, None)
                if copier is not None:
                    copier.join(0.2)  # its last lines (grandchildren may keep the pipe open)
                run.exit_code, run.ended = code, time.time()
                run.reason = last_error(Path(run.log), run.log_offset)
                self._save(run)
            elif not self._adoptable(run):
                # left by a service that went down while the run was going
                self._adopted.discard(study)
                run.interrupted, run.ended = True, time.time()
                self._save(run)
            return run

    def studies(self) -> list[str]:
        return sorted(p.stem for p in self.dir.glob("*.json"))

    def _adoptable(self, run: Run) -> bool:
        """A run started by an earlier service whose process still runs (not our child)."""
        cmd = _cmdline(run.pid)
        return f" {run.op} " in cmd and run.study in cmd and (CHILD in cmd or "search.cli" in cmd)

    def state(self, run: Run | None) -> str | None:
        if run is None:
            return None
        if run.pid == 0:
            return "stopped" if run.stop_requested else "queued"
        if run.interrupted:
            return "interrupted"
        if run.exit_code is None:
            return "stopping" if run.stop_requested else "running"
        if run.stop_requested:
            return "stopped"
        if run.exit_code == 0:
            return "finished"
        if run.exit_code in (EXIT_INTERRUPTED, -signal.SIGTERM, -signal.SIGKILL):
            return "interrupted"
        return "failed"

    def active(self, study: str) -> bool:
        """Queued, running or stopping."""
        return self.state(self.record(study)) in ("queued", "running", "stopping")

    def running(self) -> int:
        """Runs going now: our children and runs of an earlier service still alive."""
        with self._lock:
            for study in list(self._procs) + list(self._adopted):
                self.record(study)
            self._adopted = {s for s in self._adopted if self.active(s)}
            return len(self._procs) + len(self._adopted)

    def queued(self) -> list[str]:
        with self._lock:
            return list(self._queue)

    # -- starting, queueing and stopping ---------------------------------------------------
    def check_room(self) -> None:
        """Raise LimitError when a new run could neither start nor wait in the queue."""
        with self._lock:
            if len(self._queue) >= self.limits.max_queued:
                raise LimitError(
                    f"the run queue is full ({self.limits.max_queued} studies wait for "
                    f"{self.limits.max_runs} running); try again when one has started, or stop "
                    "a queued one"
                )

    def request(self, study: str, op: str, args: list[str]) -> Run:
        """Start the run now if a slot is free, else queue it (raises LimitError when full)."""
        with self._lock:
            if not self._queue and self.running() < self.limits.max_runs:
                return self.start(study, op, args)
            self.check_room()
            log = self.logs / f"{study}.log"
            run = Run(study, op, 0, time.time(), str(log), queued=time.time(), args=list(args))
            self._save(run)
            self._queue.append(study)
            return run

    def schedule(self) -> list[Run]:
        """Start queued runs while slots are free (the event-loop thread); the runs started."""
        started = []
        with self._lock:
            while self._queue and self.running() < self.limits.max_runs:
                study = self._queue.pop(0)
                run = self._load(study)
                if run is None or run.pid != 0 or run.stop_requested:
                    continue
                started.append(self.start(study, run.op, run.args))
        return started

    def start(self, study: str, op: str, args: list[str]) -> Run:
        """Start ``edgetune OP ARGS`` for the study now (the event-loop thread)."""
        with self._lock:
            proc, copier, offset = spawn(self.cfg, op, args, self.logs / f"{study}.log", study)
            self._procs[study], self._copiers[study] = proc, copier
            log = str(self.logs / f"{study}.log")
            run = Run(study, op, proc.pid, time.time(), log, log_offset=offset)
            self._save(run)
            return run

    def stop(self, study: str) -> Run | None:
        """SIGTERM the study's run, or take it out of the queue; None when nothing runs."""
        with self._lock:
            run = self.record(study)
            state = self.state(run)
            if run is None or state not in ("queued", "running", "stopping"):
                return None
            run.stop_requested = True
            if state == "queued":
                if study in self._queue:
                    self._queue.remove(study)
                run.ended, run.reason = time.time(), "stopped while queued; it never started"
                self._save(run)
                return run
            self._save(run)
            try:
                os.kill(run.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            return run

    def poll_all(self) -> None:
        for study in list(self._procs):
            self.record(study)

    def shutdown(self, wait_s: float = 30.0) -> None:
        """SIGTERM every child (their trials go back to the queue), wait, then SIGKILL.
        Queued runs stay queued for the next start."""
        with self._lock:
            procs = dict(self._procs)
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + wait_s
        for proc in procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for study in procs:
            self.record(study)

    def log_tail(self, run: Run, chars: int = 2000) -> str:
        try:
            with open(run.log, "rb") as f:
                size = f.seek(0, os.SEEK_END)
                f.seek(max(run.log_offset, size - 4 * chars))
                text = f.read().decode(errors="replace")[-chars:]
        except OSError:
            return ""
        return redact_text(text, (self.cfg.storage,))
