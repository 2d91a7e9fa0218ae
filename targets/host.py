"""The ``host`` target: onnxruntime's CPU EP on the machine edgetune runs on, calibrated there.

onnxruntime CPU execution provider, batch 1, ``intra_op_num_threads=1``,
``inter_op_num_threads=1``, sequential execution, all graph optimizations.

On first use the micro-benchmark suite (:mod:`targets.suite`) is measured with the agent
(:mod:`targets.agent`), the kernel cost model's latency constants are fitted (NNLS) on every
row, and fidelity is cross-validated over the suite's architectures (:func:`_fit_and_check`).
The result is cached as JSON in ``$EDGETUNE_HOME/targets/host.json`` (default
``./.edgetune``), with the date, the machine (hostname, CPU model, onnxruntime version) and the
fidelity, and reused while the machine, the onnxruntime version and the cost model's version
match. The suite measurements are cached beside it (``host_measurements.json``) for
:func:`refit_host`, and so are the measured search candidates: when only the cost model's
version changed (the same machine and suite), the host is refitted from them in seconds;
otherwise it is measured again.
A calibration measures the suite's 816 models for ``CALIBRATION_SECONDS``, plus the sessions'
set-up.

The kernels onnxruntime runs depend on the CPU: MLAS's NCHWc layout blocks channels by 8 with
AVX2 and by 16 with AVX-512F. :func:`nchwc_block_size` probes it from the graphs onnxruntime
optimizes here; the calibration fits the kernels of that block and records it
(``constants.nchwc_block``; a cache written before it was recorded means 8). The calibration
also checks the kernel rules against onnxruntime's optimized graph of every suite model
(:func:`targets.kernel_check.check_kernel_rules`) and records where they disagree
(``fidelity["kernel_rules"]``), and it records the CPU's instruction sets (``cpu_isa``) beside
its model name; a cached calibration is reused only on the same CPU model and flags.

A machine shared with other tenants changes speed with their load, so the agent takes each
model's latency as the 10th percentile of its chunk medians (the uncontended latency; see
:mod:`targets.agent`), and measures a fixed reference model
(:func:`targets.suite.reference_model`) between the suite models; the reference's latency at
calibration is stored (``reference_ms``). :func:`measure_on_host` measures other models the same
way and rescales them to the calibration's machine speed (the plain measurement is
``raw_latency_ms``): use it to compare a measurement with a prediction.

Energy is not measured (the agent reads no power counters): it is *modelled*
(:func:`host_energy`): static power ``POWER_W``, one core's share of a server CPU's TDP
(``POWER_SOURCE`` names the figure), plus published per-operation energies scaled to that
CPU's process node (``NODE_NM``). An order-of-magnitude figure, not a measurement of the
machine. A cached calibration gets the current modelled energy when it is loaded.
"""

from __future__ import annotations

import datetime
import functools
import json
import os
import random
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from cost_models.analytic import KernelConstants, KernelCostModel, latency_ms
from cost_models.base import Measurement
from cost_models.baseline import Fold, compare_folds
from cost_models.energy import EnergyConstants, published_energy
from cost_models.errors import CalibrationError
from cost_models.fit import fit_kernel_constants
from cost_models.kernels import NCHWC_BLOCK
from targets.base import Provenance, Target, target_from_dict, target_to_dict
from targets.errors import TargetError

__all__ = [
    "DESCRIPTION",
    "RUNTIME",
    "cache_path",
    "cached_host",
    "calibrate_host",
    "cpu_isa",
    "host_energy",
    "host_target",
    "measure_on_host",
    "nchwc_block_size",
    "record_candidates",
    "refit_host",
]

DESCRIPTION = "this machine's CPU, onnxruntime CPU EP, batch 1, one thread"
RUNTIME = "onnxruntime CPUExecutionProvider, intra_op=1, inter_op=1, sequential, ORT_ENABLE_ALL"
MODEL_VERSION = "kernel-16"  # a dense conv outside NCHWc: its im2col (im2col:dense)
POWER_W = 280.0 / 64
POWER_SOURCE = (
    "one core's share of a server CPU's TDP: AMD EPYC 7763 default TDP 280 W / 64 cores = "
    "4.375 W per busy core (AMD product specifications). A generic figure, not a measurement "
    "of this machine's power"
)
NODE_NM = 7.0
NODE_SOURCE = "AMD EPYC 7763 (Zen 3): TSMC 7 nm core dies (AMD product specifications)"
CALIBRATION_SECONDS = 130.0


def host_energy() -> EnergyConstants:
    """The host's modelled energy constants: ``POWER_W`` as static power, per-operation
    energies scaled to ``NODE_NM`` (generic figures, not this machine's)."""
    return published_energy(
        POWER_W, node_nm=NODE_NM, note=f"static power {POWER_W:g} W: {POWER_SOURCE}; process "
        f"{NODE_NM:g} nm: {NODE_SOURCE}",
    )


def cache_path() -> Path:
    """``$EDGETUNE_HOME/targets/host.json``."""
    from targets.home import edgetune_home

    return edgetune_home() / "targets" / "host.json"


def _machine() -> dict[str, Any]:
    from targets.agent import device_info

    info = device_info(threads=1)
    return {
        "hostname": info["hostname"],
        "cpu_model": info["cpu_model"],
        "onnxruntime": info["onnxruntime"],
        "platform": info["platform"],
        "cpu_flags": cpu_flags_digest(),
        "cpu_isa": cpu_isa(),
        "cost_model_version": MODEL_VERSION,
    }


def _same_machine(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether measurements taken on ``a`` hold on ``b``: the same host, CPU model and flags
    (a VM can move to another CPU under the same name) and onnxruntime version. The cost model
    may differ: its rows are refitted, not measured again."""
    keys = ("hostname", "cpu_model", "cpu_flags", "onnxruntime")
    return all(a.get(k) == b.get(k) for k in keys)


def _same_model(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether a calibration applies here: the same machine and cost model."""
    return _same_machine(a, b) and a.get("cost_model_version") == b.get("cost_model_version")


def cached_host() -> Target | None:
    """The cached host target if it was calibrated on this machine and ORT version."""
    path = cache_path()
    if not path.is_file():
        return None
    try:
        target = target_from_dict(json.loads(path.read_text()), where=str(path))
    except (json.JSONDecodeError, OSError, TargetError):
        return None
    if not _same_model(target.provenance.machine, _machine()):
        return None
    return replace(target, constants=replace(target.constants, energy_constants=host_energy()))


@functools.cache
def _cpu_flags() -> frozenset[str]:
    """The CPU feature flags of ``/proc/cpuinfo`` (x86 ``flags``, Arm ``Features``); empty
    where it cannot be read. Read once per process (the digest, the instruction sets and the
    VNNI test all ask)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    flags: set[str] = set()
    for line in info.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return frozenset(flags)


def cpu_flags_digest() -> str:
    """A short digest of this CPU's feature flags: two CPUs with the same model name can differ
    in the instruction sets onnxruntime's kernels use."""
    import hashlib

    return hashlib.sha256(" ".join(sorted(_cpu_flags())).encode()).hexdigest()[:16]


# the instruction sets onnxruntime's CPU kernels choose between (recorded, readable, with each
# calibration; the digest of all flags decides whether a calibration applies)
ISA_FLAGS = frozenset({
    "sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl",
    "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16", "asimd", "asimddp",
    "i8mm", "sve",
})


def cpu_isa() -> list[str]:
    """This CPU's instruction sets among :data:`ISA_FLAGS`, as ``/proc/cpuinfo`` lists them."""
    return sorted(_cpu_flags() & ISA_FLAGS)


def _has_vnni() -> bool:
    """x86 VNNI (AVX512-VNNI or AVX-VNNI) lets onnxruntime's u8×s8 kernels use full 8 bits."""
    flags = _cpu_flags()
    return "avx512_vnni" in flags or "avx_vnni" in flags


@functools.cache
def nchwc_block_size() -> int:
    """MLAS's NCHWc channel block on this machine, probed from the graphs onnxruntime
    optimizes here (:func:`targets.kernel_check.probe_nchwc_block`: 8 with AVX2, 16 with
    AVX-512F)."""
    from targets.kernel_check import probe_nchwc_block

    return probe_nchwc_block()


def host_target() -> Target:
    """The calibrated host target: from the cache; refitted from the cached measurements if
    only the cost model changed since (same machine, same suite); or calibrated now
    (``CALIBRATION_SECONDS`` of measuring)."""
    cached = cached_host()
    if cached is not None:
        return cached
    measured = _cached_measurements()
    return _refit(*measured) if measured is not None else calibrate_host(force=True)


def measure_on_host(
    models: list[bytes | str | os.PathLike[str]],
    *,
    seconds: float = 10.0,
    min_runs: int = 200,
    names: list[str] | None = None,
    target: Target | None = None,
) -> list[dict[str, Any]]:
    """Measure models with the agent, interleaved with the calibration's reference model, so
    that ``latency_ms`` is given at the machine speed of the host calibration (the machine's
    speed drifts with its load; ``raw_latency_ms`` is the plain measurement)."""
    from targets.agent import measure
    from targets.suite import reference_model

    t = target or host_target()
    return measure(
        models,
        seconds=seconds,
        min_runs=min_runs,
        names=names,
        reference=reference_model().SerializeToString(),
        reference_ms=t.provenance.reference_ms,
    )


FOLDS = 4


def _fit_and_check(
    rows: Sequence[tuple[str, Measurement]],
    *,
    nchwc_block: int = NCHWC_BLOCK,
    folds: int = FOLDS,
    seed: int = 0,
) -> tuple[KernelConstants, dict[str, Any]]:
    """The constants fitted on every row, and their held-out fidelity by a grouped k-fold
    cross-validation: the suite's architectures (each with all its precision schemes) are dealt
    into ``folds`` folds, and each fold is predicted by constants fitted on the others. Every
    row is then judged on an architecture the fit has not seen, and the figures do not hang on
    which architectures a single split happens to hold out."""
    specs = sorted({_architecture(name) for name, _ in rows})
    random.Random(seed).shuffle(specs)
    fold_of = {spec: i % folds for i, spec in enumerate(specs)}
    splits: list[Fold] = []
    for k in range(folds):
        train = [(n, m) for n, m in rows if fold_of[_architecture(n)] != k]
        part = _fit(train, nchwc_block)

        def predict(m: Measurement, part: KernelConstants = part) -> float:
            return latency_ms(m[0], m[1], part)

        test = [m for n, m in rows if fold_of[_architecture(n)] == k]
        splits.append(([m for _, m in train], test, predict))
    fid = compare_folds(splits)
    fid["held_out"] = (
        f"{folds}-fold cross-validation over the suite architectures (all their precision "
        f"schemes): each row predicted by constants fitted on the other {folds - 1} folds"
    )
    return _fit(rows, nchwc_block), fid


def _architecture(name: str) -> str:
    """A suite row's architecture: its name without the precision scheme."""
    return name.rsplit("_", 1)[0]


def _fit(rows: Sequence[tuple[str, Measurement]], nchwc_block: int) -> KernelConstants:
    return fit_kernel_constants(
        [m for _, m in rows],
        energy_constants=host_energy(),
        nchwc_block=nchwc_block,
        row_weights=[_row_weight(n) for n, _ in rows],
        ridge=RIDGE,
    )


CHAIN_WEIGHT = 3.0
RIDGE = 1e-4  # a small pull toward zero on scaled coefficients: steadier across calibrations


def _row_weight(name: str) -> float:
    """Whole networks (suite chains and measured search candidates: what edgetune predicts)
    weigh more than single layers."""
    return CHAIN_WEIGHT if name.startswith(("resnet", "dscnn", "mbv2", "cand-")) else 1.0


def calibrate_host(*, force: bool = True, seconds: float = CALIBRATION_SECONDS) -> Target:
    """Measure the suite on this machine, fit, check fidelity, cache and return the target."""
    if not force:
        cached = cached_host()
        if cached is not None:
            return cached
    from targets.agent import measure, noise_ceiling
    from targets.kernel_check import check_kernel_rules
    from targets.suite import reference_model, suite

    t0 = time.time()
    models = suite()
    results = measure(
        [m.SerializeToString() for _, m in models],
        names=[n for n, _ in models],
        seconds=seconds,
        min_runs=100,
        chunk_runs=20,
        reference_every=4,
        reference=reference_model().SerializeToString(),
    )
    # the kernel rules against onnxruntime's optimized graphs: a fact of this machine, the
    # suite and the cost model, kept with the measurements (a refit redoes it for a new model)
    rules = check_kernel_rules(models, nchwc_block_size())
    _write_json(_measurements_path(), {
        "machine": _machine(), "noise_ceiling": noise_ceiling(results), "kernel_rules": rules,
        "measurements": results,
    })
    return _build(models, results, rules, t0)


def _candidates_dir() -> Path:
    return cache_path().parent / "host_candidates"


def record_candidates(models: list[tuple[bytes, float]]) -> None:
    """Keep measured search candidates (QDQ ONNX bytes, latency in ms) as calibration rows of
    this machine: every later fit of the host, in this study and the next, includes them."""
    from targets.candidates import store_candidates

    store_candidates(_candidates_dir(), models, _machine(), _same_machine)


def _candidate_rows() -> list[tuple[str, Measurement]]:
    """The kept candidates of this machine, as (name, (graph, bits, latency_ms)) rows."""
    from targets.candidates import candidate_rows

    return candidate_rows(_candidates_dir(), _machine(), _same_machine)


def refit_host() -> Target:
    """Refit the host from the suite measurements cached by the last calibration and the
    measured search candidates kept since (no new measurements): for a changed cost model on
    the same machine, and during a study, as its candidates are measured."""
    measured = _cached_measurements()
    if measured is None:
        raise CalibrationError(
            f"no measurements of this machine's current suite at {_measurements_path()}; run "
            f"calibrate_host() to measure"
        )
    return _refit(*measured)


def _refit(models: list[tuple[str, Any]], cached: dict[str, Any]) -> Target:
    """:func:`refit_host` from the suite and its cached measurements."""
    rules = cached.get("kernel_rules")
    if rules is None or cached["machine"].get("cost_model_version") != MODEL_VERSION:
        # the kernel rules changed with the cost model: check them again, once
        from targets.kernel_check import check_kernel_rules

        rules = check_kernel_rules(models, nchwc_block_size())
        _write_json(_measurements_path(), {**cached, "machine": _machine(), "kernel_rules": rules})
    return _build(models, cached["measurements"], rules, time.time())


def _measurements_path() -> Path:
    return cache_path().parent / "host_measurements.json"


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` whole or not at all (a temporary file, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def _cached_measurements() -> tuple[list[tuple[str, Any]], dict[str, Any]] | None:
    """The suite and the cached calibration measurements, if they were taken on this machine
    of every model of the current suite; else None."""
    from targets.suite import suite

    path = _measurements_path()
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    models = suite()
    measured = {r.get("name") for r in data.get("measurements", [])}
    if measured != {n for n, _ in models} or not _same_machine(data.get("machine", {}),
                                                                 _machine()):
        return None
    return models, data


def _build(
    models: list[tuple[str, Any]],
    results: list[dict[str, Any]],
    kernel_rules: dict[str, Any],
    t0: float,
) -> Target:
    from cost_models.onnx_graph import from_onnx
    from targets.agent import noise_ceiling

    by_name = dict(models)
    rows: list[tuple[str, Measurement]] = []
    for r in results:
        graph, bits = from_onnx(by_name[r["name"]])
        rows.append((r["name"], (graph, bits, float(r["latency_ms"]))))
    candidates = _candidate_rows()
    rows += candidates
    constants, fid = _fit_and_check(rows, nchwc_block=nchwc_block_size())
    fid["noise_ceiling"] = noise_ceiling(results)
    fid["kernel_rules"] = kernel_rules
    target = Target(
        name="host",
        description=DESCRIPTION,
        runtime=RUNTIME,
        int8_reduce_range=not _has_vnni(),
        cost_model=KernelCostModel(),
        constants=constants,
        provenance=Provenance(
            source="targets.suite micro-benchmarks measured by targets.agent on this machine",
            n_measurements=len(rows),
            date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            machine=_machine(),
            fidelity=fid,
            notes=f"calibration took {time.time() - t0:.0f} s; {len(candidates)} of the rows are "
            f"measured search candidates; energy: {host_energy().label}",
            reference_ms=float(results[0]["reference_ms"]),
        ),
    )
    _write_json(cache_path(), target_to_dict(target))
    from targets import registry

    registry.forget("host")
    return target
