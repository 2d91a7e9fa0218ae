"""The host target: calibrated on this machine, cached, reused (one slow test)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from cost_models import (
    KernelCoefficients,
    KernelConstants,
    Layer,
    LayerGraph,
    Precision,
    kernels,
    latency_ms,
)

pytest.importorskip("onnxruntime")


@pytest.mark.slow
def test_host_calibrates_caches_and_predicts(edgetune_home: Path) -> None:
    import targets
    from targets.host import cache_path, cached_host

    t0 = time.time()
    host = targets.get("host")
    assert cache_path() == edgetune_home / "targets" / "host.json"
    data = json.loads(cache_path().read_text())
    machine = data["provenance"]["machine"]
    assert machine["onnxruntime"] and machine["cpu_model"] and machine["hostname"]
    fid = host.provenance.fidelity
    assert 0 <= fid["within_10pct"] <= 1 and fid["spearman"] > 0.8
    assert host.provenance.n_measurements > 100
    if time.time() - t0 > 1:  # it calibrated now: bounded
        assert time.time() - t0 < 300
    cached = cached_host()
    assert cached is not None and cached.constants == host.constants
    from targets.host import nchwc_block_size

    assert host.constants.nchwc_block == nchwc_block_size()  # fitted for this CPU, and stored
    assert data["constants"]["nchwc_block"] == nchwc_block_size()

    from cost_models import Precision, from_torch
    from search.workloads.models import resnet8

    graph = from_torch(resnet8((1, 28, 28)), (1, 28, 28))
    fp32 = host.predict(graph, {})
    assert 0.05 < fp32.latency_ms < 2.0
    weighted = [la.name for la in graph.layers if la.kind in ("conv", "linear")]
    w4 = host.predict(graph, {name: Precision(4, 32) for name in weighted})
    # weight-only: folded into float weights when the session loads, fp32 speed, int4 size
    assert w4.latency_ms == fp32.latency_ms
    assert w4.size_kb < 0.2 * fp32.size_kb
    # read at 16 bits they are dequantized at every run, into an fp32 kernel without
    # pre-packed weights
    w4a16 = host.predict(graph, {name: Precision(4, 16) for name in weighted})
    assert w4a16.latency_ms > 1.5 * fp32.latency_ms


def test_nchwc_block_is_probed_from_onnxruntime() -> None:
    """The block is the smallest input channel count at which onnxruntime's optimized graph
    reorders a conv's input into NCHWc: a candidate list with more (smaller and larger) counts
    finds the same block, and a list without it the next count that reorders."""
    from targets.host import nchwc_block_size
    from targets.kernel_check import probe_nchwc_block

    block = nchwc_block_size()
    assert block in (8, 16)
    assert probe_nchwc_block((4, 8, 16, 32)) == block
    assert probe_nchwc_block((2 * block,)) == 2 * block


def test_cpu_flags_are_read_from_the_flags_line() -> None:
    from targets.host import _cpu_flags

    flags = _cpu_flags()
    assert all(" " not in f for f in flags)
    if Path("/proc/cpuinfo").is_file() and "avx2" in Path("/proc/cpuinfo").read_text():
        assert "avx2" in flags


def _net(c: int, hw: int, pool: bool) -> LayerGraph:
    """A 3x3 conv (c -> 2c channels), a 2x2 max pool if ``pool``, global pooling, a classifier."""
    conv = Layer("conv", "conv", (1, c, hw, hw), (1, 2 * c, hw, hw), macs=18 * c * c * hw * hw,
                 params=18 * c * c + 2 * c, kernel=3, inputs=("",))
    layers, last, side = [conv], "conv", hw
    if pool:
        side = hw // 2
        layers.append(Layer("pool", "maxpool", conv.out_shape, (1, 2 * c, side, side),
                            macs=2 * c * side * side * 4, kernel=2, stride=2, inputs=("conv",)))
        last = "pool"
    layers += [
        Layer("gap", "gap", (1, 2 * c, side, side), (1, 2 * c, 1, 1), macs=2 * c * side * side,
              inputs=(last,)),
        Layer("fc", "linear", (1, 2 * c), (1, 10), macs=20 * c, params=20 * c + 10,
              inputs=("gap",)),
    ]
    return LayerGraph(tuple(layers), (1, c, hw, hw))


def test_host_fidelity_is_cross_validated_over_whole_architectures() -> None:
    """Every row is held out once, with all the rows of its architecture: the one architecture
    with a costly kernel class no other has is mispredicted by the fit without it, in both of
    its schemes (had one been fitted on, the other would be exact), every other row is exact,
    and the constants returned are fitted on every row."""
    from targets.host import _fit_and_check

    schemes = {"fp32": {}, "w8a16": {"fc": Precision(8, 16)}}
    nets = {f"net{c}x{hw}": _net(c, hw, pool=False) for c in (4, 8, 12, 16, 24) for hw in
            (7, 10, 14, 20, 28)} | {"pooled": _net(8, 14, pool=True)}
    classes = sorted({k.cls for g in nets.values() for b in schemes.values()
                      for k in kernels(g, b)})
    truth = KernelConstants(0.01, 1.0, tuple(
        KernelCoefficients(cls, 0.05 if cls.startswith("maxpool") else 0.001 * (i + 1),
                           0.01 * (i + 1), 0.5) for i, cls in enumerate(classes)))
    rows = [(f"{name}_{scheme}", (g, b, latency_ms(g, b, truth)))
            for name, g in nets.items() for scheme, b in schemes.items()]

    for seed in range(4):  # however the architectures are dealt into folds
        constants, fid = _fit_and_check(rows, seed=seed)
        assert fid["n_heldout"] == len(rows) and len(fid["folds"]) == 4
        assert sum(f["n_heldout"] for f in fid["folds"]) == len(rows)
        assert fid["within_10pct"] == pytest.approx((len(rows) - 2) / len(rows))
        assert fid["mdape"] == pytest.approx(0.0, abs=1e-3)
    g, b, t = rows[-1][1]
    assert latency_ms(g, b, constants) == pytest.approx(t, rel=1e-4)


@pytest.mark.slow
def test_a_new_cost_model_is_refitted_from_the_cached_measurements(
    edgetune_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same machine, same suite, another cost-model version: the host is refitted from the
    cached measurements (not measured again), with the kernel rules checked again and the
    measured candidates kept; measurements of another suite are not used."""
    import shutil

    from cost_models.errors import CalibrationError
    from targets import host
    from targets.suite import suite

    host.host_target()  # the session's calibration, measured once
    home = tmp_path / "home"
    (home / "targets").mkdir(parents=True)
    shutil.copy(edgetune_home / "targets" / "host_measurements.json", home / "targets")
    monkeypatch.setenv("EDGETUNE_HOME", str(home))
    cached = home / "targets" / "host_measurements.json"
    before = json.loads(cached.read_text())
    models = suite()
    host.record_candidates([(models[5][1].SerializeToString(), 0.05)])

    monkeypatch.setattr(host, "MODEL_VERSION", "next-model")
    refitted = host.host_target()
    after = json.loads(cached.read_text())
    assert after["measurements"] == before["measurements"]  # not measured again
    assert after["machine"]["cost_model_version"] == "next-model"
    assert after["kernel_rules"]["models"] == len(models)
    assert refitted.provenance.machine["cost_model_version"] == "next-model"
    assert refitted.provenance.n_measurements == len(models) + 1  # and the candidate
    cached_target = host.cached_host()
    assert cached_target is not None and cached_target.constants == refitted.constants

    cached.write_text(json.dumps({**after, "measurements": after["measurements"][1:]}))
    with pytest.raises(CalibrationError, match="calibrate_host"):
        host.refit_host()
