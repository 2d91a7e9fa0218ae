"""Benchmark: edgetune against random search, onnxruntime's static int8 and uniform pruning.

    python -m experiments.bench_search [--runs resnet8:0,1,2 mobilenetv2:0] [--hyperband]
        [--trials N] [--epochs E] [--label L]

For each run (a built-in Fashion-MNIST workload and a seed), on the ``host`` target:

* **edgetune**: the workload's example spec as it is (TPE, sensitivity-ordered feasible seeds,
  feasible sampling, median stopper), then finalized as its ``finalize:`` section says;
* **random search**: the same spec, trial count and seed with Optuna's random sampler, no
  seeds and no feasible sampling (proposals over budget are ruled out as drawn), its time
  capped at edgetune's search time, finalized the same way;
* **onnxruntime int8**: ``quantize_static`` of the teacher (QDQ, per channel), no training;
* **uniform pruning**: every layer pruned by the least ratio of the grid whose fp32 student
  the cost model predicts within the budgets, one trial's fine-tune and the same finalize.

Every trained feasible trial of each study is exported (search-time weights), and each
finalized trial too (as the spec's ``finalize:`` chooses them: its shortlist's best by
validation accuracy and its ``fastest``); a method's winner is its finalized model with the best
validation accuracy, as ``export`` takes it. All of a run's models and the teacher are measured
in one interleaved onnxruntime run (batch 1, one thread) and scored on the whole test set. The
hypervolume of a method is over (test accuracy, measured latency), reference point (0, the
teacher's measured latency), divided by that latency; its ceiling is ``bench_util.ceiling``'s.
The test set decides nothing: the studies choose, stop and finalize on the validation split.
Writes ``experiments/results/bench_search_<label>.{json,md,png}`` after every run, with the CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from experiments.bench_util import FASTEST, ceiling, fastest_students

if TYPE_CHECKING:
    import optuna

    from search.spec import Spec

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "experiments" / "fashion_mnist"
RESULTS = ROOT / "experiments" / "results"
LATENCY = {"resnet8": "50%"}  # latency budgets other than the example spec's: the goal point
STUDIES = ("edgetune", "random search", "uniform pruning")
HYPERBAND = "edgetune, hyperband"
"""With ``--hyperband``: edgetune's spec with Hyperband as its trial stopper (not the median)."""
INT8 = "onnxruntime int8"


@dataclass
class Point:
    """One exported model of a run, and what it measured."""

    method: str
    name: str
    finalized: bool
    val_accuracy: float | None
    test_accuracy: float
    latency_ms: float = math.nan
    latency_ratio: float = math.nan
    size_kb_packed: float = math.nan
    size_ratio: float = math.nan
    size_kb_file: float = math.nan

    @property
    def interval(self) -> tuple[float, float]:
        """The test accuracy's 95% interval (normal approximation, 10,000 images)."""
        half = 1.96 * math.sqrt(self.test_accuracy * (1 - self.test_accuracy) / 10000)
        return self.test_accuracy - half, self.test_accuracy + half


def hypervolume(points: list[tuple[float, float]], reference_ms: float) -> float:
    """The area the (accuracy, latency ms) points dominate (accuracy up, latency down) within
    the reference point (0, ``reference_ms``), divided by ``reference_ms``: in [0, 1]."""
    area, best = 0.0, 0.0
    for latency, acc in sorted((lat, acc) for acc, lat in points):
        if acc > best and latency < reference_ms:
            area += (reference_ms - latency) * (acc - best)
            best = acc
    return area / reference_ms


def arm_spec(path: Path, method: str, seed: int, trials: int | None,
             epochs: int | None) -> dict[str, Any]:
    """The spec of one study of a run, as a dict ``parse_spec`` takes."""
    from search.spec import load_spec, spec_to_json

    raw = spec_to_json(load_spec(path))
    model = raw["model"]["name"]
    if model in LATENCY:
        raw["constraints"]["latency_ms"] = LATENCY[model]
    raw["name"] = f"bench-{model}-{method.replace(', ', '-').replace(' ', '-')}-s{seed}"
    search = raw["search"]
    search["seed"] = seed
    if trials:
        search["trials"] = trials
    raw["finalize"] = dict(raw["finalize"] or {})
    if epochs:
        raw["finalize"]["epochs"] = epochs
    if method == HYPERBAND:
        search["stopper"] = "hyperband"
    elif method != "edgetune":
        search.update(sampler="random", seed_trials=0, feasible_sampling=False)
    if method == "uniform pruning":  # one trial, enqueued, priced on the cost model
        search.update(trials=1, measure="never")
    return raw


def least_uniform_ratio(prepared: Any) -> dict[str, Any]:
    """The least uniform pruning ratio of the grid whose fp32 student is predicted within the
    study's budgets (the largest if none is)."""
    from spaces.student import student_architecture

    ctx = prepared.context
    teacher, space = ctx.teacher_and_space()
    grid = space.pruning.grid if space.pruning else (0.0,)
    for ratio in grid:
        params = space.uniform_params(ratio, 32, 32)
        shape = student_architecture(teacher, params, space)
        costs = ctx.target.predict(shape.graph, shape.policy.bits).as_dict()
        if not ctx.budgets.broken(costs):
            return params
    return params


def run_arm(raw: dict[str, Any], storage: str, timeout_s: float | None,
            log: Callable[[str], None]) -> dict[str, Any]:
    """Run one study to its trials and finalize it; its name and times."""
    from search.driver import run_study
    from search.finalize import finalize_at_end
    from search.lifecycle import start_study
    from search.spec import parse_spec

    spec = parse_spec(raw, source="bench")
    enqueue = spec.search.measure == "never"  # the uniform-pruning study

    def prepare(executor: Any) -> tuple[optuna.Study, Any]:
        study, prepared = start_study(spec, storage, spec.study_name, log=log, executor=executor)
        if enqueue:
            study.enqueue_trial(least_uniform_ratio(prepared))
        return study, prepared

    start = time.perf_counter()
    searching = spec.model_copy(update={"finalize": None})  # finalized below, timed apart
    study = run_study(searching, storage, prepare, target_done=spec.search.trials,
                      timeout_s=timeout_s, log=log, progress=False)
    search_s = time.perf_counter() - start
    finalize_at_end(study, spec, log=log, progress=False)
    return {"study": spec.study_name, "search_s": search_s,
            "time_to_result_s": time.perf_counter() - start}


def study_points(method: str, storage: str, name: str) -> list[tuple[Point, bytes]]:
    """Every complete feasible trial of a study (search-time weights) and its finalized
    trials, as ONNX, with test accuracy and packed size."""
    from search import study as studies
    from search.export import onnx_accuracy, rebuild, study_reduce_range
    from search.finalize import finalized_records
    from search.onnx_export import packed_size_bytes, to_onnx
    from search.record import TrialRecord
    from search.workloads import load_data, load_teacher, split

    study, spec = studies.open_study(name, storage)
    teacher = load_teacher(spec)
    data = load_data(spec.data, spec.model)
    x_calib = split(data, spec.data, spec.search.seed)["x_calib"]
    x_test = data.normalize(data.x_test)
    reduce_range = study_reduce_range(study, spec)
    finalized = finalized_records(study)
    out = []
    for trial in study.get_trials(deepcopy=False):
        record = TrialRecord.read(trial)
        if record is None or record.status != "complete" or not record.feasible:
            continue
        final = finalized.get(trial.number)
        versions = [(None, record.accuracy)]  # search-time weights, and finalized ones
        if final:
            versions.append((final["artifact"], final["val_accuracy"]))
        for artifact, val_accuracy in versions:
            student = rebuild(spec, trial, record, teacher, x_calib, reduce_range=reduce_range,
                              artifact=artifact)
            assert student.model is not None
            model = to_onnx(student.model, tuple(spec.model.input_shape))
            point = Point(method, f"trial {trial.number}" + (" finalized" if artifact else ""),
                          artifact is not None, val_accuracy,
                          onnx_accuracy(model, x_test, data.y_test),
                          size_kb_packed=packed_size_bytes(student.model) / 1024)
            out.append((point, model.SerializeToString()))
    return out


def baselines(spec: Spec, work: Path) -> list[tuple[Point, bytes]]:
    """The teacher (fp32), onnxruntime's static int8 quantization of it, and the space's
    fastest students (:data:`FASTEST`)."""
    import onnx

    from experiments.bench_util import ort_int8_static
    from search.export import onnx_accuracy
    from search.onnx_export import packed_size_bytes, to_onnx
    from search.workloads import load_data, load_teacher, split

    teacher = load_teacher(spec)
    data = load_data(spec.data, spec.model)
    calib = (x_calib := split(data, spec.data, spec.search.seed)["x_calib"]).numpy()
    x_test = data.normalize(data.x_test)
    fp32 = work / "teacher.onnx"
    fp32.write_bytes(to_onnx(teacher, tuple(spec.model.input_shape)).SerializeToString())
    int8 = ort_int8_static(fp32, work / "teacher_int8.onnx",
                           [calib[i : i + 1] for i in range(len(calib))])
    packed = packed_size_bytes(teacher) / 1024
    out = []
    for method, path, size in (("teacher", fp32, packed), (INT8, int8, packed / 4)):
        acc = onnx_accuracy(onnx.load(str(path)), x_test, data.y_test)
        out.append((Point(method, method, False, None, acc, size_kb_packed=size),
                    path.read_bytes()))
    for name, model, size in fastest_students(spec, teacher, x_calib):
        out.append((Point(FASTEST, name, False, None, onnx_accuracy(model, x_test, data.y_test),
                          size_kb_packed=size), model.SerializeToString()))
    return out


def measure_points(models: list[tuple[Point, bytes]]) -> list[Point]:
    """Latency of every model in one interleaved run; ratios to the teacher's."""
    from targets.agent import measure

    timings = measure([m for _, m in models], threads=1, min_runs=200,
                      seconds=max(30.0, 1.5 * len(models)))
    points = [p for p, _ in models]
    for point, (_, model), timing in zip(points, models, timings, strict=True):
        point.latency_ms = timing["latency_ms"]
        point.size_kb_file = len(model) / 1024
    teacher = next(p for p in points if p.method == "teacher")
    for point in points:
        point.latency_ratio = point.latency_ms / teacher.latency_ms
        point.size_ratio = point.size_kb_packed / teacher.size_kb_packed
    return points


def choose_winner(points: list[Point]) -> Point | None:
    """A method's winner, as ``export`` chooses it: of its finalized models the one with the
    best validation accuracy, else its best by validation."""
    finalized = [p for p in points if p.finalized] or points
    return max(finalized, key=lambda p: p.val_accuracy or 0.0, default=None)


def bench_run(spec_path: Path, seed: int, args: argparse.Namespace,
              log: Callable[[str], None]) -> dict[str, Any]:
    """One run: the three studies, the two baselines, every model measured together."""
    from experiments.bench_finalize import ruled_out_stats
    from search.spec import parse_spec

    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        work = Path(tmp)
        storage = f"sqlite:///{work}/studies.db"
        studies: dict[str, dict[str, Any]] = {}
        models: list[tuple[Point, bytes]] = []
        for method in (*STUDIES, HYPERBAND) if args.hyperband else STUDIES:
            raw = arm_spec(spec_path, method, seed, args.trials, args.epochs)
            timeout = studies["edgetune"]["search_s"] if method == "random search" else None
            log(f"--- {raw['name']}")
            studies[method] = run_arm(raw, storage, timeout, log)
            studies[method]["proposals"] = ruled_out_stats(storage, studies[method]["study"])
            models += study_points(method, storage, studies[method]["study"])
        raw = arm_spec(spec_path, "edgetune", seed, args.trials, args.epochs)
        spec = parse_spec(raw)
        models = baselines(spec, work) + models
        log(f"measuring {len(models)} models in one interleaved run")
        points = measure_points(models)
    teacher = points[0]
    summary: dict[str, Any] = {}
    for method in (*studies, INT8):
        mine = [p for p in points if p.method == method]
        winner = choose_winner(mine)
        summary[method] = {
            "hypervolume": hypervolume([(p.test_accuracy, p.latency_ms) for p in mine],
                                       teacher.latency_ms),
            "winner": asdict(winner) if winner else None,
            **studies.get(method, {}),
        }
    return {
        "workload": spec.model.name,
        "seed": seed,
        "ceiling": ceiling(points),
        "budgets": {"latency": raw["constraints"]["latency_ms"],
                    "size": raw["constraints"]["size_kb"]},
        "finalize_epochs": spec.finalize.epochs if spec.finalize else None,
        "trials": spec.search.trials,
        "methods": summary,
        "points": [asdict(p) for p in points],
    }


def verdicts(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's three targets, over the runs done."""
    out: dict[str, Any] = {}
    for workload in sorted({r["workload"] for r in runs}):
        mine = [r for r in runs if r["workload"] == workload]
        hv = {m: sum(r["methods"][m]["hypervolume"] for r in mine) / len(mine)
              for m in mine[0]["methods"] if all(m in r["methods"] for r in mine)}
        beats = []
        for r in mine:
            int8 = r["methods"][INT8]["winner"]
            beats.append(any(
                p["method"] == "edgetune" and p["test_accuracy"] >= int8["test_accuracy"] - 0.01
                and p["latency_ms"] <= 0.8 * int8["latency_ms"] for p in r["points"]))
        goal = [
            (w := r["methods"]["edgetune"]["winner"]) is not None and w["test_accuracy"] >= 0.905
            and w["latency_ratio"] <= 0.5 and w["size_ratio"] <= 0.125 for r in mine
        ]
        top = sum(r["ceiling"]["hypervolume"] for r in mine) / len(mine)
        out[workload] = {
            "runs": len(mine),
            "mean_hypervolume": hv,
            "hypervolume_edgetune_over_random": hv["edgetune"] / hv["random search"]
            if hv["random search"] else math.inf,
            "mean_hypervolume_ceiling": top,
            "ceiling_over_random": top / hv["random search"] if hv["random search"] else math.inf,
            "edgetune_point_beats_int8": beats,
            "goal_point_met": goal if workload == "resnet8" else None,
        }
    return out


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# bench_search ({result['date']}, label {result['label']})",
        "",
        f"CPU: {result['cpu']}. One row per method and run: its winner (the finalized one for "
        "a study), measured beside the teacher in the run's interleaved measurement; test "
        "accuracy on the 10,000 test images with its 95% interval. Hypervolume over every "
        "exported model of the method (test accuracy, measured latency; reference (0, the "
        "teacher's latency)). Ruled out: the share of proposals ruled out in the first / "
        "second half of the study; draws: the share of the sampler's draws over budget "
        "before any redraw or repair.",
        "",
    ]
    for run in result["runs"]:
        teacher = next(p for p in run["points"] if p["method"] == "teacher")
        top = run["ceiling"]
        lines += [
            f"## {run['workload']}, seed {run['seed']} (latency {run['budgets']['latency']}, "
            f"size {run['budgets']['size']} of the teacher; {run['trials']} trials, finalize "
            f"{run['finalize_epochs']} epochs)",
            "",
            f"Teacher: test accuracy {teacher['test_accuracy']:.4f}, "
            f"{teacher['latency_ms']:.4f} ms, packed {teacher['size_kb_packed']:.1f} KiB. "
            "The space's fastest student (every layer pruned by its largest ratio, fp32 or 8-bit) "
            f"measured {top['latency_ratio']:.3f}× the teacher's latency, so no method's "
            f"hypervolume can much exceed {top['hypervolume']:.4f} (the best test accuracy here, "
            f"{top['accuracy']:.4f}, at that latency).",
            "",
            "| method | winner | val acc | test acc (95%) | latency x teacher | packed size x "
            "teacher | hypervolume | time to result | ruled out 1st / 2nd half | draws over "
            "budget | trials stopped early |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for method, m in run["methods"].items():
            p = m.get("proposals")
            study = [
                f"{m['time_to_result_s']:.0f} s" if "time_to_result_s" in m else "",
                f"{p['ruled_out_share_first_half']:.0%} / {p['ruled_out_share_second_half']:.0%}"
                if p else "",
                f"{p['draws_over_budget_share']:.0%}" if p else "",
                str(p.get("stopped", "")) if p else "",
            ]
            w = m["winner"]
            if w is None:
                none = f"none of {p['proposals']} proposals feasible" if p else "none"
                lines.append(f"| {method} | {none} | | | | | 0 | " + " | ".join(study) + " |")
                continue
            lo, hi = Point(**w).interval
            val = f"{w['val_accuracy']:.4f}" if w["val_accuracy"] is not None else ""
            lines.append(
                f"| {method} | {w['name']} | {val} | {w['test_accuracy']:.4f} ({lo:.3f}–{hi:.3f})"
                f" | {w['latency_ratio']:.3f} | {w['size_ratio']:.3f} | {m['hypervolume']:.4f} | "
                + " | ".join(study) + " |")
        lines.append("")
    lines += ["## Targets", ""]
    for workload, v in result["verdicts"].items():
        hv = v["mean_hypervolume"]
        lines.append(
            f"- {workload} ({v['runs']} runs): mean hypervolume edgetune {hv['edgetune']:.4f}, "
            f"random search {hv['random search']:.4f} "
            + (f"(**{v['hypervolume_edgetune_over_random']:.2f}×**, target ≥ 1.2×; the ceiling "
               f"{v['mean_hypervolume_ceiling']:.4f} is {v['ceiling_over_random']:.2f}× random "
               "search's)" if hv["random search"] else "(it found no feasible model)")
            + f", uniform pruning {hv['uniform pruning']:.4f}, onnxruntime int8 "
            f"{hv[INT8]:.4f}; a point of edgetune's beats onnxruntime int8 (accuracy ≥ its − 0.01, "
            f"latency ≤ 0.8×) in {sum(v['edgetune_point_beats_int8'])} of {v['runs']} runs"
            + (f"; with the Hyperband stopper edgetune's hypervolume is {hv[HYPERBAND]:.4f}"
               if HYPERBAND in hv else "")
            + (f"; goal point (≥ 0.905, ≤ 0.5×, ≤ 1/8) met in {sum(v['goal_point_met'])} of "
               f"{v['runs']} runs" if v["goal_point_met"] is not None else "") + ".")
    lines.append(f"\nTotal time: {result['seconds']:.0f} s.")
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    """Accuracy against latency ratio, one panel per run, every method's models."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result["runs"]
    fig, axes = plt.subplots(1, len(runs), figsize=(4.2 * len(runs), 3.8), squeeze=False)
    styles = {"edgetune": ("tab:blue", "o"), "random search": ("tab:orange", "s"),
              "uniform pruning": ("tab:green", "^"), INT8: ("tab:red", "D"),
              HYPERBAND: ("tab:purple", "v"),
              "teacher": ("black", "*")}
    for ax, run in zip(axes[0], runs, strict=True):
        for method, (color, marker) in styles.items():
            pts = [p for p in run["points"] if p["method"] == method]
            if not pts:  # no legend entry for a method the run has not
                continue
            ax.scatter([p["latency_ratio"] for p in pts], [p["test_accuracy"] for p in pts],
                       c=color, marker=marker, s=[60 if p["finalized"] else 22 for p in pts],
                       label=method, alpha=0.85)
        share = float(str(run["budgets"]["latency"]).rstrip("%")) / 100
        ax.axvline(share, color="grey", linestyle="--", linewidth=1)
        ax.set_title(f"{run['workload']}, seed {run['seed']}", fontsize=10)
        ax.set_xlabel("latency / teacher's (measured)")
        ax.set_ylabel("test accuracy")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"bench_search on {result['cpu']} (large marks: finalized models)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    from targets.agent import device_info

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", default=["resnet8:0,1,2", "mobilenetv2:0"],
                        help="WORKLOAD:SEED,SEED,... (the spec experiments/fashion_mnist/"
                        "WORKLOAD_host.yaml)")
    parser.add_argument("--trials", type=int, default=None, help="default: the spec's")
    parser.add_argument("--epochs", type=int, default=None,
                        help="finalize epochs (default: the spec's finalize section)")
    parser.add_argument("--label", default="host")
    parser.add_argument("--hyperband", action="store_true",
                        help="add a study of edgetune's spec with the Hyperband stopper")
    args = parser.parse_args(argv)
    plan = [(SPECS / f"{w}_host.yaml", int(s)) for item in args.runs
            for w, seeds in [item.split(":")] for s in seeds.split(",")]
    for path, _ in plan:
        if not path.exists():
            parser.error(f"--runs: no spec {path.relative_to(ROOT)}")
    start = time.perf_counter()
    result: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M"), "label": args.label,
                              "cpu": device_info()["cpu_model"], "runs": []}
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"bench_search_{args.label}"
    for path, seed in plan:
        result["runs"].append(bench_run(path, seed, args, print))
        result["verdicts"] = verdicts(result["runs"])
        result["seconds"] = time.perf_counter() - start
        stem.with_suffix(".json").write_text(json.dumps(result, indent=2))
        stem.with_suffix(".md").write_text(markdown(result))
        plot(result, stem.with_suffix(".png"))
        print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
