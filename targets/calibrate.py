"""``edgetune calibrate NAME --measurements FILE``: calibrate a device from measurements and
store it as a user target.

Reading the file is :mod:`targets.measurements`, fitting and held-out fidelity
:mod:`targets.fitting`; this module picks the starting cost model, runs both, and stores the
new target NAME as ``$EDGETUNE_HOME/targets/NAME.json``, where the registry finds it, so
``--target NAME`` works everywhere afterwards. :func:`emit_suite` writes the micro-benchmark
suite for the agent to measure on the device.
"""

from __future__ import annotations

import json
import operator
from dataclasses import replace
from pathlib import Path

from cost_models.energy import power_only
from cost_models.errors import CalibrationError
from cost_models.layerwise import LayerTypeCostModel, default_constants
from targets.base import Target, target_to_dict
from targets.errors import TargetError
from targets.fitting import CalibrationConfig, calibrate_rows
from targets.measurements import read_measurements

__all__ = [
    "calibrate_file",
    "emit_suite",
    "read_measurements",
    "refit_user_target",
    "save_user_target",
    "user_targets_dir",
]

GENERIC_POWER_W = 5.0
GENERIC_POWER_SOURCE = (
    "generic figure of 5 W for a small board's CPU under load, not a measurement of this "
    "device; give --power-w or measured energy_mj to replace it"
)


def user_targets_dir() -> Path:
    """``$EDGETUNE_HOME/targets``."""
    from targets.home import edgetune_home

    return edgetune_home() / "targets"


def emit_suite(out_dir: str | Path, *, size: str = "full") -> list[Path]:
    """Write the micro-benchmark suite as ``NAME.onnx`` files into ``out_dir`` (for the agent)."""
    import onnx

    from targets.suite import suite

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, model in suite(size=size):
        p = out / f"{name}.onnx"
        onnx.save(model, str(p))
        paths.append(p)
    return paths


def save_user_target(target: Target) -> Path:
    """Store ``target`` as ``$EDGETUNE_HOME/targets/NAME.json`` and make the registry see it."""
    from targets import registry

    path = user_targets_dir() / f"{target.name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(target_to_dict(target), indent=1))
    tmp.replace(path)
    registry.forget(target.name)
    return path


def calibrate_file(
    name: str,
    path: str | Path,
    *,
    like: str | None = None,
    power_w: float | None = None,
    models_dir: str | Path | None = None,
    holdout: float = 0.25,
    seed: int = 0,
) -> tuple[Target, Path]:
    """``edgetune calibrate NAME --measurements FILE [--like TARGET]``: fit and store NAME.

    The cost model (and energy constants) start from NAME's own target if it exists, else
    from ``like``, else a generic per-layer-type CPU model. ``power_w`` replaces the energy
    constants with that static power alone (energy = power × latency); measured
    ``energy_mj`` in the file replaces them with constants fitted to it (``calibrated``).
    """
    from targets import registry

    if not name or not all(ch.isalnum() or ch in "-_." for ch in name) or name == "host":
        raise CalibrationError(
            f"target name must be letters, digits, '-', '_' or '.', and not 'host' (calibrate "
            f"it with `edgetune calibrate host`), got {name!r}"
        )
    if registry.is_registered(name):
        raise CalibrationError(
            f"{name!r} is a built-in or shipped target and cannot be overwritten; give a new name "
            f"and start from it with --like {name}"
        )
    rows = read_measurements(path, models_dir=models_dir)
    start: Target | None = None
    for candidate in (name, like):
        if candidate and (candidate in registry.names()):
            start = registry.get(candidate)
            break
        if candidate == like and like is not None:
            raise TargetError(
                f"--like: unknown target {like!r}; valid: {', '.join(registry.names())}"
            )
    if start is not None:
        cm, base = start.cost_model, start.constants
        description = start.description if start.name == name else f"like {start.name}"
        runtime = start.runtime
    else:
        cm = LayerTypeCostModel()
        base = default_constants(GENERIC_POWER_W, GENERIC_POWER_SOURCE)
        description, runtime = "a user-calibrated device (generic per-layer-type model)", "user"
    if power_w is not None:  # the device's power under load: energy = power × latency
        base = replace(
            base,
            energy_constants=power_only(
                power_w, f"given on the command line (--power-w {power_w})"
            ),
        )
    device = ""
    if Path(path).suffix.lower() == ".json":
        device = json.dumps(json.loads(Path(path).read_text()).get("device", {}))[:500]
    config = CalibrationConfig(
        cost_model=cm,
        base=base,
        description=description,
        runtime=runtime,
        source=str(Path(path).resolve()),
        holdout=holdout,
        seed=seed,
        notes=f"calibrated with `edgetune calibrate` from {Path(path).name}"
        + (f" starting from target {start.name}" if start else "")
        + (f"; device: {device}" if device else ""),
    )
    target = calibrate_rows(name, rows, config)
    return target, save_user_target(target)


def refit_user_target(target: Target, models: list[tuple[bytes, float]]) -> Target:
    """Refit a device calibrated with ``edgetune calibrate NAME --measurements FILE`` (an agent's
    device) from that file plus every search candidate measured on it so far (``models`` are
    the new ones: QDQ ONNX bytes and measured latency in ms), starting from its own cost model
    and constants, and store it (keeping its agent), so the next study starts from the refit.
    """
    from targets.candidates import candidate_rows, store_candidates
    from targets.measurements import Row

    source = Path(target.provenance.source)
    if not source.is_file():
        raise CalibrationError(
            f"target {target.name!r} is refitted from the measurements it was calibrated "
            f"from, but {str(source)!r} is not a file any more; recalibrate it with `edgetune "
            f"calibrate {target.name} --measurements FILE`"
        )
    device = {
        "target": target.name,
        "agent": target.agent.url if target.agent else "",
        "source": str(source.resolve()),
    }
    folder = user_targets_dir() / f"{target.name}_candidates"
    store_candidates(folder, models, device, operator.eq)
    rows = read_measurements(source)
    kept = candidate_rows(folder, device, operator.eq)
    rows += [Row(len(rows) + i + 1, name, m) for i, (name, m) in enumerate(kept)]
    base_notes = target.provenance.notes.split("; refitted with ")[0]
    config = CalibrationConfig(
        cost_model=target.cost_model,
        base=target.constants,
        description=target.description,
        runtime=target.runtime,
        source=str(source.resolve()),
        notes=f"{base_notes}; refitted with {len(kept)} measured search candidates",
        int8_reduce_range=target.int8_reduce_range,
    )
    refitted = replace(calibrate_rows(target.name, rows, config), agent=target.agent)
    save_user_target(refitted)
    return refitted
