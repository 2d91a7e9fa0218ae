"""What a run prints while it works: a one-line progress bar on stderr."""

from __future__ import annotations

import sys
import time


class Progress:
    """Trials trained out of the target, feasible, best accuracy, running, ruled out, elapsed.

    On a terminal the line is redrawn in place and each trial's message printed under it;
    otherwise (a log file, the service) one line is written per update.
    """

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled = total, enabled
        self.start = time.monotonic()
        self.tty = sys.stderr.isatty()

    def update(
        self,
        done: int,
        feasible: int,
        best: float | None,
        running: int,
        infeasible: int,
        last: str = "",
    ) -> None:
        if not self.enabled:
            return
        width = 24
        filled = int(width * min(done, self.total) / max(self.total, 1))
        el = int(time.monotonic() - self.start)
        best_s = f"{best:.4f}" if best is not None else "-"
        line = (
            f"[{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} trained | "
            f"feasible {feasible} | best acc {best_s} | running {running} | "
            f"ruled out {infeasible} | "
            f"{el // 60:02d}:{el % 60:02d} elapsed"
        )
        if self.tty:
            sys.stderr.write("\r" + line + "\033[K")
            if last:
                sys.stderr.write(f"\n  {last}\n")
        else:
            sys.stderr.write(line + (f"  <- {last}" if last else "") + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            sys.stderr.write("\n")
