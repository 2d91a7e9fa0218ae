"""The public API of :mod:`search.workloads`: models, data, subsets, teacher, workload."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import search.workloads as workloads
from search.errors import WorkloadError
from search.spec import DataSpec, ModelSpec, Spec, parse_spec
from search.workloads import (
    Dataset,
    Workload,
    build_model,
    build_workload,
    load_data,
    load_teacher,
    split,
    teacher_cache_path,
    training_images,
)

ROOT = Path(__file__).resolve().parents[3]

# module:function references resolve against this module (tests/ is a package).
HERE = __name__


def tiny_model(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    c, h, w = input_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, num_classes))


def not_a_model(input_shape: tuple[int, int, int], num_classes: int) -> object:
    return object()


def tiny_data() -> dict[str, Any]:
    g = torch.Generator().manual_seed(0)
    return {
        "x_train": torch.rand(300, 1, 4, 4, generator=g),
        "y_train": torch.randint(0, 3, (300,), generator=g),
        "x_test": torch.rand(50, 1, 4, 4, generator=g),
        "y_test": torch.randint(0, 3, (50,), generator=g),
        "mean": (0.5,),
        "std": (0.25,),
    }


def incomplete_data() -> dict[str, Any]:
    return {"x_train": torch.zeros(1)}


def _spec(model: str = f"{HERE}:tiny_model", weights: Path | None = None) -> Spec:
    return parse_spec(
        {
            "name": "t",
            "model": {
                "name": model,
                "input_shape": [1, 4, 4],
                "num_classes": 3,
                **({"weights": str(weights)} if weights else {}),
            },
            "data": {
                "name": f"{HERE}:tiny_data",
                "finetune_size": 128,
                "val_size": 64,
                "calibration_size": 16,
                "batch_size": 32,
            },
            "space": {"quantization": {"weight_bits": [8, 32], "activation_bits": [8, 32]}},
        }
    )


def test_package_exports_its_public_names() -> None:
    assert sorted(workloads.__all__) == [
        "Dataset",
        "Workload",
        "build_model",
        "build_workload",
        "load_data",
        "load_teacher",
        "model_as_written",
        "split",
        "teacher_cache_path",
        "training_images",
    ]
    for name in workloads.__all__:
        assert getattr(workloads, name).__module__.startswith("search.workloads.")


def test_importing_the_package_loads_neither_torch_nor_experiments() -> None:
    code = (
        "import sys, search.workloads; "
        "print(sorted(m for m in ('torch', 'experiments') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("name", ["resnet8", "dscnn", "mobilenetv2", "mobilenetv3", "densenet"])
def test_build_model_builds_the_builtin_models(name: str) -> None:
    model = build_model(ModelSpec(name=name, input_shape=(1, 28, 28), num_classes=10))
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("resnet9", "unknown model 'resnet9'"),
        ("no_such_module_xyz:f", "cannot import module"),
        (f"{HERE}:missing", "has no function 'missing'"),
        (f"{HERE}:not_a_model", "not a torch.nn.Module"),
    ],
)
def test_build_model_errors_name_the_field(name: str, message: str) -> None:
    with pytest.raises(WorkloadError, match=r"model\.name") as info:
        build_model(ModelSpec(name=name))
    assert message in str(info.value)


def test_load_data_from_a_function_and_its_errors() -> None:
    data = load_data(DataSpec(name=f"{HERE}:tiny_data"))
    assert isinstance(data, Dataset) and data.mean == (0.5,) and data.std == (0.25,)
    assert torch.allclose(data.normalize(torch.full((1, 1, 2, 2), 0.75)), torch.ones(1, 1, 2, 2))
    with pytest.raises(WorkloadError, match="unknown data set 'mnist'"):
        load_data(DataSpec(name="mnist"))
    with pytest.raises(WorkloadError, match="must return a dict with x_train"):
        load_data(DataSpec(name=f"{HERE}:incomplete_data"))


def test_split_holds_out_the_last_images_and_is_seeded() -> None:
    spec = _spec()
    data = load_data(spec.data)
    parts = split(data, spec.data, seed=0)
    assert parts["x_finetune"].shape == (128, 1, 4, 4) and parts["x_calib"].shape[0] == 16
    assert torch.equal(parts["x_val"], data.normalize(data.x_train[-64:]))
    assert torch.equal(parts["y_val"], data.y_train[-64:])
    assert torch.equal(parts["x_finetune"], split(data, spec.data, seed=0)["x_finetune"])
    assert not torch.equal(parts["x_finetune"], split(data, spec.data, seed=1)["x_finetune"])
    too_big = DataSpec(name=spec.data.name, finetune_size=250, val_size=64)
    with pytest.raises(WorkloadError, match="exceeds the 300 training images"):
        split(data, too_big, seed=0)


def test_finalize_trains_on_every_image_outside_validation_fine_tune_subset_first() -> None:
    spec = _spec()
    data = load_data(spec.data)
    parts = split(data, spec.data, seed=0)
    x, y = training_images(data, spec.data, 0, None)
    assert len(x) == 300 - 64 and len(y) == len(x)
    assert torch.equal(x[:128], parts["x_finetune"]) and torch.equal(y[:128], parts["y_finetune"])
    val = {tuple(r.flatten().tolist()) for r in parts["x_val"]}
    assert not val & {tuple(r.flatten().tolist()) for r in x}  # validation stays unseen
    some, _ = training_images(data, spec.data, 0, 200)
    assert torch.equal(some, x[:200])
    with pytest.raises(WorkloadError, match=r"finalize\.images: 237 exceeds the 236 training"):
        training_images(data, spec.data, 0, 237)


def test_load_teacher_from_weights_or_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGETUNE_HOME", str(tmp_path / "home"))
    spec = _spec()
    cached = teacher_cache_path(spec)
    assert cached.parent == (tmp_path / "home" / "teachers").resolve()
    with pytest.raises(WorkloadError, match="run `edgetune train SPEC` first"):
        load_teacher(spec)
    cached.parent.mkdir(parents=True)
    torch.save(tiny_model((1, 4, 4), 3).state_dict(), cached)
    assert not load_teacher(spec).training

    weights = tmp_path / "w.pt"
    with pytest.raises(WorkloadError, match="no file at"):
        load_teacher(_spec(weights=weights))
    torch.save({"state_dict": tiny_model((1, 4, 4), 3).state_dict()}, weights)
    load_teacher(_spec(weights=weights))
    torch.save({"other": torch.zeros(1)}, weights)
    with pytest.raises(WorkloadError, match="not a plain state_dict"):
        load_teacher(_spec(weights=weights))


def test_build_workload_shares_subsets_logits_and_teacher() -> None:
    spec = _spec()
    torch.manual_seed(0)
    teacher = tiny_model((1, 4, 4), 3).eval()
    work = build_workload(spec, teacher, load_data(spec.data))
    assert isinstance(work, Workload) and work.batch_size == 32
    assert work.teacher_logits.shape == (128, 3)
    rebuilt = work.teacher()
    with torch.no_grad():
        assert torch.allclose(rebuilt(work.x_val), teacher(work.x_val))


def test_no_runtime_module_imports_experiments() -> None:
    runtime = [ROOT / "search" / "workloads"]
    hits = [
        f"{path.relative_to(ROOT)}:{i}"
        for folder in runtime
        for path in folder.rglob("*.py")
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if line.lstrip().startswith(("import experiments", "from experiments"))
    ]
    assert hits == []
