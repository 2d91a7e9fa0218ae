"""The fine-tune with an augmentation (the spec's ``data.augment``): each batch augmented with a
generator seeded from ``cfg.seed``, the teacher's logits computed on the augmented batch; and,
without one, the very numbers of the fine-tune before augmentation existed."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn

from spaces.distillation import (
    DistillConfig,
    FinetuneData,
    distillation_loss,
    finetune,
    teacher_logits,
)
from spaces.errors import TrialError


def jitter(x: Tensor, generator: torch.Generator) -> Tensor:
    """Noise and a random horizontal flip, from the generator only."""
    flip = torch.rand(len(x), generator=generator) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    return x + 0.3 * torch.randn(x.shape, generator=generator)


def identity(x: Tensor, generator: torch.Generator) -> Tensor:
    return x


def crops(x: Tensor, generator: torch.Generator) -> Tensor:
    return x[:, :, 1:, 1:]


def _task(n: int = 256) -> tuple[nn.Module, FinetuneData]:
    """A 4-class task on 1x6x6 images whose labels a fixed small conv teacher defines."""
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    teacher = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 4)
    ).eval()
    x = torch.randn(n + 128, 1, 6, 6, generator=gen)
    y = teacher_logits(teacher, x).argmax(dim=1)
    return teacher, FinetuneData(x=x[:n], y=y[:n], val_x=x[n:], val_y=y[n:])


def _student() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Flatten(), nn.Linear(36, 16), nn.ReLU(), nn.Linear(16, 4))


def _cfg(**overrides: Any) -> DistillConfig:
    base: dict[str, Any] = dict(
        temperature=2.0, alpha=0.7, lr=1e-2, steps=30, eval_every=10, batch_size=32
    )
    base.update(overrides)
    return DistillConfig(**base)


def _weights(model: nn.Module) -> list[Tensor]:
    return [t.detach().clone() for t in model.state_dict().values()]


def _equal(a: list[Tensor], b: list[Tensor]) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a, b, strict=True))


def _old_finetune(student: nn.Module, data: FinetuneData, logits: Tensor,
                  cfg: DistillConfig) -> nn.Module:
    """The fine-tune loop as it was before ``augment`` (Adam, no report): the reference."""
    opt = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=cfg.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.steps)
    gen = torch.Generator().manual_seed(cfg.seed)
    order = torch.randperm(len(data.x), generator=gen)
    cursor = 0
    for _ in range(cfg.steps):
        if cursor + cfg.batch_size > len(order):
            order, cursor = torch.randperm(len(data.x), generator=gen), 0
        idx = order[cursor : cursor + cfg.batch_size]
        cursor += cfg.batch_size
        student.train()
        loss = distillation_loss(student(data.x[idx]), logits[idx], data.y[idx],
                                 temperature=cfg.temperature, alpha=cfg.alpha)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
    return student.eval()


def test_without_augment_the_numbers_are_those_of_before() -> None:
    teacher, data = _task()
    logits = teacher_logits(teacher, data.x)
    reference = _weights(_old_finetune(_student(), data, logits, _cfg()))
    assert _equal(_weights(finetune(_student(), data, logits, _cfg())), reference)
    # a teacher given without an augmentation is not used
    given = finetune(_student(), data, logits, _cfg(), augment=None, teacher=teacher)
    assert _equal(_weights(given), reference)


def test_augment_changes_the_fine_tune_and_is_reproducible() -> None:
    teacher, data = _task()
    logits = teacher_logits(teacher, data.x)
    plain = _weights(finetune(_student(), data, logits, _cfg()))

    def run(seed: int) -> list[Tensor]:
        cfg = _cfg(seed=seed)
        return _weights(finetune(_student(), data, logits, cfg, augment=jitter, teacher=teacher))

    a, b, c = run(0), run(0), run(1)
    assert not _equal(a, plain)
    assert _equal(a, b)  # a fixed seed: the same student
    assert not _equal(a, c)


def test_the_targets_are_the_teachers_logits_on_the_augmented_batch() -> None:
    teacher, data = _task()
    logits = teacher_logits(teacher, data.x)
    plain = _weights(finetune(_student(), data, logits, _cfg()))
    # identity: the teacher run batch by batch gives the cached logits (up to rounding)
    same = _weights(finetune(_student(), data, logits, _cfg(), augment=identity, teacher=teacher))
    assert all(torch.allclose(p, q, atol=1e-5) for p, q in zip(same, plain, strict=True))
    # another teacher: its logits, not the cached ones, are distilled
    torch.manual_seed(5)
    other = nn.Sequential(nn.Flatten(), nn.Linear(36, 4))
    before = _weights(other)
    other.train()
    moved = _weights(finetune(_student(), data, logits, _cfg(), augment=identity, teacher=other))
    assert not all(torch.allclose(p, q, atol=1e-3) for p, q in zip(moved, plain, strict=True))
    assert not other.training and _equal(_weights(other), before)  # eval mode, untouched
    assert all(p.grad is None for p in other.parameters())


def test_augment_without_the_teacher_is_a_trial_error() -> None:
    teacher, data = _task()
    with pytest.raises(TrialError) as err:
        finetune(_student(), data, teacher_logits(teacher, data.x), _cfg(), augment=jitter)
    assert str(err.value).startswith("data.augment: ") and "\n" not in str(err.value)


def test_an_augmentation_that_changes_the_shape_is_a_trial_error() -> None:
    teacher, data = _task()
    with pytest.raises(TrialError) as err:
        finetune(_student(), data, teacher_logits(teacher, data.x), _cfg(), augment=crops,
                 teacher=teacher)
    assert str(err.value) == (
        "data.augment: returned shape [32, 1, 5, 5] for a batch of shape [32, 1, 6, 6]; "
        "return a tensor of the same shape"
    )
