"""The device-side measuring agent: needs only numpy and onnxruntime (and the stdlib).

Copy this one file to a device and run::

    python agent.py MODELS_DIR --out measurements.json [--threads 1] [--seconds 60]

or serve measurements over HTTP to another machine, one request at a time::

    python agent.py serve --port 8765 --token-file TOKEN [--host 127.0.0.1] [--max-model-mb 16]

``GET /info`` answers :func:`device_info` and the limits; ``POST /measure`` with ``{"models":
[base64 ONNX, ...], "seconds": S, "min_runs": N}`` answers ``{"measurements": [...]}`` (the
dicts of :func:`measure`). Both need ``Authorization: Bearer TOKEN``, TOKEN the content of
``--token-file`` (16+ characters, ``chmod 600``): 401 without, 403 with another. Errors are
``{"error": MESSAGE}``: 400 for a bad body or model, 413 over the size limits. The traffic is not
encrypted: listen on loopback and reach it through an SSH tunnel, or put a TLS proxy in front.

It measures every ``*.onnx`` in MODELS_DIR with onnxruntime's CPU EP at batch 1 (sequential
execution, all graph optimizations, ``intra_op_num_threads=--threads``, one inter-op thread):
a warm-up, then interleaved rounds across all models (round-robin, so the machine's fast and
slow phases hit every model alike), each round one chunk of about 50 runs per model. A model's
latency is the 10th percentile of its chunk medians: other tenants of a shared machine only ever
slow a run down, so the low quantile estimates the uncontended latency, and it stays steadier
across the machine's phases than the median does. On a dedicated device the two agree. Rounds
alternate between two passes, A and B; the *noise ceiling* is the share of models whose pass-A
and pass-B latencies agree within 10% (no prediction can be checked more tightly than that on
the measured machine at that time).

:func:`measure` is the same measurement as a function, for use from Python.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import hmac
import json
import os
import platform
import socket
import socketserver
import statistics
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

__all__ = ["device_info", "measure", "measure_report", "noise_ceiling"]
__all__ += ["TokenFileError", "read_token", "serve_main"]

CHUNK_RUNS = 50
AGENT = "edgetune-agent/1"
_ISA = {"sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni"}
_ISA |= {"avx512_bf16", "avx_vnni", "amx_int8", "amx_bf16", "neon", "asimd", "asimddp"}
_ISA |= {"asimdhp", "fphp", "i8mm", "bf16", "sve", "sve2"}


def _cpu() -> tuple[str, list[str]]:
    """The CPU model, and the instruction sets onnxruntime's kernels use (``/proc/cpuinfo``)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            info = f.read()
    except OSError:
        return platform.processor() or platform.machine(), []
    fields: dict[str, str] = {}
    for line in info.splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            fields.setdefault(k.strip(), v.strip())
    return (
        f"{fields.get('model name', platform.machine())} (family {fields.get('cpu family', '?')}"
        f" model {fields.get('model', '?')})",
        sorted(set(fields.get("flags", fields.get("Features", "")).split()) & _ISA),
    )


def device_info(threads: int = 1) -> dict[str, Any]:
    """Where and with what the measurement runs."""
    import onnxruntime as ort

    cpu_model, cpu_flags = _cpu()
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_model": cpu_model,
        "cpu_flags": cpu_flags,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "execution_provider": "CPUExecutionProvider",
        "intra_op_num_threads": threads,
        "inter_op_num_threads": 1,
        "batch": 1,
    }


def _session(model: bytes | str | os.PathLike[str], threads: int) -> Any:
    import numpy as np
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    data = model if isinstance(model, bytes) else Path(model).read_bytes()
    sess = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
    feeds = {}
    rng = np.random.default_rng(0)
    for inp in sess.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
        dtype = np.float32 if "float" in inp.type else np.int64
        feeds[inp.name] = rng.standard_normal(shape).astype(dtype)
    return sess, feeds


def _chunk_ms(sess: Any, feeds: dict[str, Any], runs: int) -> float:
    times = []
    run = sess.run
    clock = time.perf_counter_ns
    for _ in range(runs):
        t0 = clock()
        run(None, feeds)
        times.append(clock() - t0)
    return statistics.median(times) * 1e-6


def measure(
    models: list[bytes | str | os.PathLike[str]],
    *,
    threads: int = 1,
    seconds: float = 10.0,
    min_runs: int = 200,
    chunk_runs: int = CHUNK_RUNS,
    names: list[str] | None = None,
    reference_every: int = 6,
    reference: bytes | str | os.PathLike[str] | None = None,
    reference_ms: float | None = None,
) -> list[dict[str, Any]]:
    """Measure each model; returns one dict per model, in order.

    Each dict has ``name``, ``latency_ms`` (the 10th percentile of chunk medians, rescaled to
    ``reference_ms`` if given), ``raw_latency_ms`` (not rescaled), ``median_ms``, ``pass_a_ms``
    and ``pass_b_ms`` (as ``latency_ms`` over alternate rounds), ``spread_ms`` (p10 and p90 of
    chunk medians), ``reference_ms`` (the reference's 10th percentile in this run), ``n_chunks``
    and ``n_runs``. Rounds continue until ``seconds`` have passed and every model has had at
    least ``min_runs`` runs (and four chunks).

    With ``reference`` and ``reference_ms`` (the reference's latency in an earlier run), every
    latency is rescaled by ``reference_ms / this run's reference latency``: given at the earlier
    run's machine speed.
    """
    if not models:
        return []
    names = names or [m if isinstance(m, str) else f"model_{i}" for i, m in enumerate(models)]
    names = [str(n) for n in names]
    n_out = len(models)
    if reference is not None:
        models = [*models, reference]
        names = [*names, "reference"]
    sessions = [_session(m, threads) for m in models]
    runs_per_chunk: list[int] = []
    for sess, feeds in sessions:  # warm-up, and size the chunks to about <= 25 ms each
        t = max(_chunk_ms(sess, feeds, 5), 1e-4)
        _chunk_ms(sess, feeds, 10)
        runs_per_chunk.append(int(max(5, min(chunk_runs, 25.0 / t))))
    # A reference model is measured between every few models: its fastest chunks give the
    # machine's speed during this run, to compare with another run (``reference_ms``).
    use_ref = reference_every > 0 and (len(models) >= 3 or reference is not None)
    ref = sorted(range(len(models)), key=lambda i: runs_per_chunk[i])[len(models) // 2]
    if reference is not None:
        ref = len(models) - 1
    ref_runs = max(10, runs_per_chunk[ref])
    chunks: list[list[list[float]]] = [[[], []] for _ in models]  # [pass A, pass B] per model
    ref_chunks: list[float] = []
    n_runs = [0] * len(models)
    start = time.perf_counter()
    rnd = 0
    while True:
        done_time = time.perf_counter() - start >= seconds
        done_runs = all(n >= min_runs for n in n_runs[:n_out]) and rnd >= 4
        if done_time and done_runs:
            break
        order = list(range(n_out) if rnd % 2 == 0 else reversed(range(n_out)))
        if reference is None:
            order = list(range(len(models)) if rnd % 2 == 0 else reversed(range(len(models))))
        ref_sess, ref_feeds = sessions[ref]
        for j, i in enumerate(order):
            if use_ref and j % reference_every == 0:
                ref_chunks.append(_chunk_ms(ref_sess, ref_feeds, ref_runs))
            sess, feeds = sessions[i]
            chunks[i][rnd % 2].append(_chunk_ms(sess, feeds, runs_per_chunk[i]))
            n_runs[i] += runs_per_chunk[i]
        rnd += 1
    ref_ms = _low(ref_chunks) if use_ref else None
    scale = reference_ms / ref_ms if (ref_ms and reference_ms is not None) else 1.0
    out = []
    for i, name in enumerate(names[:n_out]):
        a, b = chunks[i]
        both = sorted(a + b)
        low = _low(both)
        out.append(
            {
                "name": name,
                "latency_ms": low * scale,
                "raw_latency_ms": low,
                "median_ms": statistics.median(both),
                "reference": names[ref] if use_ref else None,
                "reference_ms": ref_ms,
                "pass_a_ms": _low(a) * scale,
                "pass_b_ms": _low(b) * scale,
                "spread_ms": [low, both[(9 * len(both)) // 10]],
                "n_chunks": len(both),
                "n_runs": n_runs[i],
            }
        )
    return out


def _low(values: list[float]) -> float:
    """The 10th percentile (nearest rank, rounding down): the latency without other tenants."""
    return sorted(values)[(len(values) - 1) // 10]


def noise_ceiling(results: list[dict[str, Any]]) -> dict[str, float]:
    """Share of models whose two passes agree within 10%, and their median difference (%)."""
    diffs = [abs(r["pass_a_ms"] / r["pass_b_ms"] - 1.0) for r in results if r["pass_b_ms"] > 0]
    if not diffs:
        return {"within_10pct": 0.0, "median_diff_pct": 0.0}
    return {
        "within_10pct": sum(d <= 0.1 for d in diffs) / len(diffs),
        "median_diff_pct": statistics.median(diffs) * 100,
    }


def measure_report(
    models: list[bytes | str | os.PathLike[str]],
    *,
    threads: int = 1,
    seconds: float = 10.0,
    names: list[str] | None = None,
    min_runs: int = 200,
) -> dict[str, Any]:
    """:func:`measure` plus the device description and the noise ceiling, JSON-ready."""
    t0 = time.time()
    results = measure(models, threads=threads, seconds=seconds, names=names, min_runs=min_runs)
    return {
        "agent": AGENT,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "device": device_info(threads),
        "wall_s": round(time.time() - t0, 2),
        "noise_ceiling": noise_ceiling(results),
        "measurements": results,
    }


def agent_main(argv: list[str] | None = None) -> int:
    """``python agent.py MODELS_DIR --out FILE`` or ``python agent.py serve ...``."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:
        return serve_main(argv[1:])
    p = argparse.ArgumentParser(description="Measure ONNX models (batch 1); or: agent.py serve")
    p.add_argument("models_dir", type=Path)
    p.add_argument("--out", type=Path, default=Path("measurements.json"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--min-runs", type=int, default=200)
    args = p.parse_args(argv)
    files = sorted(args.models_dir.glob("*.onnx"))
    if not files:
        print(
            f"error: no *.onnx files in {args.models_dir}; give a folder of ONNX models",
            file=sys.stderr,
        )
        return 2
    report = measure_report(
        [str(f) for f in files],
        threads=args.threads,
        seconds=args.seconds,
        names=[f.name for f in files],
        min_runs=args.min_runs,
    )
    args.out.write_text(json.dumps(report, indent=1))
    nc = report["noise_ceiling"]
    print(
        f"measured {len(files)} models in {report['wall_s']} s; noise ceiling: "
        f"{nc['within_10pct']:.0%} of models agree within 10% between passes "
        f"(median difference {nc['median_diff_pct']:.1f}%); wrote {args.out}"
    )
    return 0


# The agent server: ``python agent.py serve`` (see serve_main). -------------------------------

MAX_SECONDS, MAX_MIN_RUNS, MAX_MODELS = 60.0, 10_000, 1024
_NEW_TOKEN = "(umask 077; python3 -c 'import secrets; print(secrets.token_urlsafe(32))' > {0})"


class TokenFileError(ValueError):
    """A token file that is missing, too short, or open to group or others."""


def read_token(path: str | os.PathLike[str]) -> str:
    """The bearer token in ``path``. The server and its clients refuse a file that is missing,
    holds fewer than 16 characters, or is open to group/others."""
    p, why = Path(path).expanduser(), "must hold one word of 16 or more ASCII characters"
    try:
        mode, token = p.stat().st_mode & 0o777, p.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        mode, token, why = 0, "", f"cannot be read ({getattr(exc, 'strerror', None) or exc})"
    if os.name == "posix" and mode & 0o077:
        raise TokenFileError(f"token file {str(p)!r} is open to group/others: run chmod 600 {p}")
    if len(token) < 16 or not (token.isascii() and token.isprintable()) or " " in token:
        raise TokenFileError(f"token file {str(p)!r} {why}; make one: {_NEW_TOKEN.format(p)}")
    return token


class _Reject(Exception):
    """An answer other than 200: ``_Reject(code, message)``."""


def _one_line(exc: BaseException | None) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = daemon_threads = True

    def __init__(self, address: Any, token: str, threads: int, limits: dict[str, Any]) -> None:
        self.token, self.threads, self.limits = token.encode(), threads, limits
        self.lock = threading.Lock()  # one measurement at a time: the other requests wait
        self.info = {"agent": AGENT, **device_info(threads), "limits": limits}
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        print(f"error serving {client_address[0]}: {_one_line(sys.exc_info()[1])}", file=sys.stderr)


class _Handler(BaseHTTPRequestHandler):
    server_version, sys_version = AGENT, ""
    timeout = 60  # seconds a client may stay silent while it sends its request

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        self.log_message('"%s %s" %s', self.command, urlsplit(self.path).path[:80], code)

    def do_GET(self) -> None:
        try:
            code, body = 200, self._answer(cast(_Server, self.server))
        except _Reject as exc:
            code, body = exc.args[0], {"error": exc.args[1]}
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if code == 401:
            self.send_header("WWW-Authenticate", 'Bearer realm="edgetune-agent"')
        self.send_header("Connection", "close")
        self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    do_POST = do_GET

    def _answer(self, srv: _Server) -> dict[str, Any]:
        length, raw = 0, self.headers.get("Content-Length", "")
        if self.command == "POST" and (not raw.isdigit() or self.headers["Transfer-Encoding"]):
            raise _Reject(411, "send the body with a Content-Length (not chunked)")
        if (length := int(raw or 0)) > srv.limits["max_body_bytes"]:
            mb = srv.limits["max_total_mb"]
            raise _Reject(413, f"the body is over the agent's --max-total-mb ({mb:g} MB of models)")
        scheme, _, given = self.headers.get("Authorization", "").partition(" ")
        path = urlsplit(self.path).path.rstrip("/")
        if scheme.lower() != "bearer" or not given.strip():
            denied = _Reject(401, "send the agent's token: 'Authorization: Bearer TOKEN'")
        elif not hmac.compare_digest(given.strip().encode(), srv.token):
            denied = _Reject(403, "wrong token: send the content of the agent's --token-file")
        elif path != ("/info" if self.command == "GET" else "/measure"):
            denied = _Reject(404, "no such endpoint: the agent has GET /info and POST /measure")
        elif self.command == "GET":
            return srv.info
        else:
            return self._measure(srv, *_parse_measure(self.rfile.read(length), srv.limits))
        while length > 0:  # read (and drop) the body, so that the client gets the answer
            length -= len(self.rfile.read(min(length, 1 << 16))) or length
        raise denied

    def _measure(self, srv: _Server, models: list[bytes], s: float, runs: int) -> dict[str, Any]:
        with srv.lock:
            t0 = time.time()
            for i, model in enumerate(models):  # one run each: a bad model fails on its own
                try:
                    sess, feeds = _session(model, srv.threads)
                    sess.run(None, feeds)
                except Exception as exc:
                    raise _Reject(400, f"model {i} cannot run: {_one_line(exc)}") from None
            try:
                res = measure(list(models), threads=srv.threads, seconds=s, min_runs=runs)
            except Exception as exc:
                raise _Reject(500, f"the measurement failed: {_one_line(exc)}") from None
            return {"agent": AGENT, "started": t0, "finished": time.time(), "measurements": res}


def _parse_measure(body: bytes, limits: dict[str, Any]) -> tuple[list[bytes], float, int]:
    """The models, seconds and min_runs of a ``POST /measure`` body, or why it is refused."""
    usage = f'send {{"models": [1 to {MAX_MODELS} base64 ONNX], "seconds": S, "min_runs": N}}'
    try:
        req = json.loads(body)
        models = [base64.b64decode(m, validate=True) for m in req["models"]]
        seconds, runs = req.get("seconds", 2.0), req.get("min_runs", 100)
        if set(req) - {"models", "seconds", "min_runs"} or not 0 < len(models) <= MAX_MODELS:
            raise ValueError
    except (ValueError, TypeError, KeyError, AttributeError):
        raise _Reject(400, f"unexpected body; {usage}") from None
    if type(seconds) not in (int, float) or not 0 < seconds <= MAX_SECONDS:
        raise _Reject(400, f"seconds must be in (0, {MAX_SECONDS:g}], got {seconds!s:.20}")
    if type(runs) is not int or not 0 < runs <= MAX_MIN_RUNS:
        raise _Reject(400, f"min_runs must be an integer in [1, {MAX_MIN_RUNS}], got {runs!s:.20}")
    mb, most = [len(m) / 2**20 for m in models], (limits["max_model_mb"], limits["max_total_mb"])
    if max(mb) > most[0] or sum(mb) > most[1]:
        why = f"a model of {max(mb):.1f} MB or {sum(mb):.1f} MB in all is over the agent's"
        raise _Reject(413, f"{why} --max-model-mb {most[0]:g} or --max-total-mb {most[1]:g}")
    return models, float(seconds), runs


def serve_main(argv: list[str] | None = None) -> int:
    """``python agent.py serve``: measure ONNX models for HTTP clients, one request at a time."""
    p = argparse.ArgumentParser(prog="agent.py serve", description=serve_main.__doc__)
    p.add_argument("--port", type=int, default=8765, help="0: a free port (printed)")
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on")
    p.add_argument("--token-file", type=Path, required=True, help="the bearer token (chmod 600)")
    p.add_argument("--max-model-mb", type=float, default=16.0, help="the largest model")
    p.add_argument("--max-total-mb", type=float, help="per request (4 x --max-model-mb)")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime's intra-op threads")
    args = p.parse_args(argv)
    total_mb = args.max_total_mb or 4 * args.max_model_mb
    if not (0 < args.max_model_mb <= total_mb and args.threads >= 1 and 0 <= args.port < 65536):
        p.error("need 0 < --max-model-mb <= --max-total-mb, --threads >= 1, 0 <= --port < 65536")
    try:
        token = read_token(args.token_file)
        import onnxruntime  # noqa: F401
    except (TokenFileError, ImportError) as exc:
        hint = "; run: pip install numpy onnxruntime" if isinstance(exc, ImportError) else ""
        print(f"error: {exc}{hint}", file=sys.stderr)
        return 2
    if args.host not in ("localhost", "::1") and not args.host.startswith("127."):
        why = f"warning: listening on {args.host}: the traffic (and the token) is not encrypted"
        print(f"{why}; put TLS in front (a TLS proxy, or an SSH tunnel)", file=sys.stderr)
    limits = {"max_model_mb": args.max_model_mb, "max_total_mb": total_mb, "max_models": MAX_MODELS}
    limits |= {"max_seconds": MAX_SECONDS, "max_min_runs": MAX_MIN_RUNS, "max_body_bytes": 0}
    limits["max_body_bytes"] = int(total_mb * 2**20 * 4 / 3) + 2**20  # base64, and the JSON
    try:
        server = _Server((args.host, args.port), token, args.threads, limits)
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    where = f"http://{args.host}:{server.server_address[1]}"
    print(f"edgetune agent listening on {where} ({args.threads} thread(s))", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(agent_main())
