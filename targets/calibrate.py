"""Calibrating a target from measurements: read them, split fitting and held-out rows, fit,
report held-out fidelity beside the FLOPs baseline, store the target.

Two kinds of measurement files (``edgetune calibrate NAME --measurements FILE``):

* the agent's JSON (``targets/agent.py``): ``{"device": ..., "measurements": [{"name":
  "x.onnx", "latency_ms": ...}, ...]}``; each ``name`` is an ONNX file beside the measurements
  file (or in ``models_dir``), or a model of the emitted suite (:func:`emit_suite`);
* a whole-model CSV with columns ``model`` (path to an ONNX file, relative to the CSV's folder
  or absolute), ``latency_ms`` and optionally ``energy_mj``.

A new target NAME is stored as ``$EDGETUNE_HOME/targets/NAME.json``, where the registry finds
it, so ``--target NAME`` works everywhere afterwards.
"""

from __future__ import annotations

import csv
import datetime
import json
import math
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cost_models.base import CostModel, Measurement
from cost_models.baseline import compare_heldout
from cost_models.fidelity import fidelity
from cost_models.layerwise import LayerTypeCostModel, default_constants
from search.errors import CalibrationError, EdgetuneError, TargetError
from targets.base import Provenance, Target, target_to_dict

__all__ = [
    "Row",
    "calibrate_file",
    "calibrate_rows",
    "emit_suite",
    "read_measurements",
    "user_targets_dir",
]

GENERIC_POWER_W = 5.0
GENERIC_POWER_SOURCE = (
    "generic figure of 5 W for a small board's CPU under load, not a measurement of this "
    "device; give --power-w or measured energy_mj to replace it"
)


@dataclass(frozen=True)
class Row:
    """One measured model: where it is in its file, and what was measured."""

    row: int  # 1-based data row in the file (CSV: line - 1; JSON: index in "measurements" + 1)
    label: str
    measurement: Measurement
    energy_mj: float | None = None


def user_targets_dir() -> Path:
    """``$EDGETUNE_HOME/targets`` (``EDGETUNE_HOME`` defaults to ``./.edgetune``)."""
    return Path(os.environ.get("EDGETUNE_HOME", ".edgetune")) / "targets"


def emit_suite(out_dir: str | Path, *, size: str = "full") -> list[Path]:
    """Write the micro-benchmark suite as ``NAME.onnx`` files into ``out_dir`` (for the agent)."""
    import onnx

    from targets.suite import suite

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, model in suite(size=size):
        p = out / f"{name}.onnx"
        onnx.save(model, str(p))
        paths.append(p)
    return paths


def _optional_number(path: Path, row: int, col: str, raw: Any) -> float | None:
    if raw is None or str(raw).strip() == "":
        return None
    return _number(path, row, col, raw)


def _number(path: Path, row: int, col: str, raw: Any) -> float:
    try:
        v = float(raw)
    except (TypeError, ValueError):
        raise CalibrationError(
            f"{path}: row {row}, column {col!r}: must be a number, got {raw!r}; fix the file"
        ) from None
    if not math.isfinite(v) or v <= 0:
        raise CalibrationError(
            f"{path}: row {row}, column {col!r}: must be a finite number > 0, got {raw!r}"
        )
    return v


def _load_graph(path: Path, row: int, col: str, model: Path) -> tuple[Any, Any]:
    import onnx

    from cost_models.onnx_graph import from_onnx

    if not model.is_file():
        raise CalibrationError(
            f"{path}: row {row}, column {col!r}: ONNX file {str(model)!r} does not exist; "
            f"give a path relative to {path.parent} or an absolute one"
        )
    try:
        return from_onnx(onnx.load(str(model)))
    except EdgetuneError as exc:
        raise CalibrationError(f"{path}: row {row}, column {col!r} ({model}): {exc}") from exc
    except Exception as exc:
        raise CalibrationError(
            f"{path}: row {row}, column {col!r}: {str(model)!r} is not a readable ONNX model "
            f"({type(exc).__name__}: {exc})"
        ) from exc


def _read_csv(path: Path) -> list[Row]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        cols = reader.fieldnames or []
        missing = [c for c in ("model", "latency_ms") if c not in cols]
        unknown = [c for c in cols if c not in ("model", "latency_ms", "energy_mj")]
        if missing or unknown:
            raise CalibrationError(
                f"{path}: row 0 (header): columns must be model, latency_ms[, energy_mj]; "
                f"missing {missing}, unknown {unknown}"
            )
        rows = []
        for i, rec in enumerate(reader, start=1):
            if not (rec.get("model") or "").strip():
                raise CalibrationError(f"{path}: row {i}, column 'model': empty; give an ONNX path")
            model = Path(rec["model"].strip())
            model = model if model.is_absolute() else path.parent / model
            lat = _number(path, i, "latency_ms", rec.get("latency_ms"))
            energy = _optional_number(path, i, "energy_mj", rec.get("energy_mj"))
            graph, bits = _load_graph(path, i, "model", model)
            rows.append(Row(i, str(model), (graph, bits, lat), energy))
    return rows


def _read_agent_json(path: Path, models_dir: Path | None) -> list[Row]:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CalibrationError(
            f"{path}: not valid JSON ({exc}); give the agent's output file"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("measurements"), list):
        raise CalibrationError(
            f"{path}: row 0: expected the agent's object with a 'measurements' list; rerun "
            f"`python agent.py DIR --out FILE`"
        )
    suite_models: dict[str, Any] | None = None
    rows = []
    for i, rec in enumerate(data["measurements"], start=1):
        if not isinstance(rec, dict) or not isinstance(rec.get("name"), str):
            raise CalibrationError(f"{path}: row {i}, column 'name': missing or not a string")
        lat = _number(path, i, "latency_ms", rec.get("latency_ms"))
        name = rec["name"]
        candidates = [d / name for d in (models_dir, path.parent) if d is not None]
        found = next((c for c in candidates if c.is_file()), None)
        if found is not None:
            graph, bits = _load_graph(path, i, "name", found)
        else:
            if suite_models is None:
                from targets.suite import suite

                suite_models = dict(suite())
            stem = name[:-5] if name.endswith(".onnx") else name
            if stem not in suite_models:
                raise CalibrationError(
                    f"{path}: row {i}, column 'name': model {name!r} is neither a file in "
                    f"{[str(c.parent) for c in candidates]} nor in the emitted suite; give "
                    f"--models DIR"
                )
            from cost_models.onnx_graph import from_onnx

            graph, bits = from_onnx(suite_models[stem])
        rows.append(Row(i, name, (graph, bits, lat), None))
    return rows


def read_measurements(path: str | Path, *, models_dir: str | Path | None = None) -> list[Row]:
    """The rows of an agent JSON or whole-model CSV; errors name the file, row and column."""
    p = Path(path)
    if not p.is_file():
        raise CalibrationError(f"measurements file {str(p)!r} does not exist")
    if p.suffix.lower() == ".csv":
        rows = _read_csv(p)
    elif p.suffix.lower() == ".json":
        rows = _read_agent_json(p, Path(models_dir) if models_dir else None)
    else:
        raise CalibrationError(
            f"{p}: unknown measurements format {p.suffix!r}; give the agent's .json or a .csv "
            f"with columns model, latency_ms[, energy_mj]"
        )
    if not rows:
        raise CalibrationError(f"{p}: no measurement rows; measure some models first")
    return rows


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


def calibrate_rows(
    name: str,
    rows: Sequence[Row],
    *,
    cost_model: CostModel,
    base: Any,
    description: str,
    runtime: str,
    source: str,
    holdout: float = 0.25,
    seed: int = 0,
    heldout_rows: Sequence[int] | None = None,
    group: Callable[[Row], str] | None = None,
    notes: str = "",
    int8_reduce_range: bool = False,
    finalize: Callable[[Any], Any] | None = None,
) -> Target:
    """Fit on a fitting part, measure fidelity on the held-out part (beside the FLOPs baseline
    fitted on the same fitting rows), then refit on all rows.

    Held out: ``heldout_rows`` (row numbers) if given, else a seeded ``holdout`` share of the
    rows, or of the groups ``group`` puts them in (so held-out architectures are unseen).
    Energy, where rows have ``energy_mj``: power_w is fitted too (energy ``calibrated``).
    ``finalize`` transforms fitted constants (e.g. adds fp32 classes from a measured ratio).
    """
    if not 0 < holdout < 1:
        raise CalibrationError(f"holdout must be in (0, 1), got {holdout}")
    if heldout_rows is not None:
        held = set(heldout_rows)
    else:
        keys = sorted({group(r) if group else str(r.row) for r in rows})
        random.Random(seed).shuffle(keys)
        held_keys = set(keys[: max(1, round(len(keys) * holdout))])
        held = {r.row for r in rows if (group(r) if group else str(r.row)) in held_keys}
    train = [r for r in rows if r.row not in held]
    test = [r for r in rows if r.row in held]
    if len(train) < 3 or len(test) < 2:
        raise CalibrationError(
            f"{source}: {len(rows)} rows give {len(train)} fitting and {len(test)} held-out "
            f"rows; give at least 5 measurements"
        )
    fin = finalize or (lambda c: c)
    with_energy = [r for r in rows if r.energy_mj is not None]
    part = fin(cost_model.fit([r.measurement for r in train], base))
    fid = compare_heldout(
        [r.measurement for r in train],
        [r.measurement for r in test],
        lambda m: cost_model.predict(m[0], m[1], part).latency_ms,
    )
    fid["held_out_rows"] = _ranges([r.row for r in test])
    if with_energy:
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
    constants = fin(cost_model.fit([r.measurement for r in rows], base))
    if with_energy:
        if not hasattr(constants, "energy"):
            raise CalibrationError(
                f"{source}: has energy_mj, but cost model {cost_model.name!r} cannot calibrate "
                f"energy; use --like with a layer-type target or drop the column"
            )
        constants = replace(
            constants,
            power_w=_fit_power(with_energy),
            energy="calibrated",
            power_source=f"fitted to {len(with_energy)} measured energy_mj rows "
            f"of {source} (median energy / latency)",
        )
    target = Target(
        name=name,
        description=description,
        runtime=runtime,
        cost_model=cost_model,
        constants=constants,
        int8_reduce_range=int8_reduce_range,
        provenance=Provenance(
            source=source,
            n_measurements=len(rows),
            date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            fidelity=fid,
            notes=notes,
        ),
    )
    return target


def save_user_target(target: Target) -> Path:
    """Store ``target`` as ``$EDGETUNE_HOME/targets/NAME.json`` and make the registry see it."""
    from targets import registry

    path = user_targets_dir() / f"{target.name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(target_to_dict(target), indent=1))
    tmp.replace(path)
    registry.forget(target.name)
    return path


def calibrate_file(
    name: str,
    path: str | Path,
    *,
    like: str | None = None,
    power_w: float | None = None,
    models_dir: str | Path | None = None,
    holdout: float = 0.25,
    seed: int = 0,
) -> tuple[Target, Path]:
    """``edgetune calibrate NAME --measurements FILE [--like TARGET]``: fit and store NAME.

    The cost model (and power figure) start from NAME's own target if it exists, else from
    ``like``, else a generic per-layer-type CPU model.
    """
    from targets import registry

    if not name or not all(ch.isalnum() or ch in "-_." for ch in name) or name == "host":
        raise CalibrationError(
            f"target name must be letters, digits, '-', '_' or '.', and not 'host' (calibrate "
            f"it with `edgetune calibrate host`), got {name!r}"
        )
    if name in registry._FACTORIES:
        raise CalibrationError(
            f"{name!r} is a built-in or shipped target and cannot be overwritten; give a new name "
            f"and start from it with --like {name}"
        )
    rows = read_measurements(path, models_dir=models_dir)
    start: Target | None = None
    for candidate in (name, like):
        if candidate and (candidate in registry.names()):
            start = registry.get(candidate)
            break
        if candidate == like and like is not None:
            raise TargetError(
                f"--like: unknown target {like!r}; valid: {', '.join(registry.names())}"
            )
    if start is not None:
        cm, base = start.cost_model, start.constants
        description = start.description if start.name == name else f"like {start.name}"
        runtime = start.runtime
    else:
        cm = LayerTypeCostModel()
        base = default_constants(GENERIC_POWER_W, GENERIC_POWER_SOURCE)
        description, runtime = "a user-calibrated device (generic per-layer-type model)", "user"
    if power_w is not None:
        if not hasattr(base, "power_source"):
            base = replace(base, power_w=power_w)
        else:
            base = replace(
                base,
                power_w=power_w,
                energy="power_x_latency",
                power_source=f"given on the command line (--power-w {power_w})",
            )
    device = ""
    if Path(path).suffix.lower() == ".json":
        device = json.dumps(json.loads(Path(path).read_text()).get("device", {}))[:500]
    target = calibrate_rows(
        name,
        rows,
        cost_model=cm,
        base=base,
        description=description,
        runtime=runtime,
        source=str(Path(path).resolve()),
        holdout=holdout,
        seed=seed,
        notes=f"calibrated with `edgetune calibrate` from {Path(path).name}"
        + (f" starting from target {start.name}" if start else "")
        + (f"; device: {device}" if device else ""),
    )
    return target, save_user_target(target)
