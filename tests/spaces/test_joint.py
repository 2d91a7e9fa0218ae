from __future__ import annotations

import optuna
import pytest
import torch
from torch import nn

from cost_models.graph import Precision
from spaces.config import DistillationSpace, FloatRange, PruningSpace, QuantizationSpace, Space
from spaces.errors import SpaceError
from spaces.joint import JointSpace, Policy
from spaces.pruning import kept_channels
from spaces.quantization import wrappers
from spaces.student import build_student

SHAPE = (1, 16, 16)
SPACE = Space(
    quantization=QuantizationSpace(weight_bits=(4, 8, 32), activation_bits=(8, 16, 32)),
    pruning=PruningSpace(max_ratio=0.5, step=0.25, round_to=4),
    distillation=DistillationSpace(
        temperature=FloatRange(low=4.0, high=4.0),
        alpha=FloatRange(low=0.5, high=0.9),
        lr=FloatRange(low=1e-4, high=1e-2, log=True),
    ),
)


@pytest.fixture
def space(resnet: nn.Module) -> JointSpace:
    return JointSpace(resnet, SHAPE, SPACE, batch_size=32)


@pytest.fixture
def study() -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))


def test_suggest_decode_round_trip_with_ask(space: JointSpace, study: optuna.Study) -> None:
    for _ in range(3):
        trial = study.ask()
        params = space.suggest(trial)
        assert trial.params == params and set(params) == set(space.distributions())
        policy = space.decode(params)
        assert isinstance(policy, Policy)
        assert set(policy.ratios) == {
            "stem.0",
            "stage1.conv1.0",
            "stage2.conv1.0",
            "stage2.conv2.0",
            "stage3.conv1.0",
            "stage3.conv2.0",
        }
        assert all(r in (0.0, 0.25, 0.5) for r in policy.ratios.values())
        assert len(policy.bits) == 13 and policy.bits["stem.0"] == Precision(
            params["wbits.stem.0"], params["abits.stem.0"]
        )
        kd = policy.distillation
        assert kd.temperature == 4.0 and 0.5 <= kd.alpha <= 0.9 and 1e-4 <= kd.lr <= 1e-2
        assert kd.batch_size == 32 and "kd.temperature" not in params  # fixed: not searched
        study.tell(trial, 0.5)


def test_uniform_params_enqueue_as_a_seed(space: JointSpace, study: optuna.Study) -> None:
    seed = space.uniform_params(0.25, 8, 8)
    study.enqueue_trial(seed)
    trial = study.ask()
    assert space.suggest(trial) == seed
    policy = space.decode(seed)
    assert set(policy.ratios.values()) == {0.25}
    assert set(policy.bits.values()) == {Precision(8, 8), Precision(32, 8)}  # Add: no weights
    assert policy.distillation.lr == pytest.approx(1e-3)  # geometric midpoint of a log range
    assert policy.distillation.alpha == pytest.approx(0.7)


def test_bad_params_raise(space: JointSpace) -> None:
    with pytest.raises(SpaceError, match="not one of the choices"):
        space.uniform_params(0.0, 6, 8)
    with pytest.raises(SpaceError, match=r"\[0, 0.5\]"):
        space.uniform_params(0.75, 8, 8)
    with pytest.raises(SpaceError, match="does not declare"):
        space.decode({**space.uniform_params(), "prune.nope": 0.1})


def test_build_prunes_then_quantizes(resnet: nn.Module, space: JointSpace) -> None:
    built = build_student(
        resnet, space.uniform_params(0.5, 8, 8), space, calib=torch.randn(32, *SHAPE),
        reduce_range=True,
    )
    student = built.model
    assert student is not None
    assert kept_channels(student)["stage3.conv1.0"] == 32
    assert len(wrappers(student)) == 13
    assert not any(isinstance(m, nn.BatchNorm2d) for m in student.modules())
    assert student(torch.randn(2, *SHAPE)).shape == (2, 10)


def test_disabled_knobs_declare_nothing(resnet: nn.Module) -> None:
    space = JointSpace(resnet, SHAPE, Space(quantization=None))
    assert not any(n.startswith(("wbits.", "abits.")) for n in space.distributions())
    assert space.decode(space.uniform_params(0.2)).bits == {}
    with pytest.raises(SpaceError, match="disabled"):
        space.uniform_params(0.0, 8, 8)
