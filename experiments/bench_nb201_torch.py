"""A device edgetune never saw, calibrated from real NAS-Bench-201 networks as a user would
give them: PyTorch modules (``experiments.nb201_torch``: ReLU-Conv-BN ops, ``none`` edges as
``x * 0``, BatchNorm after the last Add) exported with ``torch.onnx.export``'s defaults.

For each fp32 device column of the NB201 latency table: ``edgetune calibrate NAME
--measurements CSV`` on 100 (ONNX, measured latency) rows, then the fitted target predicts 300
other networks from their ONNX (``from_onnx``), beside a FLOPs-proportional model fitted on the
same 100 rows. Rows are drawn with ``--seed``.

    python -m experiments.bench_nb201_torch [--seed 0] [--n-fit 100] [--n-test 300]

Writes ``experiments/results/nb201_torch_calibrate.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
_EXPORTED: dict[str, Any] = {}  # arch_str -> ONNX model: device columns share networks


def _exported(arch: str) -> Any:
    from experiments.nb201_torch import nb201_torch_onnx

    if arch not in _EXPORTED:
        _EXPORTED[arch] = nb201_torch_onnx(arch)
    return _EXPORTED[arch]


def check_device(device: str, *, seed: int, n_fit: int, n_test: int) -> dict[str, Any]:
    from cost_models import from_onnx
    from cost_models.baseline import fit_flops_constant, total_macs
    from cost_models.fidelity import fidelity
    from experiments.bench_cost_models import calibrate_cli
    from experiments.nb201 import nb201_graph
    from targets.devices import NB201_DEVICES, nb201_rows

    # a network whose cells all output zeros is a constant the device's runtime folded away
    # (measured in microseconds): no export of it shows that, so it is left out
    rows = [r for r in nb201_rows(NB201_DEVICES[device].column) if nb201_graph(r[1]).layers]
    picked = random.Random(seed).sample(rows, n_fit + n_test)
    t = time.perf_counter()
    models = [(_exported(arch), lat) for _, arch, lat in picked]
    graphs = [from_onnx(m) for m, _ in models]
    export_s = time.perf_counter() - t
    target = calibrate_cli(f"nb201-torch-{device}", models[:n_fit])
    test = list(zip(graphs[n_fit:], models[n_fit:], strict=True))
    meas = [lat for _, (_, lat) in test]
    pred = [target.predict(g, b).latency_ms for (g, b), _ in test]
    fit = zip(graphs[:n_fit], models[:n_fit], strict=True)
    c = fit_flops_constant([(g, b, lat) for (g, b), (_, lat) in fit])
    flops = [c * total_macs((g, b, 0.0)) for (g, b), _ in test]
    model, base = fidelity(pred, meas), fidelity(flops, meas)
    return {
        "device": device,
        "n_fit": n_fit,
        "n_test": n_test,
        "seed": seed,
        "export_and_parse_s": round(export_s, 1),
        "model": model,
        "flops_baseline": base,
        "beats_flops_on_within_10pct_and_spearman": model["within_10pct"] > base["within_10pct"]
        and model["spearman"] > base["spearman"],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-fit", type=int, default=100)
    p.add_argument("--n-test", type=int, default=300)
    args = p.parse_args(argv)
    from targets.devices import NB201_DEVICES

    out = []
    for device, spec in NB201_DEVICES.items():
        if spec.int8:  # measured in int8: the user's export would be a QDQ model
            continue
        r = check_device(device, seed=args.seed, n_fit=args.n_fit, n_test=args.n_test)
        print(json.dumps(r), file=sys.stderr)
        out.append(r)
    md = [
        "# A new device calibrated from PyTorch-exported NAS-Bench-201 networks",
        "",
        f"`python -m experiments.bench_nb201_torch --seed {args.seed}`: `edgetune calibrate` on "
        f"{args.n_fit} networks, predictions on {args.n_test} others (held out), beside a "
        "FLOPs-proportional model fitted on the same rows. Latencies are the public "
        "measurements of each device; the networks are exported here with torch's defaults. "
        "Nothing here is timed on this machine, so the figures do not depend on its CPU.",
        "",
        "| device column | within ±10% | Spearman | MdAPE | FLOPs within ±10% | FLOPs Spearman "
        "| FLOPs MdAPE | better on both |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in out:
        m, b = r["model"], r["flops_baseline"]
        md.append(
            f"| {r['device']} | {m['within_10pct']:.0%} | {m['spearman']:.3f} | "
            f"{m['mdape']:.1f}% | {b['within_10pct']:.0%} | {b['spearman']:.3f} | "
            f"{b['mdape']:.1f}% | {'yes' if r['beats_flops_on_within_10pct_and_spearman'] else 'no'} |"
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "nb201_torch_calibrate.md").write_text("\n".join(md) + "\n")
    (RESULTS / "nb201_torch_calibrate.json").write_text(json.dumps(out, indent=1) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
