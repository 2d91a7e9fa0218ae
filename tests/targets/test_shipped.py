"""The shipped device targets: they load without the data, report held-out fidelity beside
the FLOPs baseline, say how they get energy, and know which precisions are fast."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import targets
from cost_models import Precision
from cost_models.errors import UnsupportedLayerError
from targets.devices import SHIPPED, int8_bits
from targets.mlperf_tiny import mlperf_graph

ROOT = Path(__file__).resolve().parents[2]
FIELDS = ("within_10pct", "spearman", "mdape")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_target_loads_with_heldout_fidelity(name: str) -> None:
    t = targets.get(name)
    f = t.provenance.fidelity
    assert f["n_heldout"] >= 10 and f["held_out_rows"]
    assert all(k in f and k in f["flops_baseline"] for k in FIELDS)
    assert (
        "nb201" in t.provenance.source
        or "lut" in t.provenance.source
        or "mlperf" in t.provenance.source
    )
    assert t.constants.power_source  # where the power figure comes from
    # beats the FLOPs baseline on MdAPE on its held-out rows
    assert f["mdape"] < f["flops_baseline"]["mdape"]


def test_fast_int8_targets() -> None:
    g = mlperf_graph("ic")
    tpu = targets.get("edge-tpu")
    with pytest.raises(UnsupportedLayerError, match="int8"):
        tpu.cost_model.predict(g, {}, tpu.constants)  # fp32 cannot run on the Edge TPU
    # the target runs a layer left float as its converter does: in int8
    assert tpu.predict(g, {}) == tpu.predict(g, int8_bits(g))
    assert tpu.predict(g, int8_bits(g)).latency_ms > 0
    for mcu in ("cortex-m7", "cortex-m4"):
        t = targets.get(mcu)
        assert t.constants.energy == "calibrated"
        int8, fp32 = t.predict(g, int8_bits(g)), t.predict(g, {})
        assert fp32.latency_ms > 1.5 * int8.latency_ms
        assert 10 < int8.latency_ms < 1000  # ResNet-8 on an MCU: tens to hundreds of ms
        half = {k: Precision(4, 8) if v.weight_bits == 8 else v for k, v in int8_bits(g).items()}
        assert t.predict(g, half).size_kb < int8.size_kb


def test_targets_json_lists_at_least_nine_with_fields(tmp_path: Path) -> None:
    home = tmp_path / "home"
    cached = ROOT / ".edgetune" / "targets" / "host.json"
    if cached.is_file():  # reuse this machine's host calibration if there is one (no 80 s run)
        (home / "targets").mkdir(parents=True)
        shutil.copy(cached, home / "targets" / "host.json")
    out = subprocess.run(
        [sys.executable, "-m", "search.cli", "targets", "--json"],
        cwd=ROOT,
        env={**os.environ, "EDGETUNE_HOME": str(home)},
        capture_output=True,
        text=True,
        check=True,
    )
    rows = json.loads(out.stdout)["targets"]
    full = [r for r in rows if r.get("fidelity")]
    assert len(full) >= 9
    for r in full:
        assert {"source", "n_measurements", "date"} <= set(r["provenance"])
        f = r["fidelity"]
        assert {"within_10pct", "spearman", "mdape", "n_heldout", "flops_baseline"} <= set(f)
        assert r["energy"]["method"] in ("calibrated", "modelled", "power_x_latency")


def _have_data() -> bool:
    from cost_models.errors import CalibrationError
    from targets.devices import data_dir

    try:
        return (data_dir() / "mlperf_tiny_results.csv").is_file()
    except CalibrationError:
        return False


@pytest.mark.skipif(not _have_data(), reason="../shared/data/devices not present")
def test_refit_from_data_matches_shipped_and_names_rows() -> None:
    from targets.devices import build_shipped

    for name in ("samsung-note10-cpu", "cortex-m7"):
        t = build_shipped(name)
        shipped = targets.get(name)
        assert (
            t.provenance.fidelity["held_out_rows"] == shipped.provenance.fidelity["held_out_rows"]
        )
        assert t.provenance.fidelity["mdape"] == pytest.approx(shipped.provenance.fidelity["mdape"])
