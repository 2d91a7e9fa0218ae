"""The host target: calibrated on this machine, cached, reused (one slow test)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

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
