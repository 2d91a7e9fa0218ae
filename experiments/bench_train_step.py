"""A fine-tune step as edgetune trains it, against the two forms it replaced: activation fake
quantization composed of torch ops for autograd, and weights in the default (NCHW) layout.

    python -m experiments.bench_train_step [--steps 60] [--threads 1 2] [--label L]

For each built-in teacher's example spec (ResNet-8, MobileNetV2, DenseNet), a student of its
space pruned by half with 8-bit weights and activations (and ResNet-8's with 16-bit activations
too) is built three times: as it was (its activation quantizers :class:`Composed`, the torch ops
of the fake quantization composed for autograd), with :class:`spaces.quantization.ActQuant`'s
own autograd function, and with that and :func:`spaces.distillation.channels_last_weights`'s
channels-last weights, as edgetune trains it. The three must give the same loss and gradients on
one batch. Then distillation steps of the three are timed, interleaved step by step, at each
thread count; the median milliseconds per step and the ratios to the first are printed and
written to ``experiments/results/train_step_<label>.{json,md}`` with the CPU.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from spaces.quantization import ActQuant, round_ste

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "experiments" / "fashion_mnist"
RESULTS = ROOT / "experiments" / "results"
STUDENTS = (("resnet8", 8), ("resnet8", 16), ("mobilenetv2", 8), ("densenet", 8))
"""(teacher, activation bits) of each student timed, pruned by half, 8-bit weights."""


class Composed(ActQuant):
    """:class:`ActQuant` with its fake quantization composed of torch ops, as it was."""

    def forward(self, x: Tensor) -> Tensor:
        if self.observing:
            return super().forward(x)
        zp = self.zero_point.to(x.dtype)
        q = torch.clamp(round_ste(x / self.scale) + zp, self.qmin, self.qmax)
        return (q - zp) * self.scale


def composed(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose activation quantizers are :class:`Composed`."""
    out = copy.deepcopy(model)
    for module in out.modules():
        if type(module) is ActQuant:
            module.__class__ = Composed
    return out


def gradient_gap(a: nn.Module, b: nn.Module, x: Tensor, logits: Tensor, y: Tensor) -> float:
    """The largest difference between the two models' losses and parameter gradients on one
    batch, relative to the largest gradient."""
    from spaces.distillation import distillation_loss

    grads = []
    for model in (a, b):
        model.train()
        model.zero_grad(set_to_none=True)
        loss = distillation_loss(model(x), logits, y, temperature=4.0, alpha=0.7)
        loss.backward()
        grads.append([loss.detach().reshape(1)] + [p.grad.reshape(-1) for p in model.parameters()
                                                   if p.grad is not None])
    flat_a, flat_b = torch.cat(grads[0]), torch.cat(grads[1])
    return float((flat_a - flat_b).abs().max() / flat_a.abs().max().clamp_min(1e-12))


def time_steps(models: dict[str, nn.Module], x: Tensor, logits: Tensor, y: Tensor,
               steps: int, batch: int = 64) -> dict[str, float]:
    """Median seconds of a distillation step of each model, the models' steps interleaved."""
    from spaces.distillation import DistillConfig, distill_step

    cfg = DistillConfig(temperature=4.0, alpha=0.7, lr=0.004, steps=steps, eval_every=steps,
                        batch_size=batch)
    opts = {k: torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=cfg.lr)
            for k, m in models.items()}
    gen = torch.Generator().manual_seed(0)
    times: dict[str, list[float]] = {k: [] for k in models}
    for step in range(steps + 3):  # three warm-up steps each
        idx = torch.randint(0, len(x), (batch,), generator=gen)
        for k, model in models.items():
            t = time.perf_counter()
            distill_step(model, opts[k], x[idx], logits[idx], y[idx], cfg, step=step + 1)
            if step >= 3:
                times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    from experiments.bench_util import half_pruned_student
    from search.spec import load_spec, parse_spec, spec_to_json
    from search.workloads import load_data, load_teacher, split
    from spaces.distillation import channels_last_weights, teacher_logits
    from targets.agent import device_info
    from targets.host import cpu_isa

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--label", default="host")
    args = p.parse_args()
    rows: list[dict[str, Any]] = []
    for name, act_bits in STUDENTS:
        raw = spec_to_json(load_spec(SPECS / f"{name}_host.yaml"))
        raw["space"]["quantization"]["activation_bits"] = [act_bits]
        spec = parse_spec(raw)
        teacher = load_teacher(spec)
        parts = split(load_data(spec.data, spec.model), spec.data, 0)
        x, y = parts["x_finetune"][:4096], parts["y_finetune"][:4096]
        logits = teacher_logits(teacher, x)
        student, ratio = half_pruned_student(spec, teacher, parts["x_calib"], act_bits)
        fast = copy.deepcopy(student)
        channels_last_weights(fast, x)
        models = {"composed": composed(student), "fused": student, "fused, channels-last": fast}
        gap = max(gradient_gap(models["composed"], m, x[:64], logits[:64], y[:64])
                  for m in list(models.values())[1:])
        for threads in args.threads:
            torch.set_num_threads(threads)
            ms = {k: 1000 * s for k, s in time_steps(models, x, logits, y, args.steps).items()}
            rows.append({"student": f"{name}, pruned {ratio:.0%}, 8-bit weights, {act_bits}-bit "
                         "activations", "threads": threads, "gradient_gap": gap, "ms": ms})
            print(rows[-1], flush=True)
    result = {"cpu": device_info()["cpu_model"], "isa": cpu_isa(),
              "date": time.strftime("%Y-%m-%d"), "steps": args.steps, "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"train_step_{args.label}.json").write_text(json.dumps(result, indent=1))
    md = [f"# A fine-tune step ({result['date']})", "",
          f"CPU: {result['cpu']} ({', '.join(result['isa'])}). `python -m "
          f"experiments.bench_train_step --label {args.label}`: median of {args.steps} "
          "distillation steps (batch 64) of each form, interleaved step by step in one run; "
          "in brackets, over the composed form's. Gradient gap: the largest difference of a "
          "form's loss and gradients from the composed form's on one batch, over the largest "
          "gradient.", "",
          "| student | threads | composed, NCHW (ms/step) | fused, NCHW | fused, channels-last | "
          "gradient gap |", "|---|---|---|---|---|---|"]
    for r in rows:
        base = r["ms"]["composed"]
        cells = [f"{r['ms'][k]:.1f} ({r['ms'][k] / base:.2f}x)" for k in list(r["ms"])[1:]]
        md.append(f"| {r['student']} | {r['threads']} | {base:.1f} | {' | '.join(cells)} | "
                  f"{r['gradient_gap']:.1e} |")
    (RESULTS / f"train_step_{args.label}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
