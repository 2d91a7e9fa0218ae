"""The weight-only benchmark's comparison form: the export's Cast + Mul weights rewritten as
DequantizeLinear compute the same, and onnxruntime keeps that form at run time."""

from __future__ import annotations

import torch

from cost_models.graph import Precision
from experiments.bench_weight_only import as_dequantize
from search.onnx_export import run_onnx, to_onnx
from search.workloads.models import resnet8
from spaces.quantization import quantize_model
from targets.kernel_check import optimized_ops


def test_the_dequantize_form_computes_the_same_and_is_not_folded() -> None:
    torch.manual_seed(0)
    teacher = resnet8((1, 16, 16)).eval()
    convs = [n for n, m in teacher.named_modules() if isinstance(m, torch.nn.Conv2d)]
    student = quantize_model(teacher, {n: Precision(8, 32) for n in convs},
                             torch.randn(32, 1, 16, 16), reduce_range=False)
    folded = to_onnx(student, (1, 16, 16))
    kept = as_dequantize(folded)
    x = torch.randn(64, 1, 16, 16)
    assert torch.allclose(run_onnx(folded, x), run_onnx(kept, x), atol=1e-5)
    assert [n.op_type for n in kept.graph.node].count("DequantizeLinear") == len(convs)
    assert "Cast" not in [n.op_type for n in kept.graph.node]
    ran_kept = [op for op, _ in optimized_ops(kept)]
    ran_folded = [op for op, _ in optimized_ops(folded)]
    assert ran_kept.count("DequantizeLinear") == len(convs)  # at every inference
    assert "DequantizeLinear" not in ran_folded
