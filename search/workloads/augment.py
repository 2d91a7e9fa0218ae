"""``data.augment``: the augmentation of the students' fine-tune batches, as the spec names it.

``data.augment`` is null (no augmentation, the default), the built-in ``flip-crop``
(:func:`flip_crop`, the teacher's own augmentation in :mod:`search.teacher`), or
``module:function``, called as ``fn(x, generator)`` with ``x`` a normalized float32 batch
N x C x H x W and a seeded ``torch.Generator`` (draw every random number from it, so a trial
is reproducible), returning a tensor of the same shape and dtype.

:func:`resolve_augment` imports the function and tries it once on a small batch, so a bad one
stops the study with one line naming ``data.augment`` before any trial trains. What it returns
is the plain module-level function: it pickles by reference, for the workers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from search.errors import WorkloadError
from search.workloads.entry_points import entry_point
from spaces.distillation import Augment

if TYPE_CHECKING:
    from search.spec import DataSpec

__all__ = ["BUILTIN_AUGMENTS", "Augment", "flip_crop", "resolve_augment"]

CHECK_BATCH = 4  # images in the trial batch of resolve_augment


def flip_crop(x: Tensor, generator: torch.Generator, pad: int = 2, flip: bool = True) -> Tensor:
    """Random crop after ``pad`` pixels of edge padding, and a random horizontal flip, one
    draw per sample. Edge (replicate) padding needs no knowledge of the normalization: a
    normalized image's background is not 0, so zeros would draw a frame around it."""
    n, _, h, w = x.shape
    if pad > 0:
        padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
        rows = (dy[:, None] + torch.arange(h))[:, None, :, None]  # n×1×h×1
        cols = (dx[:, None] + torch.arange(w))[:, None, None, :]  # n×1×1×w
        batch = torch.arange(n)[:, None, None, None]
        channel = torch.arange(x.shape[1])[None, :, None, None]
        x = padded[batch, channel, rows, cols]
    if flip:
        mask = torch.rand(n, generator=generator) < 0.5
        x = torch.where(mask[:, None, None, None], x.flip(-1), x)
    return x


BUILTIN_AUGMENTS: dict[str, Augment] = {"flip-crop": flip_crop}


def _what(out: Any) -> str:
    if isinstance(out, Tensor):
        return f"a {str(out.dtype).removeprefix('torch.')} tensor of shape {list(out.shape)}"
    return f"{type(out).__module__.split('.')[0]}.{type(out).__qualname__}".removeprefix(
        "builtins."
    )


def resolve_augment(spec: DataSpec, input_shape: tuple[int, ...]) -> Augment | None:
    """The function ``spec.augment`` names (None for null), tried once on a small random batch
    of ``input_shape`` images: it must not raise and must return a finite float32 tensor of
    the batch's shape. Raises WorkloadError naming ``data.augment`` otherwise."""
    name = spec.augment
    if name is None:
        return None
    if name in BUILTIN_AUGMENTS:
        fn = BUILTIN_AUGMENTS[name]
    elif ":" in name:
        fn = entry_point(name, "data.augment")
    else:
        raise WorkloadError(
            f"data.augment: unknown augmentation {name!r}; use "
            f"{', '.join(sorted(BUILTIN_AUGMENTS))}, module:function or null"
        )
    shape = (CHECK_BATCH, *(int(d) for d in input_shape))
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    try:
        out = fn(x.clone(), torch.Generator().manual_seed(0))
    except Exception as exc:  # the user's code: say where it failed, no traceback
        raise WorkloadError(
            f"data.augment: {name} raised {type(exc).__name__}: {str(exc)[:200]} on a "
            f"{list(shape)} float32 batch; fix it (it is called as fn(x, generator))"
        ) from None
    if not isinstance(out, Tensor) or out.shape != x.shape or out.dtype != x.dtype:
        raise WorkloadError(
            f"data.augment: {name} returned {_what(out)} for a {list(shape)} float32 batch; "
            "return a torch tensor of the same shape and dtype"
        )
    if not bool(torch.isfinite(out).all()):
        raise WorkloadError(
            f"data.augment: {name} returned NaN or infinite values for a finite {list(shape)} "
            "batch; keep the pixels finite"
        )
    return fn
