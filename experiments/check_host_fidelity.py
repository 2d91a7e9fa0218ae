"""Check the host target's latency predictions on held-out architectures.

Builds about 20 ResNet-, DS-CNN- and MobileNetV2-style torch nets with random (pruned-like)
widths, exports each to fp32 ONNX (``torch.onnx.export(..., dynamo=False)``) and to int8 QDQ
(``onnxruntime.quantization.quantize_static``: QDQ format, per channel, reduce_range, QUInt8
activations, QInt8 weights), measures them all with the agent, and compares with the host
target's predictions. Prints the figures and writes
``experiments/results/host_fidelity_seed<SEED>.json`` (each seed is a different set of nets).

    python -m experiments.check_host_fidelity [--seed 1] [--n 20] [--seconds 30] [--recalibrate]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


BASE_FAMILIES = ("resnet", "dscnn", "mbv2")


BASE_SHAPES: tuple[tuple[int, int], ...] = ((28, 28), (28, 28), (32, 32))


def _nets(
    n: int,
    seed: int,
    families: tuple[str, ...] = BASE_FAMILIES,
    shapes: tuple[tuple[int, int], ...] = BASE_SHAPES,
) -> list[tuple[str, Any, tuple[int, int, int]]]:
    import torch
    from torch import nn

    from experiments.held_out_nets import build, trained_like_bn

    class Add(nn.Module):
        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return a + b

    def cbr(
        cin: int, cout: int, k: int, s: int = 1, g: int = 1, act: bool = True, act6: bool = False
    ) -> nn.Sequential:
        mods: list[nn.Module] = [
            nn.Conv2d(cin, cout, k, s, (k - 1) // 2, groups=g, bias=False),
            nn.BatchNorm2d(cout),
        ]
        if act:
            mods.append(nn.ReLU6() if act6 else nn.ReLU())
        return nn.Sequential(*mods)

    class Block(nn.Module):
        def __init__(self, cin: int, mid: int, cout: int, s: int) -> None:
            super().__init__()
            self.c1, self.c2 = cbr(cin, mid, 3, s), cbr(mid, cout, 3, act=False)
            self.sc = nn.Conv2d(cin, cout, 1, s) if (s != 1 or cin != cout) else nn.Identity()
            self.add, self.relu = Add(), nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.relu(self.add(self.c2(self.c1(x)), self.sc(x)))

    class IR(nn.Module):
        def __init__(self, cin: int, hid: int, cout: int, s: int) -> None:
            super().__init__()
            self.body = nn.Sequential(
                cbr(cin, hid, 1, act6=True),
                cbr(hid, hid, 3, s, g=hid, act6=True),
                cbr(hid, cout, 1, act=False),
            )
            self.res = s == 1 and cin == cout
            self.add = Add()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.body(x)
            return self.add(y, x) if self.res else y

    def head(c: int) -> list[nn.Module]:
        return [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 10)]

    rng = random.Random(seed)

    def w(base: int) -> int:  # pruned-like width
        return max(2, int(base * rng.choice((0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0))))

    out = []
    for i in range(n):
        fam = families[i % len(families)]
        h, wd = rng.choice(shapes)
        cin = 1 if (h, wd) in ((28, 28), (49, 10)) else 3  # grey images and MFCCs: 1 channel
        tag = f"hw{h}" if h == wd else f"{h}x{wd}"
        if fam not in BASE_FAMILIES:
            out.append((f"{fam}{i}_{tag}", build(fam, rng, cin, seed * 100 + i), (cin, h, wd)))
            continue
        if fam == "resnet":
            c0, c1, c2, c3 = w(16), w(16), w(32), w(64)
            m = nn.Sequential(
                cbr(cin, c0, 3),
                Block(c0, c1, c0, 1),
                Block(c0, w(32), c2, 2),
                Block(c2, w(64), c3, 2),
                *head(c3),
            )
        elif fam == "dscnn":
            c = w(64)
            blocks: list[nn.Module] = [cbr(cin, c, 3, 2)]
            for _ in range(4):
                c2 = w(64)
                blocks += [cbr(c, c, 3, g=c), cbr(c, c2, 1)]
                c = c2
            m = nn.Sequential(*blocks, *head(c))
        else:
            c = w(16)
            layers: list[nn.Module] = [cbr(cin, c, 3, 2, act6=True)]
            for cout, s in ((c, 1), (w(24), 2), (None, 1), (w(32), 2)):
                co = c if cout is None else cout
                layers.append(IR(c, c * rng.choice((2, 4, 6)), co, s))
                c = co
            m = nn.Sequential(*layers, *head(c))
        out.append((f"{fam}{i}_{tag}", trained_like_bn(m, seed * 100 + i), (cin, h, wd)))
    return out


def _export(model: Any, shape: tuple[int, int, int], tmp: Path, name: str) -> tuple[Path, Path]:
    import numpy as np
    import torch

    from experiments.bench_util import ort_int8_static

    fp32 = tmp / f"{name}_fp32.onnx"
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(
            model,
            (torch.randn(1, *shape),),
            buf,  # type: ignore[arg-type]
            dynamo=False,
            input_names=["input"],
            output_names=["logits"],
        )
    fp32.write_bytes(buf.getvalue())

    rng = np.random.default_rng(0)
    samples = [rng.standard_normal((1, *shape)).astype(np.float32) for _ in range(8)]
    qdq = ort_int8_static(fp32, tmp / f"{name}_int8.onnx", samples)
    return fp32, qdq


def _winners(n: int, seed: int, target: Any) -> list[tuple[str, bytes, float]]:
    """Search-winner-like students: ResNet-8 and MobileNetV2 (in turn) at 28x28x1, pruned per
    group, mixed precision, made by the search's own student recipe and exporter; predicted
    from the torch graph, as the search does."""
    import torch

    from cost_models import Precision
    from search.onnx_export import to_onnx
    from search.workloads.models import mobilenetv2, resnet8
    from spaces.config import PruningSpace, QuantizationSpace, Space
    from spaces.joint import JointSpace
    from spaces.student import build_student, student_architecture

    builders = (("resnet8", resnet8), ("mobilenetv2", mobilenetv2))
    shape = (1, 28, 28)
    space_spec = Space(
        quantization=QuantizationSpace(weight_bits=(4, 6, 8, 32), activation_bits=(8, 32)),
        pruning=PruningSpace(max_ratio=0.5, step=0.25, round_to=1),
    )
    rng = random.Random(seed)
    out = []
    for i in range(n):
        name, build = builders[i % len(builders)]
        model = build(shape).eval()
        space = JointSpace(model, shape, space_spec)
        params = space.uniform_params(0.0, 32, 32)
        assert space.pruning is not None
        for group in space.pruning.groups:
            params[f"prune.{group.name}"] = rng.choice((0.0, 0.25, 0.5))
        graph = student_architecture(model, params, space).graph
        for la in graph.layers:
            if la.kind in ("conv", "dwconv", "linear"):
                p = rng.choice(
                    [Precision(8, 8)] * 3
                    + [Precision(4, 8), Precision(32, 32), Precision(6, 8), Precision(32, 8)]
                )
                params[f"wbits.{la.name}"], params[f"abits.{la.name}"] = p.weight_bits, p.act_bits
            elif la.kind == "add":
                params[f"abits.{la.name}"] = rng.choice([Precision(32, 8), Precision()]).act_bits
        student = build_student(
            model, params, space, calib=torch.randn(16, *shape), reduce_range=True
        )
        assert student.model is not None
        out.append(
            (
                f"winner{i}_{name}",
                to_onnx(student.model, shape).SerializeToString(),
                target.predict(student.graph, student.policy.bits).latency_ms,
            )
        )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=20)
    p.add_argument(
        "--winners",
        type=int,
        default=6,
        help="exported pruned mixed-precision students to check (ResNet-8, MobileNetV2)",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--recalibrate", action="store_true")
    p.add_argument(
        "--shapes",
        default="",
        help="comma-separated input sizes to draw from, e.g. 64,96,49x10 (default: 28, 28, 32); "
        "results then go to host_fidelity_shapes_..._seed<SEED>.json",
    )
    p.add_argument(
        "--families",
        default=",".join(BASE_FAMILIES),
        help="comma-separated: resnet, dscnn, mbv2 and those of experiments.held_out_nets "
        "(mbv3, dense, preact, nb201); results go to host_fidelity_<families>_seed<SEED>.json "
        "unless they are the first three",
    )
    p.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep the exported models and measurements here (default: temporary)",
    )
    p.add_argument(
        "--reuse",
        action="store_true",
        help="reuse the models and measurements in --workdir (re-predict the ONNX models; the "
        "students keep the prediction made when they were measured; valid only with the same "
        "host calibration)",
    )
    p.add_argument(
        "--reuse-models",
        action="store_true",
        help="reuse the exported models in --workdir, but measure them again",
    )
    args = p.parse_args(argv)
    families = tuple(f.strip() for f in args.families.split(",") if f.strip())
    shapes = BASE_SHAPES
    if args.shapes:
        shapes = tuple(
            (int(s.split("x")[0]), int(s.split("x")[-1])) for s in args.shapes.split(",")
        )

    import onnx

    from cost_models.fidelity import fidelity
    from cost_models.onnx_graph import from_onnx
    from targets import get
    from targets.agent import device_info, noise_ceiling
    from targets.host import calibrate_host, measure_on_host
    from targets.kernel_check import check_kernel_rules

    target = calibrate_host(force=True) if args.recalibrate else get("host")
    with tempfile.TemporaryDirectory() as d:
        tmp = args.workdir or Path(d)
        tmp.mkdir(parents=True, exist_ok=True)
        saved = tmp / "measurements.json"
        if args.reuse and saved.is_file():
            results = json.loads(saved.read_text())
            # the students were predicted from their torch graphs when they were measured
            files = [
                tmp / f"{r['name']}.onnx" for r in results if "predicted_from_torch_ms" not in r
            ]
        else:
            files = []
            for name, model, shape in _nets(args.n, args.seed, families, shapes):
                if args.reuse_models and (tmp / f"{name}_int8.onnx").is_file():
                    files.extend([tmp / f"{name}_fp32.onnx", tmp / f"{name}_int8.onnx"])
                else:
                    files.extend(_export(model, shape, tmp, name))
            winners = _winners(args.winners, args.seed, target)
            to_measure: list[bytes | str | os.PathLike[str]] = [str(f) for f in files]
            to_measure += [w[1] for w in winners]
            results = measure_on_host(
                to_measure,
                names=[f.stem for f in files] + [w[0] for w in winners],
                seconds=args.seconds,
                min_runs=200,
                target=target,
            )
            for r, w in zip(results[len(files) :], winners, strict=True):
                r["predicted_from_torch_ms"] = w[2]
            saved.write_text(json.dumps(results))
        exported = [(f.stem, onnx.load(str(f))) for f in files]
        preds = []
        for _, model in exported:
            g, b = from_onnx(model)
            preds.append(target.predict(g, b).latency_ms)
        preds += [r["predicted_from_torch_ms"] for r in results[len(files) :]]
        # the kernel lists of the exported networks against onnxruntime's optimized graphs
        rules = check_kernel_rules(exported, target.constants.nchwc_block)
    rows = [
        {
            "model": r["name"],
            "predicted_ms": p_,
            "measured_ms": r["latency_ms"],
            "raw_measured_ms": r["raw_latency_ms"],
            "ratio": p_ / r["latency_ms"],
        }
        for r, p_ in zip(results, preds, strict=True)
    ]
    meas = [r["measured_ms"] for r in rows]
    summary: dict[str, Any] = {
        "all": fidelity(preds, meas),
        "all_raw": fidelity(preds, [r["raw_measured_ms"] for r in rows]),
        "fp32": fidelity(
            [r["predicted_ms"] for r in rows if r["model"].endswith("fp32")],
            [r["measured_ms"] for r in rows if r["model"].endswith("fp32")],
        ),
        "int8": fidelity(
            [r["predicted_ms"] for r in rows if r["model"].endswith("int8")],
            [r["measured_ms"] for r in rows if r["model"].endswith("int8")],
        ),
        "winners": {
            "ratios": [round(r["ratio"], 3) for r in rows if r["model"].startswith("winner")],
            "raw_ratios": [
                round(r["predicted_ms"] / r["raw_measured_ms"], 3)
                for r in rows
                if r["model"].startswith("winner")
            ],
        },
        "noise_ceiling": noise_ceiling(results),
        "target_fidelity_on_suite": target.provenance.fidelity,
        "target_date": target.provenance.date,
        "kernel_rules": {k: rules[k] for k in ("models", "agree", "nchwc_block")}
        | {"disagree": sorted(rules["disagree"])},
    }
    for r in rows:
        print(
            f"{r['model']:28s} pred {r['predicted_ms']:.4f}  meas {r['measured_ms']:.4f}  "
            f"ratio {r['ratio']:.2f}"
        )
    print(
        "measured_ms: the agent's latency (10th percentile of chunk medians) rescaled to the "
        "calibration's machine speed by the reference model; all_raw: not rescaled"
    )
    w = summary["winners"]
    if w["ratios"]:
        print(
            f"exported students, predicted/measured: {w['ratios']} "
            f"(raw: {w['raw_ratios']}); within 15%: "
            f"{sum(abs(x - 1) <= 0.15 for x in w['ratios'])}/{len(w['ratios'])}"
        )
    for k in ("all", "fp32", "int8", "all_raw"):
        f = summary[k]
        print(
            f"{k:5s}: n={f['n']:.0f} within ±10%: {f['within_10pct']:.0%}  Spearman "
            f"{f['spearman']:.3f}  MdAPE {f['mdape']:.1f}%"
        )
    print(
        f"kernel rules match onnxruntime's optimized graphs on {rules['agree']}/{rules['models']}"
        f" of these ONNX models (NCHWc block {rules['nchwc_block']})"
    )
    nc = summary["noise_ceiling"]
    print(
        f"noise ceiling: {nc['within_10pct']:.0%} of models agree within 10% between two "
        f"interleaved passes (median diff {nc['median_diff_pct']:.1f}%)"
    )
    tag = "" if families == BASE_FAMILIES else "_".join(families) + "_"
    if shapes != BASE_SHAPES:
        tag += "shapes_" + "_".join(f"{h}x{w}" for h, w in shapes) + "_"
    summary["families"] = list(families)
    summary["cpu"] = {k: device_info()[k] for k in ("cpu_model", "cpu_flags")}
    out = RESULTS / f"host_fidelity_{tag}seed{args.seed}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
