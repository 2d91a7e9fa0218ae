"""How well predictions match measurements: share within ±10%, Spearman ρ, MdAPE."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from cost_models.errors import CalibrationError

if TYPE_CHECKING:
    import numpy as np

__all__ = ["fidelity", "spearman"]


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean of their ranks), 1-based."""
    import numpy as np

    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    sx = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sx[j + 1] == sx[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Spearman's rank correlation (Pearson correlation of average ranks)."""
    import numpy as np

    ra, rb = _ranks(np.asarray(a, float)), _ranks(np.asarray(b, float))
    ra -= ra.mean()
    rb -= rb.mean()
    denom = float(np.sqrt((ra**2).sum() * (rb**2).sum()))
    return float((ra * rb).sum() / denom) if denom > 0 else 0.0


def fidelity(pred: Sequence[float], meas: Sequence[float]) -> dict[str, float]:
    """``within_10pct`` (share with |pred/meas - 1| <= 0.1), ``spearman``, ``mdape`` (median
    absolute percentage error, in %), and ``n``."""
    import numpy as np

    p, m = np.asarray(pred, float), np.asarray(meas, float)
    if p.shape != m.shape or p.ndim != 1 or len(p) < 2:
        raise CalibrationError(
            f"fidelity needs two equal-length lists of >= 2 values, got {p.shape} and {m.shape}"
        )
    if (m <= 0).any():
        raise CalibrationError("measured values must be > 0 to compute relative errors")
    ape = np.abs(p / m - 1.0)
    return {
        "n": float(len(p)),
        "within_10pct": float((ape <= 0.1 + 1e-12).mean()),
        "spearman": spearman(p, m),
        "mdape": float(np.median(ape) * 100),
    }
