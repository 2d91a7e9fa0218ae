"""What the benchmark scripts share: running edgetune as a user does, and timing it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any


def edgetune(*args: str) -> tuple[dict[str, Any], float]:
    """``edgetune ARGS --json`` in a subprocess: its JSON output and its wall time in seconds."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "search.cli", *args, "--json"],
        text=True,
        stdout=subprocess.PIPE,
        env=dict(os.environ),
    )
    if proc.returncode != 0:
        raise SystemExit(f"edgetune {' '.join(args)} failed with {proc.returncode}")
    out: dict[str, Any] = json.loads(proc.stdout)
    return out, time.perf_counter() - start
