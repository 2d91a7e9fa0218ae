"""What the benchmark scripts share: running edgetune as a user does, and timing it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


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
