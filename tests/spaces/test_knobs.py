"""The conformance suite every Knob implementation runs."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from torch import nn

from spaces.base import Knob
from spaces.config import DistillationSpace, PruningSpace, QuantizationSpace
from spaces.distillation import DistillationKnob
from spaces.errors import SpaceError
from spaces.pruning import PruningKnob
from spaces.quantization import QuantizationKnob

SHAPE = (1, 16, 16)
KNOBS: dict[str, Callable[[nn.Module], Knob]] = {
    "pruning": lambda m: PruningKnob(m, SHAPE, PruningSpace()),
    "quantization": lambda m: QuantizationKnob(m, SHAPE, QuantizationSpace()),
    "distillation": lambda m: DistillationKnob(DistillationSpace()),
}


@pytest.fixture(params=sorted(KNOBS))
def knob(request: pytest.FixtureRequest, resnet: nn.Module) -> Knob:
    return KNOBS[request.param](resnet)


def test_param_names_belong_to_the_knob(knob: Knob) -> None:
    dists = knob.distributions()
    assert dists and all(knob.owns(name) for name in dists)
    assert knob.distributions() == dists  # stable across calls


def test_uniform_params_cover_every_param_within_its_distribution(knob: Knob) -> None:
    params = knob.uniform_params()
    dists = knob.distributions()
    assert set(params) == set(dists)
    for name, value in params.items():
        assert dists[name]._contains(dists[name].to_internal_repr(value)), name
    assert knob.decode(params) is not None


def test_decode_with_a_missing_param_raises(knob: Knob) -> None:
    params = knob.uniform_params()
    params.pop(next(iter(params)))
    with pytest.raises(SpaceError, match="lack"):
        knob.decode(params)
