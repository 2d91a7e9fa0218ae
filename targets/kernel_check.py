"""What onnxruntime does on this machine, read off its optimized graphs: the NCHWc channel block
it picks, and whether :func:`cost_models.kernels` lists the kernels it runs.

The kernel rules were read off onnxruntime's graphs on particular CPUs; another CPU (another
instruction set, another onnxruntime build) may fuse or lay out differently. So the host's
calibration probes the block here and checks the rules against every suite model, and the
calibration records the models where they disagree (``kernel_rules`` in its fidelity). The
latency fit then still prices those models, but ``targets`` and ``calibrate`` say how far the
kernel list can be trusted on this CPU.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cost_models.kernels import WEIGHTED_KERNEL_KINDS, kernels

if TYPE_CHECKING:
    import onnx

    from cost_models.graph import Bits, LayerGraph

__all__ = [
    "check_kernel_rules",
    "optimized_ops",
    "ort_kernel_counts",
    "probe_nchwc_block",
    "rule_kernel_counts",
]

# onnxruntime's int8 kernels of the other ops, and the float ones (Resize on uint8 keeps its op
# type: it is matched by the float Resize count)
_Q8_OPS = {"QLinearMul": "mul:q8", "QLinearConcat": "concat:q8", "QLinearSigmoid": "sigmoid:q8",
           "QLinearSoftmax": "softmax:q8", "QLinearAveragePool": "avgpool:q8",
           "QLinearGlobalAveragePool": "gap:q8"}
_FLOAT_OPS = {"Mul": "mul:f32", "Concat": "concat:f32", "Sigmoid": "sigmoid:f32",
              "Softmax": "softmax:f32", "Pad": "pad:f32", "BatchNormalization": "bn:f32p",
              "HardSigmoid": "hardsigmoid", "Relu": "relu:f32", "AveragePool": "avgpool:f32",
              "GlobalAveragePool": "gap:f32"}


def optimized_ops(model: onnx.ModelProto) -> list[tuple[str, str]]:
    """(op_type, domain) of each node of the graph onnxruntime's CPU EP optimizes ``model`` to
    (all optimizations, as the agent measures)."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "optimized.onnx")
        so = ort.SessionOptions()
        so.optimized_model_filepath = path
        so.log_severity_level = 3
        so.intra_op_num_threads = 1
        ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        return [(n.op_type, n.domain) for n in onnx.load(path).graph.node]


def ort_kernel_counts(model: onnx.ModelProto) -> dict[str, Any]:
    """Counts, by kind, of the kernels onnxruntime runs for ``model`` on this machine: fused
    int8 convs/GEMMs, NCHWc convs, reorders, other int8 ops, and the other float ops."""
    ops = optimized_ops(model)
    return {
        "qlinear": sum(o in ("QLinearConv", "QGemm") for o, _ in ops),
        "nchwc": sum(o == "Conv" and d.endswith("nchwc") for o, d in ops),
        "reorder": sum(o.startswith("Reorder") for o, _ in ops),
        "qlinear_other": sum(o in _Q8_OPS for o, _ in ops),
        "float_other": sorted(_FLOAT_OPS[o] for o, _ in ops if o in _FLOAT_OPS),
    }


def rule_kernel_counts(graph: LayerGraph, bits: Bits, block: int) -> dict[str, Any]:
    """The same counts from :func:`cost_models.kernels.kernels` at NCHWc block ``block``."""
    kl = kernels(graph, bits, nchwc_block=block)
    ks = [k.cls for k in kl]
    acts = {la.name: la.act for la in graph.layers}
    # a hard sigmoid after an int8 conv runs in float: a HardSigmoid op; a hard swish after a
    # plain float conv runs as its function body (HardSigmoid + Mul: two act:f32), after an
    # int8 conv between DQ and Q (one act:f32)
    hsig = sum(k.cls == "act:f32" and acts[k.layer] == "hardsigmoid" and bits != {} for k in kl)
    hswish = sum(k.cls == "act:f32" and acts[k.layer] == "hardswish" for k in kl)
    hswish = hswish // 2 if bits == {} else hswish
    standalone_hswish = ks.count("hardswish:f32")
    return {
        "qlinear": sum(
            k.split(":")[0] in WEIGHTED_KERNEL_KINDS and k.endswith((":q8", ":q8s")) for k in ks
        ),
        # an NCHWc batch norm runs as an NCHWc depthwise 1x1 conv
        "nchwc": sum(k in ("conv:f32", "pwconv:f32", "pwconv:f32n", "dwconv:f32", "bn:f32")
                      for k in ks),
        "reorder": ks.count("reorder"),
        # a QLinearAveragePool channels-last or in NCHW (avgpool:q8p)
        "qlinear_other": sum(k in _Q8_OPS.values() or k == "avgpool:q8p" for k in ks),
        # a pool in NCHWc or not (avgpool:f32p) is an AveragePool op
        "float_other": sorted(
            [k.replace("pool:f32p", "pool:f32") for k in ks
             if k.replace("pool:f32p", "pool:f32") in _FLOAT_OPS.values()]
            + ["mul:f32"] * (standalone_hswish + hswish)
            + ["hardsigmoid"] * (standalone_hswish + hsig + hswish)
        ),
    }


def check_kernel_rules(
    models: Sequence[tuple[str, onnx.ModelProto]], block: int
) -> dict[str, Any]:
    """The rules against onnxruntime on ``models``: how many agree, and the names of those that
    do not (with onnxruntime's counts and the rules')."""
    from cost_models.onnx_graph import from_onnx

    disagree: dict[str, Any] = {}
    for name, model in models:
        graph, bits = from_onnx(model)
        want, got = ort_kernel_counts(model), rule_kernel_counts(graph, bits, block)
        if want != got:
            disagree[name] = {"onnxruntime": want, "rules": got}
    return {
        "models": len(models),
        "agree": len(models) - len(disagree),
        "nchwc_block": block,
        "disagree": disagree,
    }


def probe_nchwc_block(candidates: Sequence[int] = (8, 16)) -> int:
    """MLAS's NCHWc channel block on this machine, as onnxruntime shows it: a float 3x3 conv
    whose input has ``block`` channels reads it through a ``ReorderInput`` (NCHWc input), one
    with fewer channels reads plain NCHW. The smallest candidate whose conv reorders its input
    is the block (8 with AVX2, 16 with AVX-512F)."""
    from targets.onnx_builder import OnnxBuilder

    for block in sorted(candidates):
        b = OnnxBuilder((block, 14, 14), seed=0)
        ops = optimized_ops(b.build(b.conv("input", block, 32, 3, prec=(32, 32)), "probe"))
        if any(o == "ReorderInput" for o, _ in ops):
            return block
    return max(candidates)
