"""Targets: one description per device (constants, cost model, provenance) and the registry.

``targets.get("host")`` calibrates the machine it runs on at first use (a micro-benchmark, see
:mod:`targets.host`) and caches it in ``$EDGETUNE_HOME/targets/host.json``. Importing this
package is cheap: onnx, onnxruntime and torch are imported only where used.
"""

from __future__ import annotations

from targets.base import Provenance, Target, target_from_dict, target_to_dict
from targets.registry import describe_targets, get, names, predict_onnx, register


def _host() -> Target:
    from targets.host import host_target

    return host_target()


register("host", _host)


def _register_shipped() -> None:
    """The fitted device targets committed in ``targets/shipped/`` (see targets.devices)."""
    from functools import partial
    from pathlib import Path

    from targets.base import load_target_file

    for path in sorted((Path(__file__).parent / "shipped").glob("*.json")):
        register(path.stem, partial(load_target_file, path))


_register_shipped()

__all__ = [
    "Provenance",
    "Target",
    "describe_targets",
    "get",
    "names",
    "predict_onnx",
    "register",
    "target_from_dict",
    "target_to_dict",
]
