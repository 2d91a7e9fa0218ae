"""The student recipe: the one place a candidate is made from a trial's parameters.

A params dict (from ``JointSpace.suggest`` or a stored trial) decodes to a :class:`Policy`;
the teacher is pruned as the policy says (channels physically removed), and the pruned float
model is BN-folded and fake-quantized per layer. The trial, the export, the seeding, ``check``
and the benchmarks all make their students here, so a change to the recipe is made once.

:func:`student_architecture` is the cheap path, for ruling a proposal out on the cost model:
it prunes a weightless copy and stops at the layer graph (no weights copied, no quantization,
no fine-tune). :func:`build_student` makes the student a fine-tune trains. Both give the same
layer graph for the same params.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import Tensor, nn

    from cost_models.graph import LayerGraph
    from spaces.joint import JointSpace, Policy


@dataclass(frozen=True)
class Student:
    """One candidate, made from its params.

    ``pruned`` is the float model with channels removed (weightless for an architecture-only
    student); ``graph`` its layer graph, which the cost models price with ``policy.bits``;
    ``model`` the BN-folded, fake-quantized student to fine-tune (None when only the
    architecture was asked for).
    """

    params: Mapping[str, Any]
    policy: Policy
    pruned: nn.Module
    graph: LayerGraph
    model: nn.Module | None = field(default=None)

    def summary(self) -> dict[str, Any]:
        """What a trial records of its policy: bits and kept channels per layer, the pruning
        ratios and the distillation settings."""
        from spaces.pruning import kept_channels

        kd = asdict(self.policy.distillation)
        return {
            "bits": {k: [p.weight_bits, p.act_bits] for k, p in self.policy.bits.items()},
            "kept_channels": kept_channels(self.pruned),
            "pruning_ratios": dict(self.policy.ratios),
            "distillation": {k: kd[k] for k in ("temperature", "alpha", "lr", "steps")},
        }


def architecture_key(summary: Mapping[str, Any]) -> str:
    """The architecture a :meth:`Student.summary` (or a trial record's policy) describes: its
    bits and kept channels per layer, not its distillation settings. Two params that make the
    same student, as pruning ratios that round to the same channels do, have the same key."""
    return json.dumps({k: summary.get(k) for k in ("bits", "kept_channels")}, sort_keys=True)


def student_architecture(
    teacher: nn.Module, params: Mapping[str, Any], space: JointSpace
) -> Student:
    """The student's architecture and layer graph only: for pricing, not for inference."""
    from cost_models import from_torch

    policy = space.decode(params)
    pruned = space.prune(teacher, policy, weights=False)
    return Student(dict(params), policy, pruned, from_torch(pruned, space.input_shape))


def build_student(
    teacher: nn.Module,
    params: Mapping[str, Any],
    space: JointSpace,
    *,
    calib: Tensor,
    reduce_range: bool,
) -> Student:
    """The untrained student of ``params``: pruned (a copy, magnitude-ranked channels removed),
    BN-folded and fake-quantized, with activation ranges calibrated on ``calib``.
    ``reduce_range`` keeps 8-bit weights in ±63, for runtimes whose int8 kernels saturate."""
    from cost_models import from_torch
    from spaces.quantization import quantize_model

    policy = space.decode(params)
    pruned = space.prune(teacher, policy)
    model = quantize_model(pruned, policy.bits, calib, reduce_range=reduce_range)
    return Student(dict(params), policy, pruned, from_torch(pruned, space.input_shape), model)
