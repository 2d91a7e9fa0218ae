"""The device-side measuring agent: needs only numpy and onnxruntime (and the stdlib).

Copy this one file to a device and run::

    python agent.py MODELS_DIR --out measurements.json [--threads 1] [--seconds 60]

It measures every ``*.onnx`` in MODELS_DIR with onnxruntime's CPU EP at batch 1 (sequential
execution, all graph optimizations, ``intra_op_num_threads=--threads``, one inter-op thread):
a warm-up, then interleaved rounds across all models (round-robin, so the machine's fast and
slow phases hit every model alike), each round one chunk of about 50 runs per model. A model's
latency is the median of its chunk medians. Rounds alternate between two passes, A and B; the
*noise ceiling* is the share of models whose pass-A and pass-B medians agree within 10% (no
prediction can be checked more tightly than that on this machine at this time).

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

    Each dict has ``name``, ``latency_ms`` (median of chunk medians), ``pass_a_ms`` and
    ``pass_b_ms`` (the same over alternate rounds), ``spread_ms`` (p10 and p90 of chunk
    medians), ``n_chunks`` and ``n_runs``. Rounds continue until ``seconds`` have passed and
    every model has had at least ``min_runs`` runs (and four chunks).
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
    # A reference model is measured between every few models; each chunk is divided by the
    # mean of the reference chunks around it, which cancels the machine's fast/slow phases.
    use_ref = reference_every > 0 and (len(models) >= 3 or reference is not None)
    ref = sorted(range(len(models)), key=lambda i: runs_per_chunk[i])[len(models) // 2]
    if reference is not None:
        ref = len(models) - 1
    ref_runs = max(10, runs_per_chunk[ref])
    chunks: list[list[list[float]]] = [[[], []] for _ in models]
    raw: list[list[float]] = [[] for _ in models]
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
        pending: list[tuple[int, float]] = []
        ref_sess, ref_feeds = sessions[ref]
        last_ref = _chunk_ms(ref_sess, ref_feeds, ref_runs) if use_ref else 1.0
        for j, i in enumerate(order):
            sess, feeds = sessions[i]
            pending.append((i, _chunk_ms(sess, feeds, runs_per_chunk[i])))
            n_runs[i] += runs_per_chunk[i]
            if use_ref and (len(pending) == reference_every or j == len(order) - 1):
                next_ref = _chunk_ms(ref_sess, ref_feeds, ref_runs)
                ref_chunks += [last_ref, next_ref]
                local = (last_ref + next_ref) / 2
                for k, t in pending:
                    chunks[k][rnd % 2].append(t / local)
                    raw[k].append(t)
                pending, last_ref = [], next_ref
        for k, t in pending:
            chunks[k][rnd % 2].append(t)
            raw[k].append(t)
        rnd += 1
    unit = statistics.median(ref_chunks) if use_ref else 1.0
    if use_ref and reference_ms is not None:
        unit = reference_ms
    out = []
    for i, name in enumerate(names[:n_out]):
        a = [t * unit for t in chunks[i][0]]
        b = [t * unit for t in chunks[i][1]]
        both = sorted(a + b)
        out.append(
            {
                "name": name,
                "latency_ms": statistics.median(both),
                "raw_latency_ms": statistics.median(raw[i]),
                "reference": names[ref] if use_ref else None,
                "reference_ms": statistics.median(ref_chunks) if use_ref else None,
                "pass_a_ms": statistics.median(a),
                "pass_b_ms": statistics.median(b),
                "spread_ms": [both[len(both) // 10], both[(9 * len(both)) // 10]],
                "n_chunks": len(both),
                "n_runs": n_runs[i],
            }
        )
    return out


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


def main(argv: list[str] | None = None) -> int:
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
    sys.exit(main())
