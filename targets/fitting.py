"""Fitting a target to measured rows: split off held-out rows, fit, judge the fit on them beside
the FLOPs baseline, then refit on all rows.

:func:`calibrate_rows` takes the rows (:class:`targets.measurements.Row`) and a
:class:`CalibrationConfig` that says how to fit (cost model, starting constants, which rows to
hold out) and what the new target says about itself (description, runtime, source, notes).
"""

from __future__ import annotations

import datetime
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from cost_models.base import CostModel
from cost_models.baseline import compare_heldout
from cost_models.errors import CalibrationError
from cost_models.fidelity import fidelity
from cost_models.fit import fit_energy_constants
from targets.base import Provenance, Target
from targets.measurements import Row

__all__ = ["CalibrationConfig", "calibrate_rows"]


@dataclass(frozen=True, kw_only=True)
class CalibrationConfig:
    """How :func:`calibrate_rows` fits a target, and what the target says about itself.

    Held out: ``heldout_rows`` (row numbers) if given, else a seeded ``holdout`` share of the
    rows, or of the groups ``group`` puts them in (so held-out architectures are unseen).
    ``finalize`` transforms fitted constants (e.g. adds fp32 classes from a measured ratio);
    it runs after the energy fit. ``fp32_per_int8``: where rows with energy are int8 only,
    the float MAC's energy = this × the fitted int8 MAC's (see
    :func:`cost_models.fit.fit_energy_constants`).
    """

    cost_model: CostModel
    base: Any  # the constants a fit starts from (fields that are not fitted come from here)
    description: str
    runtime: str
    source: str
    notes: str = ""
    int8_reduce_range: bool = False
    finalize: Callable[[Any], Any] | None = None
    holdout: float = 0.25
    seed: int = 0
    heldout_rows: Sequence[int] | None = None
    group: Callable[[Row], str] | None = None
    fp32_per_int8: float | None = None

    def __post_init__(self) -> None:
        if not 0 < self.holdout < 1:
            raise CalibrationError(f"holdout must be in (0, 1), got {self.holdout}")


def _ranges(nums: Sequence[int]) -> str:
    """[1, 2, 3, 7] -> "1-3,7"."""
    out: list[str] = []
    s = sorted(nums)
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and s[j + 1] == s[j] + 1:
            j += 1
        out.append(str(s[i]) if i == j else f"{s[i]}-{s[j]}")
        i = j + 1
    return ",".join(out)


def _fit(rows: Sequence[Row], config: CalibrationConfig) -> Any:
    """Latency constants fitted to ``rows``; energy constants fitted too (NNLS with each row's
    measured latency) where at least 3 rows have ``energy_mj``; then ``finalize``."""
    cm = config.cost_model
    constants = cm.fit([r.measurement for r in rows], config.base)
    with_energy = [r for r in rows if r.energy_mj is not None]
    if len(with_energy) >= 3:
        base = constants.energy_constants
        energy = fit_energy_constants(
            [(*r.measurement, r.energy_mj or 0.0) for r in with_energy],
            float_bits=base.float_bits,
            fp32_per_int8=config.fp32_per_int8,
            note=f"fitted (NNLS) to {len(with_energy)} measured energy_mj rows of "
            f"{config.source} with their measured latency",
        )
        constants = replace(constants, energy_constants=energy)
    return config.finalize(constants) if config.finalize else constants


def _split(rows: Sequence[Row], config: CalibrationConfig) -> tuple[list[Row], list[Row]]:
    """(fitting rows, held-out rows)."""
    if config.heldout_rows is not None:
        held = set(config.heldout_rows)
    else:
        group = config.group

        def key(r: Row) -> str:
            return group(r) if group else str(r.row)

        keys = sorted({key(r) for r in rows})
        random.Random(config.seed).shuffle(keys)
        held_keys = set(keys[: max(1, round(len(keys) * config.holdout))])
        held = {r.row for r in rows if key(r) in held_keys}
    train = [r for r in rows if r.row not in held]
    test = [r for r in rows if r.row in held]
    if len(train) < 3 or len(test) < 2:
        raise CalibrationError(
            f"{config.source}: {len(rows)} rows give {len(train)} fitting and {len(test)} "
            f"held-out rows; give at least 5 measurements"
        )
    return train, test


def _heldout_fidelity(
    train: list[Row], test: list[Row], part: Any, cost_model: CostModel
) -> dict[str, Any]:
    """Latency fidelity of ``part`` (fitted on ``train``) on ``test``, and energy fidelity
    (predicted latency and the energy constants fitted on the fitting rows) where rows have
    ``energy_mj``."""
    fid = compare_heldout(
        [r.measurement for r in train],
        [r.measurement for r in test],
        lambda m: cost_model.predict(m[0], m[1], part).latency_ms,
    )
    fid["held_out_rows"] = _ranges([r.row for r in test])
    e_train = [r for r in train if r.energy_mj is not None]
    e_test = [r for r in test if r.energy_mj is not None]
    if len(e_train) >= 3 and len(e_test) >= 2:
        ef = fidelity(
            [cost_model.predict(r.measurement[0], r.measurement[1], part).energy_mj
             for r in e_test],
            [r.energy_mj or 0.0 for r in e_test],
        )
        fid["energy"] = {k: ef[k] for k in ("within_10pct", "spearman", "mdape")}
        fid["energy"]["n_heldout"] = len(e_test)
    return fid


def calibrate_rows(name: str, rows: Sequence[Row], config: CalibrationConfig) -> Target:
    """Target ``name`` fitted to ``rows``: fit on the fitting part, measure fidelity on the
    held-out part (beside the FLOPs baseline fitted on the same fitting rows), then refit on
    all rows. Where rows have ``energy_mj``, the energy constants are fitted too (energy
    ``calibrated``); otherwise they are the base's.
    """
    cm = config.cost_model
    train, test = _split(rows, config)
    fid = _heldout_fidelity(train, test, _fit(train, config), cm)
    constants = _fit(rows, config)
    return Target(
        name=name,
        description=config.description,
        runtime=config.runtime,
        cost_model=cm,
        constants=constants,
        int8_reduce_range=config.int8_reduce_range,
        provenance=Provenance(
            source=config.source,
            n_measurements=len(rows),
            date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            fidelity=fid,
            notes=config.notes,
        ),
    )
