"""`edgetune calibrate NAME --measurements FILE`: reading files, fitting, storing, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

pytest.importorskip("onnx")

import targets
from cost_models.errors import CalibrationError
from targets.calibrate import calibrate_file, read_measurements
from targets.onnx_builder import OnnxBuilder

ROOT = Path(__file__).resolve().parents[2]


def _write_models(d: Path, n: int = 10) -> list[tuple[str, float]]:
    """n small conv nets of growing width and depth, with latencies that follow their size
    (measurement-shaped data; the fit must reproduce the trend on held-out rows)."""
    out = []
    for i in range(n):
        width, depth = 4 + 4 * (i % 5), 1 + i // 5
        b = OnnxBuilder((3, 16, 16), seed=i)
        x, c = "input", 3
        for _ in range(depth):
            x, c = b.conv(x, c, width, 3), width
        y = b.linear(b.pool(x, "gap"), c, 10)
        name = f"m{i}.onnx"
        b.build(y, name).SerializeToString()
        (d / name).write_bytes(b.build(y, name).SerializeToString())
        macs = 16 * 16 * 9 * (3 * width + (depth - 1) * width * width)
        out.append((name, 0.02 + macs * 2e-6 / 1000 + 0.005 * depth))
    return out


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("EDGETUNE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_csv_calibration_creates_a_usable_target(tmp_path: Path, home: Path) -> None:
    rows = _write_models(tmp_path)
    csv_path = tmp_path / "m.csv"
    csv_path.write_text("model,latency_ms\n" + "".join(f"{n},{t}\n" for n, t in rows))
    _, path = calibrate_file("my-board", csv_path, power_w=4.0)
    assert path == home / "targets" / "my-board.json"
    assert "my-board" in targets.names()
    t = targets.get("my-board")
    f = t.provenance.fidelity
    assert t.provenance.n_measurements == 10 and t.provenance.source.endswith("m.csv")
    assert f["n_heldout"] == 2 and "held_out_rows" in f
    assert set(f["flops_baseline"]) >= {"within_10pct", "spearman", "mdape"}
    import onnx

    from cost_models import from_onnx

    g, bits = from_onnx(onnx.load(str(tmp_path / rows[-1][0])))
    costs = t.predict(g, bits)
    assert costs.latency_ms == pytest.approx(rows[-1][1], rel=0.25)
    assert costs.energy_mj == pytest.approx(costs.latency_ms * 4.0)
    assert t.constants.energy == "power_x_latency"
    targets.registry.forget("my-board")


def test_energy_column_calibrates_power(tmp_path: Path, home: Path) -> None:
    rows = _write_models(tmp_path)
    csv_path = tmp_path / "e.csv"
    csv_path.write_text(
        "model,latency_ms,energy_mj\n" + "".join(f"{n},{t},{t * 0.7}\n" for n, t in rows)
    )
    target, _ = calibrate_file("e-board", csv_path)
    assert target.constants.energy == "calibrated"
    assert target.constants.power_w == pytest.approx(0.7)
    assert target.provenance.fidelity["energy"]["n_heldout"] == 2


def test_agent_json_with_models_beside_it(tmp_path: Path, home: Path) -> None:
    rows = _write_models(tmp_path, 8)
    (tmp_path / "meas.json").write_text(
        json.dumps(
            {
                "device": {"hostname": "pi"},
                "measurements": [{"name": n, "latency_ms": t} for n, t in rows],
            }
        )
    )
    got = read_measurements(tmp_path / "meas.json")
    assert [r.label for r in got] == [n for n, _ in rows] and got[3].row == 4


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("model,latency\nm0.onnx,1\n", r"row 0 \(header\).*missing \['latency_ms'\]"),
        ("model,latency_ms\nm0.onnx,1\nm1.onnx,fast\n", r"row 2, column 'latency_ms'.*'fast'"),
        ("model,latency_ms\nm0.onnx,-1\n", r"row 1, column 'latency_ms'.*> 0"),
        ("model,latency_ms\nnope.onnx,1\n", r"row 1, column 'model'.*does not exist"),
        ("model,latency_ms,energy_mj\nm0.onnx,1,x\n", r"row 1, column 'energy_mj'"),
    ],
)
def test_bad_csv_names_file_row_and_column(tmp_path: Path, text: str, pattern: str) -> None:
    _write_models(tmp_path, 2)
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(CalibrationError, match=pattern) as exc:
        read_measurements(path)
    assert str(path) in str(exc.value)


def test_shipped_names_are_not_overwritten(tmp_path: Path, home: Path) -> None:
    with pytest.raises(CalibrationError, match="--like raspberry-pi-4"):
        calibrate_file("raspberry-pi-4", tmp_path / "any.csv")


def test_bad_agent_json(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"measurements": [{"name": "ghost.onnx", "latency_ms": 1.0}]}))
    with pytest.raises(CalibrationError, match=r"bad.json: row 1, column 'name'.*ghost"):
        read_measurements(path)
    path.write_text("{not json")
    with pytest.raises(CalibrationError, match="not valid JSON"):
        read_measurements(path)


def test_cli_calibrate_and_emit_suite(tmp_path: Path) -> None:
    rows = _write_models(tmp_path)
    csv_path = tmp_path / "m.csv"
    csv_path.write_text("model,latency_ms\n" + "".join(f"{n},{t}\n" for n, t in rows))
    env = {**os.environ, "EDGETUNE_HOME": str(tmp_path / "h")}
    run = [sys.executable, "-m", "search.cli"]
    out = subprocess.run(
        [
            *run,
            "calibrate",
            "cli-board",
            "--measurements",
            str(csv_path),
            "--like",
            "raspberry-pi-4",
            "--json",
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(out.stdout)["fidelity"]["n_heldout"] == 2
    pred = subprocess.run(
        [*run, "predict", str(tmp_path / "m0.onnx"), "--target", "cli-board", "--json"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(pred.stdout)["latency_ms"] > 0
    bad = subprocess.run(
        [*run, "calibrate", "x", "--measurements", str(tmp_path / "none.csv")],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "does not exist" in bad.stderr
    emitted = subprocess.run(
        [
            *run,
            "calibrate",
            "--emit-suite",
            str(tmp_path / "suite"),
            "--suite-size",
            "small",
            "--json",
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(emitted.stdout)["models"] == len(list((tmp_path / "suite").glob("*.onnx")))


def test_calibrate_rows_holds_out_the_rows_it_is_told(tmp_path: Path) -> None:
    from cost_models.layerwise import LayerTypeCostModel, default_constants
    from targets.fitting import CalibrationConfig, calibrate_rows

    rows = _write_models(tmp_path)
    csv_path = tmp_path / "m.csv"
    csv_path.write_text("model,latency_ms\n" + "".join(f"{n},{t}\n" for n, t in rows))
    config = CalibrationConfig(
        cost_model=LayerTypeCostModel(),
        base=default_constants(1.0, "a test figure"),
        description="d",
        runtime="r",
        source="s",
        heldout_rows=(2, 3, 4, 9),
    )
    t = calibrate_rows("t", read_measurements(csv_path), config)
    assert t.provenance.fidelity["held_out_rows"] == "2-4,9"
    assert t.provenance.n_measurements == 10 and t.description == "d"
    with pytest.raises(CalibrationError, match=r"holdout must be in \(0, 1\)"):
        replace(config, holdout=1.0)
