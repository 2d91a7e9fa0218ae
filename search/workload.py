"""The workload of a study: the teacher, the data subsets and the teacher's logits.

A spec names a model and a data set, either built in (``experiments``) or as
``module:function``. They are turned into objects here, in one place. :func:`build_workload`
makes the :class:`Workload` once per study: the driver shares it with every worker (through
Ray's object store), so teacher logits are computed once per study, not once per trial.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from search.errors import WorkloadError
from search.spec import DataSpec, ModelSpec, Spec

if TYPE_CHECKING:
    import torch
    from torch import nn


def edgetune_home() -> Path:
    """Where edgetune keeps studies, caches and calibrations: ``$EDGETUNE_HOME`` or ``.edgetune``."""
    return Path(os.environ.get("EDGETUNE_HOME", ".edgetune")).resolve()


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


@dataclass(frozen=True)
class Workload:
    """Everything a worker needs for any trial of one study. Inputs are already normalized."""

    model: ModelSpec
    teacher_state: dict[str, torch.Tensor]
    x_finetune: torch.Tensor
    y_finetune: torch.Tensor
    teacher_logits: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_calib: torch.Tensor
    batch_size: int

    def teacher(self) -> nn.Module:
        model = build_model(self.model)
        model.load_state_dict(self.teacher_state)
        return model.eval()


def _entry_point(ref: str, field: str) -> Callable[..., Any]:
    module_name, _, attr = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any import failure of user code is the user's to fix
        raise WorkloadError(
            f"{field}: cannot import module {module_name!r} ({exc}); check that it is on PYTHONPATH"
        ) from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise WorkloadError(f"{field}: {module_name!r} has no function {attr!r}")
    return fn  # type: ignore[no-any-return]


def build_model(spec: ModelSpec) -> nn.Module:
    """A fresh, untrained model as the spec names it."""
    from torch import nn

    from experiments.models import BUILTIN_MODELS

    if ":" in spec.name:
        factory = _entry_point(spec.name, "model.name")
    elif spec.name in BUILTIN_MODELS:
        factory = BUILTIN_MODELS[spec.name]
    else:
        raise WorkloadError(
            f"model.name: unknown model {spec.name!r}; use one of "
            f"{', '.join(sorted(BUILTIN_MODELS))} or module:function"
        )
    try:
        model = factory(input_shape=tuple(spec.input_shape), num_classes=spec.num_classes)
    except Exception as exc:
        raise WorkloadError(
            f"model.name: {spec.name} could not be built for input "
            f"{list(spec.input_shape)} ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(model, nn.Module):
        raise WorkloadError(
            f"model.name: {spec.name} returned {type(model).__name__}, not a torch.nn.Module"
        )
    return model


def load_data(spec: DataSpec) -> Dataset:
    """The data set as the spec names it, with its normalization."""
    from experiments.fashion_mnist import MEAN, STD, load_fashion_mnist

    if spec.name == "fashion-mnist":
        x_train, y_train, x_test, y_test = load_fashion_mnist(spec.path)
        return Dataset(x_train, y_train, x_test, y_test, mean=(MEAN,), std=(STD,))
    if ":" not in spec.name:
        raise WorkloadError(
            f"data.name: unknown data set {spec.name!r}; use fashion-mnist or module:function"
        )
    loader = _entry_point(spec.name, "data.name")
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


def teacher_cache_path(spec: Spec) -> Path:
    """Where ``edgetune train`` caches the teacher for this model and data set."""
    key = json.dumps(
        {
            "model": spec.model.model_dump(mode="json", exclude={"weights"}),
            "data": spec.data.name,
            "path": str(spec.data.path),
        },
        sort_keys=True,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return edgetune_home() / "teachers" / f"{spec.model.name.replace(':', '_')}-{digest}.pt"


def load_teacher(spec: Spec) -> nn.Module:
    """The trained teacher: ``model.weights`` if given, else the one ``edgetune train`` cached."""
    import torch

    path = spec.model.weights or teacher_cache_path(spec)
    if not path.exists():
        if spec.model.weights is not None:
            raise WorkloadError(f"model.weights: no file at {path}; check the path")
        raise WorkloadError(
            f"model.weights: not given and no cached teacher at {path}; "
            f"run `edgetune train SPEC` first, or set model.weights"
        )
    model = build_model(spec.model)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        model.load_state_dict(state)
    except Exception as exc:
        raise WorkloadError(
            f"model.weights: {path} is not a plain state_dict for "
            f"{spec.model.name} ({type(exc).__name__}: {str(exc)[:200]}); "
            "save it with torch.save(model.state_dict(), path)"
        ) from None
    return model.eval()


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


def build_workload(spec: Spec, teacher: nn.Module, data: Dataset) -> Workload:
    """Subsets plus the teacher's logits on the fine-tune subset, computed once."""
    from spaces.distillation import teacher_logits

    parts = split(data, spec.data, spec.search.seed)
    logits = teacher_logits(teacher, parts["x_finetune"])
    return Workload(
        model=spec.model,
        teacher_state={k: v.detach().clone() for k, v in teacher.state_dict().items()},
        teacher_logits=logits,
        batch_size=spec.data.batch_size,
        **parts,
    )
