"""A real `edgetune serve` process on loopback for the service tests (no tests in here)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import ROOT, TEACHER, tiny_spec
from tests.servers import free_port, wait_for_port

TOKEN = "test-token-" + "x" * 24


def spec_yaml(name: str, trials: int) -> str:
    """The tiny spec of test_search_e2e, with the teacher named inside the service's data root."""
    return tiny_spec(name, trials, weights="resnet8_teacher.pt")


class Service:
    """`python -m search.cli serve` on free loopback ports, with its own storage and data root."""

    def __init__(self, tmp: Path, *, allow: tuple[str, ...] = ("tests.search",)) -> None:
        self.tmp = tmp
        self.storage = f"sqlite:///{tmp}/studies.db"
        self.data_root = tmp / "data"
        self.data_root.mkdir(exist_ok=True)
        shutil.copy(TEACHER, self.data_root / TEACHER.name)
        self.allow = allow
        self.port = free_port()
        self.dashboard_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.client = httpx.Client(
            base_url=self.url, timeout=120, headers={"Authorization": f"Bearer {TOKEN}"}
        )

    def start(self) -> Service:
        cmd = [
            sys.executable,
            "-m",
            "search.cli",
            "serve",
            "--port",
            str(self.port),
            "--dashboard-port",
            str(self.dashboard_port),
            "--storage",
            self.storage,
            "--data-root",
            str(self.data_root),
        ]
        for module in self.allow:
            cmd += ["--allow-module", module]
        log = (self.tmp / "serve.log").open("ab")
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=log, stderr=log, env=dict(os.environ, EDGETUNE_TOKEN=TOKEN)
        )
        wait_for_port(self.port, 60)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        return (self.tmp / "serve.log").read_text(errors="replace")[-3000:]

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.client.get(path, **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return self.client.post(path, **kw)

    def submit(self, name: str, trials: int) -> httpx.Response:
        return self.post(
            "/api/studies",
            content=spec_yaml(name, trials),
            headers={"Content-Type": "application/yaml"},
        )

    def detail(self, name: str) -> dict[str, Any]:
        res = self.get(f"/api/studies/{name}")
        assert res.status_code == 200, res.text
        out: dict[str, Any] = res.json()
        return out

    def wait_for(
        self, name: str, ok: Callable[[dict[str, Any]], bool], timeout_s: float = 600
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            d = self.detail(name)
            if ok(d):
                return d
            if d["state"] == "failed":
                raise AssertionError(f"study {name} failed: {d['reason']}\n{d['run']}")
            time.sleep(1.0)
        raise TimeoutError(
            f"study {name}: condition not met in {timeout_s} s; last {d}\n{self.log()}"
        )
