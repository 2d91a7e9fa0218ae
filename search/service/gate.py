"""What stands in front of the service and of optuna-dashboard: ASGI layers, outermost first.

* :class:`HostCheck` answers 400 to a request whose ``Host`` is not the address the server is
  bound to (plus ``localhost`` and ``127.0.0.1`` for a loopback bind, and ``--allow-host``
  names): a page on another domain that rebinds its name to this machine (DNS rebinding)
  cannot reach it.
* :class:`BodyLimit` reads the whole body before the app sees it and answers 413 beyond the
  limit, with or without ``Content-Length`` (a chunked body too).
* :class:`DashboardGate` puts optuna-dashboard behind the service's token: a bearer header, or
  the cookie that ``POST /edgetune/login`` sets (HttpOnly, SameSite=Strict, only on the
  dashboard's own paths). A state-changing request from another origin is refused.

A token shorter than ``MIN_TOKEN_CHARS`` never opens anything, on either side of the
comparison, whatever file it came from.
"""

from __future__ import annotations

import html
import json
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from search.service.config import LOOPBACK, MIN_TOKEN_CHARS, ServiceConfig, ServiceError

Scope = dict[str, Any]
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
LOGIN_PATH = "/edgetune/login"
DASHBOARD_PATHS = ("/dashboard", "/api", "/static", "/artifacts", "/csv")
WILDCARD = ("0.0.0.0", "::", "")
HEADERS = [
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"strict-origin-when-cross-origin"),  # keeps Origin on cross-port posts
]


def token_matches(cfg: ServiceConfig, given: str | None) -> bool:
    """Constant-time comparison, and neither side may be short (an empty token file or an
    empty cookie must never match)."""
    return (
        len(cfg.token) >= MIN_TOKEN_CHARS
        and given is not None
        and len(given) >= MIN_TOKEN_CHARS
        and cfg.token_ok(given)
    )


def check_token_length(token: str, source: str) -> None:
    if len(token) < MIN_TOKEN_CHARS:
        raise ServiceError(
            f"{source}: the token must be at least {MIN_TOKEN_CHARS} characters, got "
            f"{len(token)}; make one with `openssl rand -hex 32`"
        )


def split_host(value: str) -> tuple[str, int | None] | None:
    """``name[:port]`` or ``[v6]:port`` as (lower-case name, port); None if malformed."""
    value = value.strip().lower()
    if value.startswith("["):
        name, _, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else (None if not rest else "x")
    else:
        name, sep, port_s = value.rpartition(":") if ":" in value else (value, "", "")
        port = port_s if sep else None
    if not name or (port is not None and not port.isdigit()):
        return None
    return name, None if port is None else int(port)


@dataclass(frozen=True)
class HostRules:
    """Which ``Host`` (and ``Origin``) values a server answers."""

    names: frozenset[str]  # with one of the bound ports
    ports: frozenset[int]
    extra: frozenset[str]  # --allow-host NAME: any port; NAME:PORT: that port
    any_port: frozenset[str]

    @classmethod
    def for_bind(cls, host: str, ports: Iterable[int], extra: Iterable[str] = ()) -> HostRules:
        names = {host.lower().strip("[]")}
        if host in LOOPBACK or host.startswith("127."):
            names |= {"127.0.0.1", "localhost", "::1"}
        if host in WILDCARD:
            names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
        exact, any_port = set(), set()
        for item in extra:
            parsed = split_host(item)
            if parsed is None:
                raise ServiceError(f"--allow-host: {item!r} is not NAME or NAME:PORT")
            name, port = parsed
            if port is None:
                any_port.add(name)
            else:
                exact.add(f"{name}:{port}")
        return cls(frozenset(names), frozenset(ports), frozenset(exact), frozenset(any_port))

    def allows(self, value: str, port: int | None = None) -> bool:
        """Whether ``Host: value`` may reach ``port`` (None: any of the bound ports)."""
        parsed = split_host(value)
        if parsed is None:
            return False
        name, given = parsed
        if name in self.any_port or f"{name}:{given}" in self.extra:
            return True
        ports = self.ports if port is None else {port}
        return name in self.names and given in ports

    def origin_ok(self, origin: str | None) -> bool:
        """A request's ``Origin``: absent (not a browser), or one of this service's."""
        if origin is None:
            return True
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and self.allows(parts.netloc)


async def _answer(send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode()), *HEADERS],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _json(send: Any, status: int, detail: str, **extra: bytes) -> None:
    headers = [(b"content-type", b"application/json")] + [
        (k.replace("_", "-").encode(), v) for k, v in extra.items()
    ]
    await _answer(send, status, json.dumps({"detail": detail}).encode(), headers)


def _headers(scope: Scope) -> dict[bytes, bytes]:
    return dict(scope.get("headers") or [])


class HostCheck:
    """400 for a ``Host`` this server is not (DNS rebinding); adds a few safety headers."""

    def __init__(self, app: Any, rules: HostRules) -> None:
        self.app, self.rules = app, rules

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host = _headers(scope).get(b"host", b"").decode(errors="replace")
        port = int((scope.get("server") or ("", 0))[1] or 0)
        if not self.rules.allows(host, port):
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            shown = host[:100] or "(none)"
            await _json(
                send,
                400,
                f"Host {shown!r} is not this service's address; use the address it is bound to, "
                "or ask the operator to add the name with --allow-host",
            )
            return

        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *HEADERS]}
            await send(message)

        await self.app(scope, receive, with_headers)


DRAIN_FACTOR = 8
"""How much of an oversized body :class:`BodyLimit` reads (and drops) before it answers 413."""


class BodyLimit:
    """Answers 413 to a request whose body is larger than ``limit`` bytes, before the app runs."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = _headers(scope).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await self._drain(receive, int(length) <= DRAIN_FACTOR * self.limit, 0)
            await self._refuse(send)
            return
        chunks: list[bytes] = []
        seen, more = 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            seen += len(chunks[-1])
            more = message.get("more_body", False)
            if seen > self.limit:
                await self._drain(receive, more, seen)
                await self._refuse(send)
                return
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)

    async def _drain(self, receive: Any, more: bool, seen: int) -> None:
        """Read and drop the rest of an oversized body, declared or chunked, up to
        ``DRAIN_FACTOR`` times the limit: a client still sending when the server closes gets a
        connection reset instead of the 413. Beyond that, the reset it is."""
        while more and seen <= DRAIN_FACTOR * self.limit:
            message = await receive()
            if message["type"] != "http.request":
                return
            seen += len(message.get("body", b""))
            more = message.get("more_body", False)

    async def _refuse(self, send: Any) -> None:
        await _json(
            send,
            413,
            f"request body over {self.limit} bytes; a spec is a few KiB: send the YAML or JSON "
            "text only",
            connection=b"close",
        )


def _login_page(message: str = "") -> bytes:
    note = f"<p class=error>{html.escape(message)}</p>" if message else ""
    return (
        "<!doctype html><html lang=en><meta charset=utf-8><title>edgetune: optuna-dashboard"
        "</title><body style='font-family:sans-serif;margin:2em'><h1>optuna-dashboard</h1>"
        f"<form method=post action='{LOGIN_PATH}'><label>Service token "
        "<input name=token type=password autocomplete=off autofocus size=50></label> "
        "<button type=submit>Open</button></form>"
        f"{note}<p>The operator has it (EDGETUNE_TOKEN, --token-file, or "
        "$EDGETUNE_HOME/service/token).</p></body></html>"
    ).encode()


class DashboardGate:
    """optuna-dashboard behind the service's token: a bearer header or the login cookie."""

    def __init__(self, app: Any, cfg: ServiceConfig, rules: HostRules, port: int) -> None:
        self.app, self.cfg, self.rules = app, cfg, rules
        self.cookie = f"edgetune_dashboard_{port}"

    def _token(self, headers: dict[bytes, bytes]) -> str | None:
        auth = headers.get(b"authorization", b"").decode(errors="replace")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        try:
            cookie = SimpleCookie(headers.get(b"cookie", b"").decode(errors="replace"))
        except CookieError:
            return None
        return unquote(cookie[self.cookie].value) if self.cookie in cookie else None

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers, method, path = _headers(scope), scope["method"], scope["path"]
        raw_origin = headers.get(b"origin")
        origin = None if raw_origin is None else raw_origin.decode(errors="replace")
        if method not in SAFE_METHODS and not self.rules.origin_ok(origin):
            await _json(send, 403, "a request from another site's page; open the dashboard here")
            return
        if path == LOGIN_PATH:
            await self._login(scope, receive, send)
            return
        if not token_matches(self.cfg, self._token(headers)):
            page = path == "/" or path.startswith("/dashboard")
            if method == "GET" and page:
                await _answer(send, 303, b"", [(b"location", LOGIN_PATH.encode())])
                return
            await _answer(
                send,
                401,
                b"edgetune: optuna-dashboard needs the service's token; open "
                + LOGIN_PATH.encode()
                + b" on this port and enter it, or send 'Authorization: Bearer TOKEN'",
                [(b"content-type", b"text/plain"), (b"www-authenticate", b"Bearer")],
            )
            return
        await self.app(scope, receive, send)

    async def _login(self, scope: Scope, receive: Any, send: Any) -> None:
        page = [
            (b"content-type", b"text/html; charset=utf-8"),
            (b"cache-control", b"no-store"),
            (b"content-security-policy", b"default-src 'none'; form-action 'self'"),
        ]
        if scope["method"] != "POST":
            await _answer(send, 200, _login_page(), page)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if message["type"] != "http.request" or not message.get("more_body"):
                break
        given = parse_qs(body.decode(errors="replace")).get("token", [""])[0].strip()
        if not token_matches(self.cfg, given):
            await _answer(send, 403, _login_page("wrong token; try again"), page)
            return
        forwarded = _headers(scope).get(b"x-forwarded-proto", b"").decode().lower()
        secure = "; Secure" if "https" in (scope.get("scheme"), forwarded) else ""
        cookies = [
            (
                b"set-cookie",
                f"{self.cookie}={quote(given, safe='')}; Path={p}; HttpOnly; "
                f"SameSite=Strict{secure}".encode(),
            )
            for p in DASHBOARD_PATHS
        ]
        await _answer(
            send,
            303,
            b"",
            [(b"location", b"/dashboard"), (b"cache-control", b"no-store"), *cookies],
        )
