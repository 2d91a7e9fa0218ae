"""A service killed with SIGKILL (and its run with it) comes back: the study shows as
interrupted, nothing told is lost, and resuming from the API continues it."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.search.test_service_support import Service

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("needs_fashion_mnist")]


def test_killed_service_shows_interrupted_and_resumes(tmp_path: Path, edgetune_home: Path) -> None:
    first = Service(tmp_path).start()
    try:
        assert first.submit("restart", trials=6).status_code == 201
        d = first.wait_for("restart", lambda d: d["done"] >= 1)
        told = d["done"]
        os.kill(d["run"]["pid"], signal.SIGKILL)
        assert first.proc is not None
        first.proc.kill()
        first.proc.wait()
    finally:
        first.stop()

    second = Service(tmp_path)
    second.port, second.url = first.port, first.url  # the same service, started again
    second.client = first.client
    second.start()
    try:
        d = second.detail("restart")
        assert d["state"] == "interrupted"
        assert d["done"] >= told  # nothing told is lost
        listed = {s["study"]: s["state"] for s in second.get("/api/studies").json()["studies"]}
        assert listed == {"restart": "interrupted"}
        res = second.post("/api/studies/restart/resume")
        assert res.status_code == 202, res.text
        d = second.wait_for("restart", lambda d: d["done"] > told)
        assert d["state"] in ("running", "finished")
        assert second.post("/api/studies/restart/stop").status_code in (202, 409)
    finally:
        second.stop()
