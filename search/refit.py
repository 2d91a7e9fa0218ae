"""A measured target's cost model corrects itself during a study: every measured candidate
is a calibration row.

Every few measured candidates the target is refitted from its calibration measurements plus
every candidate measured on its device so far (kept with the target, so the next study starts
from the refit), and the driver hands the refitted target to the trials it starts next. Each
candidate is predicted before its own row is fitted, so the study's record of predicted against
measured latency is a prequential error. The host is refitted from its cached suite
measurements (``targets.host.refit_host``); a device with an agent server from the measurement
file it was calibrated from (``targets.calibrate.refit_user_target``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from search.errors import EdgetuneError

if TYPE_CHECKING:
    from search.trial import TrialOutcome
    from targets.base import Target

REFIT_EVERY = 4
"""Measured candidates between two refits."""


def refittable(target: Target) -> bool:
    """The host, or a device with an agent whose calibration measurements are still there."""
    from pathlib import Path

    if target.name == "host":
        return True
    return target.agent is not None and Path(target.provenance.source).is_file()


class Refit:
    """Collects measured candidates and refits the target from them."""

    def __init__(self, target: Target, *, enabled: bool, log: Callable[[str], None]) -> None:
        self.target = target
        self.enabled = enabled and refittable(target)
        self.log = log
        self.pending: list[tuple[bytes, float]] = []
        self.refits = 0

    def add(self, outcome: TrialOutcome) -> Target | None:
        """Take a told outcome; the refitted target when this one completes a batch."""
        if not self.enabled or outcome.onnx is None or "latency_ms" not in outcome.measured:
            return None
        # at the calibration's machine speed where the measurer gives it (the host), so that
        # rows measured while the machine was slower do not bias the model
        measured = outcome.measured
        row_ms = measured.get("calibration_speed_ms") or measured["latency_ms"]
        self.pending.append((outcome.onnx, float(row_ms)))
        return self.flush() if len(self.pending) >= REFIT_EVERY else None

    def flush(self) -> Target | None:
        """Keep the pending candidates as rows and refit; None if there were none."""
        if not self.enabled or not self.pending:
            return None
        from targets.calibrate import refit_user_target
        from targets.host import record_candidates, refit_host

        n, pending, self.pending = len(self.pending), self.pending, []
        name = self.target.name
        try:
            if name == "host":
                record_candidates(pending)
                self.target = refit_host()
            else:
                self.target = refit_user_target(self.target, pending)
        except (EdgetuneError, OSError) as exc:  # a refit is a bonus: the study goes on
            self.enabled = False
            self.log(f"the {name} cost model is not refitted during this study: {exc}")
            return None
        self.refits += 1
        mdape = self.target.provenance.fidelity.get("mdape")
        self.log(
            f"{name} cost model refitted with {n} more measured candidates"
            + (f" (held-out MdAPE {mdape:.1f}%)" if isinstance(mdape, float) else "")
        )
        return self.target
