"""The committed Fashion-MNIST teacher loads as a plain state_dict and is as accurate as its
README says."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import experiments
from experiments.fashion_mnist import DEBIAN_PATH, load_fashion_mnist, normalize
from experiments.models import resnet8
from search.teacher import evaluate

CHECKPOINT = Path(experiments.__file__).parent / "fashion_mnist" / "resnet8_teacher.pt"


@pytest.mark.skipif(not DEBIAN_PATH.is_dir(), reason="dataset-fashion-mnist is not installed")
def test_committed_teacher_is_accurate() -> None:
    state = torch.load(CHECKPOINT, weights_only=True, map_location="cpu")
    model = resnet8((1, 28, 28), 10)
    model.load_state_dict(state)  # strict: every key matches the current resnet8
    _, _, x_test, y_test = load_fashion_mnist()
    assert evaluate(model, normalize(x_test[:2000]), y_test[:2000]) >= 0.91
