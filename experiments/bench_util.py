"""What the benchmark scripts share: running edgetune as a user does, and timing it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

FASTEST = "fastest student"
"""The space's fastest students, untrained: every layer pruned by the space's largest ratio, fp32
and 8-bit. No trained model of the space can be much faster, so they bound every method's
hypervolume: see :func:`ceiling`."""


def edgetune(*args: str) -> tuple[dict[str, Any], float]:
    """``edgetune ARGS --json`` in a subprocess: its JSON output and its wall time in seconds."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "search.cli", *args, "--json"],
        text=True,
        stdout=subprocess.PIPE,
        env=dict(os.environ),
    )
    if proc.returncode != 0:
        raise SystemExit(f"edgetune {' '.join(args)} failed with {proc.returncode}")
    out: dict[str, Any] = json.loads(proc.stdout)
    return out, time.perf_counter() - start


def ort_int8_static(fp32: Path, out: Path, samples: list[Any]) -> Path:
    """onnxruntime's static int8 quantization as its users run it on this CPU: QDQ, per channel,
    reduce_range (u8s8 without VNNI), QUInt8 activations, QInt8 weights; ``samples`` are
    calibration inputs of batch 1 for the model's input named ``input``."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"input": x} for x in samples])

        def get_next(self) -> dict[str, Any] | None:
            return next(self.items, None)

    quantize_static(
        str(fp32),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        reduce_range=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    return out


def copy_trial(trial: Any) -> Any:
    """A new finished trial with ``trial``'s state, params, values, records and constraints
    (not its artifact): for synthetic studies shaped like a real one."""
    import optuna

    return optuna.trial.create_trial(
        state=trial.state,
        params=trial.params,
        distributions=trial.distributions,
        values=trial.values,
        user_attrs={k: v for k, v in trial.user_attrs.items() if k != "artifact"},
        system_attrs={k: v for k, v in trial.system_attrs.items() if k.startswith("constraints:")},
    )


def fastest_students(spec: Any, teacher: Any, x_calib: Any) -> list[tuple[str, Any, float]]:
    """:data:`FASTEST` of ``spec``'s space: (name, ONNX model, packed KiB) each."""
    from search.onnx_export import packed_size_bytes, to_onnx
    from search.trial import space_for
    from spaces.student import build_student

    space = space_for(spec, teacher)
    ratio = max(space.pruning.grid) if space.pruning else 0.0
    q = spec.space.quantization
    eight = q is not None and 8 in q.weight_bits and 8 in q.activation_bits
    out = []
    for bits in ((32, 32), (8, 8)) if eight else ((32, 32),):
        student = build_student(teacher, space.uniform_params(ratio, *bits), space,
                                calib=x_calib, reduce_range=False).model
        assert student is not None
        out.append((f"uniform {ratio:.0%} pruned, {bits[0]}-bit, untrained",
                    to_onnx(student, tuple(spec.model.input_shape)),
                    packed_size_bytes(student) / 1024))
    return out


def ceiling(points: list[Any]) -> dict[str, float]:
    """The most hypervolume any method of a run could have: the best test accuracy of any model
    of the run, at the latency of the space's fastest student (:data:`FASTEST`), over the
    teacher's. ``points`` have ``method``, ``test_accuracy`` and ``latency_ratio``."""
    floor = min(p.latency_ratio for p in points if p.method == FASTEST)
    best = max(p.test_accuracy for p in points if p.method != FASTEST)
    return {"latency_ratio": floor, "accuracy": best, "hypervolume": best * (1 - floor)}


def nchw(model: Any) -> Any:
    """A copy of ``model`` with every weight contiguous in the default (NCHW) layout."""
    import copy

    out = copy.deepcopy(model)
    for param in out.parameters():
        param.data = param.data.contiguous()
    return out


def half_pruned_student(spec: Any, teacher: Any, x_calib: Any,
                        act_bits: int = 8) -> tuple[Any, float]:
    """A student of the spec's space, every layer pruned by the grid's ratio nearest a half,
    8-bit weights and ``act_bits`` activations, in NCHW; and that ratio."""
    from spaces.joint import JointSpace
    from spaces.student import build_student

    space = JointSpace(teacher, spec.model.input_shape, spec.space)
    ratio = min(space.pruning.grid, key=lambda r: abs(r - 0.5)) if space.pruning else 0.0
    student = build_student(teacher, space.uniform_params(ratio, 8, act_bits), space,
                            calib=x_calib, reduce_range=False).model
    assert student is not None
    return nchw(student), ratio
