"""Reading measurement files into rows; every error names the file, the row and the column.

Two kinds of measurement files (``edgetune calibrate NAME --measurements FILE``):

* the agent's JSON (``targets/agent.py``): ``{"device": ..., "measurements": [{"name":
  "x.onnx", "latency_ms": ...}, ...]}``; each ``name`` is an ONNX file beside the measurements
  file (or in ``models_dir``), or a model of the emitted suite
  (:func:`targets.calibrate.emit_suite`);
* a whole-model CSV with columns ``model`` (path to an ONNX file, relative to the CSV's folder
  or absolute), ``latency_ms`` and optionally ``energy_mj``.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cost_models.base import Measurement
from cost_models.errors import CalibrationError, EdgetuneError

__all__ = ["Row", "read_measurements"]


@dataclass(frozen=True)
class Row:
    """One measured model: where it is in its file, and what was measured."""

    row: int  # 1-based data row in the file (CSV: line - 1; JSON: index in "measurements" + 1)
    label: str
    measurement: Measurement
    energy_mj: float | None = None


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
