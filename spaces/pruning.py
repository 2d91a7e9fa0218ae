"""Structured pruning: channels physically removed with torch-pruning, one ratio per group.

torch-pruning's DependencyGraph finds the *prunable groups*: layers whose output channels are
coupled (a residual stage's convs and its shortcut, a conv and the depthwise conv after it) are
one group and share one ratio. A group is named after its root layer (the first layer of the
group in the dependency graph), and at layer granularity its param is ``prune.<root layer>``.
The classifier (the last conv/linear layer the forward runs) is never pruned; its input
channels shrink with the layer before it.

Granularity:
* ``layer``: one param per group;
* ``stage``: one param per stage, ``prune.stage<i>``, shared by the groups whose root layer has
  that output resolution (see :func:`spaces.base.stage_names`);
* ``model``: one param, ``prune.model``.

A ratio ``r`` keeps ``round_to * round(C * (1 - r) / round_to)`` of a group's ``C`` channels,
at least ``round_to`` and at most ``C`` (ratio 0 keeps all). The channels with the smallest
group L2 magnitude are removed.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from spaces.base import Knob, example_input, require, stage_names, trace_layers
from spaces.errors import SpaceError, TrialError

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution
    from torch import nn

    from spaces.config import PruningSpace

PREFIX = "prune."


@dataclass(frozen=True)
class Group:
    """A prunable group: its root layer (its name), coupled layers, channels and stage."""

    name: str
    layers: tuple[str, ...]
    channels: int
    stage: str


def kept(channels: int, ratio: float, round_to: int) -> int:
    """How many of ``channels`` a ``ratio`` keeps, as a multiple of ``round_to``."""
    if not 0.0 <= ratio < 1.0:
        raise TrialError(f"pruning ratio must be in [0, 1), got {ratio}; sample it from the space")
    if ratio == 0.0 or channels <= round_to:
        return channels
    n = round_to * math.floor(channels * (1.0 - ratio) / round_to + 0.5)
    return min(channels, max(round_to, n))


def _named_groups(model: nn.Module, input_shape: Sequence[int]) -> tuple[Any, list[tuple[Group, Any]]]:
    """torch-pruning's graph of ``model``, and each prunable group with its root module.

    A group is named after the first of its coupled layers that runs in the forward pass.
    """
    import torch_pruning as tp
    from torch import nn

    layers = trace_layers(model, input_shape)
    order = {info.name: i for i, info in enumerate(layers)}
    stages = stage_names(layers)
    classifier = [info.name for info in layers if info.kind in ("conv", "linear")][-1]
    try:
        graph = tp.DependencyGraph().build_dependency(
            model, example_inputs=example_input(model, input_shape)
        )
        groups = list(
            graph.get_all_groups(
                ignored_layers=[model.get_submodule(classifier)],
                root_module_types=(nn.Conv1d, nn.Conv2d, nn.Linear),
            )
        )
    except Exception as exc:  # torch-pruning raises bare exceptions on graphs it cannot trace
        raise TrialError(
            f"torch-pruning could not trace {type(model).__name__}: {exc}; use plain modules "
            "(no functional ops on channels) or disable pruning in the spec"
        ) from exc
    names = {m: n for n, m in model.named_modules()}
    out: list[tuple[Group, Any]] = []
    for group in groups:
        root = group[0][0].target.module
        coupled = sorted(
            {
                names[dep.target.module]
                for dep, _ in group
                if graph.is_out_channel_pruning_fn(dep.handler) and names.get(dep.target.module) in order
            },
            key=order.__getitem__,
        )
        first = coupled[0] if coupled else names[root]
        out.append((Group(first, tuple(coupled), graph.get_out_channels(root), stages[first]), root))
    out.sort(key=lambda item: order.get(item[0].name, len(order)))
    return graph, out


def find_groups(model: nn.Module, input_shape: Sequence[int]) -> list[Group]:
    """The prunable groups of ``model``, in forward order of their first layer."""
    return [group for group, _ in _named_groups(model, input_shape)[1]]


def _weightless_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose parameters and buffers live on the ``meta`` device: the same
    architecture, with no values copied."""
    import torch

    memo: dict[int, Any] = {}
    for p in model.parameters():
        memo[id(p)] = torch.nn.Parameter(torch.empty_like(p, device="meta"), p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    return copy.deepcopy(model, memo)


def prune_channels(
    model: nn.Module,
    ratios: Mapping[str, float],
    *,
    input_shape: Sequence[int],
    round_to: int = 1,
    weights: bool = True,
) -> nn.Module:
    """A pruned copy of ``model``: group ``name`` loses the share ``ratios[name]`` of its
    channels (rounded per :func:`kept`); groups not in ``ratios`` are kept whole.

    With ``weights`` the copy carries the weights and the channels of smallest group L2
    magnitude are removed. Without, it is an architecture-only copy: no weight is copied, the
    first channels of each group are removed (which ones does not change the architecture),
    and the tensors are left uninitialized on the CPU, good for shapes and costs, not for
    inference. Raises TrialError if a name is not a prunable group or torch-pruning fails.
    """
    import torch_pruning as tp

    student = copy.deepcopy(model) if weights else _weightless_copy(model)
    graph, groups = _named_groups(student, input_shape)
    roots = {group.name: root for group, root in groups}
    unknown = sorted(set(ratios) - set(roots))
    if unknown:
        raise TrialError(
            f"pruning ratios name {unknown}, which are not prunable groups of "
            f"{type(model).__name__}; valid groups: {sorted(roots)}"
        )
    importance = tp.importance.GroupMagnitudeImportance(p=2)
    for name, ratio in ratios.items():
        root = roots[name]
        pruner = graph.get_pruner_of_module(root)
        channels = graph.get_out_channels(root)
        n_prune = channels - kept(channels, ratio, round_to)
        if n_prune == 0:
            continue
        try:
            if weights:
                full = graph.get_pruning_group(root, pruner.prune_out_channels, list(range(channels)))
                idxs = sorted(int(i) for i in importance(full).argsort()[:n_prune])
            else:
                idxs = list(range(n_prune))
            group = graph.get_pruning_group(root, pruner.prune_out_channels, idxs)
            if not graph.check_pruning_group(group):
                raise TrialError(f"group {name}: torch-pruning refuses to remove {n_prune} of "
                                 f"{channels} channels; lower the ratio")
            group.prune()
        except TrialError:
            raise
        except Exception as exc:
            raise TrialError(
                f"group {name}: pruning {n_prune} of {channels} channels failed ({exc}); "
                "lower space.pruning.max_ratio or report the model"
            ) from exc
    if not weights:
        student.to_empty(device="cpu")
    return student


def kept_channels(model: nn.Module) -> dict[str, int]:
    """Output channels of every conv and Linear layer, by layer name (for reports).

    A layer wrapped for quantization (held as ``.layer``) is reported under the wrapper's name.
    """
    from torch import nn

    modules = dict(model.named_modules())
    out: dict[str, int] = {}
    for name, m in modules.items():
        if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Linear):
            parent, _, attr = name.rpartition(".")
            key = parent if attr == "layer" and getattr(modules.get(parent), "layer", None) is m else name
            out[key] = m.out_features if isinstance(m, nn.Linear) else m.out_channels
    return out


class PruningKnob(Knob):
    """Per-group pruning ratios from 0 to ``max_ratio`` in ``step``s (see module docstring)."""

    prefix = PREFIX

    def __init__(self, model: nn.Module, input_shape: Sequence[int], spec: PruningSpace) -> None:
        self.spec = spec
        self.input_shape = tuple(input_shape)
        self.groups = find_groups(model, input_shape)
        steps = math.floor(spec.max_ratio / spec.step + 1e-9)
        self.grid = tuple(round(i * spec.step, 10) for i in range(steps + 1))
        self._param_of: dict[str, str] = {
            g.name: self._param_name(g) for g in self.groups
        }

    def _param_name(self, group: Group) -> str:
        key = {"layer": group.name, "stage": group.stage, "model": "model"}[self.spec.granularity]
        return PREFIX + key

    @property
    def max_ratio(self) -> float:
        """The largest ratio on the grid (``max_ratio`` rounded down to a ``step``)."""
        return self.grid[-1]

    def distributions(self) -> dict[str, BaseDistribution]:
        from optuna.distributions import FloatDistribution

        if self.max_ratio == 0.0:
            return {}
        dist = FloatDistribution(0.0, self.max_ratio, step=self.spec.step)
        return {p: dist for p in dict.fromkeys(self._param_of.values())}

    def decode(self, params: Mapping[str, Any]) -> dict[str, float]:
        """Ratio per group name (every group, 0 when pruning has nothing to search)."""
        if self.max_ratio == 0.0:
            return {g.name: 0.0 for g in self.groups}
        return {g: round(float(require(params, p)), 10) for g, p in self._param_of.items()}

    def uniform_params(self, **setting: Any) -> dict[str, Any]:
        """Every param at ``ratio`` (snapped to the nearest step of the grid)."""
        ratio = float(setting.get("ratio", 0.0))
        if not 0.0 <= ratio <= self.max_ratio + 1e-9:
            raise SpaceError(
                f"pruning ratio must be in [0, {self.max_ratio}] (space.pruning.max_ratio "
                f"rounded down to its step), got {ratio}"
            )
        snapped = min(self.grid, key=lambda r: abs(r - ratio))
        return {p: snapped for p in self.distributions()}

    def prune(
        self, model: nn.Module, ratios: Mapping[str, float], *, weights: bool = True
    ) -> nn.Module:
        """:func:`prune_channels` with this knob's input shape and ``round_to``."""
        return prune_channels(
            model, ratios, input_shape=self.input_shape, round_to=self.spec.round_to,
            weights=weights,
        )

