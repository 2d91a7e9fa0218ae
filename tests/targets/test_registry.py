"""The registry: names to targets, errors that list the valid names, target files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import targets
from cost_models import KernelCoefficients, KernelConstants, KernelCostModel, Layer, LayerGraph
from targets import Provenance, Target, target_from_dict, target_to_dict
from targets.errors import TargetError
from targets.registry import register


def _target(name: str = "toy") -> Target:
    constants = KernelConstants(
        session_ms=0.01,
        power_w=3.0,
        coefficients=(KernelCoefficients("linear:f32", fixed_ms=0.002, ns_per_mac=1.0),),
    )
    return Target(
        name,
        "a toy device",
        "none",
        KernelCostModel(),
        constants,
        Provenance(source="hand-set", n_measurements=0, date="2026-01-01"),
    )


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(TargetError, match=r"unknown target 'nope'.*host"):
        targets.get("nope")
    assert "host" in targets.names()


def test_duplicate_registration_raises() -> None:
    with pytest.raises(TargetError, match="already registered"):
        register("host", _target)


def test_target_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "toy.json"
    path.write_text(json.dumps(target_to_dict(_target())))
    t = targets.get(str(path))
    g = LayerGraph(
        (Layer("fc", "linear", (1, 4), (1, 2), macs=8, params=10, inputs=("",)),), (1, 4)
    )
    costs = t.predict(g, {})
    assert costs.latency_ms == pytest.approx(0.01 + 0.002 + 8e-6)
    assert costs.energy_mj == pytest.approx(costs.latency_ms * 3.0)


def test_invalid_target_files(tmp_path: Path) -> None:
    data = target_to_dict(_target())
    with pytest.raises(TargetError, match="unknown"):
        target_from_dict({**data, "extra": 1})
    with pytest.raises(TargetError, match="cost_model"):
        target_from_dict({**data, "cost_model": "magic"})
    with pytest.raises(TargetError, match="does not exist"):
        targets.get(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(TargetError, match="cannot be read"):
        targets.get(str(bad))


def test_predict_onnx_and_describe(tmp_path: Path) -> None:
    from targets.onnx_builder import OnnxBuilder

    b = OnnxBuilder((4, 1, 1))
    y = b.linear("input", 4, 2)
    path = tmp_path / "m.onnx"
    path.write_bytes(b.build(y, "m").SerializeToString())
    (row,) = targets.predict_onnx([path], _target())
    assert row["latency_ms"] == pytest.approx(0.01 + 0.002 + 8e-6)
    assert row["size_kb"] == pytest.approx(10 * 4 / 1024)
    names = [d["name"] for d in targets.describe_targets()]
    assert "host" in names


def test_listing_says_how_each_target_gets_energy() -> None:
    rows = {d["name"]: d for d in targets.describe_targets()}
    m4, pi = rows["cortex-m4"]["energy"], rows["raspberry-pi-4"]["energy"]
    assert m4["method"] == "calibrated" and m4["label"].startswith("calibrated (")
    assert pi["method"] == "modelled" and pi["label"].startswith("modelled (")
    assert "Horowitz" in pi["label"] and pi["static_power_w"] == 3.0 and pi["pj_per_byte"] > 0
    # a hand-set target with a bare power figure: power x latency, labelled modelled
    from targets.registry import _describe

    toy = _describe(_target())["energy"]
    assert toy["method"] == "power_x_latency" and toy["label"].startswith("modelled (")
