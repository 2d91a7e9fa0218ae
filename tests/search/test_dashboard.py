"""`edgetune dashboard` serves the study storage: each trial's costs, feasibility, policy and
its downloadable artifact (the student's weights), read over HTTP as the browser page does;
only with the token, and only under its own Host (no DNS rebinding)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.search.crash_helpers import run, write_spec
from tests.search.test_service_support import TOKEN
from tests.servers import free_port, wait_for_port

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("needs_fashion_mnist", "edgetune_home")]


def get(url: str, token: str | None = TOKEN, **headers: str) -> bytes:
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=60) as response:
        body: bytes = response.read()
        return body


def status_of(url: str, method: str = "GET", body: bytes | None = None, **headers: str) -> int:
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


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
        env=dict(os.environ, EDGETUNE_TOKEN=TOKEN),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, timeout_s=60)
        base = f"http://127.0.0.1:{port}"
        # no token, a wrong one, a rebound Host (even with the token): refused, nothing made
        create = json.dumps({"study_name": "rebound", "directions": ["maximize"]}).encode()
        json_ct = {"Content-Type": "application/json"}
        assert status_of(f"{base}/api/studies") == 401
        assert status_of(f"{base}/api/studies", Authorization="Bearer " + "w" * 32) == 401
        assert status_of(f"{base}/api/studies", "POST", create, **json_ct) == 401
        evil = {"Host": "rebind.evil.example", "Authorization": f"Bearer {TOKEN}", **json_ct}
        assert status_of(f"{base}/api/studies", "POST", create, **evil) == 400
        names = [s["study_name"] for s in json.loads(get(f"{base}/api/studies"))["study_summaries"]]
        assert "rebound" not in names
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
        # the teacher's sensitivity, measured when the study started, is a study artifact
        [figure] = [a for a in detail["artifacts"] if a["filename"] == "sensitivity.png"]
        assert figure["mimetype"] == "image/png"
        png = get(f"{base}/artifacts/{study['study_id']}/{figure['artifact_id']}")
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    finally:
        server.terminate()
        server.wait(timeout=30)
