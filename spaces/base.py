"""The knob interface, and the model tracing every knob shares.

A :class:`Knob` is one compression method's part of the search space. It is built once per
study from the teacher (and the spec's section for that method), declares the Optuna
distributions it needs, and turns a sampled params dict back into its part of a policy. It
knows nothing about Optuna storage, Ray or targets: :class:`spaces.joint.JointSpace` composes the
knobs, and the search package drives them.

Tracing (:func:`trace_layers`) runs the model once on a zero input with forward hooks and lists
its compute layers (Conv1d, Conv2d, Linear, and the ``Add``, ``Mul`` and ``Cat`` modules that
join activations; see :mod:`spaces.functional`) in execution order with their output shapes.
Stages are derived from it: a *stage* is the set of layers with the same output resolution
(H, W); stages are numbered ``stage0``, ``stage1``... in the order their resolution first
appears, and layers without spatial output (Linear) form one last stage of their own.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cost_models.errors import EdgetuneError, UnsupportedLayerError

if TYPE_CHECKING:
    import optuna
    from optuna.distributions import BaseDistribution
    from torch import nn


class Knob(ABC):
    """One compression method's part of the search space.

    A knob is built once per study, from the teacher and its spec section. Subclasses set
    :attr:`prefix`: every param name they declare starts with it, so knobs never collide.
    """

    prefix: str = ""

    @abstractmethod
    def distributions(self) -> dict[str, BaseDistribution]:
        """The Optuna distributions this knob needs, by param name.

        Called once when the joint space is built (and by ``suggest`` for every trial); the
        result depends only on the teacher and the spec, so it is the same for every trial.
        """

    @abstractmethod
    def decode(self, params: Mapping[str, Any]) -> Any:
        """This knob's part of a policy, from a params dict holding (at least) its params.

        Called once per trial, after sampling, in the driver or in the worker. Raises
        :class:`~spaces.errors.SpaceError` if one of its params is missing.
        """

    @abstractmethod
    def uniform_params(self, **setting: Any) -> dict[str, Any]:
        """A params dict with every one of this knob's params at the same setting.

        Called when the search enqueues seed trials (uniform compression, the cheapest corner).
        """

    def owns(self, name: str) -> bool:
        """Whether a param name belongs to this knob (it starts with :attr:`prefix`)."""
        return name.startswith(self.prefix)


def suggest_all(trial: optuna.trial.BaseTrial, dists: Mapping[str, BaseDistribution]) -> dict[str, Any]:
    """Call ``trial.suggest_*`` for every distribution; works with ``study.ask()`` trials."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    params: dict[str, Any] = {}
    for name, dist in dists.items():
        if isinstance(dist, FloatDistribution):
            params[name] = trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
        elif isinstance(dist, IntDistribution):
            params[name] = trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
        elif isinstance(dist, CategoricalDistribution):
            params[name] = trial.suggest_categorical(name, dist.choices)
        else:
            raise EdgetuneError(
                f"{name}: cannot suggest a {type(dist).__name__}; a knob must declare Float, Int "
                "or Categorical distributions"
            )
    return params


def require(params: Mapping[str, Any], name: str) -> Any:
    """``params[name]``, or a StudyError that says the params come from another space."""
    from spaces.errors import SpaceError

    try:
        return params[name]
    except KeyError:
        raise SpaceError(
            f"params lack {name!r}, which this search space declares; the params were made for "
            "another model or space spec: sample them again with JointSpace.suggest"
        ) from None


@dataclass(frozen=True)
class LayerInfo:
    """A compute layer seen while tracing: name, kind (conv, linear, add, mul, concat) and
    output shape."""

    name: str
    kind: str
    out_shape: tuple[int, ...]

    @property
    def resolution(self) -> tuple[int, ...]:
        """The output's spatial size (H, W), or () for a layer without spatial output."""
        return self.out_shape[2:]


def layer_kind(module: nn.Module) -> str | None:
    """``conv``, ``linear``, or ``add``/``mul``/``concat`` (a parameterless ``Add``/``Mul``/``Cat``
    module, see :mod:`spaces.functional`) for a compute layer the knobs handle, else None."""
    from torch import nn

    from cost_models.torch_graph import join_kind

    if isinstance(module, nn.Conv1d | nn.Conv2d):
        return "conv"
    if isinstance(module, nn.Linear):
        return "linear"
    return join_kind(module)


def example_input(model: nn.Module, input_shape: Sequence[int]) -> Any:
    """A zero batch of one ``input_shape`` (C, H, W) input, on the model's device (``meta`` for
    an architecture-only copy, see :func:`spaces.pruning.prune_channels`)."""
    import torch

    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    return torch.zeros(1, *input_shape, device=device)


def trace_layers(model: nn.Module, input_shape: Sequence[int]) -> list[LayerInfo]:
    """The compute layers of ``model`` in execution order, from one forward at batch 1.

    ``input_shape`` is (C, H, W). A layer module called twice in one forward is not supported
    (its name would stand for two layers) and raises UnsupportedLayerError.
    """
    import torch

    seen: dict[str, LayerInfo] = {}
    handles = []

    def hook(name: str, kind: str) -> Any:
        def record(_m: nn.Module, _inputs: Any, output: Any) -> None:
            if name in seen:
                raise UnsupportedLayerError(
                    f"{name}: the module is called twice in one forward; give each use its own "
                    "module instance so each layer can be compressed on its own"
                )
            seen[name] = LayerInfo(name, kind, tuple(output.shape))

        return record

    for name, module in model.named_modules():
        kind = layer_kind(module)
        if kind is not None:
            handles.append(module.register_forward_hook(hook(name, kind)))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example_input(model, input_shape))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if not seen:
        raise UnsupportedLayerError(
            f"{type(model).__name__}: no Conv1d, Conv2d, Linear, Add, Mul or Cat layer ran in a "
            "forward pass of a "
            f"{tuple(input_shape)} input; edgetune compresses only those layers"
        )
    return list(seen.values())


def stage_names(layers: Sequence[LayerInfo]) -> dict[str, str]:
    """Each layer's stage (``stage0``, ``stage1``...): layers with one output resolution share
    a stage, numbered by first appearance; layers without spatial output share the last."""
    order: list[tuple[int, ...]] = []
    for info in layers:
        if info.resolution and info.resolution not in order:
            order.append(info.resolution)
    if any(not info.resolution for info in layers):
        order.append(())
    return {info.name: f"stage{order.index(info.resolution)}" for info in layers}
