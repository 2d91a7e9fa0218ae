"""`edgetune dashboard` serves the study storage: each trial's costs, feasibility, policy and
its downloadable artifact (the student's weights), read over HTTP as the browser page does."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.search.crash_helpers import run, write_spec
from tests.servers import free_port, wait_for_port

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("needs_fashion_mnist", "edgetune_home")]


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as response:
        body: bytes = response.read()
        return body


def test_dashboard_shows_costs_policy_and_artifacts(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path}/s.db"
    run("search", str(write_spec(tmp_path, steps=8, trials=1)), "--storage", storage, "--json")
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "search.cli",
            "dashboard",
            "--storage",
            storage,
            "--port",
            str(port),
        ],
        env=dict(os.environ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, timeout_s=60)
        base = f"http://127.0.0.1:{port}"
        studies = json.loads(get(f"{base}/api/studies"))["study_summaries"]
        study = next(s for s in studies if s["study_name"] == "crash")
        detail: dict[str, Any] = json.loads(get(f"{base}/api/studies/{study['study_id']}"))
        trial = next(t for t in detail["trials"] if t["state"] == "Complete")
        attrs = {a["key"]: a["value"] for a in trial["user_attrs"]}
        for key in ("latency_ms", "energy_mj", "peak_memory_kb", "size_kb", "feasible", "policy"):
            assert key in attrs, key
        assert "kept_channels" in attrs["policy"] and "bits" in attrs["policy"]
        artifact = trial["artifacts"][0]
        blob = get(
            f"{base}/artifacts/{study['study_id']}/{trial['trial_id']}/{artifact['artifact_id']}"
        )
        state = torch.load(io.BytesIO(blob), weights_only=True)
        assert any(k.endswith("weight") for k in state)
    finally:
        server.terminate()
        server.wait(timeout=30)
