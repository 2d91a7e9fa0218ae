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

__all__ = ["Fold", "compare_folds", "compare_heldout", "fit_flops_constant", "total_macs"]


def total_macs(measurement: Measurement) -> int:
    graph = measurement[0]
    return sum(layer.macs for layer in graph.layers)


def fit_flops_constant(rows: Sequence[Measurement]) -> float:
    """ms per MAC of the FLOPs baseline, fitted on ``rows``."""
    r = [total_macs(m) / float(m[2]) for m in rows if total_macs(m) > 0]
    if not r:
        raise CalibrationError("the FLOPs baseline needs rows with MACs > 0; got none")
    return sum(r) / sum(x * x for x in r)


Fold = tuple[Sequence[Measurement], Sequence[Measurement], Callable[[Measurement], float]]
"""One split of a cross-validation: fitting rows, held-out rows, and the prediction (in ms) of
the constants fitted on the fitting rows."""


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
    return compare_folds([(train, test, predict_ms)])


def compare_folds(folds: Sequence[Fold]) -> dict[str, Any]:
    """:func:`compare_heldout` over the held-out rows of every fold together (in a k-fold
    cross-validation, every row is predicted once, by constants that were not fitted on it),
    the FLOPs baseline of each fold fitted on that fold's fitting rows; with more than one
    fold, the baseline's ``ms_per_gmac`` is the folds' mean and ``folds`` lists each fold's
    own ``n_heldout``, ``within_10pct`` and ``mdape``."""
    pred, meas, base, per_fold, constants = [], [], [], [], []
    n_unpredictable = 0
    for train, test, predict_ms in folds:
        scored = []
        for m in test:
            try:
                scored.append((m, predict_ms(m)))
            except UnsupportedLayerError:
                n_unpredictable += 1
        c = fit_flops_constant(train)
        constants.append(c)
        pred += [p for _, p in scored]
        meas += [float(m[2]) for m, _ in scored]
        base += [c * total_macs(m) for m, _ in scored]
        if len(folds) > 1 and len(scored) >= 2:
            f = fidelity([p for _, p in scored], [float(m[2]) for m, _ in scored])
            per_fold.append({"n_heldout": len(scored), "within_10pct": f["within_10pct"],
                             "mdape": f["mdape"]})
    if len(meas) < 2:
        raise CalibrationError(
            f"held-out fidelity needs >= 2 predictable held-out rows, got {len(meas)} "
            f"({n_unpredictable} have layer classes no fitting row has); give more measurements"
        )
    fid, flops = fidelity(pred, meas), fidelity(base, meas)
    return {
        "within_10pct": fid["within_10pct"], "spearman": fid["spearman"], "mdape": fid["mdape"],
        "n_heldout": len(meas), "n_unpredictable": n_unpredictable,
        "flops_baseline": {"within_10pct": flops["within_10pct"], "spearman": flops["spearman"],
                           "mdape": flops["mdape"],
                           "ms_per_gmac": sum(constants) / len(constants) * 1e9},
        **({"folds": per_fold} if len(folds) > 1 else {}),
    }
