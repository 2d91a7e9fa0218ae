"""The joint search space: pruning, quantization and distillation knobs composed.

``JointSpace(model, input_shape, space)`` builds the knobs the spec enables (distillation is
always on) from the teacher, once per study. ``suggest(trial)`` samples every param (it works
with ``study.ask()``) and ``decode(params)`` turns a params dict into a :class:`Policy`. The
student of a params dict is made in one place, :func:`spaces.student.build_student`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from spaces.base import Knob, suggest_all
from spaces.distillation import DistillationKnob, DistillConfig
from spaces.errors import SpaceError
from spaces.pruning import PruningKnob
from spaces.quantization import QuantizationKnob

if TYPE_CHECKING:
    import optuna
    from optuna.distributions import BaseDistribution
    from torch import nn

    from cost_models.graph import Precision
    from spaces.config import Space


@dataclass(frozen=True)
class Policy:
    """One candidate, decoded.

    ``ratios``: pruning ratio per prunable group (named after its first layer; every group,
    0.0 when pruning is off). ``bits``: Precision per conv, linear and Add layer (empty when
    quantization is off, which means float). ``distillation``: the fine-tune settings.
    """

    ratios: Mapping[str, float]
    bits: Mapping[str, Precision]
    distillation: DistillConfig


class JointSpace:
    """The knobs a spec enables, composed; param names never collide (each knob has a prefix)."""

    def __init__(self, model: nn.Module, input_shape: Sequence[int], space: Space, *,
                 batch_size: int = 64) -> None:
        self.input_shape: tuple[int, ...] = tuple(int(d) for d in input_shape)
        self.pruning = PruningKnob(model, input_shape, space.pruning) if space.pruning else None
        self.quantization = (
            QuantizationKnob(model, input_shape, space.quantization) if space.quantization else None
        )
        self.distillation = DistillationKnob(space.distillation, batch_size=batch_size)
        self._dists: dict[str, BaseDistribution] = {}
        for knob in self.knobs:
            self._dists.update(knob.distributions())

    @property
    def knobs(self) -> list[Knob]:
        """The enabled knobs: pruning, quantization (each if enabled), distillation."""
        return [k for k in (self.pruning, self.quantization, self.distillation) if k is not None]

    def distributions(self) -> dict[str, BaseDistribution]:
        return dict(self._dists)

    def suggest(self, trial: optuna.trial.BaseTrial) -> dict[str, Any]:
        """Sample every param with ``trial.suggest_*``; returns the params dict."""
        return suggest_all(trial, self._dists)

    def decode(self, params: Mapping[str, Any]) -> Policy:
        """The policy of a params dict; StudyError if a param is missing or unknown."""
        unknown = sorted(set(params) - set(self._dists))
        if unknown:
            raise SpaceError(
                f"params hold {unknown}, which this search space does not declare; the params "
                "were made for another model or space spec: sample them with JointSpace.suggest"
            )
        return Policy(
            ratios=self.pruning.decode(params) if self.pruning else {},
            bits=self.quantization.decode(params) if self.quantization else {},
            distillation=self.distillation.decode(params),
        )

    def uniform_params(self, ratio: float = 0.0, weight_bits: int = 32,
                       act_bits: int = 32) -> dict[str, Any]:
        """Every layer at the same setting, distillation at its midpoint: a seed to enqueue.

        SpecError if a value is not in the space (a ratio off [0, max_ratio], bits not among
        the choices, or a compression whose knob is disabled).
        """
        params: dict[str, Any] = {}
        if self.pruning:
            params.update(self.pruning.uniform_params(ratio=ratio))
        elif ratio != 0.0:
            raise SpaceError(f"pruning ratio {ratio} asked, but space.pruning is disabled; use 0")
        if self.quantization:
            params.update(self.quantization.uniform_params(weight_bits=weight_bits,
                                                           act_bits=act_bits))
        elif (weight_bits, act_bits) != (32, 32):
            raise SpaceError(f"bits {weight_bits}/{act_bits} asked, but space.quantization is "
                            "disabled; use 32/32")
        params.update(self.distillation.uniform_params())
        return params

    def prune(self, teacher: nn.Module, policy: Policy, *, weights: bool = True) -> nn.Module:
        """The pruned (float) student, a copy (architecture-only without ``weights``, see
        :func:`spaces.pruning.prune_channels`); the teacher itself when pruning is off."""
        if self.pruning is None:
            return teacher
        return self.pruning.prune(teacher, policy.ratios, weights=weights)
