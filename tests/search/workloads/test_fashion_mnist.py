from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from search.errors import WorkloadError
from search.workloads.fashion_mnist import (
    BUILTIN_DATA,
    MEAN,
    STD,
    load_fashion_mnist,
    normalize,
    read_idx,
)

_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D}


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, _CODES[array.dtype], array.ndim])
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def _fake_folder(folder: Path, n_train: int = 5, n_test: int = 3, gz: bool = True) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        ext = ".gz" if gz else ""
        write_idx(
            folder / f"{split}-images-idx3-ubyte{ext}",
            rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
        )
        write_idx(
            folder / f"{split}-labels-idx1-ubyte{ext}", rng.integers(0, 10, (n,), dtype=np.uint8)
        )


@pytest.mark.parametrize("name", ["a-idx3-ubyte", "a-idx3-ubyte.gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float32])
def test_read_idx_round_trips(tmp_path: Path, name: str, dtype: type) -> None:
    values = np.arange(24) * 10 if dtype is np.uint8 else np.arange(24) * 7 - 20
    array: np.ndarray = values.astype(dtype).reshape(2, 3, 4)
    write_idx(tmp_path / name, array)
    back = read_idx(tmp_path / name)
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)


def test_truncated_idx_is_a_workload_error(tmp_path: Path) -> None:
    path = tmp_path / "x-idx1-ubyte"
    write_idx(path, np.arange(10, dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(WorkloadError, match="truncated"):
        read_idx(path)
    path.write_bytes(b"PK\x03\x04hello")
    with pytest.raises(WorkloadError, match="not an idx file"):
        read_idx(path)


@pytest.mark.parametrize("gz", [True, False])
def test_load_from_a_user_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gz: bool) -> None:
    monkeypatch.setenv("EDGETUNE_HOME", str(tmp_path / "home"))
    _fake_folder(tmp_path / "data", gz=gz)
    for attempt in range(2):  # the second load comes from the .npy cache
        x_train, y_train, x_test, y_test = load_fashion_mnist(tmp_path / "data")
        assert x_train.shape == (5, 1, 28, 28) and x_test.shape == (3, 1, 28, 28)
        assert x_train.dtype == torch.float32 and y_train.dtype == torch.int64
        assert 0.0 <= float(x_train.min()) and float(x_train.max()) <= 1.0
        assert y_test.shape == (3,)
        raw = read_idx(tmp_path / "data" / ("train-images-idx3-ubyte" + (".gz" if gz else "")))
        assert torch.equal(x_train[:, 0], torch.from_numpy(raw.astype(np.float32) / 255))
        assert len(list((tmp_path / "home" / "cache").glob("*.npy"))) == 4, attempt


def test_missing_files_name_the_folder_and_the_fix(tmp_path: Path) -> None:
    _fake_folder(tmp_path, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(WorkloadError) as info:
        load_fashion_mnist(tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message and "t10k-labels-idx1-ubyte" in message
    assert "apt-get install dataset-fashion-mnist" in message and "data.path" in message
    with pytest.raises(WorkloadError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path / "does-not-exist")


def test_normalize_and_registry() -> None:
    x = torch.tensor([0.0, MEAN, 1.0])
    assert torch.allclose(normalize(x), torch.tensor([-MEAN / STD, 0.0, (1 - MEAN) / STD]))
    assert BUILTIN_DATA == {"fashion-mnist": load_fashion_mnist}
