"""The student recipe: the cheap architecture path prices exactly the student a trial trains."""

from __future__ import annotations

import optuna
import torch
from torch import nn

from spaces.config import PruningSpace, QuantizationSpace, Space
from spaces.joint import JointSpace
from spaces.student import build_student, student_architecture
from tests.spaces.conftest import SHAPE


def test_architecture_path_gives_the_built_students_graph(resnet: nn.Module) -> None:
    space = JointSpace(
        resnet,
        SHAPE,
        Space(
            quantization=QuantizationSpace(weight_bits=(4, 8, 32), activation_bits=(8, 32)),
            pruning=PruningSpace(max_ratio=0.6, step=0.2, round_to=4),
        ),
    )
    before = {k: v.clone() for k, v in resnet.state_dict().items()}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(4):
        params = space.suggest(study.ask())
        shape = student_architecture(resnet, params, space)
        built = build_student(
            resnet, params, space, calib=torch.randn(8, *SHAPE), reduce_range=False
        )
        assert shape.graph == built.graph
        assert shape.policy == built.policy
        assert shape.summary() == built.summary()
        assert shape.model is None and built.model is not None
    assert all(torch.equal(v, resnet.state_dict()[k]) for k, v in before.items())  # untouched
