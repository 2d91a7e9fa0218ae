"""Benchmark of the calibrated cost models: held-out fidelity of every target beside the
FLOPs-proportional baseline, and how fidelity grows with the number of calibration rows.

    python -m experiments.bench_cost_models [--write-shipped] [--no-cli-check]

``--write-shipped`` first refits the shipped targets from ``../shared/data/devices`` (or
``$EDGETUNE_DEVICE_DATA``) and writes ``targets/shipped/*.json``. The scaling study fits each
NB201/LUT device on its first 10, 30, 100, 300 fitting rows and judges every fit on the same
held-out rows. The CLI check calibrates, through ``python -m search.cli calibrate NAME
--measurements CSV``, a fresh target from 100 NB201 networks of each NB201 device column
(exported to ONNX, rows not among the shipped fitting rows), and predicts 1,000 other rows.
Writes ``experiments/results/cost_models.{md,json,png}``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cost_models.base import Measurement

RESULTS = Path(__file__).parent / "results"
SHIPPED_DIR = Path(__file__).resolve().parents[1] / "targets" / "shipped"
SIZES = (10, 30, 100, 300)


@functools.cache
def _graph(arch: str) -> Any:
    from experiments.nb201 import nb201_graph

    return nb201_graph(arch)


def write_shipped() -> None:
    from targets.base import target_to_dict
    from targets.devices import SHIPPED, build_shipped

    SHIPPED_DIR.mkdir(parents=True, exist_ok=True)
    for name in SHIPPED:
        t = build_shipped(name, nb201_graph=_graph)
        (SHIPPED_DIR / f"{name}.json").write_text(json.dumps(target_to_dict(t), indent=1) + "\n")
        print(f"wrote {SHIPPED_DIR / (name + '.json')}", file=sys.stderr)


def _predict_ms(cm: Any, constants: Any, m: Measurement) -> float:
    return float(cm.predict(m[0], m[1], constants).latency_ms)


def _scaling(name: str) -> dict[str, Any]:
    """Fidelity on the shipped target's held-out rows when fitting on n rows only."""
    from cost_models.baseline import compare_heldout
    from cost_models.layerwise import LayerTypeCostModel, default_constants
    from targets.devices import (
        NB201_DEVICES,
        NB201_FIT,
        NB201_TEST,
        int8_bits,
        lut_rows,
        nb201_rows,
    )

    cm = LayerTypeCostModel()
    base = default_constants(1.0, "-")
    if name in NB201_DEVICES:
        spec = NB201_DEVICES[name]
        rows = nb201_rows(spec.column)
        picked = random.Random(0).sample(rows, min(len(rows), NB201_FIT + NB201_TEST))
        ms: list[Measurement] = [
            (g, int8_bits(g) if spec.int8 else {}, lat)
            for g, lat in ((_graph(a), lat) for _, a, lat in picked)
        ]
        fit_pool, test = ms[:NB201_FIT], ms[NB201_FIT:]
    else:
        lr: list[Measurement] = [(g, {}, lat) for _, g, lat in lut_rows()]
        random.Random(0).shuffle(lr)
        test, fit_pool = lr[: len(lr) // 4], lr[len(lr) // 4 :]
    out: dict[str, Any] = {}
    for n in SIZES:
        if n > len(fit_pool):
            continue
        train = fit_pool[:n]
        c = cm.fit(train, base)
        out[str(n)] = compare_heldout(train, test, partial(_predict_ms, cm, c))
    return out


def cli_check(column_device: str, *, n_fit: int = 100, n_test: int = 1000) -> dict[str, Any]:
    """Acceptance (b): `edgetune calibrate` on 100 whole-network ONNX + latency rows of one NB201
    device column, then predictions on 1,000 other rows beside the FLOPs baseline fitted on the
    same 100 rows."""

    from cost_models.baseline import fit_flops_constant, total_macs
    from cost_models.fidelity import fidelity
    from experiments.nb201 import nb201_onnx
    from targets.devices import NB201_DEVICES, NB201_FIT, NB201_TEST, nb201_rows

    spec = NB201_DEVICES[column_device]
    rows = nb201_rows(spec.column)
    shipped_used = {
        r
        for r, _, _ in random.Random(0).sample(rows, min(len(rows), NB201_FIT + NB201_TEST))[
            :NB201_FIT
        ]
    }
    pool = [r for r in rows if r[0] not in shipped_used and _graph(r[1]).layers]
    random.Random(1).shuffle(pool)
    fit_rows, test_rows = pool[:n_fit], pool[n_fit : n_fit + n_test]
    if spec.int8:  # an int8 device: every layer int8 (as the measurements were taken)
        raise RuntimeError("int8 NB201 columns are checked in-process, not via ONNX")
    target = calibrate_cli(
        f"check-{column_device}", [(nb201_onnx(arch), lat) for _, arch, lat in fit_rows]
    )
    meas = [lat for _, _, lat in test_rows]
    pred = [target.predict(_graph(a), {}).latency_ms for _, a, _ in test_rows]
    train_m: list[Measurement] = [(_graph(a), {}, lat) for _, a, lat in fit_rows]
    c = fit_flops_constant(train_m)
    base = fidelity([c * total_macs((_graph(a), {}, 0.0)) for _, a, _ in test_rows], meas)
    model = fidelity(pred, meas)
    beats = (
        model["within_10pct"] > base["within_10pct"]
        and model["spearman"] > base["spearman"]
        and model["mdape"] < base["mdape"]
    )
    return {
        "device": column_device,
        "n_fit": len(fit_rows),
        "n_test": len(test_rows),
        "model": model,
        "flops_baseline": base,
        "beats_baseline_on_every_figure": beats,
    }


def calibrate_cli(name: str, rows: list[tuple[Any, float]]) -> Any:
    """``edgetune calibrate NAME --measurements CSV`` in a fresh EDGETUNE_HOME, on (ONNX
    model, latency_ms) rows written as a CSV beside their model files; the fitted target."""
    import onnx

    from targets.base import load_target_file

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        lines = ["model,latency_ms"]
        for i, (model, lat) in enumerate(rows):
            onnx.save(model, str(tmp / f"m{i}.onnx"))
            lines.append(f"m{i}.onnx,{lat}")
        (tmp / "m.csv").write_text("\n".join(lines) + "\n")
        env = {**os.environ, "EDGETUNE_HOME": str(tmp / "home")}
        proc = subprocess.run(
            [sys.executable, "-m", "search.cli", "calibrate", name, "--measurements",
             str(tmp / "m.csv"), "--json"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"edgetune calibrate failed: {proc.stderr}")
        return load_target_file(tmp / "home" / "targets" / f"{name}.json")


def _fmt(f: dict[str, Any]) -> str:
    return f"{f['within_10pct']:.0%} | {f['spearman']:.3f} | {f['mdape']:.1f}%"


def _host_check_table() -> list[str]:
    """The host's fidelity on independently built networks, one row per
    ``check_host_fidelity`` result file, each with the CPU it ran on and its calibration."""
    md = [
        "",
        "host's held-out rows are suite models. On independently built torch networks (fp32 and "
        "`quantize_static` int8) and exported mixed-precision students, measured with the agent "
        "(`python -m experiments.check_host_fidelity --seed N [--shapes ...] [--families ...]`; "
        "each file a different set of networks; *raw*: the measurement as taken, the other "
        "figure rescaled to the calibration's machine speed by the reference model):",
        "",
        "| file | CPU | calibrated | set | n | within ±10% | Spearman | MdAPE | raw within ±10% |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for path in sorted(RESULTS.glob("host_fidelity_*.json")):
        hs = json.loads(path.read_text())["summary"]
        cpu = hs.get("cpu") or {}
        flags = set(cpu.get("cpu_flags", ()))
        isa = ", AVX-512F" if "avx512f" in flags else ", AVX2" if "avx2" in flags else ""
        name = cpu.get("cpu_model", "not recorded (see host_cpu_notes.md)")
        when = str(hs.get("target_date", "?"))[:16]
        raw = hs.get("all_raw", {}).get("within_10pct")
        for k in ("all", "fp32", "int8"):
            extra = f"{raw:.0%}" if k == "all" and raw is not None else ""
            md.append(
                f"| {path.stem.removeprefix('host_fidelity_')} | {name}{isa} | {when} | {k} | "
                f"{hs[k]['n']:.0f} | {_fmt(hs[k])} | {extra} |"
            )
    return md


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--write-shipped", action="store_true")
    p.add_argument("--no-cli-check", action="store_true")
    args = p.parse_args(argv)
    if args.write_shipped:
        write_shipped()

    import targets
    from targets.devices import NB201_DEVICES

    table = [d for d in targets.describe_targets() if d.get("fidelity")]
    scaling = {n: _scaling(n) for n in (*[d for d in NB201_DEVICES], "samsung-note10-cpu")}
    checks = (
        [] if args.no_cli_check else [cli_check(d) for d, s in NB201_DEVICES.items() if not s.int8]
    )

    md = [
        "# Cost-model fidelity on held-out rows",
        "",
        "| target | cost model | n measurements | n held out | within ±10% | Spearman | MdAPE | "
        "FLOPs within ±10% | FLOPs Spearman | FLOPs MdAPE | energy |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for d in table:
        f = d["fidelity"]
        md.append(
            f"| {d['name']} | {d['cost_model']} | {d['provenance']['n_measurements']} | "
            f"{f['n_heldout']} | {_fmt(f)} | {_fmt(f['flops_baseline'])} | "
            f"{d['energy']['method']} |"
        )
    md += [
        "",
        "n measurements: the rows the shipped constants are refitted on; fidelity is of a fit on the "
        "rows not held out",
    ]
    md += _host_check_table()
    md += [
        "",
        "## Fidelity vs number of calibration rows (same held-out rows)",
        "",
        "| target | rows | within ±10% | Spearman | MdAPE | FLOPs within ±10% | "
        "FLOPs Spearman | FLOPs MdAPE | n held out (unpredictable: a layer class no fitting "
        "row had) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, by_n in scaling.items():
        for n, f in by_n.items():
            md.append(
                f"| {name} | {n} | {_fmt(f)} | {_fmt(f['flops_baseline'])} | "
                f"{f['n_heldout']} ({f['n_unpredictable']}) |"
            )
    if checks:
        md += [
            "",
            "## `edgetune calibrate` with 100 whole-network rows, predicting 1,000 others",
            "",
            "| device column | within ±10% | Spearman | MdAPE | FLOPs within ±10% | "
            "FLOPs Spearman | FLOPs MdAPE | beats FLOPs on every figure |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for c in checks:
            md.append(
                f"| {c['device']} | {_fmt(c['model'])} | {_fmt(c['flops_baseline'])} | "
                f"{c['beats_baseline_on_every_figure']} |"
            )
    text = "\n".join(md) + "\n"
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "cost_models.md").write_text(text)
    (RESULTS / "cost_models.json").write_text(
        json.dumps(
            {"targets": table, "scaling": scaling, "cli_check": checks}, indent=1, default=str
        )
    )
    _plot(scaling, RESULTS / "cost_models.png")
    print(f"wrote {RESULTS / 'cost_models.md'}, .json and .png", file=sys.stderr)
    return 0


def _plot(scaling: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, by_n in scaling.items():
        ns = [int(n) for n in by_n]
        (line,) = axes[0].plot(ns, [by_n[n]["within_10pct"] for n in by_n], marker="o", label=name)
        axes[0].plot(
            ns,
            [by_n[n]["flops_baseline"]["within_10pct"] for n in by_n],
            ls=":",
            color=line.get_color(),
        )
        axes[1].plot(ns, [by_n[n]["spearman"] for n in by_n], marker="o", color=line.get_color())
        axes[1].plot(
            ns,
            [by_n[n]["flops_baseline"]["spearman"] for n in by_n],
            ls=":",
            color=line.get_color(),
        )
    for ax, title in zip(axes, ("share within ±10%", "Spearman ρ"), strict=True):
        ax.set_xscale("log")
        ax.set_xlabel("calibration rows")
        ax.set_title(f"held-out {title} (dotted: FLOPs baseline)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
