"""``edgetune train SPEC``: train the teacher a spec names, and cache it as a plain state_dict.

The teacher never sees the last ``data.val_size`` training images: that is the validation
subset the search scores students on (see :func:`search.workloads.split`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from search.spec import load_spec


def train_from_spec(spec_path: Path, *, epochs: int, log: Callable[[str], None]) -> dict[str, Any]:
    import torch

    from search.teacher import train_teacher
    from search.workloads import load_data, model_as_written, teacher_cache_path
    from search.workloads.stream import take
    from spaces.distillation import accuracy

    spec = load_spec(spec_path)
    data = load_data(spec.data, spec.model)
    model = model_as_written(spec.model)
    n = len(data.x_train) - spec.data.val_size
    x = data.normalize(take(data.x_train, slice(0, n)))  # streamed stays streamed
    torch.manual_seed(spec.search.seed)
    start = time.perf_counter()
    train_teacher(
        model, x, data.y_train[:n], epochs=epochs, seed=spec.search.seed, log=lambda e: log(str(e))
    )
    seconds = time.perf_counter() - start
    test_accuracy = accuracy(model, data.normalize(data.x_test), data.y_test)
    path = teacher_cache_path(spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    log(f"trained {spec.model.name} for {epochs} epochs on {n} images in {seconds:.0f} s")
    return {
        "path": str(path),
        "test_accuracy": test_accuracy,
        "epochs": epochs,
        "train_images": n,
        "seconds": seconds,
    }
