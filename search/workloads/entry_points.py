"""``module:function`` references in a spec (``model.name``, ``data.name``), resolved."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from search.errors import WorkloadError

__all__ = ["entry_point"]


def entry_point(ref: str, field: str) -> Callable[..., Any]:
    """The callable ``ref`` (``module:function``) names; ``field`` is the spec field, for errors."""
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
