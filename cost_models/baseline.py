"""The FLOPs-proportional baseline every calibration is judged against.

latency_ms = c · MACs, with one constant ``c`` per target, fitted on the same rows as the cost
model to the same objective (least squares in relative error): minimizing
Σ_i (c·m_i/y_i - 1)² gives c = Σ(m_i/y_i) / Σ(m_i/y_i)². HW-NAS-Bench (Li et al., ICLR 2021)
showed such proxies rank real device latency poorly; a cost model is only worth its constants
if it beats this on held-out rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from cost_models.base import Measurement
from cost_models.errors import CalibrationError, UnsupportedLayerError
from cost_models.fidelity import fidelity

__all__ = ["compare_heldout", "fit_flops_constant", "total_macs"]


def total_macs(measurement: Measurement) -> int:
    graph = measurement[0]
    return sum(layer.macs for layer in graph.layers)


def fit_flops_constant(rows: Sequence[Measurement]) -> float:
    """ms per MAC of the FLOPs baseline, fitted on ``rows``."""
    r = [total_macs(m) / float(m[2]) for m in rows if total_macs(m) > 0]
    if not r:
        raise CalibrationError("the FLOPs baseline needs rows with MACs > 0; got none")
    return sum(r) / sum(x * x for x in r)


def compare_heldout(
    train: Sequence[Measurement],
    test: Sequence[Measurement],
    predict_ms: Callable[[Measurement], float],
) -> dict[str, Any]:
    """Held-out fidelity of ``predict_ms`` on ``test`` beside the FLOPs baseline fitted on
    ``train``: ``within_10pct``, ``spearman``, ``mdape``, ``n_heldout``, ``flops_baseline``.

    A held-out row with a layer class no fitting row had cannot be predicted
    (:class:`UnsupportedLayerError`): it is not scored, and counted in ``n_unpredictable``.
    """
    scored = []
    for m in test:
        try:
            scored.append((m, predict_ms(m)))
        except UnsupportedLayerError:
            continue
    n_unpredictable = len(test) - len(scored)
    test = [m for m, _ in scored]
    if len(test) < 2:
        raise CalibrationError(
            f"held-out fidelity needs >= 2 predictable held-out rows, got {len(test)} "
            f"({n_unpredictable} have layer classes no fitting row has); give more measurements"
        )
    meas = [float(m[2]) for m in test]
    fid = fidelity([p for _, p in scored], meas)
    c = fit_flops_constant(train)
    base = fidelity([c * total_macs(m) for m in test], meas)
    return {
        "within_10pct": fid["within_10pct"], "spearman": fid["spearman"], "mdape": fid["mdape"],
        "n_heldout": len(test), "n_unpredictable": n_unpredictable,
        "flops_baseline": {"within_10pct": base["within_10pct"], "spearman": base["spearman"],
                           "mdape": base["mdape"], "ms_per_gmac": c * 1e9},
    }
