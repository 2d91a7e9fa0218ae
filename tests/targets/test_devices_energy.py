"""The shipped targets' energy: calibrated on the Cortex-M boards, modelled elsewhere, and
shipped files written before the energy model still load with their old meaning."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import targets
from cost_models import Precision
from cost_models.energy import dynamic_energy_mj
from targets.base import target_from_dict
from targets.devices import MCU_DEVICES, NB201_DEVICES, NOTE10, SHIPPED, int8_bits
from targets.host import POWER_W, host_energy
from targets.mlperf_tiny import mlperf_graph
from tests.targets.test_shipped import _have_data

SHIPPED_DIR = Path(__file__).resolve().parents[2] / "targets" / "shipped"


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_target_labels_its_energy(name: str) -> None:
    c = targets.get(name).constants
    e = c.energy_constants
    if name in MCU_DEVICES:
        assert e.source == "calibrated" and c.energy_label.startswith("calibrated (")
        assert "NNLS" in e.note and "mlperf_tiny_results.csv" in e.note
        assert 0.01 < e.static_power_w < 1.0  # an MCU board draws tens to hundreds of mW
    else:
        spec = NB201_DEVICES.get(name, NOTE10)
        assert e.source == "modelled" and c.energy_label.startswith("modelled (")
        assert e.static_power_w == spec.power_w and e.per_op
        assert f"{spec.node_nm:g} nm" in e.note


def test_modelled_energy_is_more_than_power_times_latency() -> None:
    t = targets.get("raspberry-pi-4")
    g = mlperf_graph("ic")
    c = t.predict(g, {})
    dyn = dynamic_energy_mj(g, {}, t.constants.energy_constants)
    assert dyn > 0
    assert c.energy_mj == pytest.approx(c.latency_ms * 3.0 + dyn)


def test_mcu_fp32_energy_follows_its_slower_latency() -> None:
    t = targets.get("cortex-m7")
    g = mlperf_graph("kws")
    int8 = t.predict(g, int8_bits(g))
    half = {k: Precision(4, 8) if v.weight_bits == 8 else v for k, v in int8_bits(g).items()}
    assert int8.energy_mj > 0
    assert t.predict(g, half).energy_mj <= int8.energy_mj * 1.0001


@pytest.mark.parametrize("name", ["cortex-m4", "raspberry-pi-4"])
def test_files_written_before_the_energy_model_still_load(name: str) -> None:
    data = json.loads((SHIPPED_DIR / f"{name}.json").read_text())
    e = data["constants"].pop("energy")
    data["constants"].update(
        power_w=e["static_power_w"],
        energy="calibrated" if e["source"] == "calibrated" else "power_x_latency",
        power_source="an older file",
    )
    old = target_from_dict(data, where=name)
    assert old.constants.energy_constants.static_power_w == e["static_power_w"]
    assert not old.constants.energy_constants.per_op  # static power only, as it meant
    g = mlperf_graph("ic")
    c = old.predict(g, int8_bits(g) if name == "cortex-m4" else {})
    assert c.energy_mj == pytest.approx(c.latency_ms * e["static_power_w"])


def test_host_energy_is_modelled_with_its_power_figure() -> None:
    e = host_energy()
    assert e.source == "modelled" and e.static_power_w == POWER_W and e.per_op
    assert e.label.startswith("modelled (")


@pytest.mark.skipif(not _have_data(), reason="../shared/data/devices not present")
def test_refit_energy_matches_shipped() -> None:
    from targets.devices import build_shipped

    t = build_shipped("cortex-m4")
    shipped = targets.get("cortex-m4")
    assert t.constants.energy_constants == shipped.constants.energy_constants
    assert t.provenance.fidelity["energy"]["n_heldout"] >= 10
