"""Where edgetune keeps its state: studies, artifacts, teachers, calibrations, the service."""

from __future__ import annotations

import os
from pathlib import Path


def edgetune_home() -> Path:
    """``$EDGETUNE_HOME``, or ``./.edgetune`` when it is not set (an absolute path)."""
    return Path(os.environ.get("EDGETUNE_HOME", ".edgetune")).resolve()
