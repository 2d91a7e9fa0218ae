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

# onnxruntime's int8 kernels of the suite's other ops, and the float ones (Resize on uint8 keeps
# its op type, so it is matched by the remaining float Resize count)
_Q8_OPS = {"QLinearMul": "mul:q8", "QLinearConcat": "concat:q8", "QLinearSigmoid": "sigmoid:q8",
           "QLinearSoftmax": "softmax:q8", "QLinearAveragePool": "avgpool:q8"}
_FLOAT_OPS = {"Mul": "mul:f32", "Concat": "concat:f32", "Sigmoid": "sigmoid:f32",
              "Softmax": "softmax:f32", "Pad": "pad:f32", "BatchNormalization": "bn:f32p",
              "HardSigmoid": "hardsigmoid", "Relu": "relu:f32", "AveragePool": "avgpool:f32"}


def test_suite_has_new_ops() -> None:
    classes = set()
    for _, model in suite(size="small"):
        graph, bits = from_onnx(model)
        classes |= {k.cls for k in kernels(graph, bits)}
    assert {"bn:f32", "bn:f32p", "mul:f32", "mul:q8", "concat:f32", "concat:q8",
            "sigmoid:fused", "sigmoid:q8", "hardswish:f32", "resize:f32", "resize:q8", "pad:f32",
            "softmax:f32", "softmax:q8"} <= classes


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
        _check_against_ort(name, model, block, tmp_path)


def test_dense_and_mbv3_kernel_lists_match_onnxruntime(tmp_path: object) -> None:
    """The same for the full suite's DenseNet and MobileNetV3 blocks (not in the small suite)."""
    block = nchwc_block_size()
    models = [(n, m) for n, m in suite() if n.startswith(("dense_", "mbv3_"))]
    assert len(models) == 24
    for name, model in models:
        _check_against_ort(name, model, block, tmp_path)


def _check_against_ort(name: str, model: Any, block: int, tmp_path: object) -> None:
    """Counts of onnxruntime's kernels by kind against the kernel list's."""
    ops = _ort_ops(model, tmp_path)
    graph, bits = from_onnx(model)
    kl = kernels(graph, bits, nchwc_block=block)
    ks = [k.cls for k in kl]
    # a hard sigmoid fused into an int8 conv runs in float: a HardSigmoid op
    acts = {la.name: la.act for la in graph.layers}
    hsig = sum(k.cls == "act:f32" and acts[k.layer] == "hardsigmoid" and bits != {}
               for k in kl)
    # a hard swish on a float conv that is not NCHWc: HardSigmoid + Mul (two act:f32); on
    # an int8 conv's output: HardSigmoid + Mul between DQ and Q (one act:f32)
    hswish = sum(k.cls == "act:f32" and acts[k.layer] == "hardswish" for k in kl)
    hswish = hswish // 2 if bits == {} else hswish
    got = {
        "qlinear": sum(
            k.split(":")[0] in WEIGHTED_KERNEL_KINDS and k.endswith((":q8", ":q8s"))
            for k in ks
        ),
        # an NCHWc batch norm runs as an NCHWc depthwise 1x1 conv
        "nchwc": sum(k in ("conv:f32", "pwconv:f32", "dwconv:f32", "bn:f32") for k in ks),
        "reorder": ks.count("reorder"),
        # a QLinearAveragePool channels-last or in NCHW (avgpool:q8p)
        "qlinear_other": sum(k in _Q8_OPS.values() or k == "avgpool:q8p" for k in ks),
        # the CPU EP runs HardSwish as its function body, HardSigmoid + Mul
        # a pool in NCHWc or not (avgpool:f32p) is an AveragePool op
        "float_other": sorted([k.replace("pool:f32p", "pool:f32") for k in ks
                               if k.replace("pool:f32p", "pool:f32") in _FLOAT_OPS.values()]
                              + ["mul:f32"] * (ks.count("hardswish:f32") + hswish)
                              + ["hardsigmoid"] * (ks.count("hardswish:f32") + hsig
                                                   + hswish)),
    }
    want = {
        "qlinear": sum(o in ("QLinearConv", "QGemm") for o, _ in ops),
        "nchwc": sum(o == "Conv" and d.endswith("nchwc") for o, d in ops),
        "reorder": sum(o.startswith("Reorder") for o, _ in ops),
        "qlinear_other": sum(o in _Q8_OPS for o, _ in ops),
        "float_other": sorted(_FLOAT_OPS[o] for o, _ in ops if o in _FLOAT_OPS),
        # (HardSigmoid counted as "hardsigmoid", see _FLOAT_OPS)
    }
    assert got == want, f"{name} (NCHWc block {block})"
