from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from spaces.distillation import (
    DistillConfig,
    FinetuneData,
    Stopped,
    accuracy,
    channels_last_weights,
    distillation_loss,
    finetune,
    teacher_logits,
)
from spaces.errors import TrialError


def _task(n: int = 512) -> tuple[nn.Module, FinetuneData]:
    """A 4-class task whose labels a fixed linear teacher defines."""
    gen = torch.Generator().manual_seed(0)
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))
    x = torch.randn(n + 256, 1, 4, 4, generator=gen)
    y = teacher_logits(teacher, x).argmax(dim=1)
    data = FinetuneData(x=x[:n], y=y[:n], val_x=x[n:], val_y=y[n:])
    return teacher, data


def _student() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))


def _cfg(**overrides: Any) -> DistillConfig:
    base: dict[str, Any] = dict(
        temperature=2.0, alpha=0.7, lr=1e-2, steps=60, eval_every=20, batch_size=32
    )
    base.update(overrides)
    return DistillConfig(**base)


def test_finetune_lowers_the_loss_and_reports() -> None:
    teacher, data = _task()
    logits = teacher_logits(teacher, data.x)
    student = _student()

    def loss() -> float:
        with torch.no_grad():
            return float(
                distillation_loss(student(data.x), logits, data.y, temperature=2.0, alpha=0.7)
            )

    before, acc_before = loss(), accuracy(student, data.val_x, data.val_y)
    calls: list[tuple[int, float]] = []

    def report(step: int, accuracy: float) -> bool:
        calls.append((step, accuracy))
        return True

    finetune(student, data, logits, _cfg(steps=50), report=report)
    assert loss() < 0.6 * before
    assert [s for s, _ in calls] == [20, 40, 50]  # every eval_every, and the last step
    assert calls[-1][1] == accuracy(student, data.val_x, data.val_y) > acc_before + 0.2


def test_report_false_stops_the_trial() -> None:
    teacher, data = _task()
    steps: list[int] = []

    def stop_at_first(step: int, accuracy: float) -> bool:
        steps.append(step)
        return False

    with pytest.raises(Stopped) as info:
        finetune(_student(), data, teacher_logits(teacher, data.x), _cfg(), report=stop_at_first)
    assert steps == [20] and info.value.step == 20 and 0.0 <= info.value.accuracy <= 1.0


def test_nan_loss_raises_trial_error() -> None:
    teacher, data = _task()
    logits = teacher_logits(teacher, data.x)
    logits[:] = float("nan")
    with pytest.raises(TrialError, match="loss became nan at step 1"):
        finetune(_student(), data, logits, _cfg(optimizer="sgd"))


def test_misaligned_logits_raise() -> None:
    teacher, data = _task()
    with pytest.raises(TrialError, match="align"):
        finetune(_student(), data, teacher_logits(teacher, data.x[:10]), _cfg())


def test_channels_last_weights_moves_conv_weights_and_keeps_values(resnet: nn.Module) -> None:
    x = torch.randn(4, 1, 16, 16)
    with torch.no_grad():
        before = resnet(x)
    weights = {n: p.detach().clone() for n, p in resnet.named_parameters()}
    resnet.train()
    assert channels_last_weights(resnet, x)
    assert resnet.training  # the probe leaves the mode as it was
    for name, param in resnet.named_parameters():
        assert torch.equal(param, weights[name])
        channels_last = param.dim() == 4
        assert param.is_contiguous(memory_format=torch.channels_last) == channels_last
    assert any(not p.is_contiguous() for p in resnet.parameters())  # some layout really moved
    with torch.no_grad():
        assert torch.allclose(resnet.eval()(x), before, atol=1e-5)


class _Viewing(nn.Module):
    """Two convolutions, their output flattened with ``view``: it only runs on NCHW tensors."""

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1))
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.convs(x)
        return self.fc(y.view(y.size(0), -1))


def test_a_model_that_cannot_run_channels_last_is_left_as_it_was() -> None:
    model, x = _Viewing(), torch.randn(6, 1, 8, 8)
    assert not channels_last_weights(model, x)
    assert all(p.is_contiguous() for p in model.parameters())
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    assert 0.0 <= accuracy(model, x, y, batch_size=4) <= 1.0  # and it still evaluates
    finetune(model, FinetuneData(x, y, x, y), torch.randn(6, 10),
             _cfg(steps=2, eval_every=2, batch_size=4))
