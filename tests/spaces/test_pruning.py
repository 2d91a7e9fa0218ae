from __future__ import annotations

import pytest
import torch
from torch import nn

from spaces.config import PruningSpace
from spaces.errors import TrialError
from spaces.pruning import PruningKnob, find_groups, kept, kept_channels, prune_channels

SHAPE = (1, 16, 16)  # the resnet fixture's input shape


@pytest.mark.parametrize(
    ("channels", "ratio", "round_to", "expected"),
    [
        (16, 0.3, 4, 12),
        (64, 0.55, 8, 32),
        (10, 0.0, 4, 10),
        (16, 0.9, 4, 4),
        (32, 0.5, 1, 16),
        (3, 0.5, 4, 3),
    ],
)
def test_kept_rounds_to_multiples(
    channels: int, ratio: float, round_to: int, expected: int
) -> None:
    assert kept(channels, ratio, round_to) == expected


def test_groups_couple_residual_layers_and_skip_classifier(resnet: nn.Module) -> None:
    groups = {g.name: g for g in find_groups(resnet, SHAPE)}
    assert set(groups) == {
        "stem.0",
        "stage1.conv1.0",
        "stage2.conv1.0",
        "stage2.conv2.0",
        "stage3.conv1.0",
        "stage3.conv2.0",
    }
    assert groups["stem.0"].layers == ("stem.0", "stage1.conv2.0")
    assert groups["stage3.conv2.0"].layers == ("stage3.conv2.0", "stage3.shortcut")
    assert [groups[n].stage for n in ("stem.0", "stage2.conv1.0", "stage3.conv1.0")] == [
        "stage0",
        "stage1",
        "stage2",
    ]


def test_prune_channels_removes_channels_and_keeps_residuals_consistent(resnet: nn.Module) -> None:
    ratios = {g.name: 0.5 for g in find_groups(resnet, SHAPE)}
    student = prune_channels(resnet, ratios, input_shape=SHAPE, round_to=4)
    before, after = kept_channels(resnet), kept_channels(student)
    assert before["stage3.conv1.0"] == 64  # the teacher is untouched
    assert after["stage3.conv1.0"] == 32 and after["stage1.conv1.0"] == 8
    assert after["stage2.conv2.0"] == after["stage2.shortcut"] == 16
    assert after["stem.0"] == after["stage1.conv2.0"] == 8
    assert after["classifier"] == 10
    conv = student.get_submodule("stage3.conv2.0")
    assert isinstance(conv, nn.Conv2d)
    assert tuple(conv.weight.shape) == (32, 32, 3, 3)  # physically smaller, in and out
    assert student.get_submodule("classifier").in_features == 32
    out = student(torch.randn(2, *SHAPE))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_prune_channels_honours_round_to(resnet: nn.Module) -> None:
    student = prune_channels(
        resnet, {"stage3.conv1.0": 0.3, "stage2.conv1.0": 0.2}, input_shape=SHAPE, round_to=8
    )
    after = kept_channels(student)
    assert after["stage3.conv1.0"] == 48  # 64 * 0.7 = 44.8 -> 48
    assert after["stage2.conv1.0"] == 24  # 32 * 0.8 = 25.6 -> 24
    assert after["stage1.conv1.0"] == 16  # not in ratios: untouched


def test_depthwise_groups_prune_and_run(dwnet: nn.Module) -> None:
    shape = (1, 12, 8)
    groups = find_groups(dwnet, shape)
    student = prune_channels(dwnet, {g.name: 0.5 for g in groups}, input_shape=shape, round_to=4)
    dw = student.get_submodule("blocks.0.0.0")
    assert dw.groups == dw.out_channels == dw.in_channels == 32
    assert student(torch.randn(2, *shape)).shape == (2, 10)


def test_unknown_group_raises_trial_error(resnet: nn.Module) -> None:
    with pytest.raises(TrialError, match="not prunable groups"):
        prune_channels(resnet, {"classifier": 0.5}, input_shape=SHAPE)


@pytest.mark.parametrize(("granularity", "count"), [("layer", 6), ("stage", 3), ("model", 1)])
def test_granularity_param_count(resnet: nn.Module, granularity: str, count: int) -> None:
    knob = PruningKnob(
        resnet, SHAPE, PruningSpace(max_ratio=0.55, step=0.1, granularity=granularity)
    )  # type: ignore[arg-type]
    dists = knob.distributions()
    assert len(dists) == count
    assert all(d.high == pytest.approx(0.5) and d.step == 0.1 for d in dists.values())  # type: ignore[attr-defined]
    ratios = knob.decode({p: 0.2 for p in dists})
    assert set(ratios) == {g.name for g in knob.groups} and set(ratios.values()) == {0.2}


def test_stage_param_is_shared_by_its_groups(resnet: nn.Module) -> None:
    knob = PruningKnob(resnet, SHAPE, PruningSpace(granularity="stage"))
    ratios = knob.decode({"prune.stage0": 0.1, "prune.stage1": 0.2, "prune.stage2": 0.3})
    assert ratios["stem.0"] == ratios["stage1.conv1.0"] == 0.1
    assert ratios["stage3.conv1.0"] == ratios["stage3.conv2.0"] == 0.3
