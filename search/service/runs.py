"""Background runs: one ``edgetune search`` or ``edgetune resume`` child process per study.

A run is the command line itself (``python -m search.cli ...``), so resuming from the page is
the same operation as ``edgetune resume``. Stop sends SIGTERM, which ends a run like Ctrl-C:
the trials running are marked failed and enqueued again, everything told is kept.

Each run is recorded in ``$EDGETUNE_HOME/service/runs-<storage hash>/<study>.json`` (pid, start,
exit code, whether Stop was asked for), and its output goes to ``.../logs/<study>.log``. A
record that says a run was going, left by a service that went down, shows as ``interrupted``.
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
from dataclasses import asdict, dataclass
from pathlib import Path

from search.service.config import ServiceConfig, service_home

EXIT_INTERRUPTED = 130
STATES = ("running", "stopping", "finished", "stopped", "failed", "interrupted")


@dataclass
class Run:
    study: str
    op: str
    pid: int
    started: float
    log: str
    log_offset: int = 0
    ended: float | None = None
    exit_code: int | None = None
    stop_requested: bool = False
    interrupted: bool = False
    reason: str = ""


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


def _last_error(log: Path, offset: int) -> str:
    """The last ``edgetune: ...`` line this run wrote: the CLI's one-line error."""
    try:
        with log.open("rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    lines = [ln.strip() for ln in text.splitlines() if ln.startswith("edgetune:")]
    return lines[-1] if lines else ""


class Runs:
    """The service's child processes and their records. Safe to call from several threads."""

    def __init__(self, cfg: ServiceConfig) -> None:
        self.cfg = cfg
        digest = hashlib.sha256(cfg.storage.encode()).hexdigest()[:10]
        base = service_home(cfg.home)
        self.dir = base / f"runs-{digest}"
        self.logs = self.dir / "logs"
        self.specs = self.dir / "specs"
        for d in (self.dir, self.logs, self.specs):
            d.mkdir(parents=True, exist_ok=True)
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._lock = threading.RLock()

    # -- records ---------------------------------------------------------------------------
    def _path(self, study: str) -> Path:
        return self.dir / f"{study}.json"

    def _save(self, run: Run) -> None:
        tmp = self._path(run.study).with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(run), indent=1))
        tmp.replace(self._path(run.study))

    def record(self, study: str) -> Run | None:
        """The study's latest run, brought up to date (reaps a finished child)."""
        with self._lock:
            try:
                run = Run(**json.loads(self._path(study).read_text()))
            except (OSError, ValueError, TypeError):
                return None
            if run.exit_code is not None or run.interrupted:
                return run
            proc = self._procs.get(study)
            if proc is not None and proc.pid == run.pid:
                code = proc.poll()
                if code is None:
                    return run
                del self._procs[study]
                run.exit_code, run.ended = code, time.time()
                run.reason = _last_error(Path(run.log), run.log_offset)
                self._save(run)
            elif not self._adoptable(run):
                # left by a service that went down while the run was going
                run.interrupted, run.ended = True, time.time()
                self._save(run)
            return run

    def studies(self) -> list[str]:
        return sorted(p.stem for p in self.dir.glob("*.json"))

    def _adoptable(self, run: Run) -> bool:
        """A run started by an earlier service whose process still runs (not our child)."""
        return f"search.cli {run.op} " in _cmdline(run.pid) and run.study in _cmdline(run.pid)

    def state(self, run: Run | None) -> str | None:
        if run is None:
            return None
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
        run = self.record(study)
        return run is not None and self.state(run) in ("running", "stopping")

    # -- starting and stopping -------------------------------------------------------------
    def start(self, study: str, op: str, args: list[str]) -> Run:
        """Start ``edgetune OP ARGS`` for the study. Call from the event-loop (main) thread:
        the parent-death signal follows the thread that forked."""
        cmd = [sys.executable, "-m", "search.cli", op, *args, "--storage", self.cfg.storage]
        if self.cfg.ray_address:
            cmd += ["--ray-address", self.cfg.ray_address]
        cmd.append("--json")
        log = self.logs / f"{study}.log"
        with self._lock:
            with log.open("ab") as f:
                f.write(
                    f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} edgetune {op} {study}\n".encode()
                )
                offset = f.tell()
                proc = subprocess.Popen(
                    cmd,
                    stdout=f,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=dict(os.environ, PYTHONUNBUFFERED="1"),
                    preexec_fn=_die_with_parent,
                    start_new_session=True,
                )
            self._procs[study] = proc
            run = Run(study, op, proc.pid, time.time(), str(log), log_offset=offset)
            self._save(run)
            return run

    def stop(self, study: str) -> Run | None:
        """SIGTERM the study's run; None when nothing runs."""
        with self._lock:
            run = self.record(study)
            if run is None or self.state(run) not in ("running", "stopping"):
                return None
            run.stop_requested = True
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
        """SIGTERM every child (their trials go back to the queue), wait, then SIGKILL."""
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
                f.seek(run.log_offset)
                return f.read().decode(errors="replace")[-chars:]
        except OSError:
            return ""
