"""Peak memory on the host, checked against what onnxruntime reports for the same models.

onnxruntime's profiler records, per executed kernel, ``mem_in_use_peak``: the most bytes its
CPU allocator had in use for the run so far (activations, NCHWc reorder buffers and kernel
workspaces; initializers are not in it). The cost model's activation part of
``peak_memory_kb`` (the total minus the weights in their container) counts live layer outputs
only, so it differs by workspaces and buffer reuse: on the fp32 suite models it is within
0.6-1.5x of onnxruntime's figure. This test pins that band, so a regression in the memory model
(for example counting every activation as live) shows.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ort = pytest.importorskip("onnxruntime")


def test_activation_peak_is_within_band_of_onnxruntime(tmp_path: Path) -> None:
    import numpy as np

    from cost_models import from_onnx
    from cost_models.analytic import _weight_bytes, peak_memory_kb
    from targets.suite import suite

    ratios = []
    for name, model in suite(size="small"):
        if not name.endswith("fp32"):
            continue
        graph, bits = from_onnx(model)
        ours = peak_memory_kb(graph, bits) * 1024 - _weight_bytes(graph, bits)
        so = ort.SessionOptions()
        so.enable_profiling = True
        so.profile_file_prefix = str(tmp_path / name)
        so.intra_op_num_threads = 1
        sess = ort.InferenceSession(
            model.SerializeToString(), so, providers=["CPUExecutionProvider"]
        )
        inp = sess.get_inputs()[0]
        sess.run(
            None,
            {inp.name: np.zeros([d if isinstance(d, int) else 1 for d in inp.shape], np.float32)},
        )
        events = json.loads(Path(sess.end_profiling()).read_text())
        peaks = [
            int(e["args"]["mem_in_use_peak"])
            for e in events
            if e.get("cat") == "Node" and "mem_in_use_peak" in e.get("args", {})
        ]
        if not peaks:
            pytest.skip("this onnxruntime does not report mem_in_use_peak")
        ratios.append(ours / max(peaks))
    assert len(ratios) >= 8
    assert all(0.5 <= r <= 2.0 for r in ratios), ratios
