"""Measuring on a device through its agent server (``python agent.py serve``, see
:mod:`targets.agent`).

A target file names the server and the file that holds its token::

    "agent": {"url": "http://127.0.0.1:8765", "token_file": "~/.edgetune/pi.token"}

The token is read from its file at each call (so it can be rotated without a restart), sent only
in the ``Authorization`` header, and never printed: messages name the URL and the token file.
The client follows no redirect (a redirect would carry the token elsewhere) and uses no proxy
from the environment. The agent runs one measurement at a time: a second search measuring on
the same device waits for the first.
"""

from __future__ import annotations

import base64
import http.client
import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from targets.agent import TokenFileError, read_token
from targets.base import AgentRef
from targets.errors import TargetError
from targets.measurer import Measurement, Measurer

__all__ = ["AgentMeasurer", "public_url"]

INFO_TIMEOUT_S = 30.0
"""How long ``GET /info`` may take."""
MEASURE_TIMEOUT_S = 300.0
"""How long ``POST /measure`` may wait beyond its measuring time: the upload, the sessions'
warm-up, and another client's measurement that holds the device."""


def public_url(url: str) -> str:
    """``url`` without a ``user:password@`` part, for messages and listings."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the 3xx answer becomes an HTTPError


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())


class AgentMeasurer(Measurer):
    """Measures ONNX models on a device through its agent server, over HTTP(S)."""

    def __init__(self, agent: AgentRef, *, timeout_s: float | None = None) -> None:
        self.agent = agent
        self.timeout_s = timeout_s
        """Seconds to wait for an answer (default: 30 for /info; for /measure, 300 plus four
        times the measuring time)."""

    @property
    def where(self) -> str:
        return public_url(self.agent.url)

    def info(self) -> dict[str, Any]:
        """The agent's device description and limits (``GET /info``)."""
        return self._call("/info", None, self.timeout_s or INFO_TIMEOUT_S)

    def measure(
        self, models: list[bytes], *, seconds: float = 2.0, min_runs: int = 100
    ) -> list[Measurement]:
        if not models:
            return []
        if sum(map(len, models)) > 2**20:
            self._check_limits(models)
        body = {
            "models": [base64.b64encode(m).decode("ascii") for m in models],
            "seconds": seconds,
            "min_runs": min_runs,
        }
        timeout = self.timeout_s or MEASURE_TIMEOUT_S + 4 * seconds
        reply = self._call("/measure", json.dumps(body).encode(), timeout)
        results = reply.get("measurements")
        if not isinstance(results, list) or len(results) != len(models):
            raise TargetError(
                f"the agent at {self.where} answered {len(results or [])} measurements for "
                f"{len(models)} models; update agent.py on the device to this version"
            )
        return [self._measurement(r) for r in results]

    def _check_limits(self, models: list[bytes]) -> None:
        """Refuse models over the agent's limits before sending them: a body over its limit is
        cut off by the agent unread, and the client sees only a closed connection."""
        limits = self.info().get("limits") or {}
        mb = [len(m) / 2**20 for m in models]
        most = (limits.get("max_model_mb", float("inf")), limits.get("max_total_mb", float("inf")))
        if max(mb) > most[0] or sum(mb) > most[1]:
            raise TargetError(
                f"the models ({max(mb):.1f} MB the largest, {sum(mb):.1f} MB in all) are over the "
                f"limits of the agent at {self.where} (--max-model-mb {most[0]:g}, --max-total-mb "
                f"{most[1]:g}); restart it with larger limits, or measure fewer models at a time"
            )

    def _measurement(self, raw: Any) -> Measurement:
        try:
            return Measurement(
                latency_ms=float(raw["raw_latency_ms"]),
                median_ms=float(raw["median_ms"]),
                n_runs=int(raw["n_runs"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise TargetError(
                f"the agent at {self.where} answered a measurement without {exc}; update "
                "agent.py on the device to this version"
            ) from None

    def _token(self) -> str:
        try:
            return read_token(self.agent.token_file)
        except TokenFileError as exc:
            raise TargetError(
                f"agent {self.where}: {exc} (the target file's agent.token_file; it must hold "
                "the token the agent was started with)"
            ) from None

    def _call(self, path: str, body: bytes | None, timeout: float) -> dict[str, Any]:
        """GET (no body) or POST ``path`` with the token; the JSON answer, or a TargetError."""
        headers = {"Authorization": f"Bearer {self._token()}"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            request = urllib.request.Request(self.agent.url.rstrip("/") + path, body, headers)
            with _OPENER.open(request, timeout=timeout) as response:
                data = response.read()
        except urllib.error.HTTPError as exc:
            raise TargetError(self._refused(exc, path)) from None
        except urllib.error.URLError as exc:
            raise TargetError(self._unreachable(exc.reason, timeout)) from None
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise TargetError(self._unreachable(exc, timeout)) from None
        try:
            reply = json.loads(data)
        except ValueError:
            reply = None
        if not isinstance(reply, dict):
            raise TargetError(
                f"{self.where}{path} did not answer JSON: is it an edgetune agent "
                "(python agent.py serve)?"
            )
        return reply

    def _refused(self, exc: urllib.error.HTTPError, path: str) -> str:
        try:
            text = json.loads(exc.read(4096)).get("error", "")
        except (ValueError, AttributeError, OSError):
            text = exc.reason
        finally:
            exc.close()
        said = f"({exc.code}: {' '.join(str(text).split())[:300]})"
        at = f"the agent at {self.where}"
        if exc.code == 401:
            return f"{at} asked for a token {said}; does a proxy drop the Authorization header?"
        if exc.code == 403:
            return (
                f"{at} refused the token in {self.agent.token_file} {said}; put the token the "
                "agent was started with (its --token-file) in that file"
            )
        if exc.code == 413:
            return (
                f"{at} refused the models as too large {said}; restart it with a larger "
                "--max-model-mb / --max-total-mb, or measure fewer models at a time"
            )
        if exc.code == 400:
            return f"{at} refused the request {said}"
        if exc.code == 404:
            return f"{at} has no {path} {said}; is the target's agent.url an edgetune agent?"
        if 300 <= exc.code < 400:
            return f"{at} redirected {said}; put the final URL in the target's agent.url"
        return f"{at} failed {said}; see the agent's log on the device"

    def _unreachable(self, reason: object, timeout: float) -> str:
        name = type(reason).__name__
        if isinstance(reason, ConnectionRefusedError):
            return (
                f"cannot reach the agent at {self.where} (connection refused): start it on the "
                "device (python agent.py serve --port PORT --token-file FILE), or correct the "
                "target's agent.url"
            )
        if isinstance(reason, TimeoutError):
            return (
                f"the agent at {self.where} did not answer within {timeout:.0f} s; check the "
                "device and the network (another client's measurement may be holding it)"
            )
        if isinstance(reason, ConnectionResetError | BrokenPipeError | http.client.HTTPException):
            return (
                f"the agent at {self.where} closed the connection ({name}); the request may be "
                "over its --max-total-mb, or the agent stopped: see its log on the device"
            )
        return (
            f"cannot reach the agent at {self.where} ({name}: {reason}); check the target's "
            "agent.url and that the agent runs"
        )
