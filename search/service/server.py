"""Serving: uvicorn on the service's port, plus optuna-dashboard on a second port.

optuna-dashboard's page asks for ``/static/...`` and ``/api/...`` at the root of its host, so it
cannot sit under a prefix beside edgetune's own ``/api``. It is served by the same process, on
``--dashboard-port`` (default: the service's port + 1), behind the same token: the browser sends
it as the ``edgetune_token`` cookie, which the page sets when the token is entered.
"""

from __future__ import annotations

import socket
import sys
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import unquote

from search.service.config import ServiceConfig

Scope = dict[str, Any]


class BodyLimit:
    """Answers 413 to a request whose body is larger than ``limit`` bytes."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await self._refuse(send)
            return
        seen = 0
        started = False

        class TooLarge(Exception):
            pass

        async def counted() -> Any:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise TooLarge
            return message

        async def tracked_send(message: Any) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked_send)
        except TooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send: Any) -> None:
        body = (
            f'{{"detail": "request body over {self.limit} bytes; a spec is a few KiB: '
            'send the YAML or JSON text only"}'
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class TokenGate:
    """optuna-dashboard behind the service's token: a bearer header or the page's cookie."""

    def __init__(self, app: Any, cfg: ServiceConfig) -> None:
        self.app, self.cfg = app, cfg

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            auth = headers.get(b"authorization", b"").decode(errors="replace")
            token = auth[7:].strip() if auth.lower().startswith("bearer ") else None
            if token is None:
                cookie = SimpleCookie(headers.get(b"cookie", b"").decode(errors="replace"))
                token = (
                    unquote(cookie["edgetune_token"].value) if "edgetune_token" in cookie else None
                )
            if not self.cfg.token_ok(token):
                body = (
                    b"edgetune: optuna-dashboard needs the service's token; open the "
                    b"edgetune page on the service's port and enter it there first"
                )
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [(b"content-type", b"text/plain")],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


class ByPort:
    """One ASGI app per listening port."""

    def __init__(self, main: Any, others: dict[int, Any]) -> None:
        self.main, self.others = main, others

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        server = scope.get("server") or ("", 0)
        app: Any = self.main
        if scope["type"] != "lifespan":
            app = self.others.get(int(server[1] or 0), self.main)
        await app(scope, receive, send)


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=512)


def dashboard_app(cfg: ServiceConfig) -> Any:
    from a2wsgi import WSGIMiddleware
    from optuna_dashboard import wsgi

    from search.artifacts import artifact_store
    from search.study import storage_for

    return TokenGate(
        WSGIMiddleware(wsgi(storage_for(cfg.storage), artifact_store=artifact_store())), cfg
    )


def serve(cfg: ServiceConfig, token_source: str) -> None:
    import uvicorn

    from search.service.app import create_app

    app: Any = BodyLimit(create_app(cfg), cfg.max_body_bytes)
    sockets = [_listen(cfg.host, cfg.port)]
    if cfg.dashboard_port:
        sockets.append(_listen(cfg.host, cfg.dashboard_port))
        app = ByPort(app, {cfg.dashboard_port: dashboard_app(cfg)})
    host = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
    print(
        f"edgetune service on http://{host}:{cfg.port}/ (API docs at /docs), storage {cfg.storage}",
        file=sys.stderr,
    )
    if cfg.dashboard_port:
        print(f"optuna-dashboard on http://{host}:{cfg.dashboard_port}/dashboard", file=sys.stderr)
    print(f"token: from {token_source}", file=sys.stderr, flush=True)
    config = uvicorn.Config(
        app, log_level="warning", timeout_graceful_shutdown=5, limit_concurrency=1000, backlog=512
    )
    uvicorn.Server(config).run(sockets=sockets)
