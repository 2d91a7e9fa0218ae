"""The service's gate and file rules, in process (no server): the Host check, the body limit on a
chunked body, the dashboard's token and cookie, short tokens, redaction, private atomic files."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path
from typing import Any

import pytest

from search.service.config import ServiceConfig
from search.service.files import private_dir, redact, redact_text, write_atomic
from search.service.gate import (
    BodyLimit,
    DashboardGate,
    HostCheck,
    HostRules,
    split_host,
    token_matches,
)

TOKEN = "t" * 32


def cfg(token: str = TOKEN) -> ServiceConfig:
    return ServiceConfig(storage="sqlite:///x.db", home=Path("/nonexistent"), token=token)


async def _ok_app(scope: Any, receive: Any, send: Any) -> None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"app saw %d bytes" % len(body)})


def call(
    app: Any,
    *,
    method: str = "GET",
    path: str = "/",
    headers: dict[str, str] | None = None,
    chunks: list[bytes] | None = None,
    port: int = 8080,
) -> tuple[int, dict[str, list[str]], bytes]:
    """One request through an ASGI app: status, headers (lists), body."""
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        "server": ("127.0.0.1", port),
        "scheme": "http",
    }
    pending = list(chunks or [b""])
    out: dict[str, Any] = {"headers": {}, "body": b""}

    async def receive() -> dict[str, Any]:
        if pending:
            body = pending.pop(0)
            return {"type": "http.request", "body": body, "more_body": bool(pending)}
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            out["status"] = message["status"]
            for k, v in message["headers"]:
                out["headers"].setdefault(k.decode(), []).append(v.decode())
        else:
            out["body"] += message.get("body", b"")

    asyncio.run(app(scope, receive, send))
    return out["status"], out["headers"], out["body"]


def test_host_check_refuses_a_rebound_name() -> None:
    rules = HostRules.for_bind("127.0.0.1", [8080, 8081], ["edgetune.example.com"])
    app = HostCheck(_ok_app, rules)
    for host in ("127.0.0.1:8080", "localhost:8080", "[::1]:8080", "edgetune.example.com"):
        assert call(app, headers={"Host": host})[0] == 200, host
    for host in ("rebind.evil.example:8080", "127.0.0.1:9999", "127.0.0.1:8081", "", "a:b:c"):
        status, headers, body = call(app, method="POST", headers={"Host": host})
        assert status == 400 and b"not this service's address" in body, host
        assert headers["x-frame-options"] == ["DENY"]
    # a non-loopback bind answers its own address only
    lan = HostRules.for_bind("10.0.0.5", [8080])
    assert lan.allows("10.0.0.5:8080", 8080) and not lan.allows("localhost:8080", 8080)
    assert split_host("[::1]:80") == ("::1", 80) and split_host("x:y") is None


def test_a_chunked_body_over_the_limit_gets_413_before_the_app() -> None:
    app = BodyLimit(_ok_app, limit=1000)
    status, _, body = call(app, method="POST", chunks=[b"x" * 600, b"x" * 600])
    assert status == 413 and b"request body over 1000 bytes" in body
    status, _, body = call(app, method="POST", chunks=[b"x" * 400, b"x" * 400])
    assert (status, body) == (200, b"app saw 800 bytes")
    status, _, _ = call(app, method="POST", headers={"Content-Length": "5000"})
    assert status == 413


def test_short_or_empty_tokens_never_match() -> None:
    assert token_matches(cfg(), TOKEN)
    assert not token_matches(cfg(), "")
    assert not token_matches(cfg(), None)
    assert not token_matches(cfg(""), "")  # an empty token file opens nothing
    assert not token_matches(cfg("short"), "short")


def test_dashboard_gate_login_cookie_is_httponly_strict_and_path_scoped() -> None:
    rules = HostRules.for_bind("127.0.0.1", [8080, 8081])
    gate = DashboardGate(_ok_app, cfg(), rules, 8081)
    assert call(gate, path="/api/meta", port=8081)[0] == 401
    assert call(gate, path="/api/meta", headers={"Cookie": "edgetune_dashboard_8081="})[0] == 401
    assert call(gate, path="/dashboard")[0] == 303  # to the login form
    status, headers, _ = call(
        gate,
        method="POST",
        path="/edgetune/login",
        headers={"Origin": "http://127.0.0.1:8080"},
        chunks=[f"token={TOKEN}".encode()],
    )
    assert status == 303 and headers["location"] == ["/dashboard"]
    cookies = headers["set-cookie"]
    assert {c.split("; ")[1] for c in cookies} == {
        "Path=/dashboard",
        "Path=/api",
        "Path=/static",
        "Path=/artifacts",
        "Path=/csv",
    }
    assert all("HttpOnly" in c and "SameSite=Strict" in c for c in cookies)
    cookie = cookies[0].split(";")[0]
    assert call(gate, path="/api/meta", headers={"Cookie": cookie})[0] == 200
    # a wrong token, a login from another site's page, a write from another origin: refused
    bad = call(gate, method="POST", path="/edgetune/login", chunks=[b"token=" + b"y" * 32])
    assert bad[0] == 403 and "set-cookie" not in bad[1]
    evil = {"Origin": "http://evil.example", "Cookie": cookie}
    assert call(gate, method="POST", path="/edgetune/login", headers=evil)[0] == 403
    assert call(gate, method="POST", path="/api/studies", headers=evil)[0] == 403


def test_redaction_hides_passwords() -> None:
    url = "postgresql://edgetune:s3cr%40t-pw@db:5432/edgetune"
    assert "s3cr" not in redact(url) and "edgetune:***@db" in redact(url)
    text = f"study 'x' in {url}: 2 seeds\nFATAL: password s3cr@t-pw refused for {url}"
    out = redact_text(text, (url,))
    assert "s3cr" not in out and out.count("edgetune:***@") == 2


def test_private_atomic_files(tmp_path: Path) -> None:
    folder = tmp_path / "service"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    private_dir(folder)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    write_atomic(folder / "run.json", '{"a": 1}')
    assert stat.S_IMODE((folder / "run.json").stat().st_mode) == 0o600
    assert (folder / "run.json").read_text() == '{"a": 1}'
    assert [p.name for p in folder.iterdir()] == ["run.json"]  # no temporary file left


@pytest.mark.parametrize("value", ["127.0.0.1:8080", "LOCALHOST:8080"])
def test_host_names_are_case_insensitive(value: str) -> None:
    assert HostRules.for_bind("127.0.0.1", [8080]).allows(value, 8080)
