"""A model and data given to :mod:`search.api` as Python objects, not named in the spec.

Such a study's spec says :data:`OBJECT` for ``model.name`` or ``data.name``; the objects travel
beside the spec (:class:`Objects`), and every run of the study needs them again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from search.errors import WorkloadError

if TYPE_CHECKING:
    from torch import nn

__all__ = ["OBJECT", "Objects", "needs_objects", "object_missing"]

OBJECT = "python-object"
"""``model.name`` or ``data.name`` of a study started from Python objects (:mod:`search.api`)."""


@dataclass(frozen=True)
class Objects:
    """A model and data given as Python objects rather than named in the spec.

    ``model`` is the trained teacher itself (its weights included); ``data`` is anything a
    ``data.name`` loader may return (see :mod:`search.workloads.data`). A spec whose
    ``model.name`` or ``data.name`` is :data:`OBJECT` needs them on every run of its study.
    """

    model: nn.Module | None = None
    data: Any = None


def needs_objects(spec: Mapping[str, Any]) -> list[str]:
    """Which of ``model`` and ``data`` a spec (as JSON, as a study stores it) takes as objects."""
    return [k for k in ("model", "data") if spec.get(k, {}).get("name") == OBJECT]


def object_missing(what: str) -> WorkloadError:
    """The error of a run that needs the ``what`` object (model or data) and was not given it."""
    return WorkloadError(
        f"{what}.name: this study was started with a {what} object from Python (search.api); "
        f"run it again from Python with the same {what}= argument, or set {what}.name to a "
        "module:function that builds it"
    )
