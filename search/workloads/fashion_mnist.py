"""Fashion-MNIST: a numpy idx reader, the loader, and the normalization the models expect.

:func:`load_fashion_mnist` returns *raw* images in [0, 1]. Every built-in model trained on
Fashion-MNIST (the committed teacher included) takes *normalized* images:
``normalize(x) = (x - MEAN) / STD``. Apply it once, after loading.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from search.errors import WorkloadError
from targets.home import edgetune_home

__all__ = [
    "BUILTIN_DATA",
    "DEBIAN_PATH",
    "MEAN",
    "STD",
    "load_fashion_mnist",
    "normalize",
    "read_idx",
]

DEBIAN_PATH = Path("/usr/share/datasets/fashion-mnist")
"""Where the Debian package ``dataset-fashion-mnist`` puts the idx files."""

# Computed once from the 60,000 train images scaled to [0, 1] (all pixels):
# mean 0.28604, std 0.35302.
MEAN = 0.2860
STD = 0.3530

_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}

# idx type codes -> numpy dtypes (idx stores multi-byte values big-endian).
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """Read an idx file (gzipped if its name ends in ``.gz``) into a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise WorkloadError(f"cannot read idx file {path}: {e}; check the file is complete") from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise WorkloadError(
            f"{path}: not an idx file (an idx file starts with 0x00 0x00 <type> <ndim>), "
            f"got {data[:4]!r}; give the original idx files"
        )
    dtype, ndim = np.dtype(_IDX_DTYPES[data[2]]), data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - offset != expected:
        raise WorkloadError(
            f"{path}: header says shape {shape} ({expected} bytes of data), "
            f"got {len(data) - offset} bytes; the file is truncated or corrupt"
        )
    return (
        np.frombuffer(data, dtype=dtype, offset=offset)
        .reshape(shape)
        .astype(dtype.newbyteorder("="))
    )


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _cache_dir() -> Path:
    return edgetune_home() / "cache"


def _cached(path: Path) -> np.ndarray:
    """``read_idx`` with the decoded array cached as ``.npy`` under ``$EDGETUNE_HOME/cache``,
    keyed by the file's absolute path, size and modification time."""
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()
    cache = _cache_dir() / f"idx-{path.name.split('.')[0]}-{key[:16]}.npy"
    if cache.is_file():
        try:
            return np.load(cache, allow_pickle=False)
        except (OSError, ValueError):
            pass  # a broken cache entry is rebuilt below
    array = read_idx(path)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, array, allow_pickle=False)
        tmp.replace(cache)
    except OSError:
        pass  # the cache is an optimization; a read-only home only costs decoding time
    return array


def load_fashion_mnist(
    path: Path | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Load Fashion-MNIST as ``(x_train, y_train, x_test, y_test)``.

    Images are float32 in [0, 1], shape ``N×1×28×28`` (not normalized; see :func:`normalize`);
    labels are int64. ``path=None`` uses the Debian package's folder; otherwise ``path`` must be
    a folder holding the four idx files (gzipped or not).
    """
    folder = Path(path) if path is not None else DEBIAN_PATH
    found = {key: _find(folder, stem) for key, stem in _FILES.items()}
    missing = [_FILES[key] for key, p in found.items() if p is None]
    if missing:
        raise WorkloadError(
            f"Fashion-MNIST: folder {folder} must hold the four idx files (optionally .gz), "
            f"missing {', '.join(missing)}; run `apt-get install dataset-fashion-mnist` or give "
            f"data.path, a folder with the idx files"
        )
    arrays = {key: _cached(p) for key, p in found.items() if p is not None}
    out: list[torch.Tensor] = []
    for split in ("train", "test"):
        images, labels = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.shape != images.shape[:1]:
            raise WorkloadError(
                f"Fashion-MNIST {split}: images must be N×28×28 with N labels, got images "
                f"{images.shape} and labels {labels.shape} in {folder}; give the original files"
            )
        x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
        out += [x, torch.from_numpy(labels.astype(np.int64))]
    return out[0], out[1], out[2], out[3]


def normalize(x: torch.Tensor) -> torch.Tensor:
    """``(x - MEAN) / STD``: the input the Fashion-MNIST models take."""
    return (x - MEAN) / STD


BUILTIN_DATA = {"fashion-mnist": load_fashion_mnist}
