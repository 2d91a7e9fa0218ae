"""Benchmark: how fast `edgetune serve` answers status calls under load.

On loopback only, bounded in time: a real study is searched (a few trials), copied into a study
of ``--trials`` trials (``bench_scaling.synthesize``: the same records, parameters and
constraints), then the service is started on that storage with a second study running in it
(submitted over the API) and a writer adding a trial to the big study every half second. Each
round fires ``--calls`` concurrent status calls (half ``GET /api/studies``, half
``GET /api/studies/NAME`` of the big study) and times each one.

It prints and writes ``experiments/results/bench_service_load.{json,md}``.

    .venv/bin/python experiments/bench_service_load.py [--trials 240] [--calls 200] [--rounds 8] [--before DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from experiments.bench_scaling import synthesize  # noqa: E402
from experiments.bench_util import copy_trial  # noqa: E402

RESULTS = ROOT / "experiments" / "results"
TEACHER = ROOT / "experiments" / "fashion_mnist" / "resnet8_teacher.pt"
TOKEN = "bench-" + "k" * 32
SPEC = """
name: {name}
model: {{name: resnet8, weights: {weights}, input_shape: [1, 28, 28]}}
data: {{finetune_size: 512, val_size: 512, calibration_size: 64, batch_size: 64}}
target: host
constraints: {{latency_ms: 95%, size_kb: 30%}}
space:
  quantization: {{weight_bits: [4, 8, 32], activation_bits: [8, 32]}}
  pruning: {{max_ratio: 0.6, step: 0.2, round_to: 4}}
  distillation: {{steps: {steps}, eval_every: 4, lr: 0.002}}
search: {{trials: {trials}, workers: 1, executor: process, seed: 0, seed_trials: 2}}
"""


def cpu_name() -> str:
    """The CPU's model name, family and model (a VM's name alone can be generic), and cores."""
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    model = info.get("model name") or platform.processor() or "unknown CPU"
    if "cpu family" in info and "model" in info:
        model += f" (family {info['cpu family']} model {info['model']})"
    return f"{model}, {os.cpu_count()} cores"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise SystemExit(f"the service did not listen on 127.0.0.1:{port} in {timeout_s} s")


def edgetune_in(tree: Path, *args: str) -> None:
    """``edgetune ARGS`` as the checkout ``tree`` runs it."""
    cmd = [sys.executable, "-m", "search.cli", *args, "--json"]
    proc = subprocess.run(cmd, cwd=tree, stdout=subprocess.DEVNULL, timeout=900, check=False)
    if proc.returncode:
        raise SystemExit(f"edgetune {' '.join(args)} in {tree} failed with {proc.returncode}")


def writer(storage: str, name: str, stop: threading.Event, added: list[int]) -> None:
    """Adds a copy of one of the study's finished trials every half second."""
    import optuna

    study = optuna.load_study(study_name=name, storage=storage)
    source = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()][:20]
    i = 0
    while not stop.wait(0.5):
        t = source[i % len(source)]
        study.add_trial(
            copy_trial(t)
        )
        i += 1
        added[0] = i


async def _call(port: int, path: str) -> tuple[int, float]:
    """One status call on its own connection, timed from connect to the last byte. A bare
    HTTP/1.1 client: on a 2-core machine a full client library's own overhead for 200
    concurrent calls would be measured as the server's latency."""
    t0 = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {TOKEN}\r\n"
        "Connection: close\r\n\r\n".encode()
    )
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 60)
    writer.close()
    return int(data[9:12] or 0), time.perf_counter() - t0


async def burst(port: int, calls: int, detail: str) -> list[tuple[int, float]]:
    """``calls`` concurrent status calls, half the list and half the big study's detail."""
    paths = ["/api/studies" if i % 2 else f"/api/studies/{detail}" for i in range(calls)]
    return list(await asyncio.gather(*(_call(port, p) for p in paths)))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, round(q * len(ordered)) - 1)]


def measure(
    label: str, tree: Path, work: Path, db: Path, big: str, args: argparse.Namespace
) -> dict[str, Any]:
    """Start the service of the checkout ``tree`` on a copy of ``db`` and time the rounds."""
    import httpx

    started = time.monotonic()
    storage = f"sqlite:///{db}"
    port = free_port()
    env = dict(os.environ, EDGETUNE_TOKEN=TOKEN)
    log = (work / f"serve-{db.stem}.log").open("ab")
    cmd = [sys.executable, "-m", "search.cli", "serve", "--port", str(port)]
    cmd += ["--dashboard-port", "0", "--storage", storage, "--data-root", str(work / "data")]
    service = subprocess.Popen(cmd, cwd=tree, env=env, stdout=log, stderr=log)
    stop = threading.Event()
    added = [0]
    try:
        wait_port(port, 60)
        url = f"http://127.0.0.1:{port}"
        client = httpx.Client(
            base_url=url, timeout=120, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        spec = SPEC.format(name="running", weights=TEACHER.name, steps=40, trials=40)
        res = client.post(
            "/api/studies", content=spec, headers={"Content-Type": "application/yaml"}
        )
        if res.status_code != 201:
            raise SystemExit(f"submit failed: {res.status_code} {res.text}")
        while True:  # the study runs: trials are being told while the calls come
            d = client.get("/api/studies/running").json()
            if d["state"] == "running" and d["done"] >= 1:
                break
            if d["state"] not in ("running", "queued") or time.monotonic() - started > args.budget:
                raise SystemExit(f"the running study did not start: {d['state']} {d['reason']}")
            time.sleep(1)
        client.get(f"/api/studies/{big}").raise_for_status()  # its first computation
        thread = threading.Thread(target=writer, args=(storage, big, stop, added), daemon=True)
        thread.start()
        rounds: list[dict[str, Any]] = []
        for r in range(args.rounds):
            if time.monotonic() - started > args.budget:
                break
            time.sleep(1.0)
            out = asyncio.run(burst(port, args.calls, big))
            codes = [c for c, _ in out]
            lat = [t for _, t in out]
            rounds.append(
                {
                    "ok": codes.count(200),
                    "p50_s": statistics.median(lat),
                    "p95_s": pct(lat, 0.95),
                    "max_s": max(lat),
                    "latencies_s": lat,
                }
            )
            print(
                f"{label} round {r + 1}: {codes.count(200)}/{len(codes)} ok, p50 "
                f"{rounds[-1]['p50_s'] * 1000:.0f} ms, p95 {rounds[-1]['p95_s'] * 1000:.0f} ms, "
                f"max {rounds[-1]['max_s'] * 1000:.0f} ms",
                flush=True,
            )
        stop.set()
        thread.join(10)
        final = client.get(f"/api/studies/{big}").json()
        running = client.get("/api/studies/running").json()
        client.post("/api/studies/running/stop")
    finally:
        stop.set()
        service.send_signal(signal.SIGTERM)
        try:
            service.wait(timeout=120)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait()
    every = [t for rd in rounds for t in rd.pop("latencies_s")]
    return {
        "big_study_trials": final["n_trials"],
        "trials_added_during_rounds": added[0],
        "running_study": {"state": running["state"], "done": running["done"]},
        "per_round": rounds,
        "p50_s": statistics.median(every),
        "p95_s": pct(every, 0.95),
        "max_s": max(every),
        "errors": sum(args.calls - rd["ok"] for rd in rounds),
    }


def report(result: dict[str, Any], big: str, calls: int) -> str:
    now = result["after"]
    lines = [
        f"# bench_service_load ({result['date']}, {result['cpu']})",
        "",
        f"{calls} concurrent status calls per round (half `GET /api/studies`, half "
        f"`GET /api/studies/{big}`) on loopback, while a study runs in the service and a writer "
        f"adds a trial to the {now['big_study_trials']}-trial study every 0.5 s. Each call on its "
        "own connection, timed from connect to the last byte (a bare HTTP/1.1 client). "
        "Target: p95 < 0.5 s.",
        "",
        "| service | round | ok | p50 ms | p95 ms | max ms |",
        "|---|---|---|---|---|---|",
    ]
    for label in ("before", "after"):
        if label not in result:
            continue
        run = result[label]
        for i, rd in enumerate(run["per_round"], 1):
            lines.append(
                f"| {label} | {i} | {rd['ok']}/{calls} | {rd['p50_s'] * 1000:.0f} | "
                f"{rd['p95_s'] * 1000:.0f} | {rd['max_s'] * 1000:.0f} |"
            )
        total = len(run["per_round"]) * calls
        lines.append(
            f"| {label} | all | {total - run['errors']}/{total} | {run['p50_s'] * 1000:.0f} | "
            f"**{run['p95_s'] * 1000:.0f}** | {run['max_s'] * 1000:.0f} |"
        )
    if "before" in result:
        lines += ["", f"before: {result['before_tree']}, status computed on the request path "
                  "(with a 1 s cache); after: this checkout, a background cache."]  # fmt: skip
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--trials", type=int, default=240, help="trials of the big study (>=200)")
    parser.add_argument("--calls", type=int, default=200, help="concurrent status calls a round")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--budget", type=float, default=900.0, help="seconds per service, at most")
    parser.add_argument(
        "--before", type=Path, help="another checkout (e.g. `git archive HEAD`) to compare with"
    )
    parser.add_argument("--before-label", help="what that checkout is (default: its path)")
    args = parser.parse_args()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="bench-service-load-"))
    home = work / "home"  # its own service records; the host calibration copied in
    real_home = Path(os.environ.get("EDGETUNE_HOME", ROOT / ".edgetune")).resolve()
    if (real_home / "targets").is_dir():
        shutil.copytree(real_home / "targets", home / "targets")
    os.environ["EDGETUNE_HOME"] = str(home)
    (work / "data").mkdir()
    shutil.copy(TEACHER, work / "data" / TEACHER.name)
    source = work / "source.yaml"
    source.write_text(SPEC.format(name="source", weights=TEACHER, steps=8, trials=4))
    big = f"load{args.trials}"
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "cpu": cpu_name(),
        "calls_per_round": args.calls,
        "rounds": args.rounds,
    }
    try:
        runs = [("after", ROOT)] + ([("before", args.before.resolve())] if args.before else [])
        for label, tree in runs:
            # the study made by that checkout's own `edgetune search`: its spec format
            print(f"{label}: searching a small real study to copy...", flush=True)
            db = work / f"{label}.db"
            edgetune_in(tree, "search", str(source), "--storage", f"sqlite:///{db}")
            synthesize(f"sqlite:///{db}", "source", big, args.trials)
            result[label] = measure(label, tree, work, db, big, args)
        if args.before:
            result["before_tree"] = args.before_label or str(args.before)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bench_service_load.json").write_text(json.dumps(result, indent=2) + "\n")
    text = report(result, big, args.calls)
    (RESULTS / "bench_service_load.md").write_text(text + "\n")
    print(text)
    return 0 if result["after"]["p95_s"] < 0.5 and result["after"]["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
