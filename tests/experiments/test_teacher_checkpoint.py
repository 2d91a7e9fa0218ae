"""The real Fashion-MNIST files (Debian package) and the committed teacher trained on them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import experiments
from search.workloads.fashion_mnist import DEBIAN_PATH, MEAN, STD, load_fashion_mnist, normalize
from search.workloads.models import resnet8
from spaces.distillation import accuracy

CHECKPOINT = Path(experiments.__file__).parent / "fashion_mnist" / "resnet8_teacher.pt"

Data = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


@pytest.fixture(scope="module")
def fashion_mnist() -> Data:
    if not DEBIAN_PATH.is_dir():
        pytest.skip("dataset-fashion-mnist is not installed")
    return load_fashion_mnist()


def test_debian_data_matches_the_hard_coded_statistics(fashion_mnist: Data) -> None:
    x_train, y_train, x_test, _ = fashion_mnist
    assert x_train.shape == (60_000, 1, 28, 28) and x_test.shape == (10_000, 1, 28, 28)
    assert torch.equal(torch.bincount(y_train), torch.full((10,), 6000))
    assert abs(float(x_train.mean()) - MEAN) < 1e-3
    assert abs(float(x_train.std()) - STD) < 1e-3


def test_committed_teacher_is_accurate(fashion_mnist: Data) -> None:
    state = torch.load(CHECKPOINT, weights_only=True, map_location="cpu")
    model = resnet8((1, 28, 28), 10)
    model.load_state_dict(state)  # strict: every key matches the current resnet8
    _, _, x_test, y_test = fashion_mnist
    assert accuracy(model, normalize(x_test[:2000]), y_test[:2000]) >= 0.91
