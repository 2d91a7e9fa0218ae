"""Serving: uvicorn on the service's port, plus optuna-dashboard on a second port.

optuna-dashboard's page asks for ``/static/...`` and ``/api/...`` at the root of its host, so it
cannot sit under a prefix beside edgetune's own ``/api``. It is served by the same process, on
``--dashboard-port`` (default: the service's port + 1), behind the same token (see
:mod:`search.service.gate`); ``edgetune dashboard`` serves it alone, behind the same gate.
Both check the ``Host`` header and refuse a short token.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from search.service.config import ServiceConfig
from search.service.files import redact
from search.service.gate import (
    LOGIN_PATH,
    BodyLimit,
    DashboardGate,
    HostCheck,
    HostRules,
    check_token_length,
)
from search.service.runs import Limits

Scope = dict[str, Any]


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


def _private_storage(url: str) -> None:
    """The service's files are private (umask 077); an existing SQLite file of ours too."""
    os.umask(0o077)
    if not url.startswith("sqlite:///"):
        return
    path = Path(url[len("sqlite:///") :]).expanduser()
    try:
        st = path.stat()
        if st.st_uid == os.getuid() and st.st_mode & 0o077:
            path.chmod(0o600)
    except OSError:
        pass


def dashboard_app(cfg: ServiceConfig, rules: HostRules, port: int) -> Any:
    from a2wsgi import WSGIMiddleware
    from optuna_dashboard import wsgi

    from search.artifacts import artifact_store
    from search.study import storage_for

    app = WSGIMiddleware(wsgi(storage_for(cfg.storage), artifact_store=artifact_store()))
    return DashboardGate(app, cfg, rules, port)


def _run(app: Any, sockets: list[socket.socket]) -> None:
    import uvicorn

    config = uvicorn.Config(
        app, log_level="warning", timeout_graceful_shutdown=5, limit_concurrency=1000, backlog=512
    )
    uvicorn.Server(config).run(sockets=sockets)


def _shown(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def serve(
    cfg: ServiceConfig,
    token_source: str,
    *,
    limits: Limits | None = None,
    allow_hosts: Sequence[str] = (),
) -> None:
    from search.service.app import create_app

    check_token_length(cfg.token, token_source)
    _private_storage(cfg.storage)
    # The status thread is CPU-bound; the event loop gives up the GIL at every socket call and
    # would wait up to the switch interval (5 ms) to get it back, per call: 200 concurrent
    # status calls then queue for seconds. A 1 ms interval keeps that wait short.
    sys.setswitchinterval(0.001)
    ports = [cfg.port] + ([cfg.dashboard_port] if cfg.dashboard_port else [])
    rules = HostRules.for_bind(cfg.host, ports, allow_hosts)
    app: Any = create_app(cfg, limits)
    sockets = [_listen(cfg.host, cfg.port)]
    if cfg.dashboard_port:
        sockets.append(_listen(cfg.host, cfg.dashboard_port))
        app = ByPort(app, {cfg.dashboard_port: dashboard_app(cfg, rules, cfg.dashboard_port)})
    host = _shown(cfg.host)
    print(
        f"edgetune service on http://{host}:{cfg.port}/ (API docs at /docs), "
        f"storage {redact(cfg.storage)}",
        file=sys.stderr,
    )
    if cfg.dashboard_port:
        print(f"optuna-dashboard on http://{host}:{cfg.dashboard_port}/dashboard", file=sys.stderr)
    print(f"token: from {token_source}", file=sys.stderr, flush=True)
    _run(HostCheck(BodyLimit(app, cfg.max_body_bytes), rules), sockets)


def serve_dashboard(cfg: ServiceConfig, token_source: str, allow_hosts: Sequence[str] = ()) -> None:
    """optuna-dashboard alone (``edgetune dashboard``), behind the token and the Host check."""
    check_token_length(cfg.token, token_source)
    os.umask(0o077)
    rules = HostRules.for_bind(cfg.host, [cfg.port], allow_hosts)
    app = dashboard_app(cfg, rules, cfg.port)
    sockets = [_listen(cfg.host, cfg.port)]
    print(
        f"optuna-dashboard for {redact(cfg.storage)} on http://{_shown(cfg.host)}:{cfg.port}"
        f"{LOGIN_PATH} (Ctrl-C stops it); token: from {token_source}",
        file=sys.stderr,
        flush=True,
    )
    _run(HostCheck(BodyLimit(app, cfg.max_body_bytes), rules), sockets)
