"""Target names -> :class:`Target` objects: the one place a target name becomes an object."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from targets.base import Target, load_target_file
from targets.errors import TargetError

__all__ = ["describe_targets", "get", "names", "predict_onnx", "register"]

_FACTORIES: dict[str, Callable[[], Target]] = {}
_CACHE: dict[str, Target] = {}


def register(name: str, factory: Callable[[], Target]) -> None:
    """Register a target built lazily by ``factory`` on first :func:`get`."""
    if name in _FACTORIES:
        raise TargetError(
            f"target {name!r} is already registered; pick another name (registered: "
            f"{', '.join(names())})"
        )
    _FACTORIES[name] = factory


def is_registered(name: str) -> bool:
    """Whether ``name`` is a built-in or shipped target (not a user's calibration file)."""
    return name in _FACTORIES


def _user_files() -> dict[str, Path]:
    """User targets made by ``edgetune calibrate NAME``: ``$EDGETUNE_HOME/targets/NAME.json``."""
    from targets.calibrate import user_targets_dir

    d = user_targets_dir()
    if not d.is_dir():
        return {}
    return {
        p.stem: p
        for p in sorted(d.glob("*.json"))
        if not p.stem.startswith("host") and p.stem not in _FACTORIES
    }


def names() -> list[str]:
    """The registered target names (built in, shipped and user-calibrated), sorted."""
    return sorted({*_FACTORIES, *_user_files()})


def get(name: str) -> Target:
    """The target called ``name``, or loaded from ``name`` if it is a path to a target JSON."""
    if name in _CACHE:
        return _CACHE[name]
    if name in _FACTORIES:
        target = _FACTORIES[name]()
        _CACHE[name] = target
        return target
    user = _user_files().get(name)
    if user is not None:
        target = load_target_file(user)
        _CACHE[name] = target
        return target
    if name.endswith(".json") or Path(name).is_file():
        if not Path(name).is_file():
            raise TargetError(f"target file {name[:200]!r} does not exist")
        return load_target_file(name)
    raise TargetError(
        f"unknown target {name[:200]!r}; valid targets: {', '.join(names())}, or a path to a "
        f"target .json file"
    )


def forget(name: str) -> None:
    """Drop a built target from the cache (after recalibration)."""
    _CACHE.pop(name, None)


def predict_onnx(paths: Sequence[str | Path], target: Target | str) -> list[dict[str, Any]]:
    """Predicted costs of fp32 or QDQ ONNX files on ``target``, one dict per file, with the
    layers priced without fitted coefficients (``approximated``) and how energy is made."""
    import onnx

    from cost_models.onnx_graph import from_onnx

    t = get(target) if isinstance(target, str) else target
    out = []
    for path in paths:
        graph, bits = from_onnx(onnx.load(str(path)))
        costs = t.predict(graph, bits)
        out.append(
            {
                "model": str(path),
                "target": t.name,
                **costs.as_dict(),
                "approximated": list(costs.approximated),
                "energy": t.energy_label,
            }
        )
    return out


def _energy(t: Target) -> dict[str, Any]:
    """How the target gets energy: ``method`` is ``calibrated`` (fitted to measured energy),
    ``modelled`` (published per-operation energies and a power figure) or
    ``power_x_latency`` (a power figure alone); ``label`` is what a report prints after
    "energy: "; the constants follow."""
    e = t.constants.energy_constants
    return {"method": e.method, "label": e.label, **e.to_dict()}


def _describe(t: Target) -> dict[str, Any]:
    p = t.provenance
    fid = {k: v for k, v in p.fidelity.items() if k != "held_out_rows"}
    fast = getattr(t.constants, "precisions", None)
    return {
        "name": t.name,
        "description": t.description,
        "runtime": t.runtime,
        "calibrated": True,
        "cost_model": t.cost_model.name,
        "provenance": {
            "source": p.source,
            "n_measurements": p.n_measurements,
            "date": p.date,
            "held_out_rows": p.fidelity.get("held_out_rows"),
            "machine": p.machine,
            "notes": p.notes,
        },
        "fidelity": fid,
        "energy": _energy(t),
        **({"precisions": fast} if fast is not None else {}),
        **({"agent": {"url": _agent_url(t)}} if t.agent is not None else {}),
    }


def _agent_url(t: Target) -> str:
    """The target's agent server, for listings: its URL only (never the token or its file)."""
    from targets.remote import public_url

    return public_url(t.agent.url) if t.agent is not None else ""


def describe_targets() -> list[dict[str, Any]]:
    """Name, description, runtime, provenance and fidelity of each registered target.

    Describing does not calibrate: an uncalibrated ``host`` shows ``"calibrated": False``.
    """
    out = []
    for name in names():
        if name == "host" and name not in _CACHE:
            from targets.host import DESCRIPTION, RUNTIME, cached_host

            cached = cached_host()
            if cached is None:
                out.append(
                    {
                        "name": name,
                        "description": DESCRIPTION,
                        "runtime": RUNTIME,
                        "calibrated": False,
                        "provenance": None,
                        "fidelity": None,
                    }
                )
                continue
            _CACHE[name] = cached
        out.append(_describe(get(name)))
    return out
