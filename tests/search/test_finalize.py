"""`edgetune finalize` as a user runs it: killed mid-run, run again, it resumes from its
checkpoint; the study records the result and `export` uses the finalized weights. The search's
finalize chose what to finalize by a shortlist, which a later finalize reuses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT, tiny_spec

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("needs_fashion_mnist")]

# finalize.images 1024 (the 512 fine-tune images and 512 more): 16 steps an epoch
SECTION = "finalize: {images: 1024, epochs: 2, shortlist: 2, shortlist_epochs: 1, lr: 0.003}\n"
EPOCHS = 4  # from the command line, over the section's 2: 64 steps
STEPS = EPOCHS * 16


def test_finalize_killed_resumes_and_export_uses_it(tmp_path: Path, edgetune_home: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EDGETUNE_ARTIFACTS": str(tmp_path / "art")}
    storage = f"sqlite:///{tmp_path}/s.db"

    def edgetune(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "search.cli", *args], capture_output=True,
                              text=True, timeout=900, env=env)

    spec = tmp_path / "fin.yaml"
    spec.write_text(tiny_spec("fin", trials=2) + SECTION)
    searched = edgetune("search", str(spec), "--storage", storage, "--json")
    assert searched.returncode == 0, searched.stderr[-2000:]
    # the spec's finalize: section ran when the search ended, on the best feasible trial
    assert "teacher logits on 1024 training images" in searched.stderr
    result = json.loads(searched.stdout)
    [(chosen, at_end)] = result["finalized"].items()
    assert at_end["steps"] == 2 * 16 and at_end["images"] == 1024
    assert at_end["lr"] == 0.003  # the spec's, not the trial's
    # first the search's two best trained an epoch each; the better of them was finalized
    shortlist = {n: s["val_accuracy"] for n, s in result["shortlisted"].items()}
    assert len(shortlist) == 2 and chosen == max(shortlist, key=lambda n: shortlist[n])
    assert {s["epochs"] for s in result["shortlisted"].values()} == {1}
    assert "shortlist: trial" in searched.stderr

    # bad input first: one line each, nothing stored
    missing = edgetune("finalize", "fin", "--storage", storage, "--trial", "999")
    assert missing.returncode == 2 and "has no trial 999" in missing.stderr
    assert "Traceback" not in missing.stderr
    zero = edgetune("finalize", "fin", "--storage", storage, "--epochs", "0")
    assert zero.returncode == 2 and "--epochs" in zero.stderr

    cmd = [sys.executable, "-m", "search.cli", "finalize", "fin", "--storage", storage,
           "--epochs", str(EPOCHS), "--json"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    checkpoints = tmp_path / "art" / "finalize"
    deadline = time.monotonic() + 600
    while not list(checkpoints.glob("fin-trial*.pt")) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)  # no chance to clean up
    proc.wait()
    [checkpoint] = checkpoints.glob("fin-trial*.pt")
    reached = torch.load(checkpoint, weights_only=True)["step"]
    assert 0 < reached < STEPS

    again = edgetune(*cmd[3:])
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"at step {reached} of {STEPS}" in again.stderr  # resumed, not restarted
    assert "shortlisting trial" not in again.stderr  # the search's shortlist was reused
    [done] = json.loads(again.stdout)["finalized"]
    assert str(done["trial"]) == chosen
    assert done["steps"] == STEPS and done["epochs"] == EPOCHS and done["lr"] == 0.003
    assert done["val_accuracy"] > done["val_accuracy_search"]  # 64 steps against the trial's 8
    assert not checkpoint.exists()
    shown = edgetune("show", "fin", "--storage", storage)
    assert f"finalized trial {done['trial']}: validation accuracy" in shown.stdout
    assert "from learning rate 0.003" in shown.stdout

    out = tmp_path / "export"
    export = edgetune("export", "fin", "--storage", storage, "--out", str(out), "--json")
    assert export.returncode == 0, export.stderr[-2000:]
    summary = json.loads(export.stdout)
    assert summary["trial"] == done["trial"] and summary["finalized"] == done
    # the exported ONNX runs at the finalized student's accuracy, within a point
    assert abs(summary["accuracy_onnx"] - summary["accuracy_torch"]) <= 0.01
    report = (out / "report.md").read_text()
    assert f"then {done['val_accuracy']:.4f}" in report
    assert "images from learning rate 0.003)" in report
