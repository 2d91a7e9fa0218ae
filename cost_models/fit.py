"""Fitting a device's latency and energy constants from measurements: non-negative least
squares.

Rows are weighted by 1 / measured value, so the fit minimizes *relative* error (what
fidelity is judged on), and every coefficient is >= 0 (a kernel never takes negative time, an
operation never returns energy).
NNLS is Lawson & Hanson's active-set algorithm ("Solving Least Squares Problems", 1974, ch. 23),
in numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from typing import TYPE_CHECKING

from cost_models.analytic import KernelCoefficients, KernelConstants, kernel_features
from cost_models.base import Measurement
from cost_models.energy import EnergyConstants, energy_features
from cost_models.errors import CalibrationError
from cost_models.graph import FLOAT_BITS, Bits, LayerGraph
from cost_models.kernels import NCHWC_BLOCK

if TYPE_CHECKING:
    import numpy as np

__all__ = ["EnergyRow", "fit_energy_constants", "fit_kernel_constants", "fit_linear", "nnls"]

EnergyRow = tuple[LayerGraph, Bits, float, float]
"""One measured model for an energy fit: graph, bit-widths, measured latency_ms, energy_mj."""


def nnls(a: np.ndarray, b: np.ndarray, *, max_iter: int | None = None) -> np.ndarray:
    """argmin_x ||a x - b||_2 subject to x >= 0 (Lawson-Hanson active set)."""
    import numpy as np

    m, n = a.shape
    x = np.zeros(n)
    passive = np.zeros(n, dtype=bool)
    tol = 10 * np.finfo(float).eps * np.linalg.norm(a, 1) * max(m, n)
    max_iter = max_iter or 3 * n
    w = a.T @ (b - a @ x)
    it = 0
    while (~passive).any() and (w[~passive] > tol).any():
        j = int(np.argmax(np.where(~passive, w, -np.inf)))
        passive[j] = True
        while True:
            it += 1
            if it > max_iter * 10:
                return x
            z = np.zeros(n)
            z[passive] = np.linalg.lstsq(a[:, passive], b, rcond=None)[0]
            if (z[passive] > 0).all():
                x = z
                break
            mask = passive & (z <= 0)
            alpha = np.min(x[mask] / (x[mask] - z[mask]))
            x = x + alpha * (z - x)
            passive &= x > tol
            x[~passive] = 0.0
        w = a.T @ (b - a @ x)
    return x


def fit_linear(
    rows: Sequence[dict[str, float]],
    y: Sequence[float],
    *,
    row_weights: Sequence[float] | None = None,
    ridge: float = 0.0,
    quantity: str = "latency_ms",
) -> dict[str, float]:
    """Non-negative coefficients ``x`` with ``Σ_k rows[i][k]·x[k] ≈ y[i]`` in relative error.

    Columns are scaled to a maximum of 1 first; ``ridge`` > 0 adds ``ridge·||x_scaled||²`` (a
    pull toward zero that keeps a fit with few rows and many features stable). Features that
    are zero in every row get no coefficient (absent from the result).
    """
    import numpy as np
    from threadpoolctl import threadpool_limits

    yv = np.asarray(y, dtype=float)
    if not np.all(np.isfinite(yv)) or (yv <= 0).any():
        raise CalibrationError(
            f"measured {quantity} must be finite and > 0 for every row; drop or fix the rows "
            f"that are not"
        )
    names = sorted({k for r in rows for k in r})
    a = np.array([[r.get(k, 0.0) for k in names] for r in rows])
    keep = np.abs(a).sum(axis=0) > 0
    names = [n for n, k in zip(names, keep, strict=True) if k]
    a = a[:, keep]
    scale = a.max(axis=0)
    weights = 1.0 / yv
    if row_weights is not None:
        if len(row_weights) != len(yv):
            raise CalibrationError(
                f"row_weights must have one weight per measurement ({len(yv)}), "
                f"got {len(row_weights)}"
            )
        weights = weights * np.asarray(row_weights, dtype=float)
    lhs, rhs = (a / scale) * weights[:, None], yv * weights
    if ridge > 0:
        lhs = np.vstack([lhs, np.sqrt(ridge) * np.eye(len(names))])
        rhs = np.concatenate([rhs, np.zeros(len(names))])
    # one BLAS thread: the matrices are small, and OpenBLAS's threads waiting on cores that a
    # study's trainings keep busy made a refit many times slower than on one thread
    with threadpool_limits(limits=1, user_api="blas"):
        x = nnls(lhs, rhs) / scale
    return dict(zip(names, x.tolist(), strict=True))


def fit_kernel_constants(
    measurements: Sequence[Measurement],
    *,
    power_w: float | None = None,
    energy_constants: EnergyConstants | None = None,
    nchwc_block: int = NCHWC_BLOCK,
    min_rows: int = 8,
    row_weights: Sequence[float] | None = None,
    ridge: float = 0.0,
) -> KernelConstants:
    """Kernel-class coefficients (and session overhead) fitted to measured latencies.

    ``nchwc_block`` is the device CPU's NCHWc channel block (see :mod:`cost_models.kernels`);
    ``row_weights`` (default all 1) multiply each row's relative error, e.g. to make whole
    networks count more than single-layer micro-benchmarks; ``ridge`` as in :func:`fit_linear`.
    The energy constants are not fitted: ``energy_constants``, or static power ``power_w``
    alone (energy = power × latency).
    """
    if len(measurements) < min_rows:
        raise CalibrationError(
            f"fitting needs at least {min_rows} measurements, got {len(measurements)}; "
            f"measure more models"
        )
    rows = [kernel_features(g, b, nchwc_block=nchwc_block) for g, b, _ in measurements]
    values = fit_linear(rows, [float(t) for _, _, t in measurements], row_weights=row_weights,
                        ridge=ridge)
    classes = sorted({n.rsplit(".", 1)[0] for n in values if n != "session_ms"})
    coeffs = tuple(
        KernelCoefficients(
            cls,
            **{
                f.name: values.get(f"{cls}.{f.name}", 0.0)
                for f in fields(KernelCoefficients)
                if f.name != "cls"
            },
        )
        for cls in classes
    )
    return KernelConstants(
        values.get("session_ms", 0.0), power_w, coeffs, nchwc_block,
        energy_constants=energy_constants,
    )


def fit_energy_constants(
    rows: Sequence[EnergyRow],
    *,
    note: str,
    float_bits: int = FLOAT_BITS,
    fp32_per_int8: float | None = None,
) -> EnergyConstants:
    """Energy constants (source ``calibrated``) fitted by NNLS in relative error:
    energy_mj ≈ static_power_w × latency_ms + pJ/MAC × MACs + pJ/byte × bytes (·1e-9), with
    each row's *measured* latency. A MAC precision no row has gets 0 pJ, unless
    ``fp32_per_int8`` is given: then the float MAC costs that × the int8 MAC (e.g. the
    measured float/int8 latency ratio on a CPU that runs both on the same core). ``note``
    says what was fitted to what."""
    if len(rows) < 3:
        raise CalibrationError(
            f"an energy fit needs at least 3 rows with measured energy_mj, got {len(rows)}; "
            f"measure energy on more models"
        )
    feats = []
    for g, b, lat, _ in rows:
        f = energy_features(g, b, float_bits=float_bits)
        f["latency_ms"] = float(lat)
        feats.append(f)
    x = fit_linear(feats, [float(e) for *_, e in rows], quantity="energy_mj")
    int8, flt = x.get("mac_int8", 0.0), x.get("mac_float", 0.0)
    if fp32_per_int8 is not None and not any(f["mac_float"] for f in feats):
        flt = int8 * fp32_per_int8
    return EnergyConstants(
        static_power_w=x.get("latency_ms", 0.0),
        pj_per_mac_int8=int8,
        pj_per_mac_fp16=flt if float_bits == 16 else 0.0,
        pj_per_mac_fp32=flt if float_bits != 16 else 0.0,
        pj_per_byte=x.get("bytes", 0.0),
        float_bits=float_bits,
        source="calibrated",
        note=note,
    )
