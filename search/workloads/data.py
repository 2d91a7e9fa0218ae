"""A study's data set: loaded as the spec names it, checked, then split into the search's
subsets.

``data.name`` is either a built-in data set (``fashion-mnist``, read by
:mod:`search.workloads.fashion_mnist`) or ``module:function``, a loader returning one of:

* a dict with tensors ``x_train``, ``y_train``, ``x_test``, ``y_test`` and optional ``mean``
  and ``std`` (per channel; default no normalization);
* a pair ``(train, test)`` of ``torch.utils.data.Dataset``s or ``DataLoader``s, each item an
  ``(image, label)`` pair, images C x H x W tensors in the scale the model expects;
* a dict with ``train`` and ``test`` as those, and optional ``mean`` and ``std``.

Datasets and loaders are read once, item by item (a loader's own batching and shuffling are not
used: the spec's sizes and seed choose the subsets). One that fits in half the available memory
is kept in memory; a larger one (or any, with ``data.stream: true``) is streamed: its labels are
kept and its images read again batch by batch when needed
(:class:`~search.workloads.stream.StreamedImages`); ``data.stream: false`` refuses one that does
not fit instead. Data the model cannot take are refused with a clear error: wrong image shapes,
labels that are not integers in ``[0, num_classes)``, NaN or infinite pixels, an empty split.
All of this happens when a study starts, before any trial.
"""

from __future__ import annotations

from collections.abc import Sized
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from search.errors import WorkloadError
from search.spec import DataSpec, ModelSpec
from search.workloads.entry_points import entry_point
from search.workloads.objects import OBJECT, object_missing
from search.workloads.stream import StreamedImages, normalize_batch, read_item, take

if TYPE_CHECKING:
    import torch

__all__ = ["Dataset", "load_data", "split"]


@dataclass(frozen=True)
class Dataset:
    """Pixels (N×C×H×W float32, in memory or streamed) and int64 labels, plus the
    normalization to apply."""

    x_train: torch.Tensor | StreamedImages
    y_train: torch.Tensor
    x_test: torch.Tensor | StreamedImages
    y_test: torch.Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def normalize(self, x: Any) -> Any:
        """``x`` normalized: a tensor, or streamed images that normalize each batch read."""
        if isinstance(x, StreamedImages):
            return x.normalized(self.mean, self.std)
        return normalize_batch(x, self.mean, self.std)


def load_data(spec: DataSpec, model: ModelSpec | None = None, given: Any = None) -> Dataset:
    """The data set as the spec names it (or ``given``, the data object of a ``data.name``
    :data:`~search.workloads.objects.OBJECT`), with its normalization, checked against
    ``model``'s input shape and class count when given."""
    if spec.name == OBJECT:
        if given is None:
            raise object_missing("data")
        data = _from_loader(given, "the data object", spec.stream)
    elif spec.name == "fashion-mnist":
        from search.workloads.fashion_mnist import MEAN, STD, load_fashion_mnist

        x_train, y_train, x_test, y_test = load_fashion_mnist(spec.path)
        data = Dataset(x_train, y_train, x_test, y_test, mean=(MEAN,), std=(STD,))
    elif ":" not in spec.name:
        raise WorkloadError(
            f"data.name: unknown data set {spec.name!r}; use fashion-mnist or module:function"
        )
    else:
        loader = entry_point(spec.name, "data.name")
        try:
            out = loader(spec.path) if spec.path is not None else loader()
        except Exception as exc:  # the user's code: say where it failed, no traceback
            raise WorkloadError(
                f"data.name: {spec.name} raised {type(exc).__name__}: {str(exc)[:200]}; fix "
                "the loader (run it alone to see the traceback)"
            ) from None
        data = _from_loader(out, spec.name, spec.stream)
    _check(data, spec.name, model)
    return data


_RETURNS = (
    "must return a dict with x_train, y_train, x_test, y_test (and optional mean, std), a "
    "(train, test) pair of torch Datasets or DataLoaders, or a dict with train and test as those"
)


def _from_loader(out: Any, name: str, stream: bool | None) -> Dataset:
    import torch

    if isinstance(out, tuple | list) and len(out) == 2:
        out = {"train": out[0], "test": out[1]}
    if not isinstance(out, dict):
        raise WorkloadError(f"data.name: {name} {_RETURNS}; it returned {type(out).__name__}")
    if "train" in out or "test" in out:
        try:
            train = _read(out["train"], f"{name} (train)", stream)
            test = _read(out["test"], f"{name} (test)", stream)
        except KeyError as exc:
            raise WorkloadError(f"data.name: {name} {_RETURNS}; missing {exc}") from None
        return Dataset(*train, *test, mean=_stats(out, name, "mean", 0.0),
                       std=_stats(out, name, "std", 1.0))
    try:
        x_train, y_train, x_test, y_test = (
            out["x_train"], out["y_train"], out["x_test"], out["y_test"])
    except KeyError as exc:
        raise WorkloadError(f"data.name: {name} {_RETURNS}; missing {exc}") from None
    tensors = (x_train, y_train, x_test, y_test)
    if not all(isinstance(t, torch.Tensor) for t in tensors):
        raise WorkloadError(f"data.name: {name}: x_train, y_train, x_test and y_test must be "
                            "torch tensors; convert them with torch.as_tensor")
    return Dataset(x_train.float(), y_train, x_test.float(), y_test,
                   mean=_stats(out, name, "mean", 0.0), std=_stats(out, name, "std", 1.0))


def _stats(out: dict[str, Any], name: str, key: str, default: float) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in out.get(key, (default,)))
    except (TypeError, ValueError):
        raise WorkloadError(f"data.name: {name}: mean and std must be sequences of numbers, "
                            "one per channel") from None


def _read(
    source: Any, where: str, stream: bool | None
) -> tuple[torch.Tensor | StreamedImages, torch.Tensor]:
    """A torch ``Dataset`` (or a ``DataLoader``'s) read into (images, labels): the images in
    memory, or streamed (``stream`` true, or None and too large for memory), each checked."""
    import torch
    from torch.utils.data import DataLoader, IterableDataset

    ds = source.dataset if isinstance(source, DataLoader) else source
    if isinstance(ds, IterableDataset) or not hasattr(ds, "__getitem__"):
        raise WorkloadError(
            f"data.name: {where} is {type(ds).__name__}, not a map-style Dataset (with "
            "__len__ and __getitem__); iterable datasets are not supported: return one that "
            "can be indexed, or tensors"
        )
    try:
        n = len(cast(Sized, ds))
    except TypeError:
        raise WorkloadError(f"data.name: {where} has no length; give the Dataset a "
                            "__len__") from None
    if n == 0:
        raise WorkloadError(f"data.name: {where} is empty; it must hold at least one item")
    xs, ys = [], []
    streamed = bool(stream)
    first: tuple[int, ...] = ()
    for i in range(n):
        item = read_item(ds, i, where)
        x = torch.as_tensor(item[0])
        if i == 0:
            first = tuple(x.shape)
            limit = _memory_limit_bytes()
            need = n * x.numel() * 4
            if need > limit and stream is False:
                raise WorkloadError(
                    f"data.name: {where} would take {need / 2**30:.1f} GiB in memory, more "
                    f"than half the available memory ({limit / 2**30:.1f} GiB), and "
                    "data.stream is false: stream it (data.stream: true or null) or use a "
                    "smaller subset"
                )
            streamed = streamed or need > limit
        if streamed:  # checked now, read again batch by batch: never all in memory
            if tuple(x.shape) != first:
                raise WorkloadError(f"data.name: {where}: images have different shapes "
                                    f"{[list(first), list(x.shape)]}; resize them to one "
                                    "C x H x W shape")
            if not bool(torch.isfinite(x.float()).all()):
                raise WorkloadError(f"data.name: {where}: image {i} has NaN or infinite "
                                    "pixels; clean or drop it")
        else:
            xs.append(x)
        label = _label(item[1])
        if label is None:
            raise WorkloadError(f"data.name: {where}: item {i}'s label is not one integer "
                                f"({item[1]!r}); return class indices")
        ys.append(label)
    labels = torch.tensor(ys, dtype=torch.int64)
    if streamed:
        return StreamedImages(ds, torch.arange(n), first, where), labels
    shapes = {tuple(x.shape) for x in xs}
    if len(shapes) != 1:
        raise WorkloadError(f"data.name: {where}: images have different shapes "
                            f"{sorted(shapes)[:3]}; resize them to one C x H x W shape")
    return torch.stack(xs).float(), labels


def _label(v: Any) -> int | None:
    """One integer class index from a label (a Python or numpy number, a 0-d tensor)."""
    import torch

    t = torch.as_tensor(v)
    if t.numel() != 1:
        return None
    value = float(t.item())
    return int(value) if value.is_integer() else None


def _memory_limit_bytes() -> int:
    """Half the memory available now (``MemAvailable``), or 8 GiB where it cannot be read."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024 // 2
    except OSError:
        pass
    return 8 * 2**30


def _check(data: Dataset, name: str, model: ModelSpec | None) -> None:
    """One line naming the field for data the search cannot use."""
    import torch

    for split_name, x, y in (("train", data.x_train, data.y_train),
                             ("test", data.x_test, data.y_test)):
        where = f"data.name: {name} ({split_name})"
        dims = (1 + len(model.input_shape),) if model is not None else (3, 4)
        if len(x.shape) not in dims:
            raise WorkloadError(f"{where}: inputs have shape {tuple(x.shape)}; give N x C x H x W "
                                "(or N x C x L for a 1-D model.input_shape)")
        if len(x) == 0:
            raise WorkloadError(f"{where} is empty; it must hold at least one image")
        if len(y) != len(x) or y.ndim != 1:
            raise WorkloadError(f"{where}: {len(x)} images but labels of shape "
                                f"{tuple(y.shape)}; give one integer label per image")
        if y.is_floating_point() and not bool((y == y.round()).all()):
            raise WorkloadError(f"{where}: labels are not integers; give class indices")
        # streamed images were checked as they were read
        if isinstance(x, torch.Tensor) and not bool(torch.isfinite(x).all()):
            bad = int((~torch.isfinite(x)).flatten(1).any(1).nonzero()[0])
            raise WorkloadError(f"{where}: image {bad} has NaN or infinite pixels; clean or "
                                "drop it")
        if model is not None:
            if tuple(x.shape[1:]) != tuple(model.input_shape):
                raise WorkloadError(
                    f"{where}: images are {list(x.shape[1:])} but model.input_shape is "
                    f"{list(model.input_shape)}; make them agree"
                )
            lo, hi = int(y.min()), int(y.max())
            if lo < 0 or hi >= model.num_classes:
                raise WorkloadError(
                    f"{where}: labels span {lo}..{hi}, outside 0..{model.num_classes - 1} "
                    f"(model.num_classes: {model.num_classes}); fix the labels or "
                    "model.num_classes"
                )
    channels = data.x_train.shape[1]
    for key, values in (("mean", data.mean), ("std", data.std)):
        if len(values) not in (1, channels):
            raise WorkloadError(f"data.name: {name}: {key} has {len(values)} values for "
                                f"{channels} channels; give one per channel (or one)")
    if any(v <= 0 for v in data.std):
        raise WorkloadError(f"data.name: {name}: std must be positive, got {data.std}")


def split(data: Dataset, spec: DataSpec, seed: int) -> dict[str, Any]:
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
    ft = _training_order(n, spec, seed)[: spec.finetune_size]
    val = torch.arange(n - spec.val_size, n)
    x_ft = data.normalize(take(data.x_train, ft))  # streamed stays streamed
    x_val = data.normalize(take(data.x_train, val))
    if isinstance(x_val, StreamedImages):  # small: read into memory
        x_val = x_val.read_all()
    return {
        "x_finetune": x_ft,
        "y_finetune": data.y_train[ft],
        "x_val": x_val,
        "y_val": data.y_train[val],
        "x_calib": x_ft[: spec.calibration_size],
    }


def _training_order(n: int, spec: DataSpec, seed: int) -> torch.Tensor:
    """The training images outside the validation subset, in the study's random order: the
    fine-tune subset is its head."""
    import torch

    return torch.randperm(n - spec.val_size, generator=torch.Generator().manual_seed(seed))


def training_images(data: Dataset, spec: DataSpec, seed: int,
                    images: int | None) -> tuple[Any, torch.Tensor]:
    """(x, y) to finalize on: ``images`` training images (None: all) outside the validation
    subset, the fine-tune subset first; normalized, streamed if ``data`` is."""
    order = _training_order(len(data.x_train), spec, seed)
    if images is not None:
        if images > len(order):
            raise WorkloadError(
                f"finalize.images: {images} exceeds the {len(order)} training images outside "
                "the validation subset; lower it, or omit it to use them all"
            )
        order = order[:images]
    return data.normalize(take(data.x_train, order)), data.y_train[order]
