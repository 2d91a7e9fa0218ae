"""The device-side measuring agent: needs only numpy and onnxruntime (and the stdlib).

Copy this one file to a device and run::

    python agent.py MODELS_DIR --out measurements.json [--threads 1] [--seconds 60]

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
import datetime
import json
import os
import platform
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["device_info", "measure", "measure_report", "noise_ceiling"]

CHUNK_RUNS = 50


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            info = f.read()
    except OSError:
        return platform.processor() or platform.machine()
    fields: dict[str, str] = {}
    for line in info.splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            fields.setdefault(k.strip(), v.strip())
    return (
        f"{fields.get('model name', platform.machine())} (family {fields.get('cpu family', '?')}"
        f" model {fields.get('model', '?')})"
    )


def device_info(threads: int = 1) -> dict[str, Any]:
    """Where and with what the measurement runs."""
    import onnxruntime as ort

    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
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
        "agent": "edgetune-agent/1",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "device": device_info(threads),
        "wall_s": round(time.time() - t0, 2),
        "noise_ceiling": noise_ceiling(results),
        "measurements": results,
    }


def agent_main(argv: list[str] | None = None) -> int:
    """``python agent.py MODELS_DIR --out FILE``: the command line of the agent."""
    p = argparse.ArgumentParser(description="Measure ONNX models with onnxruntime (batch 1).")
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


if __name__ == "__main__":
    sys.exit(agent_main())
