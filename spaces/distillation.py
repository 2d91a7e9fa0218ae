"""Distillation: the fine-tune that recovers a student's accuracy (and, when it is
fake-quantized, its quantization-aware training).

The loss is ``alpha * T**2 * KL(softmax(student/T) || softmax(teacher/T)) + (1 - alpha) * CE``
with the teacher's logits computed once per study (:func:`teacher_logits`) and passed in,
aligned with the fine-tune subset. The optimizer (Adam by default, or SGD with momentum 0.9)
runs ``steps`` steps of ``batch_size`` under a cosine schedule.

**Trial stopping.** Every ``eval_every`` steps, and after the last step, the student is
evaluated on the validation subset and ``report(step, accuracy)`` is called. If it returns
False, :func:`finetune` raises :class:`Stopped` (which is *not* an EdgetuneError: the trial was
stopped on purpose, it did not fail); ``Stopped.step`` and ``Stopped.accuracy`` hold the last
report. A loss that becomes NaN or infinite raises :class:`~spaces.errors.TrialError`.

**Augmentation.** With ``augment`` (the spec's ``data.augment``), every fine-tune batch is
augmented, drawing from its own generator seeded from ``cfg.seed`` (a trial is reproducible,
and the data order is the same as without it); the cached logits were computed on the
un-augmented images, so the teacher is run on each augmented batch instead.

Params (only for ranges with ``low < high``; a fixed value is not searched): ``kd.temperature``,
``kd.alpha``, ``kd.lr`` (log scale when the spec says so).

torch's thread count is the caller's business; nothing here sets it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from spaces.base import Knob, require
from spaces.errors import TrialError

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

    from spaces.config import DistillationSpace, FloatRange

PREFIX = "kd."
EVAL_BATCH = 64
"""Images per batch when evaluating: a small batch's activations stay in the CPU's caches
(``experiments/bench_eval.py``: at 512, a MobileNetV2's validation pass took about 3.5x as
long)."""
CHANNELS_LAST = torch.channels_last  # conv weights' and images' layout, where a model runs so
AUGMENT_SEED_OFFSET = 0x5EED  # the augmentation's generator: cfg.seed + this
Report = Callable[[int, float], bool]
Augment = Callable[[Tensor, torch.Generator], Tensor]
"""``fn(x, generator) -> x'``: one fine-tune batch augmented, of the same shape."""


class Stopped(Exception):  # a signal, not an error: not an EdgetuneError
    """``report`` returned False: the trial was stopped at ``step`` with ``accuracy``."""

    def __init__(self, step: int, accuracy: float) -> None:
        super().__init__(f"trial stopped at step {step} with validation accuracy {accuracy:.4f}")
        self.step = step
        self.accuracy = accuracy


@dataclass(frozen=True)
class DistillConfig:
    """The settings of one fine-tune."""

    temperature: float
    alpha: float
    lr: float
    steps: int
    eval_every: int
    batch_size: int = 64
    optimizer: Literal["adam", "sgd"] = "adam"
    seed: int = 0


class Images(Protocol):
    """Images indexable by a tensor of positions: a tensor, or images a data set streams batch
    by batch (``search.workloads.stream.StreamedImages``)."""

    def __len__(self) -> int: ...

    def __getitem__(self, key: Any) -> Tensor: ...

    @property
    def shape(self) -> tuple[int, ...]: ...


@dataclass(frozen=True)
class FinetuneData:
    """The fine-tune subset (``x``, ``y``) and the validation subset (``val_x``, ``val_y``).
    ``x`` is read one batch at a time, so it may be streamed."""

    x: Images
    y: Tensor
    val_x: Tensor
    val_y: Tensor


@torch.no_grad()
def teacher_logits(model: nn.Module, x: Images, *, batch_size: int = EVAL_BATCH) -> Tensor:
    """The model's logits on ``x`` (eval mode), computed batch by batch (``x`` may be
    streamed: only the logits are kept); once per study."""
    fast = channels_last_weights(model, x)
    model.eval()
    return torch.cat([model(_batch(x, i, batch_size, fast)) for i in range(0, len(x), batch_size)])


@torch.no_grad()
def accuracy(model: nn.Module, x: Images, y: Tensor, batch_size: int = EVAL_BATCH) -> float:
    """Top-1 accuracy of ``model`` on (``x``, ``y``), in eval mode."""
    if len(x) == 0:
        raise TrialError("accuracy needs at least one sample, got an empty set; check data sizes")
    if len(x) != len(y):
        raise TrialError(f"accuracy needs one label per sample, got {len(x)} samples and "
                         f"{len(y)} labels; check the data loader")
    fast = channels_last_weights(model, x)
    model.eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        logits = model(_batch(x, i, batch_size, fast))
        correct += int((logits.argmax(dim=1) == y[i : i + batch_size]).sum())
    return correct / len(x)


def distillation_loss(student: Tensor, teacher: Tensor, y: Tensor, *, temperature: float,
                      alpha: float) -> Tensor:
    """``alpha * T^2 * KL(student/T || teacher/T) + (1 - alpha) * CE(student, y)``."""
    kl = F.kl_div(
        F.log_softmax(student / temperature, dim=1),
        F.log_softmax(teacher / temperature, dim=1),
        log_target=True,
        reduction="batchmean",
    )
    return alpha * temperature**2 * kl + (1.0 - alpha) * F.cross_entropy(student, y)


def finetune(student: nn.Module, data: FinetuneData, logits: Tensor, cfg: DistillConfig, *,
             report: Report | None = None, augment: Augment | None = None,
             teacher: nn.Module | None = None) -> nn.Module:
    """Distil ``logits`` (the teacher's, aligned with ``data.x``) into ``student``, in place.

    With ``augment`` (``fn(x, generator) -> x'``, the spec's ``data.augment``), each batch is
    augmented with a generator seeded from ``cfg.seed``, and the targets are ``teacher``'s
    logits on the augmented batch (eval mode, no grad) instead of the cached ``logits``.
    Without it, ``teacher`` is not used.

    Returns the student (in eval mode). Raises :class:`Stopped` when ``report`` returns False,
    and TrialError on a NaN/inf loss, or ``augment`` without ``teacher``.
    """
    if len(logits) != len(data.x):
        raise TrialError(f"teacher logits must align with the fine-tune subset: got {len(logits)} "
                         f"logits for {len(data.x)} samples; compute them on the same subset")
    if augment is not None and teacher is None:
        raise TrialError("data.augment: the fine-tune needs the teacher to compute its logits on "
                         "the augmented images; pass teacher= with augment=")
    channels_last_weights(student, data.x)
    params = [p for p in student.parameters() if p.requires_grad]
    opt: torch.optim.Optimizer
    if cfg.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=cfg.lr)
    else:
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=0.9)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.steps)
    gen = torch.Generator().manual_seed(cfg.seed)
    # its own stream, so the data order is the same with and without augmentation
    augment_gen = torch.Generator().manual_seed(cfg.seed + AUGMENT_SEED_OFFSET)
    order = torch.randperm(len(data.x), generator=gen)
    cursor = 0
    for step in range(1, cfg.steps + 1):
        if cursor + cfg.batch_size > len(order):
            order, cursor = torch.randperm(len(data.x), generator=gen), 0
        idx = order[cursor : cursor + cfg.batch_size]
        cursor += cfg.batch_size
        x, targets = data.x[idx], logits[idx]
        if augment is not None and teacher is not None:
            x, targets = augmented_batch(x, augment, augment_gen, teacher)
        distill_step(student, opt, x, targets, data.y[idx], cfg, step=step,
                     augmented=augment is not None)
        schedule.step()
        if report is not None and (step % cfg.eval_every == 0 or step == cfg.steps):
            val_accuracy = accuracy(student, data.val_x, data.val_y)
            if not report(step, val_accuracy):
                raise Stopped(step, val_accuracy)
    student.eval()
    return student


def channels_last_weights(model: nn.Module, probe: Images) -> bool:
    """Put ``model``'s 4-D weights, in place, in channels-last memory layout if it runs so on
    ``probe`` (a couple of its input images); whether it now does. oneDNN's CPU convolutions
    then run without reordering each tensor, training (a ResNet-8 student's step about 0.9x as
    long, MobileNetV2's and DenseNet's as long: ``experiments/bench_train_step.py``) and
    evaluating (:func:`accuracy`; ``experiments/bench_eval.py``). Values are unchanged. A model
    that cannot run so (one that ``view``s a convolution's output as an NCHW tensor, say) is
    left as it was, and so is one without 4-D weights."""
    weights = [p for p in model.parameters() if p.dim() == 4]
    moved = [(p, p.data) for p in weights if not p.is_contiguous(memory_format=CHANNELS_LAST)]
    if not weights or not moved:
        return bool(weights)
    for param, data in moved:
        param.data = data.contiguous(memory_format=CHANNELS_LAST)
    training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(_batch(probe, 0, 2, True))
    except RuntimeError:
        for param, data in moved:
            param.data = data
        return False
    finally:
        model.train(training)
    return True


def _batch(x: Images, start: int, size: int, channels_last: bool) -> Tensor:
    """Images ``start`` to ``start + size`` of ``x``, channels-last if asked and 4-D."""
    xb = x[start : start + size]
    return xb.contiguous(memory_format=CHANNELS_LAST) if channels_last and xb.dim() == 4 else xb


def distill_step(student: nn.Module, opt: torch.optim.Optimizer, x: Tensor, targets: Tensor,
                 y: Tensor, cfg: DistillConfig, *, step: int, augmented: bool = False) -> float:
    """One optimizer step of distillation towards ``targets`` (teacher logits on ``x``), in
    train mode; the loss. TrialError on a NaN/inf loss (``step`` and ``cfg`` say where)."""
    student.train()
    loss = distillation_loss(student(x), targets, y, temperature=cfg.temperature,
                             alpha=cfg.alpha)
    if not torch.isfinite(loss):
        raise TrialError(
            f"loss became {float(loss.detach())} at step {step} (lr={cfg.lr:.3g}, "
            f"T={cfg.temperature:.3g}, alpha={cfg.alpha:.3g}); lower space.distillation.lr "
            "or the compression of this candidate"
            + ("; or check data.augment's output" if augmented else "")
        )
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())


@torch.no_grad()
def augmented_batch(x: Tensor, augment: Augment, gen: torch.Generator,
                    teacher: nn.Module) -> tuple[Tensor, Tensor]:
    """One augmented batch and the teacher's logits on it."""
    out = augment(x, gen)
    if not isinstance(out, Tensor) or out.shape != x.shape:
        got = f"shape {list(out.shape)}" if isinstance(out, Tensor) else type(out).__name__
        raise TrialError(f"data.augment: returned {got} for a batch of shape {list(x.shape)}; "
                         "return a tensor of the same shape")
    teacher.eval()
    return out, teacher(out)


def _midpoint(r: FloatRange) -> float:
    return math.sqrt(r.low * r.high) if r.log else (r.low + r.high) / 2.0


class DistillationKnob(Knob):
    """Temperature, alpha and learning rate of the fine-tune (see the module docstring)."""

    prefix = PREFIX
    FIELDS = ("temperature", "alpha", "lr")

    def __init__(self, spec: DistillationSpace, *, batch_size: int = 64) -> None:
        self.spec = spec
        self.batch_size = batch_size

    def _ranges(self) -> dict[str, FloatRange]:
        return {f: getattr(self.spec, f) for f in self.FIELDS}

    def distributions(self) -> dict[str, BaseDistribution]:
        from optuna.distributions import FloatDistribution

        return {PREFIX + f: FloatDistribution(r.low, r.high, log=r.log)
                for f, r in self._ranges().items() if r.low < r.high}

    def decode(self, params: Mapping[str, Any]) -> DistillConfig:
        values = {f: float(require(params, PREFIX + f)) if r.low < r.high else r.low
                  for f, r in self._ranges().items()}
        return DistillConfig(temperature=values["temperature"], alpha=values["alpha"],
                             lr=values["lr"], steps=self.spec.steps,
                             eval_every=self.spec.eval_every, batch_size=self.batch_size)

    def uniform_params(self, **setting: Any) -> dict[str, Any]:
        """Every searched setting at its midpoint (geometric for a log range)."""
        return {PREFIX + f: _midpoint(r) for f, r in self._ranges().items() if r.low < r.high}
