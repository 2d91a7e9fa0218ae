"""Measured search candidates kept as calibration rows of a device.

Each device keeps its own folder: the candidates' ONNX files (named by a digest of their bytes)
and an ``index.json`` with their measured latency and the identity of the device they were
measured on. Rows measured on another device (another CPU, another agent) are dropped, not
mixed in. Only the most recent :data:`LIMIT` are kept.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cost_models.base import Measurement

__all__ = ["LIMIT", "candidate_rows", "store_candidates"]

LIMIT = 400
"""The most recent measured search candidates kept as calibration rows."""

Same = Callable[[dict[str, Any], dict[str, Any]], bool]


def _index(folder: Path, device: dict[str, Any], same: Same) -> list[dict[str, Any]]:
    path = folder / "index.json"
    if not path.is_file():
        return []
    stored = json.loads(path.read_text())
    rows: list[dict[str, Any]] = stored.get("rows", [])
    return rows if same(stored.get("machine", {}), device) else []


def store_candidates(
    folder: Path, models: list[tuple[bytes, float]], device: dict[str, Any], same: Same
) -> None:
    """Keep measured candidates (QDQ ONNX bytes, latency in ms) in ``folder`` as rows of
    ``device``: every later fit of that device includes them."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = _index(folder, device, same)
    for onnx_bytes, latency in models:
        name = "cand-" + hashlib.sha256(onnx_bytes).hexdigest()[:12]
        (folder / f"{name}.onnx").write_bytes(onnx_bytes)
        rows = [r for r in rows if r["name"] != name]
        rows.append({"name": name, "latency_ms": float(latency)})
    rows = rows[-LIMIT:]
    kept = {f"{r['name']}.onnx" for r in rows}
    for stale in folder.glob("cand-*.onnx"):
        if stale.name not in kept:
            stale.unlink()
    tmp = folder / "index.tmp"
    tmp.write_text(json.dumps({"machine": device, "rows": rows}, indent=1))
    tmp.replace(folder / "index.json")


def candidate_rows(
    folder: Path, device: dict[str, Any], same: Same
) -> list[tuple[str, Measurement]]:
    """The kept candidates of ``device``, as (name, (graph, bits, latency_ms)) rows."""
    import onnx

    from cost_models.onnx_graph import from_onnx

    out: list[tuple[str, Measurement]] = []
    for r in _index(folder, device, same):
        path = folder / f"{r['name']}.onnx"
        if path.is_file():
            graph, bits = from_onnx(onnx.load(str(path)))
            out.append((f"{r['name']}_candidate", (graph, bits, float(r["latency_ms"]))))
    return out
