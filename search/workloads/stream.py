"""Images streamed from a map-style ``torch.utils.data.Dataset``, batch by batch.

A data set larger than memory (or one with ``data.stream: true``) is never read into memory:
:class:`StreamedImages` holds the user's Dataset and the positions of a subset, and ``x[idx]``
reads the items at ``idx`` (a tensor, list or slice of positions) and stacks their images,
normalized. The fine-tune reads its batches this way, the teacher's logits are computed from
it batch by batch, and the export measures test accuracy batch by batch. Only the labels (one
integer per image), the validation and calibration subsets (``data.val_size`` and
``data.calibration_size`` images) and the teacher's logits on the fine-tune subset (4 bytes per
class per image) are kept in memory; on Ray they travel in the workload, through Ray's object
store, and so does the Dataset object, pickled: it must be picklable, and read its files from a
path each Ray node can reach.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from search.errors import WorkloadError

if TYPE_CHECKING:
    import torch

__all__ = ["StreamedImages", "normalize_batch", "read_item", "take"]


def read_item(source: Any, index: int, where: str) -> tuple[Any, ...]:
    """Item ``index`` of the user's map-style Dataset, which must be an (image, label) pair;
    a WorkloadError naming ``where`` and the item when reading fails or it is not one."""
    try:
        item = source[index]
    except Exception as exc:  # the user's Dataset
        raise WorkloadError(
            f"data.name: {where}: reading item {index} raised {type(exc).__name__}: "
            f"{str(exc)[:200]}; fix the Dataset's __getitem__"
        ) from None
    if not isinstance(item, tuple | list) or len(item) < 2:
        raise WorkloadError(f"data.name: {where}: item {index} is {type(item).__name__}, not "
                            "an (image, label) pair; return (image, label) from __getitem__")
    return tuple(item)


def take(x: torch.Tensor | StreamedImages, rows: torch.Tensor | slice) -> Any:
    """``x`` at ``rows``: a tensor's rows, or streamed images that stay streamed."""
    return x.subset(rows) if isinstance(x, StreamedImages) else x[rows]


def normalize_batch(
    x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]
) -> torch.Tensor:
    """``(x - mean) / std`` per channel (dim 1) of a batch N x C x ..."""
    import torch

    per_channel = (1, -1, *([1] * (x.ndim - 2)))
    return (x - torch.tensor(mean, dtype=x.dtype).view(per_channel)) / torch.tensor(
        std, dtype=x.dtype).view(per_channel)


@dataclass(frozen=True)
class StreamedImages:
    """The images of ``source`` at ``positions``, read on demand (see the module docstring).

    ``item_shape`` is one image's C x H x W; ``mean``/``std`` the normalization applied to
    each batch read (empty: none); ``where`` names the data for errors.
    """

    source: Any
    positions: torch.Tensor
    item_shape: tuple[int, ...]
    where: str
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    def __len__(self) -> int:
        return len(self.positions)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self.item_shape)

    @property
    def nbytes(self) -> int:
        """0: no image is held in memory (what a Ray task's memory request counts)."""
        return 0

    def subset(self, positions: torch.Tensor | slice) -> StreamedImages:
        """The images at ``positions`` of this subset, still streamed."""
        return replace(self, positions=self.positions[positions])

    def normalized(self, mean: tuple[float, ...], std: tuple[float, ...]) -> StreamedImages:
        return replace(self, mean=mean, std=std)

    def __getitem__(self, key: Any) -> torch.Tensor:
        """The images at ``key`` (positions in this subset), read and stacked: float32."""
        import torch

        picked = self.positions[key]
        if picked.ndim == 0:
            picked = picked.reshape(1)
        images = []
        for index in picked.tolist():
            image = torch.as_tensor(read_item(self.source, index, self.where)[0]).float()
            if tuple(image.shape) != self.item_shape:
                raise WorkloadError(
                    f"data.name: {self.where}: item {index} has shape {list(image.shape)}, "
                    f"item 0 {list(self.item_shape)}; resize them to one C x H x W shape"
                )
            images.append(image)
        x = torch.stack(images) if images else torch.empty(0, *self.item_shape)
        return normalize_batch(x, self.mean, self.std) if self.mean else x

    def read_all(self) -> torch.Tensor:
        """Every image of this subset in memory: for the small subsets (validation,
        calibration) only."""
        import torch

        return self[torch.arange(len(self))]
