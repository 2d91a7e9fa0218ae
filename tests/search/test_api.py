"""search.api as a Python user calls it: the README's example as written, a model class of the
caller's own on Ray, and what the CLI says of a study started from objects."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from search import api
from search.errors import EdgetuneError, SpecError, WorkloadError
from search.workloads.fashion_mnist import MEAN, STD, load_fashion_mnist
from search.workloads.objects import OBJECT
from tests.conftest import ROOT, TEACHER

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("needs_fashion_mnist")]


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## From Python", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README: the From Python section has no python example"
    return match.group(1)


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "search.cli", *args], capture_output=True, text=True,
        timeout=600, cwd=cwd, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_readme_example_runs_as_written_and_the_cli_says_it_needs_the_objects(
    tmp_path: Path, edgetune_home: Path
) -> None:
    (tmp_path / "experiments" / "fashion_mnist").mkdir(parents=True)
    (tmp_path / "experiments" / "fashion_mnist" / TEACHER.name).symlink_to(TEACHER)
    proc = subprocess.run(
        [sys.executable, "-c", readme_example()], capture_output=True, text=True, timeout=1500,
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    export = tmp_path / "example-export"
    assert {p.name for p in export.iterdir()} >= {"model.onnx", "report.md", "summary.json"}

    storage = f"sqlite:///{tmp_path}/example.db"
    shown = api.show("python-example", storage=storage)
    assert shown.spec.model.name == OBJECT and shown.spec.data.name == OBJECT
    assert shown.summary["needs_objects"] == ["model", "data"]
    assert shown.trained >= 3  # two trials, then one more on resume
    best = shown.best()
    assert best.feasible and best.policy["bits"] and best.accuracy is not None

    out = cli("show", "python-example", "--storage", storage, cwd=tmp_path)
    assert out.returncode == 0 and "with the model and data as objects" in out.stdout
    out = cli("resume", "python-example", "--storage", storage, "--trials", "1", cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "model.name: this study was started with a model object" in out.stderr
    with pytest.raises(WorkloadError, match="data object"):  # the model alone is not enough
        api.export("python-example", tmp_path / "again", storage=storage, model=_teacher())
    assert not (tmp_path / "again").exists()


class Wide(nn.Module):
    """A model class of the caller's own (not a built-in), with functional ops: a gate
    written as ``x * sigmoid(...)`` that edgetune makes a module to quantize it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.gate = nn.Conv2d(32, 32, 1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        x = x * torch.sigmoid(self.gate(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class Session:
    """Shared when copied, as a session to a device is, but never pickled."""

    def __deepcopy__(self, memo: object) -> Session:
        return self

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a Session cannot be pickled")


def _teacher() -> nn.Module:
    from search.workloads.models import resnet8

    model = resnet8()
    model.load_state_dict(torch.load(TEACHER))
    return model


def _data(n: int = 2000) -> dict[str, object]:
    from torch.utils.data import TensorDataset

    x_train, y_train, x_test, y_test = load_fashion_mnist(None)
    return {"train": TensorDataset(x_train[:n], y_train[:n]),
            "test": TensorDataset(x_test[:n], y_test[:n]), "mean": [MEAN], "std": [STD]}


def _spec(name: str, executor: str, *, stream: bool | None = None) -> dict[str, object]:
    return {
        "name": name,
        "model": {"input_shape": [1, 28, 28]},
        "data": {"finetune_size": 256, "val_size": 256, "calibration_size": 64,
                 "stream": stream},
        "constraints": {"size_kb": "50%"},
        "space": {"quantization": {"weight_bits": [8, 32], "activation_bits": [8, 32]},
                  "pruning": {"max_ratio": 0.5, "step": 0.25, "round_to": 4},
                  "distillation": {"steps": 4, "eval_every": 2}},
        "search": {"trials": 1, "seed_trials": 1, "executor": executor, "measure": "never"},
    }


def test_own_model_class_on_ray_and_a_model_that_cannot_pickle(
    tmp_path: Path, edgetune_home: Path
) -> None:
    storage = f"sqlite:///{tmp_path}/s.db"
    environment = dict(os.environ)
    # the data streamed: the workers read the Dataset (pickled) batch by batch
    result = api.search(_spec("own-class", "ray", stream=True), model=Wide().eval(),
                        data=_data(), storage=storage)
    for name in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_USAGE_STATS_ENABLED"):
        assert os.environ.get(name) == environment.get(name)  # edgetune's Ray settings: not left
    assert result.trained == 1
    [candidate] = result.front()
    assert set(candidate.policy["kept_channels"]) == {"conv1", "conv2", "gate", "fc"}
    assert "mul" in candidate.policy["bits"]  # the functional gate, quantized as a layer
    exported = candidate.export(tmp_path / "out")
    assert exported.onnx.exists() and 0.0 <= exported.accuracy <= 1.0

    locked = Wide().eval()
    locked.lock = threading.Lock()  # type: ignore[assignment]  # nothing copies a lock
    with pytest.raises(WorkloadError, match="model: the model object cannot be copied"):
        api.search(_spec("locked", "ray"), model=locked, data=_data(), storage=storage)
    session = _teacher().eval()  # all modules, so it is sent to Ray as it is
    session.session = Session()  # type: ignore[assignment]
    with pytest.raises(EdgetuneError, match=r"cannot be sent to Ray's workers.*executor: process"):
        api.search(_spec("session", "ray"), model=session, data=_data(), storage=storage)
    import ray

    assert not ray.is_initialized()  # the failed start shut its Ray down


def test_bad_arguments_get_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"model: expected a torch\.nn\.Module, got str"):
        api.search(_spec("bad-model", "process"), model="resnet8")  # type: ignore[arg-type]
    with pytest.raises(SpecError, match="spec: expected a dict, a path or a Spec, got int"):
        api.search(3, model=Wide())  # type: ignore[arg-type]
    with pytest.raises(SpecError, match=r"search\.trials"):
        api.search({**_spec("bad-trials", "process"), "search": {"trials": 0}}, model=Wide())
    with pytest.raises(WorkloadError, match="data object must return a dict"):
        api.search(_spec("bad-data", "process"), model=Wide(), data=[1, 2, 3],
                   storage=f"sqlite:///{tmp_path}/s.db")


class Rows(nn.Module):
    """A 1-D network (keyword-spotting style): each image's 28 rows are its channels, its 28
    columns its length. Conv1d, BatchNorm1d, a depthwise Conv1d and a residual ``+``."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv1d(28, 32, 5, padding=2), nn.BatchNorm1d(32), nn.ReLU())
        self.dw = nn.Sequential(nn.Conv1d(32, 32, 3, padding=1, groups=32), nn.BatchNorm1d(32),
                                nn.ReLU(), nn.Conv1d(32, 32, 1), nn.BatchNorm1d(32))
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        x = torch.relu(x + self.dw(x))
        return self.fc(torch.flatten(self.pool(x), 1))


def test_a_1d_network_is_searched_measured_and_exported(tmp_path: Path, edgetune_home: Path) -> None:
    x_train, y_train, x_test, y_test = load_fashion_mnist(None)
    data = {"x_train": x_train[:2000, 0], "y_train": y_train[:2000], "x_test": x_test[:1000, 0],
            "y_test": y_test[:1000], "mean": [MEAN], "std": [STD]}
    spec = _spec("rows", "process")
    spec["model"] = {"input_shape": [28, 28]}  # [channels, length]
    spec["search"] = {**spec["search"], "measure": "auto"}  # type: ignore[dict-item]
    result = api.search(spec, model=Rows().eval(), data=data, storage=f"sqlite:///{tmp_path}/s.db")
    [candidate] = result.front()
    assert {"stem.0", "dw.0", "dw.3", "fc", "add"} <= set(candidate.policy["bits"])
    exported = candidate.export(tmp_path / "out")
    summary = exported.summary
    assert summary["input"]["shape"] == [1, 28, 28]
    assert abs(summary["accuracy_onnx"] - summary["accuracy_torch"]) <= 0.01
    assert summary["latency_ms_measured"] > 0
