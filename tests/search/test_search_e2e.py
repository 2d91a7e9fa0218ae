"""End to end, as a user runs it: check, search, resume, show, export, on the real workload.

A small spec (a few hundred images, a few fine-tune steps) keeps each search under a minute,
with the real teacher, torch-pruning, Optuna storage, onnxruntime and, in one test, Ray.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import LATENCY_SHARE, tiny_spec

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("needs_fashion_mnist")]

SPEC = tiny_spec()


def edgetune(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "search.cli", *args],
        capture_output=True,
        text=True,
        timeout=900,
        env=dict(os.environ),
    )
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "Traceback" not in proc.stderr
    return proc


def as_json(proc: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(proc.stdout)


@pytest.fixture
def spec_file(tmp_path: Path, edgetune_home: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(SPEC)
    return path


def test_check_reports_teacher_and_cheapest_costs(spec_file: Path) -> None:
    out = as_json(edgetune("check", str(spec_file), "--json"))
    assert out["feasible"] is True
    teacher, cheapest = out["teacher"], out["cheapest"]
    assert cheapest["latency_ms"] < teacher["latency_ms"]
    assert cheapest["size_kb"] < 0.1 * teacher["size_kb"]
    assert out["budgets"]["size_kb"] == pytest.approx(0.15 * teacher["size_kb"])


def test_check_exits_nonzero_for_a_budget_nobody_meets(tmp_path: Path, edgetune_home: Path) -> None:
    spec = tmp_path / "impossible.yaml"
    spec.write_text(SPEC.replace(f"latency_ms: {LATENCY_SHARE:.0%}", "latency_ms: 1%"))
    proc = edgetune("check", str(spec), "--json", check=False)
    assert proc.returncode == 3
    out = as_json(proc)
    assert out["feasible"] is False and out["over_budget"]["latency_ms"] > 1.0
    search = edgetune("search", str(spec), "--storage", f"sqlite:///{tmp_path}/s.db", check=False)
    assert (
        search.returncode == 3
        and "latency_ms" in search.stderr
        and "Traceback" not in search.stderr
    )


def test_search_resume_show_export(spec_file: Path, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path}/studies.db"
    searched = edgetune("search", str(spec_file), "--storage", storage, "--json")
    assert "sensitivity of the teacher measured" in searched.stderr  # once, at the start
    out = as_json(searched)
    assert out["study"] == "tiny" and out["trained"] == 4
    assert out["states"]["complete"] + out["states"]["stopped"] == 4
    assert sum(out["states"].values()) == out["n_trials"] >= 4  # plus any ruled out
    assert set(out["teacher"]) >= {
        "accuracy",
        "latency_ms",
        "energy_mj",
        "peak_memory_kb",
        "size_kb",
    }
    assert out["teacher"]["accuracy"] > 0.85
    best = out["best"]
    assert best, "the feasible seeds must give at least one feasible candidate"
    for row in best:
        assert row["feasible"] is True
        # measured on this machine beside the teacher: within the budget's share of the
        # teacher's latency in that same run (its raw figure may exceed that share of the
        # teacher's first measurement when the machine was slower then)
        assert "latency_ratio" in row and row["latency_ratio"] <= LATENCY_SHARE
        assert row["size_kb"] <= out["budgets"]["size_kb"]
        assert set(row) >= {"trial", "accuracy", "energy_mj", "peak_memory_kb", "params"}

    again = edgetune("resume", "tiny", "--storage", storage, "--trials", "2", "--json")
    assert "sensitivity" not in again.stderr  # the stored one is reused, not measured again
    resumed = as_json(again)
    assert resumed["trained"] == 6
    shown = as_json(edgetune("show", "tiny", "--storage", storage, "--json"))
    assert shown["states"] == resumed["states"]

    # Every trial is stored with its costs; an infeasible one was never trained, and Optuna
    # (its samplers, the dashboard) sees the broken budget as a constraint.
    import optuna

    from search.record import TrialRecord

    study = optuna.load_study(study_name="tiny", storage=storage)
    for t in study.trials:
        record = TrialRecord.read(t)
        assert record is not None
        assert "latency_ms" in record.predicted or record.status == "failed"
        if record.status == "infeasible":
            assert "train" not in record.timings_s
            assert record.timings_s["predict"] < 5.0
            assert any(v > 0 for k, v in t.system_attrs.items() if k.startswith("constraints:"))

    out_dir = tmp_path / "export"
    summary = as_json(
        edgetune("export", "tiny", "--storage", storage, "--out", str(out_dir), "--json")
    )
    assert (out_dir / "model.onnx").exists() and (out_dir / "report.md").exists()
    assert json.loads((out_dir / "summary.json").read_text()) == summary
    for key in (
        "onnx",
        "accuracy_onnx",
        "latency_ms_measured",
        "latency_ms_predicted",
        "size_kb_file",
        "size_kb_packed",
        "input",
    ):
        assert key in summary
    assert summary["input"]["normalize"]["mean"] and summary["input"]["shape"] == [1, 1, 28, 28]
    assert summary["size_kb_packed"] <= summary["size_kb_file"]
    # the ONNX file runs at the torch student's test accuracy, within one point
    assert abs(summary["accuracy_onnx"] - summary["accuracy_torch"]) <= 0.01
    assert summary["predicted_from_onnx"]["size_kb"] == pytest.approx(
        summary["predicted"]["size_kb"], rel=0.02
    )
    report = (out_dir / "report.md").read_text()
    assert "predicted" in report
    # the teacher row of the candidates' table holds the study's teacher, not dashes
    (teacher_row,) = [line for line in report.splitlines() if line.startswith("teacher |")]
    assert f"{summary['teacher_search']['accuracy']:.4g}" in teacher_row
    # the study's sensitivity, per layer beside the policy and as tables
    assert set(summary["sensitivity"]) == set(summary["policy"]["bits"])
    assert "## Sensitivity of the teacher" in report and "accuracy lost alone" in report
    # the figures are written beside the report, and the report shows them
    assert summary["figures"] == {"front": "front.png", "policy": "policy.png"}
    for name in summary["figures"].values():
        assert (out_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({name})" in report


def test_search_on_local_ray_with_two_workers(spec_file: Path, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path}/ray.db"
    out = as_json(
        edgetune(
            "search",
            str(spec_file),
            "--storage",
            storage,
            "--executor",
            "ray",
            "--workers",
            "2",
            "--trials",
            "4",
            "--study",
            "tiny-ray",
            "--json",
        )
    )
    assert out["trained"] == 4
    assert out["states"]["failed"] == 0
    assert out["best"]
