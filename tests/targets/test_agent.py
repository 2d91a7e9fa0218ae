"""The agent measures real onnxruntime sessions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")

from targets.agent import measure, measure_report, noise_ceiling
from targets.onnx_builder import OnnxBuilder

AGENT = Path(__file__).resolve().parents[2] / "targets" / "agent.py"


def conv_chain(width: int, depth: int) -> bytes:
    """A chain of ``depth`` 3x3 convs of ``width`` channels at 14x14, as ONNX bytes."""
    b = OnnxBuilder((width, 14, 14))
    x = "input"
    for _ in range(depth):
        x = b.conv(x, width, width, 3)
    return b.build(x, f"m{width}x{depth}").SerializeToString()


def test_measure_orders_models_by_cost_and_reports_noise() -> None:
    small, big, mid = conv_chain(4, 1), conv_chain(32, 4), conv_chain(16, 2)
    res = measure([small, big, mid], names=["small", "big", "mid"], seconds=1.0, min_runs=50)
    assert [r["name"] for r in res] == ["small", "big", "mid"]
    by = {r["name"]: r for r in res}
    assert by["big"]["latency_ms"] > 3 * by["small"]["latency_ms"] > 0
    for r in res:
        assert r["n_runs"] >= 50 and r["n_chunks"] >= 4
        assert r["spread_ms"][0] <= r["spread_ms"][1]
        # the latency is the low (uncontended) end of the chunks, not their median
        assert r["spread_ms"][0] <= r["latency_ms"] <= r["median_ms"]
        assert r["reference"] is not None
    nc = noise_ceiling(res)
    assert 0.0 <= nc["within_10pct"] <= 1.0


def test_single_model_is_measured_plainly() -> None:
    (r,) = measure([conv_chain(8, 1)], seconds=0.3, min_runs=200)
    assert r["n_runs"] >= 200
    assert r["reference"] is None and r["latency_ms"] == r["raw_latency_ms"]


def test_reference_ms_rescales_to_calibration_speed() -> None:
    m, ref = conv_chain(16, 2), conv_chain(16, 2)  # the same model: its ratio to the reference is 1
    (r,) = measure([m], seconds=0.5, min_runs=50, reference=ref, reference_ms=10.0)
    assert r["latency_ms"] == pytest.approx(10.0, rel=0.25)


def test_report_and_cli(tmp_path: Path) -> None:
    report = measure_report([conv_chain(8, 1), conv_chain(8, 2)], seconds=0.2, min_runs=20)
    dev = report["device"]
    assert dev["intra_op_num_threads"] == 1 and dev["onnxruntime"] and dev["cpu_model"]
    for i in range(2):
        (tmp_path / f"m{i}.onnx").write_bytes(conv_chain(8, i + 1))
    out = tmp_path / "meas.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(AGENT),
            str(tmp_path),
            "--out",
            str(out),
            "--seconds",
            "0.2",
            "--min-runs",
            "20",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert [m["name"] for m in data["measurements"]] == ["m0.onnx", "m1.onnx"]
    assert "noise ceiling" in proc.stdout
    empty = subprocess.run(
        [sys.executable, str(AGENT), str(tmp_path / "none")],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert empty.returncode == 2 and "no *.onnx" in empty.stderr


def test_agent_imports_nothing_from_edgetune() -> None:
    src = AGENT.read_text()
    for pkg in ("cost_models", "search", "spaces", "torch", "from targets", "import targets"):
        assert pkg not in src
