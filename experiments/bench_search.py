"""Benchmark: edgetune's search against random search and two uniform baselines.

On the Fashion-MNIST ResNet-8 for the ``host`` target, with the same trial budget and seed:

* edgetune's default sampler (TPE with feasible seeds) and random search, each exported and
  measured with onnxruntime;
* onnxruntime int8 static quantization of the teacher (QDQ, per channel, reduce_range);
* uniform 50% pruning with distillation (the same fine-tune budget as a trial), fp32.

It prints a table and writes ``experiments/results/bench_search.{json,md}``. Every latency in
the table is measured in one interleaved run beside the teacher, so the ratios are comparable.

    .venv/bin/python experiments/bench_search.py [--trials 24] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from experiments.bench_util import edgetune, ort_int8_static  # noqa: E402

SPEC = ROOT / "experiments" / "fashion_mnist" / "resnet8_host.yaml"
RESULTS = ROOT / "experiments" / "results"


def hypervolume(points: list[tuple[float, float]]) -> float:
    """Area dominated by (accuracy up, latency ratio down) points, reference (0, 1)."""
    pts = sorted((lat, acc) for acc, lat in points if lat <= 1.0)
    area, best_acc = 0.0, 0.0
    # sweep latency from high to low: each point adds acc gain over the region right of it
    front: list[tuple[float, float]] = []
    for lat, acc in pts:
        if acc > best_acc:
            front.append((lat, acc))
            best_acc = acc
    for i, (lat, acc) in enumerate(front):
        nxt = front[i + 1][0] if i + 1 < len(front) else 1.0
        area += (nxt - lat) * acc
    return area


def trial_stats(storage: str, study_name: str, teacher_latency: float) -> dict[str, Any]:
    import optuna

    from search.record import TrialRecord

    study = optuna.load_study(study_name=study_name, storage=storage)
    trials = sorted(study.trials, key=lambda t: t.number)
    records = [TrialRecord.read(t) for t in trials]
    statuses = [r.status if r else t.state.name.lower() for r, t in zip(records, trials, strict=True)]
    half = len(trials) // 2

    def share(xs: list[str]) -> float:
        return sum(s == "infeasible" for s in xs) / max(len(xs), 1)

    timings = [dict(r.timings_s) if r else {} for r in records]
    wall = [
        (t.datetime_complete - t.datetime_start).total_seconds()
        for t in trials
        if t.datetime_complete and t.datetime_start
    ]
    train = sum(x.get("train", 0.0) for x in timings)
    evals = sum(x.get("eval", 0.0) for x in timings)
    total = sum(wall)
    points = [
        (r.accuracy or 0.0, r.predicted["latency_ms"] / teacher_latency)
        for r in records
        if r is not None and r.feasible
    ]
    return {
        "trials": len(trials),
        "states": {s: statuses.count(s) for s in sorted(set(statuses))},
        "infeasible_share_first_half": share(statuses[:half]),
        "infeasible_share_second_half": share(statuses[half:]),
        "seconds_per_trial": total / max(len(trials), 1),
        "seconds_per_trial_train": train / max(len(trials), 1),
        "seconds_per_trial_eval": evals / max(len(trials), 1),
        "seconds_per_trial_overhead": (total - train - evals) / max(len(trials), 1),
        "hypervolume_val_acc_vs_predicted_latency": hypervolume(points),
    }


def ort_int8_baseline(work: Path) -> dict[str, Any]:
    """onnxruntime static int8 quantization of the teacher (QDQ, per channel, reduce_range)."""

    from search.onnx_export import to_onnx
    from search.spec import load_spec
    from search.workloads import load_data, load_teacher, split

    spec = load_spec(SPEC)
    teacher = load_teacher(spec)
    data = load_data(spec.data)
    calib = split(data, spec.data, spec.search.seed)["x_calib"].numpy()
    fp32 = work / "teacher.onnx"
    fp32.write_bytes(to_onnx(teacher, tuple(spec.model.input_shape)).SerializeToString())

    out = ort_int8_static(
        fp32, work / "teacher_int8.onnx", [calib[i : i + 1] for i in range(len(calib))]
    )
    return {"onnx": str(out), "teacher_onnx": str(fp32)}


def pruning_baseline(work: Path) -> dict[str, Any]:
    """Uniform 50% pruning plus distillation with the trial's fine-tune budget, fp32."""
    import torch

    import targets
    from search.onnx_export import packed_size_bytes, to_onnx
    from search.spec import load_spec
    from search.trial import space_for
    from search.workloads import build_workload, load_data, load_teacher
    from spaces.distillation import FinetuneData, finetune
    from spaces.student import build_student

    spec = load_spec(SPEC)
    teacher = load_teacher(spec)
    data = load_data(spec.data)
    work_ = build_workload(spec, teacher, data)
    space = space_for(spec, teacher)
    target = targets.get("host")
    built = build_student(
        teacher,
        space.uniform_params(0.5, 32, 32),
        space,
        calib=work_.x_calib,
        reduce_range=target.int8_reduce_range,
    )
    assert built.model is not None
    torch.set_num_threads(2)
    t = time.perf_counter()
    student = finetune(
        built.model,
        FinetuneData(work_.x_finetune, work_.y_finetune, work_.x_val, work_.y_val),
        work_.teacher_logits,
        built.policy.distillation,
    )
    path = work / "pruned50.onnx"
    path.write_bytes(to_onnx(student, tuple(spec.model.input_shape)).SerializeToString())
    return {
        "onnx": str(path),
        "train_s": time.perf_counter() - t,
        "size_kb_packed": packed_size_bytes(student) / 1024,
    }


def measure_all(models: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Test accuracy and latency of every ONNX file, latencies in one interleaved run."""
    import onnx

    from search.export import onnx_accuracy
    from search.spec import load_spec
    from search.workloads import load_data
    from targets.agent import measure

    spec = load_spec(SPEC)
    data = load_data(spec.data)
    x, y = data.normalize(data.x_test).numpy(), data.y_test.numpy()
    names = list(models)
    timings = measure([Path(models[n]).read_bytes() for n in names], min_runs=300, seconds=12.0)
    out = {}
    for name, m in zip(names, timings, strict=True):
        out[name] = {
            "accuracy_test": onnx_accuracy(onnx.load(models[name]), x, y),
            "latency_ms": m["latency_ms"],
            "size_kb_file": Path(models[name]).stat().st_size / 1024,
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    work = Path(tempfile.mkdtemp(prefix="bench-search-"))
    storage = f"sqlite:///{work}/bench.db"
    rows: dict[str, dict[str, Any]] = {}
    exports: dict[str, str] = {}
    for label, sampler in (("edgetune (tpe + feasible seeds)", "tpe"), ("random search", "random")):
        spec_path = work / f"{sampler}.yaml"
        text = SPEC.read_text().replace("sampler: tpe", f"sampler: {sampler}")
        if sampler == "random":
            text = text.replace("seed_trials: 3", "seed_trials: 0")
        text = text.replace(
            "weights: resnet8_teacher.pt", f"weights: {SPEC.parent / 'resnet8_teacher.pt'}"
        )
        spec_path.write_text(text)
        study = f"bench-{sampler}-{stamp}"
        t = time.perf_counter()
        summary, _ = edgetune(
            "search",
            str(spec_path),
            "--storage",
            storage,
            "--study",
            study,
            "--trials",
            str(args.trials),
            "--workers",
            str(args.workers),
        )
        wall = time.perf_counter() - t
        teacher_lat = summary["teacher"]["latency_ms"]
        stats = trial_stats(storage, study, teacher_lat)
        stats["wall_s"] = wall
        if summary["best"]:
            ex, _ = edgetune("export", study, "--storage", storage, "--out", str(work / study))
            exports[label] = ex["onnx"]
            stats["export"] = {
                k: ex[k]
                for k in (
                    "trial",
                    "accuracy_onnx",
                    "latency_ms_measured",
                    "latency_ms_predicted",
                    "size_kb_packed",
                    "size_kb_file",
                )
            }
        rows[label] = stats
    base = ort_int8_baseline(work)
    exports["teacher (fp32)"] = base["teacher_onnx"]
    exports["onnxruntime int8 static (teacher)"] = base["onnx"]
    pruned = pruning_baseline(work)
    exports["uniform 50% pruning + distillation"] = pruned["onnx"]
    measured = measure_all(exports)
    teacher = measured["teacher (fp32)"]
    from search.onnx_export import packed_size_bytes
    from search.spec import load_spec
    from search.workloads import load_teacher

    teacher_packed = packed_size_bytes(load_teacher(load_spec(SPEC))) / 1024
    sizes = {label: rows[label].get("export", {}).get("size_kb_packed") for label in rows}
    sizes["teacher (fp32)"] = teacher_packed
    sizes["onnxruntime int8 static (teacher)"] = teacher_packed / 4
    sizes["uniform 50% pruning + distillation"] = pruned["size_kb_packed"]
    table = []
    for label, m in measured.items():
        table.append(
            {
                "method": label,
                "test_accuracy": m["accuracy_test"],
                "latency_ms": m["latency_ms"],
                "latency_x_teacher": m["latency_ms"] / teacher["latency_ms"],
                "size_kb_packed": sizes.get(label),
                "size_x_teacher": (sizes.get(label) or float("nan")) / teacher_packed,
            }
        )
    result = {
        "date": stamp,
        "trials": args.trials,
        "workers": args.workers,
        "table": table,
        "studies": rows,
        "goal": "test accuracy >= 0.905 at <= 0.5x teacher latency and <= 1/8 size",
    }
    (RESULTS / "bench_search.json").write_text(json.dumps(result, indent=2))
    lines = [
        f"# bench_search ({stamp}, {args.trials} trials, {args.workers} workers)",
        "",
        "| method | test accuracy | latency ms (x teacher) | packed size KiB (x teacher) |",
        "|---|---|---|---|",
    ]
    for r in table:
        lines.append(
            f"| {r['method']} | {r['test_accuracy']:.4f} | {r['latency_ms']:.4f} "
            f"({r['latency_x_teacher']:.2f}x) | {r['size_kb_packed'] or float('nan'):.1f} "
            f"({r['size_x_teacher']:.3f}x) |"
        )
    lines += [
        "",
        "| study | states | infeasible 1st/2nd half | hypervolume | s/trial (train/eval/overhead) |",
        "|---|---|---|---|---|",
    ]
    for label, s in rows.items():
        lines.append(
            f"| {label} | {s['states']} | {s['infeasible_share_first_half']:.2f} / "
            f"{s['infeasible_share_second_half']:.2f} | {s['hypervolume_val_acc_vs_predicted_latency']:.4f} | "
            f"{s['seconds_per_trial']:.1f} ({s['seconds_per_trial_train']:.1f} / "
            f"{s['seconds_per_trial_eval']:.1f} / {s['seconds_per_trial_overhead']:.1f}) |"
        )
    text = "\n".join(lines)
    (RESULTS / "bench_search.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
