"""Attacks on a real `edgetune serve` on loopback, each refused with a clear 4xx or one-line error
and changing nothing: runs beyond the limit queue, exports are bounded background jobs, a
rebound Host, an oversized body (chunked or declared), an empty token file, a storage password,
file modes."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.conftest import ROOT
from tests.search.test_service_support import TOKEN, Service, spec_yaml
from tests.servers import free_port, wait_for_port

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("needs_fashion_mnist")]
EVIL = "rebind.evil.example"


class Secured(Service):
    """The test service with extra `serve` flags (limits) and, optionally, another storage."""

    def __init__(self, tmp: Path, *extra: str, storage: str | None = None) -> None:
        super().__init__(tmp)
        self.extra = list(extra)
        if storage is not None:
            self.storage = storage

    def start(self) -> Secured:
        cmd = [
            *(sys.executable, "-m", "search.cli", "serve", "--port", str(self.port)),
            *("--dashboard-port", str(self.dashboard_port), "--storage", self.storage),
            *("--data-root", str(self.data_root), *self.extra),
        ]
        log = (self.tmp / "serve.log").open("ab")
        env = dict(os.environ, EDGETUNE_TOKEN=TOKEN)
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=log, env=env)
        wait_for_port(self.port, 60)
        return self

    def runs_dir(self, home: Path) -> Path:
        digest = hashlib.sha256(self.storage.encode()).hexdigest()[:10]
        return home / "service" / f"runs-{digest}"

    def children(self, op: str) -> list[psutil.Process]:
        assert self.proc is not None
        return [
            p
            for p in psutil.Process(self.proc.pid).children()
            if f"search.cli {op} " in " ".join(p.cmdline())
        ]

    def states(self) -> dict[str, str]:
        return {s["study"]: s["state"] for s in self.get("/api/studies").json()["studies"]}


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory, edgetune_home: Path) -> Iterator[Secured]:
    service = Secured(
        tmp_path_factory.mktemp("secure"), "--max-runs", "1", "--max-queued", "2", "--max-exports", "1"
    ).start()
    yield service
    service.stop()


def test_runs_beyond_the_limit_queue_and_stop_takes_a_queued_one_out(
    svc: Secured, edgetune_home: Path
) -> None:
    specs = svc.runs_dir(edgetune_home) / "specs"
    first = svc.submit("q-run", trials=2)
    assert first.status_code == 201 and first.json()["state"] == "running", first.text
    for name in ("q-wait1", "q-wait2"):
        res = svc.submit(name, trials=1)
        assert res.status_code == 201 and res.json()["state"] == "queued", res.text
    over = svc.submit("q-over", trials=1)
    assert over.status_code == 429 and "queue is full" in over.json()["detail"]
    assert not (specs / "q-over.json").exists()
    assert not (svc.runs_dir(edgetune_home) / "q-over.json").exists()
    assert svc.states() == {"q-run": "running", "q-wait1": "queued", "q-wait2": "queued"}
    assert svc.detail("q-wait1")["queue_position"] == 1
    kids = svc.children("search")
    assert len(kids) == 1, [k.cmdline() for k in kids]  # one child, not three

    # the storage URL reaches the child through its environment, never its command line
    cmdline, environ = " ".join(kids[0].cmdline()), kids[0].environ()
    assert svc.storage not in cmdline and environ["EDGETUNE_STORAGE"] == svc.storage
    assert "EDGETUNE_TOKEN" not in environ

    stop = svc.post("/api/studies/q-wait1/stop")
    assert stop.status_code == 202 and stop.json()["state"] == "stopped"
    assert svc.detail("q-wait1")["state"] == "stopped" and svc.detail("q-wait1")["run"]["pid"] is None
    assert svc.post("/api/studies/q-wait1/stop").status_code == 409
    assert svc.post("/api/studies/q-wait2/resume").status_code == 409  # it waits already

    assert svc.post("/api/studies/q-run/stop").status_code == 202
    svc.wait_for("q-wait2", lambda d: d["state"] == "running", 180)  # its turn came
    assert svc.states()["q-wait1"] == "stopped"
    assert len(svc.children("search")) == 1
    assert svc.post("/api/studies/q-wait2/stop").status_code == 202
    svc.wait_for("q-wait2", lambda d: d["state"] == "stopped", 180)
    assert svc.children("search") == []


def _synthetic_study(storage: str, name: str) -> None:
    import optuna

    optuna.create_study(storage=storage, study_name=name)


def test_exports_are_bounded_background_jobs_and_a_failed_one_leaves_nothing(
    svc: Secured, edgetune_home: Path
) -> None:
    for name in ("ex-a", "ex-b"):  # studies without an edgetune spec: their export fails
        _synthetic_study(svc.storage, name)

    async def burst() -> tuple[list[httpx.Response], list[float]]:
        async with httpx.AsyncClient(
            base_url=svc.url, timeout=60, headers={"Authorization": f"Bearer {TOKEN}"}
        ) as client:

            async def status() -> float:
                t0 = time.perf_counter()
                assert (await client.get("/api/studies")).status_code == 200
                return time.perf_counter() - t0

            exports = [client.post(f"/api/studies/ex-a/export?trial={i}") for i in range(20)]
            results = await asyncio.gather(*exports, *(status() for _ in range(20)))
            return list(results[:20]), list(results[20:])  # type: ignore[arg-type]

    responses, status_s = asyncio.run(burst())
    codes = sorted(r.status_code for r in responses)
    assert codes == [202] + [409] * 19, [r.text for r in responses]
    assert all("is running" in r.json()["detail"] for r in responses if r.status_code == 409)
    assert max(status_s) < 10, status_s  # the thread pool is not tied up by exports
    busy = svc.post("/api/studies/ex-b/export?trial=0")
    assert busy.status_code == 429 and "exports are running" in busy.json()["detail"]
    assert len(svc.children("export")) <= 1

    job = next(r for r in responses if r.status_code == 202).json()
    deadline = time.monotonic() + 180
    while (res := svc.get(job["url"])).status_code == 202 and time.monotonic() < deadline:
        time.sleep(1)
    assert res.status_code == 409, res.text
    detail = res.json()["detail"]
    assert "failed: edgetune: error:" in detail and "\n" not in detail
    exports = svc.runs_dir(edgetune_home) / "exports"
    assert [p for p in exports.glob("ex-a-*/trial-*") if p.is_dir()] == []
    assert list(exports.glob("*/.tmp-*")) == []
    assert svc.get("/api/studies/ex-a/export/7").status_code == 404  # never started


def test_a_rebound_host_is_refused_and_creates_nothing(svc: Secured, edgetune_home: Path) -> None:
    res = svc.post(
        "/api/studies",
        content=spec_yaml("rebound", 1),
        headers={"Content-Type": "application/yaml", "Host": f"{EVIL}:{svc.port}"},
    )
    assert res.status_code == 400 and "not this service's address" in res.json()["detail"]
    assert not (svc.runs_dir(edgetune_home) / "specs" / "rebound.json").exists()
    dash = f"http://127.0.0.1:{svc.dashboard_port}/api/studies"
    body = {"study_name": "rebound-dash", "directions": ["maximize"]}
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert httpx.post(dash, json=body, headers={**auth, "Host": EVIL}).status_code == 400
    assert httpx.post(dash, json=body).status_code == 401  # no token
    other_site = {**auth, "Origin": "http://127.0.0.1:1"}
    assert httpx.post(dash, json=body, headers=other_site).status_code == 403
    import optuna

    names = {s.study_name for s in optuna.get_all_study_summaries(svc.storage)}
    assert "rebound" not in names and "rebound-dash" not in names
    assert "rebound" not in svc.states()


def test_an_oversized_chunked_body_gets_413(svc: Secured, edgetune_home: Path) -> None:
    def chunks() -> Iterator[bytes]:
        yield spec_yaml("chunky", 1).encode()
        for _ in range(40):
            yield b"#" * 8192 + b"\n"

    res = svc.post("/api/studies", content=chunks(), headers={"Content-Type": "application/yaml"})
    assert res.status_code == 413 and "bytes" in res.json()["detail"]
    assert "chunky" not in svc.states()
    assert not (svc.runs_dir(edgetune_home) / "specs" / "chunky.json").exists()


def test_an_oversized_declared_body_is_read_before_the_413(svc: Secured) -> None:
    """The Content-Length alone says the body is too large, but the server reads and drops the
    rest before it answers and closes: a client still sending would otherwise get 'connection
    reset by peer' instead of the 413 (CI saw it once, from httpx)."""
    body = spec_yaml("declared", 1).encode() + b"#" * (300 * 1024)
    head = (
        f"POST /api/studies HTTP/1.1\r\nHost: 127.0.0.1:{svc.port}\r\n"
        f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/yaml\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", svc.port), timeout=1) as s:
        s.sendall(head + body[:4096])
        with pytest.raises(TimeoutError):
            s.recv(1)  # no answer while the client is still sending
        s.settimeout(30)
        s.sendall(body[4096:])
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    status, _, rest = reply.partition(b"\r\n")
    assert status == b"HTTP/1.1 413 Request Entity Too Large", reply[:200]
    assert b"bytes" in rest.partition(b"\r\n\r\n")[2]
    assert "declared" not in svc.states()


def test_dashboard_login_sets_an_httponly_strict_path_scoped_cookie(svc: Secured) -> None:
    base = f"http://127.0.0.1:{svc.dashboard_port}"
    res = httpx.post(f"{base}/edgetune/login", data={"token": TOKEN})
    assert res.status_code == 303 and res.headers["location"] == "/dashboard"
    cookies = res.headers.get_list("set-cookie")
    assert cookies and all("HttpOnly" in c and "SameSite=Strict" in c for c in cookies)
    assert all("Path=/;" not in c + ";" for c in cookies)
    name, _, value = cookies[0].split(";")[0].partition("=")
    assert httpx.get(f"{base}/api/meta", cookies={name: value}).status_code == 200
    assert httpx.get(f"{base}/api/meta", cookies={name: ""}).status_code == 401
    assert httpx.get(f"{base}/api/meta", cookies={"edgetune_token": TOKEN}).status_code == 401
    wrong = httpx.post(f"{base}/edgetune/login", data={"token": "z" * 40})
    assert wrong.status_code == 403 and "set-cookie" not in wrong.headers


def test_the_files_the_service_writes_are_private(svc: Secured, edgetune_home: Path) -> None:
    runs = svc.runs_dir(edgetune_home)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    for folder in (edgetune_home / "service", runs, runs / "logs", runs / "specs"):
        assert mode(folder) == 0o700, folder
    files = [*runs.glob("*.json"), *runs.glob("logs/*.log"), *runs.glob("specs/*.json")]
    assert files and {mode(f) for f in files} == {0o600}, {str(f): oct(mode(f)) for f in files}
    assert mode(Path(svc.storage[len("sqlite:///") :])) == 0o600


def test_an_empty_generated_token_file_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "service").mkdir(parents=True)
    (home / "service" / "token").write_text("\n")
    env = {k: v for k, v in os.environ.items() if k != "EDGETUNE_TOKEN"}
    env["EDGETUNE_HOME"] = str(home)
    storage = f"sqlite:///{tmp_path}/s.db"
    for command in ("serve", "dashboard"):
        port = free_port()
        proc = subprocess.run(
            [sys.executable, "-m", "search.cli", command, "--port", str(port), "--storage", storage],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("edgetune:")]
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr
        assert "at least 16 characters, got 0" in lines[0]
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0  # nothing listens
    assert not (tmp_path / "s.db").exists()


def test_a_storage_password_stays_out_of_ps_logs_and_the_api(
    tmp_path: Path, edgetune_home: Path, postgres_url: str
) -> None:
    secret = "Sup3rSecretPw"
    url = postgres_url.replace("postgresql://postgres@", f"postgresql://postgres:{secret}@")
    svc = Secured(tmp_path, storage=url).start()  # trust auth: any password connects
    try:
        assert svc.submit("pg-secret", trials=1).status_code == 201
        kids = svc.children("search")
        assert kids and all(secret not in " ".join(k.cmdline()) for k in kids)

        def logged(d: dict[str, Any]) -> bool:
            return "seed candidates" in ((d.get("run") or {}).get("log_tail") or "")

        d = svc.wait_for("pg-secret", logged, 600)  # the run logs "study ... in STORAGE"
        assert "postgres:***@" in d["run"]["log_tail"]
        for text in (
            json.dumps(d),
            svc.get("/api/studies").text,
            svc.get("/api/info").text,
            (svc.runs_dir(edgetune_home) / "logs" / "pg-secret.log").read_text(),
            svc.log(),
        ):
            assert secret not in text
    finally:
        svc.stop()
