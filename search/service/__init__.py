"""The edgetune service: an HTTP API and a web page over one study storage.

``edgetune serve`` starts it. Each submitted or resumed study runs as an ``edgetune search`` or
``edgetune resume`` child process, at most ``Limits.max_runs`` at once (the others queue); Stop
sends it SIGTERM. ``edgetune dashboard`` serves optuna-dashboard alone behind the same gate.
"""

from __future__ import annotations

from search.service.config import ServiceConfig, ServiceError, load_token, network_spec
from search.service.runs import Limits
from search.service.server import serve, serve_dashboard

__all__ = [
    "Limits",
    "ServiceConfig",
    "ServiceError",
    "load_token",
    "network_spec",
    "serve",
    "serve_dashboard",
]
