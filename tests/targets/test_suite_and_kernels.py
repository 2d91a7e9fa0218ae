"""The suite parses back to its precisions, and the kernel list matches onnxruntime's fusions."""

from __future__ import annotations

import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from cost_models import Precision, from_onnx, kernels  # noqa: E402
from targets.host import nchwc_block_size  # noqa: E402
from targets.kernel_check import check_kernel_rules  # noqa: E402
from targets.suite import suite  # noqa: E402


def test_suite_has_new_ops() -> None:
    classes = set()
    for _, model in suite(size="small"):
        graph, bits = from_onnx(model)
        classes |= {k.cls for k in kernels(graph, bits)}
    assert {"bn:f32", "bn:f32p", "mul:f32", "mul:q8", "concat:f32", "concat:q8",
            "sigmoid:fused", "sigmoid:q8", "hardswish:f32", "resize:f32", "resize:q8", "pad:f32",
            "softmax:f32", "softmax:q8"} <= classes


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


def test_kernel_list_matches_onnxruntime() -> None:
    """Fused int8 convs/gemms, NCHWc convs, reorders and the other ops: as many as onnxruntime
    makes on this CPU, at the NCHWc channel block probed here (8 on AVX2, 16 with AVX-512F)."""
    block = nchwc_block_size()
    assert block in (8, 16)
    check = check_kernel_rules(suite(size="small"), block)
    assert check["agree"] == check["models"], check["disagree"]


def test_dense_and_mbv3_kernel_lists_match_onnxruntime() -> None:
    """The same for the full suite's DenseNet and MobileNetV3 blocks (not in the small suite)."""
    models = [(n, m) for n, m in suite() if n.startswith(("dense_", "mbv3_"))]
    assert len(models) == 24
    check = check_kernel_rules(models, nchwc_block_size())
    assert check["agree"] == check["models"], check["disagree"]


def test_a_wrong_block_is_caught() -> None:
    """The check can fail: the rules at the other block disagree with onnxruntime on models
    whose convs have 8..15 input channels."""
    other = 8 if nchwc_block_size() == 16 else 16
    check = check_kernel_rules(suite(size="small"), other)
    assert check["agree"] < check["models"]
    counts = next(iter(check["disagree"].values()))
    assert counts["onnxruntime"] != counts["rules"]
