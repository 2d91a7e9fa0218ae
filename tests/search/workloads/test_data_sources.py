"""Data as PyTorch gives it (Datasets and DataLoaders), and one-line errors for bad data."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset
from torch.utils.data import Dataset as TorchDataset

from search.errors import WorkloadError
from search.spec import DataSpec, ModelSpec
from search.workloads import load_data, split
from tests.search.workloads.test_workloads import tiny_data

HERE = __name__
MODEL = ModelSpec(name="resnet8", input_shape=(1, 4, 4), num_classes=3)


def _tensors() -> dict[str, Any]:
    """The tensors of test_workloads' tiny data set, without its normalization."""
    return {k: v for k, v in tiny_data().items() if k not in ("mean", "std")}


class Pairs(TorchDataset[tuple[torch.Tensor, int]]):
    """A map-style dataset of (image, label) pairs, labels as Python ints."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.x[i], int(self.y[i])


class Stream(IterableDataset[tuple[torch.Tensor, int]]):
    def __iter__(self) -> Iterator[tuple[torch.Tensor, int]]:
        yield torch.zeros(1, 4, 4), 0


def as_tensors() -> dict[str, Any]:
    return _tensors()


def as_datasets() -> tuple[Pairs, Pairs]:
    t = _tensors()
    return Pairs(t["x_train"], t["y_train"]), Pairs(t["x_test"], t["y_test"])


def as_loaders() -> dict[str, Any]:
    train, test = as_datasets()
    # the loader's batching and shuffling are not used: the spec's sizes and seed choose
    return {"train": DataLoader(train, batch_size=7, shuffle=True),
            "test": DataLoader(test, batch_size=5), "mean": [0.5], "std": [0.25]}


def _with(**changes: Any) -> Callable[[], dict[str, Any]]:
    def loader() -> dict[str, Any]:
        return {**_tensors(), **changes}
    return loader


wrong_shape = _with(x_test=torch.rand(50, 3, 4, 4))
labels_out_of_range = _with(y_train=torch.full((300,), 3))
negative_labels = _with(y_test=torch.full((50,), -1))
fractional_labels = _with(y_train=torch.rand(300))
nan_pixels = _with(x_train=torch.rand(300, 1, 4, 4).index_fill_(0, torch.tensor([7]), float("nan")))
empty_test = _with(x_test=torch.rand(0, 1, 4, 4), y_test=torch.zeros(0, dtype=torch.int64))
short_labels = _with(y_train=torch.zeros(299, dtype=torch.int64))
flat_images = _with(x_train=torch.rand(300, 16))
mean_per_channel_mismatch = _with(mean=(0.1, 0.2))
zero_std = _with(std=(0.0,))


def iterable() -> tuple[Any, Any]:
    return Stream(), Stream()


def empty_dataset() -> tuple[Any, Any]:
    t = _tensors()
    return Pairs(t["x_train"][:0], t["y_train"][:0]), Pairs(t["x_test"], t["y_test"])


def one_hot_labels() -> tuple[Any, Any]:
    t = _tensors()

    class OneHot(Pairs):
        def __getitem__(self, i: int) -> tuple[torch.Tensor, Any]:  # type: ignore[override]
            return self.x[i], torch.nn.functional.one_hot(self.y[i], 3)

    return OneHot(t["x_train"], t["y_train"]), Pairs(t["x_test"], t["y_test"])


def not_data() -> str:
    return "train.csv"


def failing_loader() -> Any:
    raise FileNotFoundError("no such file: train.csv")


class Broken(Pairs):
    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if i == 5:
            raise IndexError("corrupt record")
        return super().__getitem__(i)


def broken_item() -> tuple[Any, Any]:
    t = _tensors()
    return Broken(t["x_train"], t["y_train"]), Pairs(t["x_test"], t["y_test"])


@pytest.mark.parametrize("source", ["as_datasets", "as_loaders"])
def test_datasets_and_loaders_load_as_the_same_tensors(source: str) -> None:
    ref = load_data(DataSpec(name=f"{HERE}:as_tensors"), MODEL)
    data = load_data(DataSpec(name=f"{HERE}:{source}"), MODEL)  # small: read into memory
    assert isinstance(data.x_train, torch.Tensor) and isinstance(data.x_test, torch.Tensor)
    assert isinstance(ref.x_train, torch.Tensor) and isinstance(ref.x_test, torch.Tensor)
    assert torch.equal(data.x_train, ref.x_train) and torch.equal(data.y_train, ref.y_train)
    assert torch.equal(data.x_test, ref.x_test) and torch.equal(data.y_test, ref.y_test)
    assert data.y_train.dtype == torch.int64
    spec = DataSpec(name=f"{HERE}:{source}", finetune_size=128, val_size=64)
    a, b = split(data, spec, seed=3), split(ref, spec, seed=3)
    assert torch.equal(a["y_finetune"], b["y_finetune"])
    if source == "as_loaders":
        assert data.mean == (0.5,) and data.std == (0.25,)


@pytest.mark.parametrize(
    ("loader", "message"),
    [
        ("wrong_shape", r"\(test\): images are \[3, 4, 4\] but model.input_shape is \[1, 4, 4\]"),
        ("labels_out_of_range", r"\(train\): labels span 3..3, outside 0..2"),
        ("negative_labels", r"\(test\): labels span -1..-1"),
        ("fractional_labels", "labels are not integers"),
        ("nan_pixels", r"\(train\): image 7 has NaN or infinite pixels"),
        ("empty_test", r"\(test\) is empty"),
        ("short_labels", "300 images but labels of shape"),
        ("flat_images", r"inputs have shape \(300, 16\)"),
        ("mean_per_channel_mismatch", "mean has 2 values for 1 channels"),
        ("zero_std", "std must be positive"),
        ("iterable", "not a map-style Dataset"),
        ("empty_dataset", r"\(train\) is empty"),
        ("one_hot_labels", "label is not one integer"),
        ("not_data", "it returned str"),
        ("failing_loader", "raised FileNotFoundError: no such file: train.csv"),
        ("broken_item", r"\(train\): reading item 5 raised IndexError: corrupt record"),
    ],
)
def test_bad_data_gets_one_line_naming_the_field(loader: str, message: str) -> None:
    with pytest.raises(WorkloadError, match=message) as info:
        load_data(DataSpec(name=f"{HERE}:{loader}"), MODEL)
    text = str(info.value)
    assert text.startswith(f"data.name: {HERE}:{loader}") and "\n" not in text


def test_training_on_bad_data_stops_with_one_line(tmp_path: Any) -> None:
    """`edgetune train` with labels outside the model's classes: a one-line error before any
    training, no traceback (a search loads its data the same way, before any trial)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        f"name: bad\nmodel: {{name: resnet8, input_shape: [1, 4, 4], num_classes: 3}}\n"
        f"data: {{name: '{HERE}:labels_out_of_range', finetune_size: 128, val_size: 64}}\n"
        "target: host\nsearch: {trials: 1, executor: process, measure: never}\n"
    )
    env = {"EDGETUNE_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-m", "search.cli", "train", str(spec)],
        cwd=root, capture_output=True, text=True, env=env, timeout=300,
    )
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.strip().count("\n") == 0 and "labels span 3..3" in out.stderr
    assert not (tmp_path / "home" / "teachers").exists()
