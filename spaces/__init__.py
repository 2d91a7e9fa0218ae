"""Search-space knobs: one per compression method, plus the joint space that composes them.

``ls spaces/`` shows the plug-in points: :mod:`spaces.base` (the :class:`Knob` interface),
:mod:`spaces.pruning`, :mod:`spaces.quantization`, :mod:`spaces.distillation` and
:mod:`spaces.joint`; :mod:`spaces.functional` makes functional joins (``+``, ``*``,
``torch.cat``) modules the knobs can wrap. The names below are imported on first use, so
``import spaces`` does not load torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Knob": "spaces.base",
    "LayerInfo": "spaces.base",
    "trace_layers": "spaces.base",
    "stage_names": "spaces.base",
    "PruningKnob": "spaces.pruning",
    "Group": "spaces.pruning",
    "kept_channels": "spaces.pruning",
    "QuantizationKnob": "spaces.quantization",
    "QuantConv": "spaces.quantization",
    "QuantLinear": "spaces.quantization",
    "QuantJoin": "spaces.quantization",
    "ActQuant": "spaces.quantization",
    "fold_batchnorm": "spaces.quantization",
    "DistillationKnob": "spaces.distillation",
    "DistillConfig": "spaces.distillation",
    "FinetuneData": "spaces.distillation",
    "Stopped": "spaces.distillation",
    "finetune": "spaces.distillation",
    "accuracy": "spaces.distillation",
    "teacher_logits": "spaces.distillation",
    "modularize": "spaces.functional",
    "JointSpace": "spaces.joint",
    "Policy": "spaces.joint",
    "Student": "spaces.student",
    "build_student": "spaces.student",
    "student_architecture": "spaces.student",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'spaces' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
