"""A validation pass as edgetune evaluates, against the form it replaced: batches of 512 images
in the default (NCHW) layout.

    python -m experiments.bench_eval [--repeats 7] [--threads 1 2] [--label L]

Sensitivity evaluates a few hundred compressed teachers on the validation split before a
search, trials evaluate as they train, and the finalize and export once each, so a pass's time
counts. For each built-in teacher's example spec (ResNet-8, MobileNetV2, DenseNet), the teacher
and a student of its space (pruned by half, 8-bit weights and activations; untrained, so its
accuracy is near chance) are evaluated on its 2,000 validation images in three forms: batches
of 512 and of 64 in NCHW (:func:`plain`, a copy kept in that layout), and
:func:`spaces.distillation.accuracy` as edgetune calls it (batches of ``EVAL_BATCH``,
channels-last weights and images). The three must give the same accuracy. Their passes are
timed interleaved at each thread count; the median seconds and the ratios to the first are
printed and written to ``experiments/results/eval_<label>.{json,md}`` with the CPU.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from experiments.bench_util import half_pruned_student, nchw

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "experiments" / "fashion_mnist"
RESULTS = ROOT / "experiments" / "results"
TEACHERS = ("resnet8", "mobilenetv2", "densenet")
FORMS = ("512, NCHW", "64, NCHW", "edgetune")


@torch.no_grad()
def plain(model: nn.Module, x: Tensor, y: Tensor, batch: int) -> float:
    """Top-1 accuracy in batches of ``batch``, the model and images as they are."""
    model.eval()
    correct = sum(int((model(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum())
                  for i in range(0, len(x), batch))
    return correct / len(x)


def time_passes(passes: Mapping[str, Callable[[], float]], repeats: int) -> dict[str, float]:
    """Median seconds of each pass, the passes interleaved, after one warm-up each."""
    times: dict[str, list[float]] = {k: [] for k in passes}
    for rep in range(repeats + 1):
        for k, run in passes.items():
            t = time.perf_counter()
            run()
            if rep:
                times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    from search.spec import load_spec
    from search.workloads import load_data, load_teacher, split
    from spaces.distillation import accuracy
    from targets.agent import device_info
    from targets.host import cpu_isa

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--label", default="host")
    args = p.parse_args()
    rows: list[dict[str, Any]] = []
    for name in TEACHERS:
        spec = load_spec(SPECS / f"{name}_host.yaml")
        teacher = nchw(load_teacher(spec))
        parts = split(load_data(spec.data, spec.model), spec.data, 0)
        x, y = parts["x_val"], parts["y_val"]
        student, ratio = half_pruned_student(spec, teacher, parts["x_calib"])
        for model_name, model in ((name, teacher), (f"{name} student, pruned {ratio:.0%}, "
                                                    "8-bit", student)):
            base, fast = nchw(model), copy.deepcopy(model)
            passes = {"512, NCHW": partial(plain, base, x, y, 512),
                      "64, NCHW": partial(plain, base, x, y, 64),
                      "edgetune": partial(accuracy, fast, x, y)}
            accuracies = {k: run() for k, run in passes.items()}
            if len(set(accuracies.values())) != 1:
                raise SystemExit(f"{model_name}: the forms disagree: {accuracies}")
            for threads in args.threads:
                torch.set_num_threads(threads)
                s = time_passes(passes, args.repeats)
                rows.append({"model": model_name, "threads": threads,
                             "accuracy": accuracies["edgetune"], "s": s})
                print(rows[-1], flush=True)
    result = {"cpu": device_info()["cpu_model"], "isa": cpu_isa(),
              "date": time.strftime("%Y-%m-%d"), "repeats": args.repeats, "images": len(x),
              "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"eval_{args.label}.json").write_text(json.dumps(result, indent=1))
    md = [f"# A validation pass ({result['date']})", "",
          f"CPU: {result['cpu']} ({', '.join(result['isa'])}). `python -m experiments.bench_eval "
          f"--label {args.label}`: median of {args.repeats} passes over {result['images']} "
          "validation images, each form's passes interleaved in one run; in brackets, over "
          "the first form's. Every form gave the same accuracy.", "",
          "| model | threads | batches of 512, NCHW (s) | of 64, NCHW | edgetune (64, "
          "channels-last) | accuracy |", "|---|---|---|---|---|---|"]
    for r in rows:
        first = r["s"][FORMS[0]]
        cells = [f"{r['s'][k]:.3f} ({r['s'][k] / first:.2f}x)" for k in FORMS[1:]]
        md.append(f"| {r['model']} | {r['threads']} | {first:.3f} | {' | '.join(cells)} | "
                  f"{r['accuracy']:.4f} |")
    (RESULTS / f"eval_{args.label}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
