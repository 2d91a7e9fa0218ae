from __future__ import annotations

import pytest
import torch
from torch import nn

from search.errors import TrialError, WorkloadError
from search.teacher import EpochLog, train_teacher
from search.workloads.augment import flip_crop
from spaces.distillation import accuracy


def _blobs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Four well-separated Gaussian blobs in 8 dimensions."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.eye(4, 8) * 4
    y = torch.randint(0, 4, (n,), generator=g)
    return centers[y] + torch.randn(n, 8, generator=g), y


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4))


def test_learns_a_separable_task_and_logs_each_epoch() -> None:
    x, y = _blobs(512, seed=0)
    x_val, y_val = _blobs(256, seed=1)
    torch.manual_seed(0)
    model = _mlp()
    assert accuracy(model, x_val, y_val) < 0.6
    logs: list[EpochLog] = []
    out = train_teacher(model, x, y, epochs=4, batch_size=32, lr=0.05, seed=0, log=logs.append)
    assert out is model and not model.training
    assert accuracy(model, x_val, y_val) >= 0.97
    assert [e.epoch for e in logs] == [1, 2, 3, 4] and logs[-1].loss < logs[0].loss
    assert "epoch 4/4" in str(logs[-1])


def test_learns_images_with_augmentation() -> None:
    # Class = brightness of the image: invariant to the crop and the flip.
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (256,), generator=g)
    x = (y.float() * 2 - 1)[:, None, None, None] + 0.3 * torch.randn(256, 1, 12, 12, generator=g)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 2),
    )
    train_teacher(model, x, y, epochs=3, batch_size=32, lr=0.05, seed=0)
    assert accuracy(model, x, y) >= 0.95


def test_same_seed_same_weights_other_seed_other_weights() -> None:
    x, y = _blobs(256, seed=0)

    def run(seed: int) -> list[torch.Tensor]:
        torch.manual_seed(0)  # the same initialization
        return list(
            train_teacher(_mlp(), x, y, epochs=2, batch_size=32, seed=seed).state_dict().values()
        )

    a, b, c = run(0), run(0), run(1)
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    assert not all(torch.equal(p, q) for p, q in zip(a, c, strict=True))


def test_augment_crops_and_flips_each_sample() -> None:
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).reshape(2, 1, 6, 6)
    g = torch.Generator().manual_seed(0)
    for _ in range(10):
        out = flip_crop(x, g, pad=2, flip=True)
        assert out.shape == x.shape
        for i in range(2):
            # Each sample is its own image shifted by at most 2 pixels, maybe mirrored: the
            # pixel values it shows come from that sample only.
            assert set(out[i].unique().tolist()) <= set(x[i].unique().tolist())
    assert torch.equal(flip_crop(x, g, pad=0, flip=False), x)


@pytest.mark.parametrize(
    "kwargs", [{"epochs": 0}, {"epochs": 1, "lr": 0.0}, {"epochs": 1, "batch_size": 0}]
)
def test_bad_settings_are_rejected(kwargs: dict[str, float]) -> None:
    x, y = _blobs(16, seed=0)
    with pytest.raises(WorkloadError, match="train_teacher"):
        train_teacher(_mlp(), x, y, **kwargs)  # type: ignore[arg-type]


def test_mismatched_data_is_rejected() -> None:
    with pytest.raises(WorkloadError, match="N labels"):
        train_teacher(_mlp(), torch.zeros(4, 8), torch.zeros(3, dtype=torch.long), epochs=1)
    with pytest.raises(TrialError, match="one label per sample"):
        accuracy(_mlp(), torch.zeros(4, 8), torch.zeros(3, dtype=torch.long))
