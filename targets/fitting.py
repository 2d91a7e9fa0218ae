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
from targets.base import Provenance, Target
from targets.measurements import Row

__all__ = ["CalibrationConfig", "calibrate_rows"]


@dataclass(frozen=True, kw_only=True)
class CalibrationConfig:
    """How :func:`calibrate_rows` fits a target, and what the target says about itself.

    Held out: ``heldout_rows`` (row numbers) if given, else a seeded ``holdout`` share of the
    rows, or of the groups ``group`` puts them in (so held-out architectures are unseen).
    ``finalize`` transforms fitted constants (e.g. adds fp32 classes from a measured ratio).
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


def _fit_power(rows: Sequence[Row]) -> float:
    """W = median over rows of measured energy (mJ) / measured latency (ms)."""
    ratios = sorted(r.energy_mj / r.measurement[2] for r in rows if r.energy_mj is not None)
    return ratios[len(ratios) // 2]


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
    where rows have ``energy_mj`` (power fitted on the fitting rows' energy)."""
    fid = compare_heldout(
        [r.measurement for r in train],
        [r.measurement for r in test],
        lambda m: cost_model.predict(m[0], m[1], part).latency_ms,
    )
    fid["held_out_rows"] = _ranges([r.row for r in test])
    e_train = [r for r in train if r.energy_mj is not None]
    e_test = [r for r in test if r.energy_mj is not None]
    if e_train and len(e_test) >= 2:
        pw = _fit_power(e_train)
        ef = fidelity(
            [
                cost_model.predict(r.measurement[0], r.measurement[1], part).latency_ms * pw
                for r in e_test
            ],
            [r.energy_mj or 0.0 for r in e_test],
        )
        fid["energy"] = {k: ef[k] for k in ("within_10pct", "spearman", "mdape")}
        fid["energy"]["n_heldout"] = len(e_test)
    return fid


def calibrate_rows(name: str, rows: Sequence[Row], config: CalibrationConfig) -> Target:
    """Target ``name`` fitted to ``rows``: fit on the fitting part, measure fidelity on the
    held-out part (beside the FLOPs baseline fitted on the same fitting rows), then refit on
    all rows. Where rows have ``energy_mj``, power_w is fitted too (energy ``calibrated``).
    """
    cm = config.cost_model
    fin = config.finalize or (lambda c: c)
    train, test = _split(rows, config)
    part = fin(cm.fit([r.measurement for r in train], config.base))
    fid = _heldout_fidelity(train, test, part, cm)
    constants = fin(cm.fit([r.measurement for r in rows], config.base))
    with_energy = [r for r in rows if r.energy_mj is not None]
    if with_energy:
        if not hasattr(constants, "energy"):
            raise CalibrationError(
                f"{config.source}: has energy_mj, but cost model {cm.name!r} cannot calibrate "
                f"energy; use --like with a layer-type target or drop the column"
            )
        constants = replace(
            constants,
            power_w=_fit_power(with_energy),
            energy="calibrated",
            power_source=f"fitted to {len(with_energy)} measured energy_mj rows "
            f"of {config.source} (median energy / latency)",
        )
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
