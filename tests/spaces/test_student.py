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


class KeywordSpotter(nn.Module):
    """A 1-D keyword-spotting net: Conv1d + BatchNorm1d blocks over (mel bins, frames)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv1d(10, 32, 5, padding=2, bias=False), nn.BatchNorm1d(32), nn.ReLU(),
            nn.Conv1d(32, 32, 3, padding=1, groups=32, bias=False), nn.BatchNorm1d(32),
            nn.ReLU(),
            nn.Conv1d(32, 48, 1, bias=False), nn.BatchNorm1d(48), nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.head = nn.Linear(48, 12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.body(x)), 1))


def test_conv1d_is_pruned_folded_quantized_and_exported() -> None:
    from search.onnx_export import run_onnx, to_onnx
    from spaces.pruning import kept_channels
    from spaces.quantization import QuantConv, wrappers
    from tests.spaces.conftest import randomize_bn

    shape = (10, 49)  # mel bins x frames
    torch.manual_seed(0)
    teacher = randomize_bn(KeywordSpotter())
    space = JointSpace(teacher, shape, Space(
        quantization=QuantizationSpace(weight_bits=(8, 32), activation_bits=(8, 32)),
        pruning=PruningSpace(max_ratio=0.5, step=0.25, round_to=4),
    ))
    built = build_student(teacher, space.uniform_params(0.5, 8, 8), space,
                          calib=torch.randn(64, *shape), reduce_range=False)
    assert built.model is not None
    assert kept_channels(built.pruned)["body.0"] == 16  # the depthwise conv follows it
    found = wrappers(built.model)
    assert {n for n, w in found.items() if isinstance(w, QuantConv)} == {
        "body.0", "body.3", "body.6"}
    assert not any(isinstance(m, nn.BatchNorm1d) for m in built.model.modules())  # folded
    x = torch.randn(32, *shape)
    with torch.no_grad():
        expected = built.model(x)
    got = run_onnx(to_onnx(built.model, shape), x)
    assert (expected.argmax(1) == got.argmax(1)).float().mean() >= 0.95
    assert float((expected - got).abs().max()) < 0.05 * float(expected.abs().max())
