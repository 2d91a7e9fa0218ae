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
            f"ruled out {infeasible} | {_clock(el)} elapsed"
        )
        _draw(line, last, self.tty)

    def close(self) -> None:
        if self.enabled and self.tty:
            sys.stderr.write("\n")


class StepBar:
    """Steps done out of a total, elapsed and left, and a note; redrawn in place at most every
    ``every_s`` seconds on a terminal, otherwise written as a line every 30 s at most."""

    def __init__(self, total: int, enabled: bool, label: str, every_s: float = 2.0) -> None:
        self.total, self.enabled, self.label = total, enabled, label
        self.start = time.monotonic()
        self.drawn = float("-inf")
        self.first: int | None = None
        self.tty = sys.stderr.isatty()
        self.every_s = every_s if self.tty else max(every_s, 30.0)

    def update(self, done: int, note: str = "") -> None:
        now = time.monotonic()
        if self.first is None:
            self.first = done - 1  # a resumed run counts its speed from where it started
        if not self.enabled or (now - self.drawn < self.every_s and done < self.total):
            return
        self.drawn = now
        width = 24
        filled = int(width * min(done, self.total) / max(self.total, 1))
        el = now - self.start
        rate = (done - self.first) / el if el > 0 else 0.0
        left = int((self.total - done) / rate) if rate > 0 else 0
        _draw(
            f"{self.label} [{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} steps | "
            f"{_clock(int(el))} elapsed, {_clock(left)} left | {note}",
            "",
            self.tty,
        )

    def close(self) -> None:
        if self.enabled and self.tty:
            sys.stderr.write("\n")


def _clock(seconds: int) -> str:
    return f"{seconds // 60:02d}:{seconds % 60:02d}"


def _draw(line: str, last: str, tty: bool) -> None:
    if tty:
        sys.stderr.write("\r" + line + "\033[K")
        if last:
            sys.stderr.write(f"\n  {last}\n")
    else:
        sys.stderr.write(line + (f"  <- {last}" if last else "") + "\n")
    sys.stderr.flush()
