"""Streamed data sets: the same subsets, logits and fine-tune as in memory, reading only the
images each batch needs."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from search.errors import WorkloadError
from search.spec import parse_spec
from search.workloads.data import load_data, split
from search.workloads.models import resnet8
from search.workloads.stream import StreamedImages
from spaces.distillation import DistillConfig, FinetuneData, finetune, teacher_logits

SHAPE = (1, 8, 8)


class Generated(TorchDataset[tuple[torch.Tensor, int]]):
    """Images made from their index on each read (nothing held), counting the reads."""

    def __init__(self, n: int, seed: int, nan_at: int = -1) -> None:
        self.n, self.seed, self.nan_at = n, seed, nan_at
        self.reads = 0

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        self.reads += 1
        x = torch.rand(*SHAPE, generator=torch.Generator().manual_seed(self.seed * 100_003 + i))
        if i == self.nan_at:
            x[0, 0, 0] = float("nan")
        return x + (i % 10) / 10, i % 10


SOURCES: dict[str, Any] = {}


def generated() -> Any:
    return SOURCES["data"]


def _load(stream: bool | None, data: Any) -> tuple[Any, dict[str, Any]]:
    SOURCES["data"] = data
    spec = parse_spec({
        "name": "s",
        "model": {"name": "resnet8", "input_shape": list(SHAPE)},
        "data": {"name": f"{__name__}:generated", "stream": stream, "finetune_size": 256,
                 "val_size": 128, "calibration_size": 32, "batch_size": 32},
    })
    loaded = load_data(spec.data, spec.model)
    return loaded, split(loaded, spec.data, seed=3)


def _data() -> dict[str, Any]:
    return {"train": Generated(900, 1), "test": DataLoader(Generated(300, 2), batch_size=50),
            "mean": [0.9], "std": [0.4]}


def test_streamed_subsets_are_the_in_memory_ones() -> None:
    data = _data()
    streamed, parts = _load(True, data)
    assert isinstance(streamed.x_train, StreamedImages) and isinstance(streamed.x_test,
                                                                       StreamedImages)
    # one pass to check every item and keep its label, then the validation and calibration
    # subsets, which are small, read into memory
    assert data["train"].reads == 900 + 128 + 32
    _, in_memory = _load(False, _data())
    assert isinstance(parts["x_finetune"], StreamedImages)
    assert torch.equal(parts["x_finetune"][torch.arange(256)], in_memory["x_finetune"])
    for key in ("y_finetune", "x_val", "y_val", "x_calib"):
        assert torch.equal(parts[key], in_memory[key]), key
    before = data["train"].reads
    batch = parts["x_finetune"][torch.tensor([5, 0, 77])]
    assert batch.shape == (3, *SHAPE) and data["train"].reads == before + 3  # only those


def test_logits_and_fine_tune_on_streamed_data_match_in_memory() -> None:
    _, streamed = _load(True, _data())
    _, in_memory = _load(None, _data())  # small: kept in memory
    assert isinstance(in_memory["x_finetune"], torch.Tensor)
    torch.manual_seed(0)
    teacher = resnet8(SHAPE).eval()
    logits = teacher_logits(teacher, streamed["x_finetune"], batch_size=100)
    assert torch.allclose(logits, teacher_logits(teacher, in_memory["x_finetune"]), atol=1e-5)
    cfg = DistillConfig(temperature=4.0, alpha=0.5, lr=1e-3, steps=6, eval_every=3,
                        batch_size=32)
    students = []
    for parts in (streamed, in_memory):
        torch.manual_seed(1)
        student = resnet8(SHAPE)
        data = FinetuneData(parts["x_finetune"], parts["y_finetune"], parts["x_val"],
                            parts["y_val"])
        students.append(finetune(student, data, logits, cfg))
    for a, b in zip(students[0].parameters(), students[1].parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_streamed_images_pickle_for_ray() -> None:
    _, parts = _load(True, _data())
    copy = pickle.loads(pickle.dumps(parts["x_finetune"]))
    index = torch.tensor([1, 2, 200])
    assert torch.equal(copy[index], parts["x_finetune"][index])
    assert parts["x_finetune"].nbytes == 0  # a Ray task asks no memory for the images


def test_a_bad_streamed_item_is_named_when_the_data_is_loaded() -> None:
    data = {"train": Generated(300, 1, nan_at=137), "test": Generated(100, 2)}
    with pytest.raises(WorkloadError, match=r"data\.name: .*\(train\): image 137 has NaN"):
        _load(True, data)
    data = {"train": Generated(300, 1), "test": Generated(100, 2)}
    with pytest.raises(WorkloadError, match=r"labels span 0\.\.9, outside 0\.\.4"):
        SOURCES["data"] = data
        spec = parse_spec({"name": "s", "data": {"name": f"{__name__}:generated", "stream": True},
                           "model": {"name": "resnet8", "input_shape": list(SHAPE),
                                     "num_classes": 5}})
        load_data(spec.data, spec.model)
