"""The suite parses back to its precisions, and the kernel list matches onnxruntime's fusions."""

from __future__ import annotations

from typing import Any

import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from cost_models import Precision, from_onnx, kernels  # noqa: E402
from cost_models.kernels import WEIGHTED_KERNEL_KINDS  # noqa: E402
from targets.host import nchwc_block_size  # noqa: E402
from targets.suite import suite  # noqa: E402


def _ort_ops(model: Any, tmp_path: object) -> list[tuple[str, str]]:
    path = f"{tmp_path}/opt.onnx"
    so = ort.SessionOptions()
    so.optimized_model_filepath = path
    so.log_severity_level = 3
    ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return [(n.op_type, n.domain) for n in onnx.load(path).graph.node]


def test_suite_precisions() -> None:
    models = dict(suite(size="small"))
    assert len(models) >= 20
    for name, model in models.items():
        graph, bits = from_onnx(model)
        weighted = [la.name for la in graph.layers if la.kind in ("conv", "dwconv", "linear")]
        if name.endswith("_fp32"):
            assert bits == {}
        if name.endswith("_int8"):
            assert all(bits[n] == Precision(8, 8) for n in weighted)


def test_kernel_list_matches_onnxruntime(tmp_path: object) -> None:
    """Fused int8 convs/gemms, NCHWc convs and reorders: as many as onnxruntime makes on this
    CPU, whose NCHWc channel block (8 on AVX2, 16 with AVX-512F) the host target detects."""
    block = nchwc_block_size()
    for name, model in suite(size="small"):
        if "pool" in name:
            continue
        ops = _ort_ops(model, tmp_path)
        graph, bits = from_onnx(model)
        ks = [k.cls for k in kernels(graph, bits, nchwc_block=block)]
        got = {
            "qlinear": sum(
                k.split(":")[0] in WEIGHTED_KERNEL_KINDS and k.endswith((":q8", ":q8s"))
                for k in ks
            ),
            "nchwc": sum(k in ("conv:f32", "pwconv:f32", "dwconv:f32") for k in ks),
            "reorder": ks.count("reorder"),
        }
        want = {
            "qlinear": sum(o in ("QLinearConv", "QGemm") for o, _ in ops),
            "nchwc": sum(o == "Conv" and d.endswith("nchwc") for o, d in ops),
            "reorder": sum(o.startswith("Reorder") for o, _ in ops),
        }
        assert got == want, f"{name} (NCHWc block {block})"
