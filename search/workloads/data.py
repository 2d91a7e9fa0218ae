"""A study's data set: loaded as the spec names it, then split into the search's subsets.

``data.name`` is either a built-in data set (``fashion-mnist``, read by
:mod:`search.workloads.fashion_mnist`) or ``module:function``, a loader returning a dict with
``x_train``, ``y_train``, ``x_test``, ``y_test`` and optional ``mean`` and ``std``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from search.errors import WorkloadError
from search.spec import DataSpec
from search.workloads.entry_points import entry_point

if TYPE_CHECKING:
    import torch

__all__ = ["Dataset", "load_data", "split"]


@dataclass(frozen=True)
class Dataset:
    """Pixels in [0, 1] (N×C×H×W float32) and int64 labels, plus the normalization to apply."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        mean = torch.tensor(self.mean, dtype=x.dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype).view(1, -1, 1, 1)
        return (x - mean) / std


def load_data(spec: DataSpec) -> Dataset:
    """The data set as the spec names it, with its normalization."""
    if spec.name == "fashion-mnist":
        from search.workloads.fashion_mnist import MEAN, STD, load_fashion_mnist

        x_train, y_train, x_test, y_test = load_fashion_mnist(spec.path)
        return Dataset(x_train, y_train, x_test, y_test, mean=(MEAN,), std=(STD,))
    if ":" not in spec.name:
        raise WorkloadError(
            f"data.name: unknown data set {spec.name!r}; use fashion-mnist or module:function"
        )
    loader = entry_point(spec.name, "data.name")
    out = loader(spec.path) if spec.path is not None else loader()
    try:
        return Dataset(
            x_train=out["x_train"],
            y_train=out["y_train"],
            x_test=out["x_test"],
            y_test=out["y_test"],
            mean=tuple(out.get("mean", (0.0,))),
            std=tuple(out.get("std", (1.0,))),
        )
    except (KeyError, TypeError) as exc:
        raise WorkloadError(
            f"data.name: {spec.name} must return a dict with x_train, y_train, "
            f"x_test, y_test (and optional mean, std); missing {exc}"
        ) from None


def split(data: Dataset, spec: DataSpec, seed: int) -> dict[str, torch.Tensor]:
    """Fine-tune, validation and calibration subsets of the training set, normalized.

    The validation subset is the last ``val_size`` training images (the built-in teachers are
    trained without the last 5,000, so they never saw it); the fine-tune subset is drawn at
    random from the rest, and the calibration subset from the fine-tune subset. The test set
    is kept for the final measurement of the exported model.
    """
    import torch

    n = len(data.x_train)
    need = spec.finetune_size + spec.val_size
    if need > n:
        raise WorkloadError(
            f"data: finetune_size + val_size = {need} exceeds the {n} training images; lower them"
        )
    pool = n - spec.val_size
    ft = torch.randperm(pool, generator=torch.Generator().manual_seed(seed))[: spec.finetune_size]
    val = torch.arange(pool, n)
    x_ft = data.normalize(data.x_train[ft])
    return {
        "x_finetune": x_ft,
        "y_finetune": data.y_train[ft],
        "x_val": data.normalize(data.x_train[val]),
        "y_val": data.y_train[val],
        "x_calib": x_ft[: spec.calibration_size],
    }
