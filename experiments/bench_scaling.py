"""Benchmark: how edgetune's search scales on this machine, and what the driver costs.

* trials per hour with 1 and 2 Ray workers (same spec, same trials), and their ratio;
* the driver's own time per trial (ask, suggest, attributes, artifact upload) as a share of
  the trial's wall time, with SQLite and with PostgreSQL (a real server on 127.0.0.1);
* the time to resume a study of 200 trials (``edgetune resume --trials 1``, minus the one
  trial's own time).

It writes ``experiments/results/bench_scaling.{json,md}``.

    .venv/bin/python experiments/bench_scaling.py [--trials 6] [--steps 60]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from experiments.bench_util import copy_trial, edgetune  # noqa: E402

RESULTS = ROOT / "experiments" / "results"
TEACHER = ROOT / "experiments" / "fashion_mnist" / "resnet8_teacher.pt"

SPEC = """
name: scaling
model: {{name: resnet8, weights: {teacher}, input_shape: [1, 28, 28]}}
data: {{finetune_size: 1024, val_size: 512, calibration_size: 64, batch_size: 64}}
target: host
space:
  quantization: {{weight_bits: [6, 8, 32], activation_bits: [8, 32]}}
  pruning: {{max_ratio: 0.5, step: 0.1, round_to: 4}}
  distillation: {{steps: {steps}, eval_every: 20, lr: 0.002}}
search: {{trials: {trials}, workers: 1, executor: ray, seed: 0, seed_trials: 0, stopper: none}}
"""


def study_figures(storage: str, name: str) -> dict[str, Any]:
    import optuna

    from search.record import TrialRecord

    times = [
        (t.datetime_start, t.datetime_complete, float(getattr(TrialRecord.read(t), "driver_s", 0) or 0))
        for t in optuna.load_study(study_name=name, storage=storage).get_trials()
        if t.datetime_start and t.datetime_complete
    ]
    trials = times
    walls = [(end - start).total_seconds() for start, end, _ in times]
    driver = [d for _, _, d in times]
    span = max(end for _, end, _ in times) - min(start for start, _, _ in times)
    return {
        "trials": len(trials),
        "span_s": span.total_seconds(),
        "trials_per_hour": 3600 * len(trials) / span.total_seconds(),
        "trial_wall_s_median": statistics.median(walls),
        "driver_s_median": statistics.median(driver),
        "driver_share": sum(driver) / sum(walls),
    }


def synthesize(storage: str, source: str, name: str, n: int) -> None:
    """A study of ``n`` finished trials, copies of a real study's trials (same spec, attrs)."""
    import optuna

    src = optuna.load_study(study_name=source, storage=storage)
    dst = optuna.create_study(study_name=name, storage=storage, directions=src.directions)
    for key, value in src.user_attrs.items():
        dst.set_user_attr(key, value)
    done = [t for t in src.get_trials() if t.state.is_finished()]
    batch = []
    for i in range(n):
        t = done[i % len(done)]
        batch.append(
            copy_trial(t)
        )
    dst.add_trials(batch)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    import optuna

    from tests.servers import PostgresServer

    work = Path(tempfile.mkdtemp(prefix="bench-scaling-"))
    spec = work / "scaling.yaml"
    spec.write_text(SPEC.format(teacher=TEACHER, steps=args.steps, trials=args.trials))
    sqlite = f"sqlite:///{work}/bench.db"
    pg = PostgresServer()
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "trials": args.trials,
        "steps": args.steps,
        "machine": f"{os.cpu_count()} cores",
    }
    try:
        pg_url = pg.start()
        runs = {}
        for label, storage, workers in (
            ("sqlite, 1 worker", sqlite, 1),
            ("sqlite, 2 workers", sqlite, 2),
            ("postgresql, 2 workers", pg_url, 2),
        ):
            name = f"scaling-{workers}w-{'pg' if storage == pg_url else 'sqlite'}"
            _, wall = edgetune(
                "search",
                str(spec),
                "--storage",
                storage,
                "--study",
                name,
                "--workers",
                str(workers),
            )
            runs[label] = {**study_figures(storage, name), "command_wall_s": wall}
            print(label, json.dumps(runs[label]), flush=True)
        result["runs"] = runs
        result["speedup_2_vs_1_workers"] = (
            runs["sqlite, 2 workers"]["trials_per_hour"]
            / runs["sqlite, 1 worker"]["trials_per_hour"]
        )
        resume = {}
        for label, storage in (("sqlite", sqlite), ("postgresql", pg_url)):
            source = f"scaling-2w-{'pg' if storage == pg_url else 'sqlite'}"
            synthesize(storage, source, f"resume200-{label}", 200)
            out, wall = edgetune(
                "resume", f"resume200-{label}", "--storage", storage, "--trials", "1"
            )
            new = optuna.load_study(study_name=f"resume200-{label}", storage=storage).trials[-1]
            assert new.datetime_complete and new.datetime_start
            trial_s = (new.datetime_complete - new.datetime_start).total_seconds()
            resume[label] = {
                "command_wall_s": wall,
                "n_trials_after": out["n_trials"],
                "new_trial_s": trial_s,
                "overhead_s": wall - trial_s,
            }
            print("resume 200", label, json.dumps(resume[label]), flush=True)
        result["resume_200"] = resume
    finally:
        pg.stop()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bench_scaling.json").write_text(json.dumps(result, indent=2))
    lines = [
        f"# bench_scaling ({result['date']}, {args.trials} trials of {args.steps} steps)",
        "",
        "| run | trials/hour | median trial s | driver s/trial | driver share |",
        "|---|---|---|---|---|",
    ]
    for label, r in result["runs"].items():
        lines.append(
            f"| {label} | {r['trials_per_hour']:.0f} | {r['trial_wall_s_median']:.1f} | "
            f"{r['driver_s_median']:.3f} | {r['driver_share']:.2%} |"
        )
    lines += [
        "",
        f"2 workers vs 1: {result['speedup_2_vs_1_workers']:.2f}x trials per hour",
        "",
        "| resume a 200-trial study | command s | overhead s (minus its one trial) |",
        "|---|---|---|",
    ]
    for label, r in result["resume_200"].items():
        lines.append(f"| {label} | {r['command_wall_s']:.1f} | {r['overhead_s']:.1f} |")
    text = "\n".join(lines)
    (RESULTS / "bench_scaling.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
