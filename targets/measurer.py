"""Measurers: what runs a candidate on a target's device and times it.

A target whose device can be reached has a measurer: ``host`` measures with onnxruntime on
this machine; a target file may name an agent server (``targets.agent serve``) by its URL and
the file that holds its token. The search measures every candidate the cost model does not
rule out clearly, before any training, and the measurement is the score.

Protocol (the agent's, on the host and on a device alike): batch 1, one thread, chunks of runs
interleaved across the models, and ``latency_ms`` the 10th percentile of the chunk medians. On a
shared machine the low quantile is the uncontended latency: other work only ever slows a chunk
down. Figures are raw measurements of this run, never rescaled to another run's machine speed.
Measurements on one device never overlap: a lock file serializes them between the processes
of this machine, and an agent server runs one measurement at a time.
"""

from __future__ import annotations

import contextlib
import fcntl
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from targets.base import Target

PROTOCOL = "onnxruntime, batch 1, 1 thread; p10 of chunk medians, models interleaved"


@dataclass(frozen=True)
class Measurement:
    """One model's measured latency, with the protocol's figures."""

    latency_ms: float
    median_ms: float
    n_runs: int
    protocol: str = PROTOCOL
    calibration_speed_ms: float | None = None
    """The latency at the machine speed of the target's calibration (rescaled by a reference
    model measured in the same run): what a refit takes as the candidate's calibration row, so
    a noisy period does not bias the model. Never reported as the latency."""

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "latency_ms": self.latency_ms,
            "median_ms": self.median_ms,
            "n_runs": self.n_runs,
            "protocol": self.protocol,
        }
        if self.calibration_speed_ms is not None:
            out["calibration_speed_ms"] = self.calibration_speed_ms
        return out


class Measurer(ABC):
    """Runs ONNX models on one device and times them."""

    @property
    @abstractmethod
    def where(self) -> str:
        """Where the measurements run, for messages and records (never a secret)."""

    @abstractmethod
    def measure(
        self, models: list[bytes], *, seconds: float = 2.0, min_runs: int = 100
    ) -> list[Measurement]:
        """Each model's latency, in order; the models are measured in one interleaved run."""


def _from_agent(result: dict[str, Any], *, rescaled: bool = False) -> Measurement:
    return Measurement(
        latency_ms=float(result["raw_latency_ms"]),
        median_ms=float(result["median_ms"]),
        n_runs=int(result["n_runs"]),
        calibration_speed_ms=float(result["latency_ms"]) if rescaled else None,
    )


@contextlib.contextmanager
def device_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) while measuring."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def measurer_for(target: Target) -> Measurer | None:
    """The measurer of a target: this machine for ``host``, its agent server when the target
    names one, else None (the cost model is all there is)."""
    if target.name == "host":
        return HostMeasurer(reference_ms=target.provenance.reference_ms)
    if target.agent is not None:
        from targets.remote import AgentMeasurer

        return AgentMeasurer(target.agent)
    return None


class HostMeasurer(Measurer):
    """onnxruntime on this machine, one measurement at a time across its processes. With the
    calibration's ``reference_ms``, the suite's reference model is measured in each run too,
    and each measurement carries its latency at the calibration's speed."""

    def __init__(self, reference_ms: float | None = None) -> None:
        self.reference_ms = reference_ms

    @property
    def where(self) -> str:
        return "this machine (onnxruntime)"

    def measure(
        self, models: list[bytes], *, seconds: float = 2.0, min_runs: int = 100
    ) -> list[Measurement]:
        from targets.agent import measure
        from targets.home import edgetune_home

        reference = None
        if self.reference_ms:
            from targets.suite import reference_model

            reference = reference_model().SerializeToString()
        with device_lock(edgetune_home() / "targets" / "host.lock"):
            results = measure(list(models), seconds=seconds, min_runs=min_runs,
                              reference=reference, reference_ms=self.reference_ms)
        return [_from_agent(r, rescaled=reference is not None) for r in results]
