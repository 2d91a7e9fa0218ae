from __future__ import annotations

import pytest
import torch
from torch import nn

from search.workloads.models import dscnn, resnet8

SHAPE = (1, 16, 16)


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial statistics, so folding and pruning have work to do."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            n = m.num_features
            assert m.running_mean is not None and m.running_var is not None
            m.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=gen) - 0.5)
    return model.eval()


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture
def resnet() -> nn.Module:
    torch.manual_seed(0)
    return randomize_bn(resnet8(SHAPE))


@pytest.fixture
def dwnet() -> nn.Module:
    torch.manual_seed(0)
    return randomize_bn(dscnn((1, 12, 8)))
