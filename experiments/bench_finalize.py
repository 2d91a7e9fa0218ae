"""A search, its winner exported, finalized and exported again: what finalize buys, and how
cheap the proposals the cost model rules out are.

    python -m experiments.bench_finalize [--latency 50%] [--trials 8] [--epochs 5] [--label L]

Runs the demo spec (``experiments/fashion_mnist/resnet8_host.yaml``) through ``search.api`` in a
fresh SQLite study, with the latency budget and trial count given. Prints and writes
``experiments/results/finalize_<label>.{json,md}``: test accuracy (with its 95% interval),
latency measured beside the teacher, packed size of the winner before and after finalizing;
the start-to-complete time of proposals ruled out by the cost model (median, 90th percentile)
and the share of ruled-out proposals in each half of the study. The CPU is recorded beside
every figure: latency ratios hold on the machine that measured them.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "experiments" / "fashion_mnist" / "resnet8_host.yaml"
RESULTS = ROOT / "experiments" / "results"


def _interval(acc: float, n: int) -> tuple[float, float]:
    half = 1.96 * math.sqrt(acc * (1 - acc) / n)
    return acc - half, acc + half


def ruled_out_stats(storage: str, study_name: str) -> dict[str, Any]:
    """Start-to-complete seconds of ruled-out proposals; the ruled-out share by half, and of
    the sampler's draws before any redraw or repair; trials stopped early; each measured
    proposal's latency over the teacher's, predicted and measured."""
    import optuna

    from search.driver import SAMPLER_COUNTS
    from search.record import StudyRecord, TrialRecord

    study = optuna.load_study(study_name=study_name, storage=storage)
    record = StudyRecord.read(study)
    teacher_ms = record.teacher.get("latency_ms_predicted") if record else None
    trials = sorted(study.trials, key=lambda t: t.number)
    records = [TrialRecord.read(t) for t in trials]
    predicted = [
        (t.datetime_complete - t.datetime_start).total_seconds()
        for t, r in zip(trials, records, strict=True)
        if r and r.status == "infeasible" and "(predicted)" in r.reason
        and t.datetime_complete and t.datetime_start
    ]
    half = len(records) // 2

    def share(part: list[Any]) -> float:
        return sum(bool(r and r.status == "infeasible") for r in part) / max(len(part), 1)

    measured = sum(bool(r and r.status == "infeasible" and "(measured)" in r.reason)
                   for r in records)
    rejected = study.user_attrs.get(SAMPLER_COUNTS, {}).get("rejected", 0)
    return {
        "proposals": len(records),
        "ruled_out_by_prediction": len(predicted),
        "ruled_out_measured": measured,
        "draws_over_budget_share": (rejected + len(predicted) + measured)
        / max(rejected + len(records), 1),
        "stopped": sum(bool(r and r.status == "stopped") for r in records),
        "latency_ratios": [
            {"trial": t.number, "status": r.status,
             "predicted": r.predicted["latency_ms"] / teacher_ms,
             "measured": r.measured["ratio_to_teacher"]}
            for t, r in zip(trials, records, strict=True)
            if r and teacher_ms and "ratio_to_teacher" in r.measured
            and "latency_ms" in r.predicted],
        "ruled_out_median_s": statistics.median(predicted) if predicted else None,
        "ruled_out_p90_s": (sorted(predicted)[int(0.9 * (len(predicted) - 1))]
                            if predicted else None),
        "ruled_out_share_first_half": share(records[:half]),
        "ruled_out_share_second_half": share(records[half:]),
        "sampler_draws": dict(study.user_attrs.get(SAMPLER_COUNTS, {})),
    }


def _exported(summary: Mapping[str, Any]) -> dict[str, Any]:
    n = 10000  # the Fashion-MNIST test set
    acc = summary["accuracy_onnx"]
    return {
        "test_accuracy": acc,
        "test_accuracy_95": _interval(acc, n),
        "latency_ratio_measured": summary["ratios_to_teacher"]["latency_measured"],
        "latency_ms_measured": summary["latency_ms_measured"],
        "teacher_latency_ms_measured": summary["teacher"]["latency_ms_measured"],
        "size_ratio_packed": summary["ratios_to_teacher"]["size_packed"],
        "val_accuracy_search": summary["accuracy_val_search"],
        "finalized": summary.get("finalized"),
    }


def main() -> None:
    from search import api
    from search.spec import load_spec, spec_to_json
    from targets.agent import device_info

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency", default="50%", help="the latency budget (default 50%%)")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--label", default="host")
    args = parser.parse_args()

    raw = spec_to_json(load_spec(SPEC))
    raw["constraints"]["latency_ms"] = args.latency
    raw["search"]["trials"] = args.trials
    raw["name"] = "bench-finalize"
    raw["finalize"] = None  # finalized below, after the search-time weights are exported
    with tempfile.TemporaryDirectory() as tmp:
        storage = f"sqlite:///{tmp}/s.db"
        t = time.perf_counter()
        study = api.search(raw, storage=storage, log=print)
        search_s = time.perf_counter() - t
        best = study.best()
        before = best.export(Path(tmp) / "search", log=print).summary
        t = time.perf_counter()
        finalized = best.finalize(epochs=args.epochs, log=print)
        finalize_s = time.perf_counter() - t
        after = best.export(Path(tmp) / "final", log=print).summary
        ruled = ruled_out_stats(storage, study.name)
    result = {
        "cpu": device_info()["cpu_model"],
        "date": time.strftime("%Y-%m-%d"),
        "spec": str(SPEC.relative_to(ROOT)),
        "latency_budget": args.latency,
        "size_budget": raw["constraints"]["size_kb"],
        "trials": args.trials,
        "epochs": args.epochs,
        "search_s": search_s,
        "finalize_s": finalize_s,
        "winner": best.trial,
        "search_time_weights": _exported(before),
        "finalized_weights": _exported(after),
        "finalized": finalized.as_dict(),
        "proposals": ruled,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"finalize_{args.label}.json").write_text(json.dumps(result, indent=2))
    (RESULTS / f"finalize_{args.label}.md").write_text(_markdown(result))
    print(_markdown(result))


def _markdown(r: dict[str, Any]) -> str:
    rows = []
    for key, label in (("search_time_weights", "search-time weights"),
                       ("finalized_weights", f"finalized ({r['epochs']} epochs)")):
        e = r[key]
        lo, hi = e["test_accuracy_95"]
        rows.append(
            f"| {label} | {e['test_accuracy']:.4f} ({lo:.3f}–{hi:.3f}) | "
            f"{e['latency_ratio_measured']:.3f}x | {e['size_ratio_packed']:.3f}x |"
        )
    p = r["proposals"]

    def sec(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f} s"

    return "\n".join([
        f"# Finalize on the demo workload ({r['date']})",
        "",
        f"CPU: {r['cpu']}. Spec `{r['spec']}` with latency {r['latency_budget']} and size "
        f"{r['size_budget']} of the teacher, {r['trials']} trials; search {r['search_s']:.0f} s, "
        f"finalize {r['finalize_s']:.0f} s. Winner: trial {r['winner']}.",
        "",
        "| weights | test accuracy (95% interval) | latency vs teacher (measured, same run) "
        "| packed size vs teacher |",
        "|---|---|---|---|",
        *rows,
        "",
        f"Proposals: {p['proposals']}; ruled out by the cost model {p['ruled_out_by_prediction']} "
        f"(start to complete: median {sec(p['ruled_out_median_s'])}, 90th percentile "
        f"{sec(p['ruled_out_p90_s'])}); ruled out by measurement {p['ruled_out_measured']}. "
        f"Share ruled out: {p['ruled_out_share_first_half']:.0%} in the first half, "
        f"{p['ruled_out_share_second_half']:.0%} in the second. Before they became proposals, "
        f"the sampler threw away {p['sampler_draws'].get('rejected', 0)} draws the cost model "
        f"ruled out and handed on {p['sampler_draws'].get('repaired', 0)} repairs of them.",
        "",
    ])


if __name__ == "__main__":
    main()
