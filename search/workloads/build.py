"""The model and the teacher a spec names, and the :class:`Workload` shared with every trial.

``model.name`` is either a built-in model (:data:`search.workloads.models.BUILTIN_MODELS`),
``module:function``, a builder called as ``(input_shape=(C, H, W), num_classes=N)``, or
:data:`OBJECT`: a model object given to :mod:`search.api` (:class:`Objects`), which a study
needs again on every run.
:func:`build_workload` makes the :class:`Workload` once per study: the driver shares it with
every worker (through Ray's object store), so teacher logits are computed once per study, not
once per trial.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from search.errors import WorkloadError
from search.spec import ModelSpec, Spec
from search.workloads.data import Dataset, split
from search.workloads.entry_points import entry_point
from search.workloads.objects import OBJECT, Objects, object_missing
from search.workloads.stream import StreamedImages
from targets.home import edgetune_home

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "Workload",
    "build_model",
    "build_workload",
    "load_teacher",
    "model_as_written",
    "teacher_cache_path",
]

@dataclass(frozen=True)
class Workload:
    """Everything a worker needs for any trial of one study. Inputs are already normalized."""

    model: ModelSpec
    teacher_state: dict[str, torch.Tensor]
    x_finetune: torch.Tensor | StreamedImages
    """In memory, or streamed from the user's Dataset batch by batch."""
    y_finetune: torch.Tensor
    teacher_logits: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_calib: torch.Tensor
    batch_size: int
    architecture: nn.Module | None = field(default=None, repr=False)
    """The teacher's module for a model given as an object (``model.name`` :data:`OBJECT`)."""

    def teacher(self) -> nn.Module:
        model = build_model(self.model, Objects(self.architecture))
        model.load_state_dict(self.teacher_state)
        return model.eval()


def build_model(spec: ModelSpec, objects: Objects | None = None) -> nn.Module:
    """A model as the spec names it (a fresh, untrained one, or a copy of the model object),
    with its functional ``+``, ``*`` and ``torch.cat`` made modules, so that they are quantized
    like every other layer (:func:`spaces.functional.modularize`)."""
    from spaces.functional import modularize

    return modularize(model_as_written(spec, objects))


def model_as_written(spec: ModelSpec, objects: Objects | None = None) -> nn.Module:
    """The model as its author wrote it: what ``edgetune train`` trains and what a teacher's
    state_dict is of."""
    from torch import nn

    from search.workloads.models import BUILTIN_MODELS

    if spec.name == OBJECT:
        if objects is None or objects.model is None:
            raise object_missing("model")
        try:
            return copy.deepcopy(objects.model)
        except Exception as exc:
            raise WorkloadError(
                f"model: the model object cannot be copied ({type(exc).__name__}: "
                f"{str(exc)[:200]}); keep open files, locks and sessions out of the module"
            ) from None
    if ":" in spec.name:
        factory = entry_point(spec.name, "model.name")
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


def load_teacher(spec: Spec, objects: Objects | None = None) -> nn.Module:
    """The trained teacher: ``model.weights`` if given, else the model object as it was given,
    else the one ``edgetune train`` cached."""
    import torch

    if spec.model.name == OBJECT and spec.model.weights is None:
        return build_model(spec.model, objects).eval()
    path = spec.model.weights or teacher_cache_path(spec)
    if not path.exists():
        if spec.model.weights is not None:
            raise WorkloadError(f"model.weights: no file at {path}; check the path")
        raise WorkloadError(
            f"model.weights: not given and no cached teacher at {path}; "
            f"run `edgetune train SPEC` first, or set model.weights"
        )
    from spaces.functional import modularize

    model = model_as_written(spec.model, objects)  # the state_dict is the model's as written
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
    return modularize(model).eval()


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
        architecture=copy.deepcopy(teacher) if spec.model.name == OBJECT else None,
        **parts,
    )
