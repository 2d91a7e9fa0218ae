"""Cost models: pure functions from (layer graph, bit-widths, device constants) to costs.

No I/O here, and nothing heavy at import: torch and onnx are imported inside
:func:`from_torch` and :func:`from_onnx`.
"""

from __future__ import annotations

from cost_models.analytic import (
    KernelCoefficients,
    KernelConstants,
    KernelCostModel,
    latency_ms,
    peak_memory_kb,
    predict,
    size_kb,
)
from cost_models.base import CostModel, Measurement
from cost_models.baseline import compare_folds, compare_heldout, fit_flops_constant, total_macs
from cost_models.builder import GraphBuilder
from cost_models.energy import EnergyConstants, energy_mj, published_energy
from cost_models.fidelity import fidelity, spearman
from cost_models.fit import fit_energy_constants, fit_kernel_constants, fit_linear, nnls
from cost_models.graph import (
    FLOAT_BITS,
    LAYER_KINDS,
    Bits,
    Costs,
    Layer,
    LayerGraph,
    Precision,
)
from cost_models.kernels import Kernel, kernels
from cost_models.layerwise import LayerTypeConstants, LayerTypeCostModel, with_precision
from cost_models.onnx_graph import from_onnx
from cost_models.torch_graph import from_torch

__all__ = [
    "FLOAT_BITS",
    "LAYER_KINDS",
    "Bits",
    "CostModel",
    "Costs",
    "EnergyConstants",
    "GraphBuilder",
    "Kernel",
    "KernelCoefficients",
    "KernelConstants",
    "KernelCostModel",
    "Layer",
    "LayerGraph",
    "LayerTypeConstants",
    "LayerTypeCostModel",
    "Measurement",
    "Precision",
    "compare_folds",
    "compare_heldout",
    "energy_mj",
    "fidelity",
    "fit_energy_constants",
    "fit_flops_constant",
    "fit_kernel_constants",
    "fit_linear",
    "from_onnx",
    "from_torch",
    "kernels",
    "latency_ms",
    "nnls",
    "peak_memory_kb",
    "predict",
    "published_energy",
    "size_kb",
    "spearman",
    "total_macs",
    "with_precision",
]
