"""The agent server (``python -m targets.agent serve``) and its client (``AgentMeasurer``), over
real HTTP on 127.0.0.1: the token, the limits, bad models, one measurement at a time."""

from __future__ import annotations

import base64
import dataclasses
import http.client
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("onnxruntime")

import targets.registry
from cost_models import KernelCoefficients, KernelConstants, KernelCostModel
from targets.base import AgentRef, Provenance, Target, target_to_dict
from targets.errors import TargetError
from targets.measurer import measurer_for
from targets.remote import AgentMeasurer
from tests.servers import free_port
from tests.targets.test_agent import conv_chain

ROOT = Path(__file__).resolve().parents[2]
AGENT = ROOT / "targets" / "agent.py"
TOKEN = "tok-" + secrets.token_urlsafe(24)
WRONG = "wrong-" + secrets.token_urlsafe(24)
START_S = 60.0


@dataclasses.dataclass
class Agent:
    url: str
    token_file: Path
    proc: subprocess.Popen[bytes]
    out: Path
    err: Path

    def logs(self) -> str:
        return self.out.read_text() + self.err.read_text()


def _token_file(path: Path, token: str = TOKEN, mode: int = 0o600) -> Path:
    path.write_text(token + "\n")
    path.chmod(mode)
    return path


def _start(args: list[str], folder: Path, cwd: Path = ROOT) -> Agent:
    """Start an agent server and wait (bounded) for the port it prints."""
    out, err = folder / "agent.out", folder / "agent.err"
    with out.open("wb") as o, err.open("wb") as e:
        proc = subprocess.Popen(
            [sys.executable, *args, "--port", "0"],
            stdout=o,
            stderr=e,
            cwd=cwd,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    token_file = Path(args[args.index("--token-file") + 1])
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        found = re.search(r"listening on (http://127\.0\.0\.1:\d+)", out.read_text())
        if found:
            return Agent(found.group(1), token_file, proc, out, err)
        if proc.poll() is not None:
            raise AssertionError(f"the agent exited ({proc.returncode}): {err.read_text()}")
        time.sleep(0.05)
    _stop(proc)
    raise AssertionError(f"the agent did not start within {START_S} s: {err.read_text()}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    folder = tmp_path_factory.mktemp("agent")
    token_file = _token_file(folder / "agent.token")
    args = ["-m", "targets.agent", "serve", "--token-file", str(token_file), "--max-model-mb", "1"]
    server = _start(args, folder)
    try:
        yield server
    finally:
        _stop(server.proc)


def _request(
    url: str, body: Any = None, token: str | None = TOKEN, raw: bytes | None = None
) -> tuple[int, dict[str, Any]]:
    """GET (no body) or POST ``url``; the status and the JSON answer."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(urllib.request.Request(url, data, headers), timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def _target(name: str, agent: AgentRef | None) -> Target:
    constants = KernelConstants(
        session_ms=0.01,
        power_w=3.0,
        coefficients=(KernelCoefficients("linear:f32", fixed_ms=0.002, ns_per_mac=1.0),),
    )
    prov = Provenance(source="hand-set", n_measurements=0, date="2026-01-01")
    return Target(name, "a device", "onnxruntime", KernelCostModel(), constants, prov, agent=agent)


def _b64(model: bytes) -> str:
    return base64.b64encode(model).decode()


def test_info_describes_the_device_and_needs_the_token(agent: Agent) -> None:
    status, info = _request(agent.url + "/info")
    assert status == 200
    assert info["cpu_model"] and info["onnxruntime"] and isinstance(info["cpu_flags"], list)
    assert info["intra_op_num_threads"] == 1 and info["limits"]["max_model_mb"] == 1
    assert TOKEN not in json.dumps(info)
    assert _request(agent.url + "/info", token=None)[0] == 401
    assert _request(agent.url + "/info", token=WRONG)[0] == 403
    assert _request(agent.url + "/nothing")[0] == 404
    measurer = AgentMeasurer(AgentRef(agent.url, str(agent.token_file)))
    assert measurer.info()["cpu_model"] == info["cpu_model"]


def test_measures_through_the_targets_measurer(agent: Agent) -> None:
    target = _target("remote-device", AgentRef(agent.url, str(agent.token_file)))
    measurer = measurer_for(target)
    assert isinstance(measurer, AgentMeasurer) and measurer.where == agent.url
    small, big = measurer.measure([conv_chain(4, 1), conv_chain(32, 4)], seconds=0.4, min_runs=20)
    assert 0 < small.latency_ms < big.latency_ms
    for m in (small, big):
        assert m.n_runs >= 20 and m.latency_ms <= m.median_ms
    assert measurer.measure([]) == []


def test_measurements_never_overlap(agent: Agent) -> None:
    body = {"models": [_b64(conv_chain(8, 2))], "seconds": 0.3, "min_runs": 10}
    answers: list[tuple[int, dict[str, Any]]] = []
    threads = [
        threading.Thread(target=lambda: answers.append(_request(agent.url + "/measure", body)))
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert [status for status, _ in answers] == [200, 200]
    (_, a), (_, b) = answers
    assert a["finished"] <= b["started"] or b["finished"] <= a["started"]
    assert a["measurements"][0]["n_runs"] >= 10


def test_refusals_are_one_line_json(agent: Agent) -> None:
    measure = agent.url + "/measure"
    good = {"models": [_b64(conv_chain(4, 1))], "seconds": 0.1, "min_runs": 5}
    assert _request(measure, good, token=None)[0] == 401
    assert _request(measure, good, token=WRONG)[0] == 403
    over = {**good, "models": [_b64(secrets.token_bytes(1_200_000))]}
    status, answer = _request(measure, over)
    assert status == 413 and "--max-model-mb" in answer["error"]
    bad = {**good, "models": [_b64(b"this is not an ONNX model")]}
    status, answer = _request(measure, bad)
    assert status == 400 and answer["error"].startswith("model 0 cannot run")
    assert "\n" not in answer["error"] and "Traceback" not in answer["error"]
    for body in ({**good, "seconds": 600}, {**good, "min_runs": 0}, {**good, "extra": 1}):
        assert _request(measure, body)[0] == 400
    assert _request(measure, raw=b"{not json")[0] == 400
    assert _request(measure, raw=b'{"models": ["not base64!"]}')[0] == 400
    # a body announced over the total limit is refused before it is read
    port = int(agent.url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest("POST", "/measure")
        conn.putheader("Authorization", f"Bearer {TOKEN}")
        conn.putheader("Content-Length", str(10**10))
        conn.endheaders()
        response = conn.getresponse()
        assert response.status == 413 and "--max-total-mb" in json.loads(response.read())["error"]
    finally:
        conn.close()
    assert _request(agent.url + "/info")[0] == 200  # still serving


def test_client_errors_name_the_url_and_what_to_do(agent: Agent, tmp_path: Path) -> None:
    wrong = AgentMeasurer(AgentRef(agent.url, str(_token_file(tmp_path / "wrong", WRONG))))
    with pytest.raises(TargetError, match=r"refused the token .*403") as caught:
        wrong.measure([conv_chain(4, 1)], seconds=0.1, min_runs=5)
    assert agent.url in str(caught.value) and WRONG not in str(caught.value)
    right = AgentMeasurer(AgentRef(agent.url, str(agent.token_file)))
    with pytest.raises(TargetError, match=r"over the limits .*--max-model-mb 1,"):
        right.measure([secrets.token_bytes(1_200_000)], seconds=0.1, min_runs=5)
    with pytest.raises(TargetError, match=r"over the limits .*--max-total-mb 4\)"):
        right.measure([secrets.token_bytes(900_000)] * 5, seconds=0.1, min_runs=5)
    right._check_limits = lambda models: None  # type: ignore[method-assign]  # the agent's 413
    with pytest.raises(TargetError, match=r"too large \(413.*--max-model-mb"):
        right.measure([secrets.token_bytes(1_200_000)], seconds=0.1, min_runs=5)
    with pytest.raises(TargetError, match=r"refused the request \(400: model 1 cannot run"):
        right.measure([conv_chain(4, 1), b"not onnx"], seconds=0.1, min_runs=5)
    closed = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(TargetError, match=r"connection refused.*agent.py serve") as caught:
        AgentMeasurer(AgentRef(closed, str(agent.token_file))).info()
    assert closed in str(caught.value) and TOKEN not in str(caught.value)


def test_token_files_open_to_others_are_refused(tmp_path: Path) -> None:
    """By the server (the file alone, as on a device) and by the client."""
    shutil.copy(AGENT, tmp_path / "agent.py")
    cases = {
        "missing": (tmp_path / "missing", "cannot be read"),
        "empty": (_token_file(tmp_path / "empty", ""), "16 or more"),
        "short": (_token_file(tmp_path / "short", "abc123"), "16 or more"),
        "open": (_token_file(tmp_path / "open", TOKEN, 0o644), "chmod 600"),
    }
    for name, (path, says) in cases.items():
        proc = subprocess.run(
            [sys.executable, "agent.py", "serve", "--port", "0", "--token-file", str(path)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 2 and says in proc.stderr, name
        assert "Traceback" not in proc.stderr and TOKEN not in proc.stderr + proc.stdout
        client = AgentMeasurer(AgentRef("http://127.0.0.1:9", str(path)))
        with pytest.raises(TargetError, match=re.escape(str(path))) as caught:
            client.measure([b"x"], seconds=0.1, min_runs=5)
        assert says in str(caught.value) and TOKEN not in str(caught.value)


def test_the_file_alone_serves_and_warns_off_loopback(tmp_path: Path) -> None:
    shutil.copy(AGENT, tmp_path / "agent.py")
    token_file = _token_file(tmp_path / "agent.token")
    server = _start(["agent.py", "serve", "--token-file", str(token_file)], tmp_path, tmp_path)
    try:
        assert _request(server.url + "/info")[0] == 200
    finally:
        _stop(server.proc)
    # 192.0.2.1 (TEST-NET-1) is no address of this machine: the warning, then no server
    args = ["agent.py", "serve", "--host", "192.0.2.1", "--port", "0"]
    proc = subprocess.run(
        [sys.executable, *args, "--token-file", str(token_file)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "not encrypted" in proc.stderr and "TLS" in proc.stderr
    assert proc.returncode == 2 and "cannot listen" in proc.stderr


def test_edgetune_targets_shows_the_url_not_the_token(
    agent: Agent, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGETUNE_HOME", str(tmp_path))
    target = _target("remote-pi", AgentRef(agent.url, str(agent.token_file)))
    (tmp_path / "targets").mkdir()
    (tmp_path / "targets" / "remote-pi.json").write_text(json.dumps(target_to_dict(target)))
    targets.registry.forget("remote-pi")
    try:
        (row,) = [d for d in targets.registry.describe_targets() if d["name"] == "remote-pi"]
        assert row["agent"] == {"url": agent.url}
        assert TOKEN not in json.dumps(targets.registry.describe_targets())
        measurer = measurer_for(targets.registry.get("remote-pi"))
        assert measurer is not None and measurer.where == agent.url
    finally:
        targets.registry.forget("remote-pi")


def test_the_token_never_reaches_the_logs(agent: Agent) -> None:
    assert _request(agent.url + "/info")[0] == 200
    assert _request(agent.url + "/info", token=WRONG)[0] == 403
    logs = agent.logs()
    assert "GET /info" in logs  # the log is there, without the tokens
    assert TOKEN not in logs and WRONG not in logs and "Traceback" not in logs
