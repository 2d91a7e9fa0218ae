"""Exports as background jobs: ``edgetune export`` in a child process, one per study at a time
and ``Limits.max_exports`` in all, each killed after ``Limits.export_timeout_s``.

``POST /api/studies/NAME/export[?trial=N]`` starts one (202, with the job's URL) or joins the
one running; ``GET`` on the job's URL says ``running`` (202) or ``failed`` (409, with the
command line's one-line error), or returns the zip (200) when it is done. A job writes into a
temporary folder beside its final one and renames it into place when the export succeeded, so
a failed or killed export leaves no half folder. Finished exports are kept per storage and per
study id (a study made again under its name never gets an old export).
"""

from __future__ import annotations

import io
import os
import secrets
import shutil
import signal
import subprocess
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search.errors import StudyError
from search.service.files import LogCopier, private_dir
from search.service.runs import LimitError, Runs, last_error, spawn

FILES = ("model.onnx", "report.md", "summary.json", "front.png", "policy.png")


@dataclass
class ExportJob:
    study: str
    study_id: int
    trial: int
    out: Path
    state: str = "running"  # running | done | failed
    started: float = 0.0
    ended: float | None = None
    error: str = ""
    tmp: Path | None = None
    log: Path | None = None
    offset: int = 0
    proc: subprocess.Popen[bytes] | None = None
    copier: LogCopier | None = None

    @property
    def url(self) -> str:
        return f"/api/studies/{self.study}/export/{self.trial}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "study": self.study,
            "trial": self.trial,
            "state": self.state,
            "url": self.url,
            "started": self.started or None,
            "ended": self.ended,
            "error": self.error,
        }


class Exports:
    """The export jobs of one service. ``request`` forks: call it from the event-loop thread."""

    def __init__(self, runs: Runs) -> None:
        self.runs, self.limits = runs, runs.limits
        self.root = private_dir(runs.dir / "exports")
        self._jobs: dict[tuple[str, int, int], ExportJob] = {}
        self._lock = threading.RLock()
        for leftover in self.root.glob("*/.tmp-*"):  # from a service that went down mid-export
            shutil.rmtree(leftover, ignore_errors=True)

    def folder(self, name: str, study_id: int, trial: int) -> Path:
        return self.root / f"{name}-{study_id}" / f"trial-{trial}"

    def running(self) -> list[ExportJob]:
        return [j for j in self._jobs.values() if j.state == "running"]

    def find(self, name: str, study_id: int, trial: int) -> ExportJob | None:
        """The job for this trial, or a done one for an export already on disk."""
        self.poll()
        with self._lock:
            job = self._jobs.get((name, study_id, trial))
            out = self.folder(name, study_id, trial)
            if (job is None or job.state == "failed") and (out / "summary.json").exists():
                job = self._jobs[(name, study_id, trial)] = ExportJob(
                    name, study_id, trial, out, state="done"
                )
            return job

    def request(self, name: str, study_id: int, trial: int) -> ExportJob:
        """Start the export of the trial, or return the job already running or done."""
        with self._lock:
            job = self.find(name, study_id, trial)
            if job is not None and job.state in ("running", "done"):
                return job
            running = self.running()
            same = [j for j in running if j.study == name]
            if same:
                raise StudyError(
                    f"an export of trial {same[0].trial} of study {name!r} is running; wait for "
                    f"it (GET {same[0].url}), then ask again"
                )
            if len(running) >= self.limits.max_exports:
                raise LimitError(
                    f"{len(running)} exports are running, the service's limit; try again when "
                    "one has finished"
                )
            out = self.folder(name, study_id, trial)
            private_dir(out.parent)
            tmp = out.parent / f".tmp-trial-{trial}-{secrets.token_hex(4)}"
            log = out.parent / f"trial-{trial}.log"
            args = [name, "--out", str(tmp), "--trial", str(trial)]
            proc, copier, offset = spawn(self.runs.cfg, "export", args, log, f"{name} {trial}")
            job = ExportJob(name, study_id, trial, out, started=time.time(), tmp=tmp, log=log)
            job.offset, job.proc, job.copier = offset, proc, copier
            self._jobs[(name, study_id, trial)] = job
            return job

    def poll(self) -> None:
        """Finish the jobs whose process ended; kill those over the time limit."""
        with self._lock:
            for job in self.running():
                assert job.proc is not None and job.tmp is not None and job.log is not None
                code = job.proc.poll()
                if code is None:
                    if time.time() - job.started > self.limits.export_timeout_s:
                        self._kill(job.proc)
                        self._fail(job, f"export took over {self.limits.export_timeout_s:.0f} s")
                    continue
                if job.copier is not None:
                    job.copier.join(0.2)
                if code == 0 and all((job.tmp / f).exists() for f in FILES):
                    if job.out.exists():  # another service's export of the same trial won
                        shutil.rmtree(job.tmp, ignore_errors=True)
                    else:
                        os.replace(job.tmp, job.out)
                    job.state, job.ended = "done", time.time()
                else:
                    self._fail(job, last_error(job.log, job.offset) or f"export exited {code}")

    def _fail(self, job: ExportJob, error: str) -> None:
        if job.tmp is not None:
            shutil.rmtree(job.tmp, ignore_errors=True)
        job.state, job.ended, job.error = "failed", time.time(), error

    @staticmethod
    def _kill(proc: subprocess.Popen[bytes]) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()

    def shutdown(self) -> None:
        with self._lock:
            for job in self.running():
                assert job.proc is not None
                self._kill(job.proc)
                self._fail(job, "the service stopped")

    @staticmethod
    def zip_bytes(job: ExportJob) -> bytes:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for f in FILES:
                zf.write(job.out / f, f"{job.study}-trial{job.trial}/{f}")
        return buf.getvalue()
