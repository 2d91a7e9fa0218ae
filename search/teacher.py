"""Training and evaluating a teacher (the uncompressed model), on the CPU.

``edgetune train SPEC`` calls :func:`train_teacher`; ``experiments/train_teacher.py`` is the
same call from the command line. The caller sets ``torch.set_num_threads`` (this module never
changes it). Given the same seed, model initialization and thread count, training is
deterministic: the data order and the augmentation come from a seeded generator. The
augmentation is :func:`search.workloads.augment.flip_crop`, the built-in ``flip-crop`` a spec
can also ask for in the students' fine-tune (``data.augment``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from search.errors import WorkloadError
from search.workloads.augment import flip_crop

if TYPE_CHECKING:
    from spaces.distillation import Images

__all__ = ["EpochLog", "train_teacher"]


@dataclass(frozen=True)
class EpochLog:
    """What :func:`train_teacher` reports after each epoch."""

    epoch: int  # 1-based
    epochs: int
    loss: float  # mean training loss over the epoch
    train_accuracy: float  # on the (augmented) training batches, in train mode
    seconds: float  # wall time of this epoch

    def __str__(self) -> str:
        return (
            f"epoch {self.epoch}/{self.epochs}: loss {self.loss:.4f}, "
            f"train accuracy {self.train_accuracy:.4f}, {self.seconds:.1f} s"
        )


def _check_data(x: Images, y: Tensor, what: str) -> None:
    if len(x.shape) < 2 or y.ndim != 1 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise WorkloadError(
            f"{what}: x must be N×... and y must hold N labels with N >= 1, "
            f"got x {tuple(x.shape)} and y {tuple(y.shape)}"
        )


def train_teacher(
    model: nn.Module,
    x: Images,
    y: Tensor,
    *,
    epochs: int,
    batch_size: int = 128,
    lr: float = 0.1,
    seed: int = 0,
    augment: bool = True,
    log: Callable[[EpochLog], None] | None = None,
) -> nn.Module:
    """Train ``model`` in place on ``(x, y)`` and return it (in eval mode).

    SGD with Nesterov momentum 0.9 and weight decay 5e-4, under a one-cycle schedule peaking
    at ``lr``; cross-entropy loss. ``x`` is what the model takes (already normalized). With
    ``augment``, 4-D image inputs get a random crop (2-pixel edge padding) and a random
    horizontal flip, which suits Fashion-MNIST; pass ``augment=False`` for inputs where a flip
    changes the meaning (spectrograms). ``log`` is called after every epoch. ``x`` is read one
    batch at a time, so it may be streamed.
    """
    _check_data(x, y, "train_teacher")
    if epochs < 1 or batch_size < 1 or not (lr > 0 and math.isfinite(lr)):
        raise WorkloadError(
            f"train_teacher: epochs and batch_size must be >= 1 and lr > 0, got epochs={epochs}, "
            f"batch_size={batch_size}, lr={lr}"
        )
    generator = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    steps_per_epoch = math.ceil(n / batch_size)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4
    )
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, epochs=epochs, steps_per_epoch=steps_per_epoch, pct_start=0.25
    )
    image = augment and len(x.shape) == 4
    for epoch in range(1, epochs + 1):
        model.train()
        start = time.perf_counter()
        order = torch.randperm(n, generator=generator)
        loss_sum, correct = 0.0, 0
        for i in range(steps_per_epoch):
            idx = order[i * batch_size : (i + 1) * batch_size]
            xb, yb = x[idx], y[idx]
            if image:
                xb = flip_crop(xb, generator, pad=2, flip=True)
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            if not torch.isfinite(loss):
                raise WorkloadError(
                    f"train_teacher: the loss became {loss.item()} at epoch {epoch}, step {i}; "
                    f"lower lr (got {lr})"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += loss.item() * len(idx)
            correct += int((logits.argmax(1) == yb).sum())
        if log is not None:
            log(EpochLog(epoch, epochs, loss_sum / n, correct / n, time.perf_counter() - start))
    return model.eval()
