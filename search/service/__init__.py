"""The edgetune service: an HTTP API and a web page over one study storage.

``edgetune serve`` starts it. Each submitted or resumed study runs as an ``edgetune search`` or
``edgetune resume`` child process; Stop sends it SIGTERM.
"""

from __future__ import annotations

from search.service.config import ServiceConfig, ServiceError, load_token, network_spec
from search.service.server import serve

__all__ = ["ServiceConfig", "ServiceError", "load_token", "network_spec", "serve"]
