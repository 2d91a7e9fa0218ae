"""The shipped edge targets, calibrated from public measurements of real devices.

The data is read from ``$EDGETUNE_DEVICE_DATA``, or ``../shared/data/devices`` beside the
repository (see the README there); it is not copied into the repository. Only the fitted
targets are committed (``targets/shipped/NAME.json``), each naming its file and the rows it
held out, so they load without the data. ``python -m experiments.bench_cost_models
--write-shipped`` refits them (it builds the NAS-Bench-201 graphs with ``experiments.nb201``,
which is passed in here as ``nb201_graph``: targets do not import experiments).

Held-out fidelity: NB201 devices fit on ``NB201_FIT`` rows and are judged on ``NB201_TEST``
other rows (seeded sample); the per-layer LUT holds out 25% of its layers; MLPerf Tiny holds
out 25% of the *systems* (all four models of each), since the four models are the only
architectures there.

Energy (:mod:`cost_models.energy`): the Cortex-M targets fit their energy constants (static
power, pJ per int8 MAC, pJ per byte; NNLS) to the MLPerf Tiny rows with measured energy, with
each row's measured latency (*calibrated*). The others have no energy measurement: their
constants are *modelled*, published per-operation energies (Horowitz, ISSCC 2014, 45 nm)
scaled to the SoC's process node (``DeviceSpec.node_nm``, named with its source) plus the
device's power figure as static power. That figure is the device's power under load, so it
already holds part of the dynamic power: the modelled energy errs high.
"""

from __future__ import annotations

import csv
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cost_models.energy import EnergyConstants, published_energy
from cost_models.errors import CalibrationError
from cost_models.graph import LayerGraph, Precision
from cost_models.layerwise import LayerTypeCostModel, default_constants, with_precision
from targets.base import Target
from targets.fitting import CalibrationConfig, calibrate_rows
from targets.measurements import Row

__all__ = [
    "NB201_DEVICES",
    "SHIPPED",
    "build_shipped",
    "data_dir",
    "int8_bits",
    "lut_rows",
    "mlperf_rows",
    "nb201_rows",
]

REPO = Path(__file__).resolve().parents[1]
NB201_FIT, NB201_TEST = 500, 1000

PHONE_POWER = (
    "assumed 2 W for a phone SoC's CPU cluster running one inference: an order-of-magnitude "
    "figure, not a measurement (no public power figure for these runs)"
)


@dataclass(frozen=True)
class DeviceSpec:
    name: str
    description: str
    runtime: str
    power_w: float
    power_source: str
    column: str = ""  # NB201 column
    int8: bool = False  # measured int8: the target has int8 classes (and no fp32 ones)
    node_nm: float = 0.0  # the SoC's process node, for modelled per-operation energies
    node_source: str = ""
    float_bits: int = 32  # 16 where float layers run in half precision

    def energy(self) -> EnergyConstants:
        """Modelled energy constants: the power figure as static power, per-op energies
        scaled to ``node_nm``."""
        return published_energy(
            self.power_w,
            node_nm=self.node_nm,
            float_bits=self.float_bits,
            note=f"static power {self.power_w:g} W: {self.power_source}; process "
            f"{self.node_nm:g} nm: {self.node_source}",
        )


NB201_DEVICES = {
    "raspberry-pi-4": DeviceSpec(
        "raspberry-pi-4",
        "Raspberry Pi 4 (Cortex-A72 CPU), fp32",
        "TFLite/PyTorch CPU (HW-NAS-Bench)",
        3.0,
        "5 V x 600 mA 'typical bare-board active current consumption' of the Raspberry Pi "
        "4 B (raspberrypi.com documentation, power supply table) = 3.0 W",
        column="raspberry_pi_4_ms",
        node_nm=28,
        node_source="Broadcom BCM2711, 28 nm (Raspberry Pi 4 product brief)",
    ),
    "pixel-3": DeviceSpec(
        "pixel-3",
        "Google Pixel 3 CPU, fp32",
        "TFLite CPU (HW-NAS-Bench)",
        2.0,
        PHONE_POWER,
        column="pixel_3_cpu_ms",
        node_nm=10,
        node_source="Qualcomm Snapdragon 845, Samsung 10 nm LPP (Qualcomm product page)",
    ),
    "jetson-nano": DeviceSpec(
        "jetson-nano",
        "NVIDIA Jetson Nano GPU, fp32 (the fp16 build is target jetson-nano-fp16)",
        "TensorRT fp32 (Eagle/BRP-NAS)",
        10.0,
        "NVIDIA Jetson Nano's 10 W power mode (its maximum; NVIDIA Jetson Nano developer kit "
        "user guide: 5 W and 10 W modes), an upper bound",
        column="jetson_nano_fp32_ms",
        node_nm=20,
        node_source="NVIDIA Tegra X1, TSMC 20 nm (NVIDIA Tegra X1 white paper)",
    ),
    "jetson-nano-fp16": DeviceSpec(
        "jetson-nano-fp16",
        "NVIDIA Jetson Nano GPU, fp16: float layers run in half precision",
        "TensorRT fp16 (Eagle/BRP-NAS)",
        10.0,
        "NVIDIA Jetson Nano's 10 W power mode (its maximum), an upper bound",
        column="jetson_nano_fp16_ms",
        node_nm=20,
        node_source="NVIDIA Tegra X1, TSMC 20 nm (NVIDIA Tegra X1 white paper)",
        float_bits=16,
    ),
    "edge-tpu": DeviceSpec(
        "edge-tpu",
        "Google Edge TPU, int8 only (fast int8; fp32 layers cannot run on it)",
        "Edge TPU compiler + TFLite (Eagle/BRP-NAS)",
        2.0,
        "Coral Edge TPU: 4 TOPS at 2 TOPS per watt = 2 W (coral.ai Edge TPU performance "
        "page), at full load",
        column="edge_tpu_int8_ms",
        int8=True,
        node_nm=28,
        node_source="not published by Google; 28 nm assumed (a guess, not a figure)",
    ),
    "snapdragon-855-cpu": DeviceSpec(
        "snapdragon-855-cpu",
        "Qualcomm Snapdragon 855 CPU, int8 TFLite (fast int8 kernels; "
        "calibrated on int8 only, so fp32 layers are not covered)",
        "TFLite int8 CPU (Eagle/BRP-NAS)",
        2.0,
        PHONE_POWER,
        column="snapdragon855_cpu_int8_ms",
        int8=True,
        node_nm=7,
        node_source="Qualcomm Snapdragon 855, TSMC 7 nm (Qualcomm product page)",
    ),
}
MCU_DEVICES = {
    "cortex-m7": DeviceSpec(
        "cortex-m7",
        "Arm Cortex-M7 MCU at 280 MHz, int8 (CMSIS-NN-class kernels: fast int8; "
        "fp32 = int8 x the measured float/int8 ratio)",
        "TFLite Micro / X-CUBE-AI / Plumerai (MLPerf Tiny)",
        0.0,
        "",
    ),
    "cortex-m4": DeviceSpec(
        "cortex-m4",
        "Arm Cortex-M4 MCU at 120 MHz, int8 (CMSIS-NN-class kernels: fast int8; "
        "fp32 = int8 x the measured float/int8 ratio)",
        "TFLite Micro / X-CUBE-AI / Plumerai (MLPerf Tiny)",
        0.0,
        "",
    ),
}
MCU_MHZ = {"cortex-m7": 280.0, "cortex-m4": 120.0}
NOTE10 = DeviceSpec(
    "samsung-note10-cpu",
    "Samsung Galaxy Note10 CPU, fp32",
    "TFLite CPU (Once-for-All latency LUT)",
    2.0,
    PHONE_POWER,
    node_nm=7,
    node_source="Exynos 9825 (Samsung 7 nm EUV) or Snapdragon 855 (TSMC 7 nm), by region",
)
SHIPPED = (*NB201_DEVICES, "samsung-note10-cpu", *MCU_DEVICES)


def data_dir() -> Path:
    """``$EDGETUNE_DEVICE_DATA``, else ``../shared/data/devices`` beside the repository."""
    d = Path(os.environ.get("EDGETUNE_DEVICE_DATA") or REPO.parent / "shared" / "data" / "devices")
    if not d.is_dir():
        raise CalibrationError(
            f"device data folder {str(d)!r} does not exist; set EDGETUNE_DEVICE_DATA to the "
            f"folder with nb201_latency.csv, mobile_layer_latency_lut.csv, mlperf_tiny_results.csv"
        )
    return d


def int8_bits(graph: LayerGraph) -> dict[str, Precision]:
    """Every layer int8 (weights and activations), as on an int8-only device."""
    return {
        la.name: Precision(8, 8)
        if la.kind in ("conv", "dwconv", "linear")
        else Precision(act_bits=8)
        for la in graph.layers
    }


def nb201_rows(column: str) -> list[tuple[int, str, float]]:
    """(row, arch_str, latency_ms) of the NB201 table's rows with a value in ``column``."""
    path = data_dir() / "nb201_latency.csv"
    out = []
    with path.open(newline="") as f:
        for i, rec in enumerate(csv.DictReader(f), start=1):
            if column not in rec:
                raise CalibrationError(f"{path}: no column {column!r}")
            if rec[column].strip():
                out.append((i, rec["arch_str"], float(rec[column])))
    return out


def lut_rows() -> list[tuple[int, LayerGraph, float]]:
    """The Note10 LUT rows without squeeze-excite (the layer graph has no SE kind)."""
    from cost_models.builder import GraphBuilder

    path = data_dir() / "mobile_layer_latency_lut.csv"
    out = []
    with path.open(newline="") as f:
        for i, r in enumerate(csv.DictReader(f), start=1):
            if r["device"] != "samsung_note10" or r["se"] == "1":
                continue
            ih, ic, oc = int(r["in_h"]), int(r["in_c"]), int(r["out_c"])
            stride = max(1, ih // max(1, int(r["out_h"])))
            b = GraphBuilder((1, ic, ih, int(r["in_w"])))
            t = r["layer_type"]
            if t == "Conv":
                b.conv("", oc, 3, stride=stride)
            elif t in ("Conv_1", "Conv_2"):
                b.conv("", oc, 1)
            elif t == "AvgPool2D":
                b.gap("")
            elif t == "Logits":
                b.linear("", oc)
            else:  # expanded_conv: [1x1 expand], depthwise k, 1x1 project, [+ input]
                mid, k = int(float(r["mid_c"])), int(r["kernel"])
                x = b.conv("", mid, 1) if mid != ic else ""
                x = b.conv(b.conv(x, mid, k, stride=int(r["stride"]), groups=mid), oc, 1)
                if r["id_skip"] == "1" and ic == oc and int(r["stride"]) == 1:
                    b.add(x, "")
            out.append((i, b.build(), float(r["latency_ms_mean"])))
    return out


def _mhz(raw: str) -> float | None:
    tok = raw.replace("MHZ", "MHz").split("MHz")[0].split()
    try:
        return float(tok[-1]) if tok else None
    except ValueError:
        return None


def mlperf_rows(core: str) -> tuple[list[dict[str, Any]], float]:
    """Closed-division MLPerf Tiny rows on ``core`` ("M7"/"M4"), int8, latency scaled to the
    target's clock; and the median float/int8 latency ratio of the paired float/int8 systems."""
    path = data_dir() / "mlperf_tiny_results.csv"
    ref = MCU_MHZ[f"cortex-{core.lower()}"]
    rows: list[dict[str, Any]] = []
    floats: dict[tuple[str, str], float] = {}
    with path.open(newline="") as f:
        for i, r in enumerate(csv.DictReader(f), start=1):
            proc = r["processor"].replace("®", "")
            if r["division"] != "closed" or f"Cortex-{core}" not in proc or r["accelerator"]:
                continue
            mhz = _mhz(r["proc_freq"])
            if mhz is None or not r["latency_ms"]:
                continue
            lat = float(r["latency_ms"]) * mhz / ref
            if r["system"].endswith("_float"):
                floats[(r["system"][: -len("_float")], r["benchmark"])] = lat
                continue
            energy = float(r["energy_uJ_per_inf"]) / 1000 if r["energy_uJ_per_inf"] else None
            rows.append(
                {
                    "row": i,
                    "system": r["system"],
                    "benchmark": r["benchmark"],
                    "latency_ms": lat,
                    "energy_mj": energy,
                    "mhz": mhz,
                }
            )
    by_key: dict[tuple[str, str], float] = {
        (str(r["system"]).removesuffix("_int8"), str(r["benchmark"])): float(r["latency_ms"])
        for r in rows
    }
    ratios = sorted(v / by_key[k] for k, v in floats.items() if k in by_key)
    if not ratios:
        raise CalibrationError(f"{path}: no paired float/int8 rows for Cortex-{core}")
    return rows, ratios[len(ratios) // 2]


def build_shipped(
    name: str, *, nb201_graph: Callable[[str], LayerGraph] | None = None, seed: int = 0
) -> Target:
    """Fit shipped target ``name`` from the device data (see the module docstring)."""
    cm = LayerTypeCostModel()
    if name in NB201_DEVICES:
        if nb201_graph is None:
            raise CalibrationError("NB201 targets need nb201_graph (experiments.nb201)")
        spec = NB201_DEVICES[name]
        all_rows = nb201_rows(spec.column)
        rng = random.Random(seed)
        picked = rng.sample(all_rows, min(len(all_rows), NB201_FIT + NB201_TEST))
        rows = []
        for i, arch, lat in picked:
            g = nb201_graph(arch)
            rows.append(Row(i, arch, (g, int8_bits(g) if spec.int8 else {}, lat)))
        test = [r.row for r in rows[NB201_FIT:]]
        src = f"{data_dir().name}/nb201_latency.csv, column {spec.column}"
        config = CalibrationConfig(
            cost_model=cm,
            base=default_constants(spec.power_w, spec.power_source,
                                   energy_constants=spec.energy()),
            description=spec.description,
            runtime=spec.runtime,
            source=src,
            heldout_rows=test,
            notes=f"fitted on {NB201_FIT} rows, judged on {len(test)} other rows (seeded sample "
            f"of the {len(all_rows)} rows with a value); rows = data rows of the CSV",
        )
        return calibrate_rows(name, rows, config)
    if name == NOTE10.name:
        lrows = [Row(i, f"lut row {i}", (g, {}, lat)) for i, g, lat in lut_rows()]
        config = CalibrationConfig(
            cost_model=cm,
            base=default_constants(NOTE10.power_w, NOTE10.power_source,
                                   energy_constants=NOTE10.energy()),
            description=NOTE10.description,
            runtime=NOTE10.runtime,
            seed=seed,
            source=f"{data_dir().name}/mobile_layer_latency_lut.csv, device samsung_note10",
            notes="per-layer rows without squeeze-excite (the layer graph has no SE kind; "
            "those rows are not used); 25% of layers held out",
        )
        return calibrate_rows(name, lrows, config)
    if name in MCU_DEVICES:
        from targets.mlperf_tiny import mlperf_graph

        spec = MCU_DEVICES[name]
        core = name.split("-")[1].upper()
        mrows, ratio = mlperf_rows(core)
        graphs = {b: mlperf_graph(b) for b in ("ic", "kws", "vww", "ad")}
        rows = [
            Row(
                r["row"],
                f"{r['system']}/{r['benchmark']}",
                (graphs[r["benchmark"]], int8_bits(graphs[r["benchmark"]]), r["latency_ms"]),
                r["energy_mj"],
            )
            for r in mrows
            if r["benchmark"] in graphs
        ]
        config = CalibrationConfig(
            cost_model=cm,
            base=default_constants(0.1, "replaced by the fit"),
            description=spec.description,
            runtime=spec.runtime,
            seed=seed,
            group=lambda r: r.label.split("/")[0],
            finalize=lambda c: with_precision(c, "int8", "fp32", ratio),
            fp32_per_int8=ratio,
            source=f"{data_dir().name}/mlperf_tiny_results.csv, closed division, Cortex-{core}, "
            f"no accelerator",
            notes=f"latency scaled to {MCU_MHZ[name]:.0f} MHz (x MHz / {MCU_MHZ[name]:.0f}); "
            f"25% of systems held out (all 4 models each); fp32 classes = int8 x "
            f"{ratio:.2f}, the median float/int8 latency ratio of the paired Bosch "
            f"float/int8 systems; energy constants fitted (NNLS) to the measured uJ/inference "
            f"rows with their measured latency (fp32 MAC energy = int8 x {ratio:.2f})",
        )
        return calibrate_rows(name, rows, config)
    raise CalibrationError(f"unknown shipped target {name!r}; valid: {', '.join(SHIPPED)}")
