"""``data.augment``: the spec field, its resolution and check, the service's allowlist, and a
real trial fine-tuned with the built-in flip-crop.

The module:function cases name functions of this very module
(``tests.search.workloads.test_augment:NAME``): real importable code, no mocks.
"""

from __future__ import annotations

import io
import pickle
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

import search.teacher
from search.errors import SpecError, WorkloadError
from search.service.config import ServiceConfig, network_spec_text
from search.spec import DataSpec, entry_points, parse_spec, parse_spec_text, spec_to_json
from search.trial import TrialContext, TrialTask, run_trial
from search.workloads.augment import flip_crop, resolve_augment

HERE = "tests.search.workloads.test_augment"
SHAPE = (1, 28, 28)


# --- augmentations named by the tests, as module:function ------------------------------------


def shift_right(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A good one: each image rolled right by 0..2 pixels."""
    shifts = torch.randint(0, 3, (len(x),), generator=generator).tolist()
    return torch.stack([img.roll(s, dims=-1) for img, s in zip(x, shifts, strict=True)])


def wrong_shape(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return x[:, :, 1:, 1:]


def raises(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    raise RuntimeError("no GPU here")


def as_numpy(x: torch.Tensor, generator: torch.Generator) -> Any:
    return x.numpy()


def makes_nan(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return x / torch.zeros_like(x)  # 0/0 somewhere is NaN, the rest infinite


def as_double(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return x.double()


NOT_A_FUNCTION = 3


def _data(augment: str | None) -> DataSpec:
    return DataSpec(augment=augment)


def _one_line(err: pytest.ExceptionInfo[Exception]) -> str:
    text = str(err.value)
    assert "\n" not in text and len(text) <= 600, text
    return text


# --- resolution and the check on a small batch -----------------------------------------------


def test_null_is_no_augmentation() -> None:
    assert DataSpec().augment is None
    assert resolve_augment(_data(None), SHAPE) is None


@pytest.mark.parametrize(
    ("name", "fn"), [("flip-crop", flip_crop), (f"{HERE}:shift_right", shift_right)]
)
def test_a_good_augmentation_resolves_to_a_function_that_pickles(name: str, fn: object) -> None:
    resolved = resolve_augment(_data(name), SHAPE)
    assert resolved is fn
    assert pickle.loads(pickle.dumps(resolved)) is fn  # by reference, for the Ray workers


@pytest.mark.parametrize(
    ("function", "message"),
    [
        ("wrong_shape", "returned a float32 tensor of shape [4, 1, 27, 27] for a [4, 1, 28, 28]"),
        ("raises", "raised RuntimeError: no GPU here on a [4, 1, 28, 28] float32 batch; fix it"),
        ("as_numpy", "returned numpy.ndarray for a [4, 1, 28, 28] float32 batch; return a torch"),
        ("makes_nan", "returned NaN or infinite values for a finite [4, 1, 28, 28] batch"),
        ("as_double", "returned a float64 tensor of shape [4, 1, 28, 28]"),
        ("NOT_A_FUNCTION", "has no function 'NOT_A_FUNCTION'"),
        ("missing", "has no function 'missing'"),
    ],
)
def test_a_bad_augmentation_is_one_line_naming_the_field(function: str, message: str) -> None:
    with pytest.raises(WorkloadError) as err:
        resolve_augment(_data(f"{HERE}:{function}"), SHAPE)
    line = _one_line(err)
    assert line.startswith("data.augment: ") and message in line, line


def test_an_unimportable_module_names_the_field() -> None:
    with pytest.raises(WorkloadError) as err:
        resolve_augment(_data("no_such_module_anywhere:fn"), SHAPE)
    line = _one_line(err)
    assert line.startswith("data.augment: cannot import module 'no_such_module_anywhere'")


def test_an_unknown_builtin_is_refused_by_the_spec_and_by_the_resolver() -> None:
    with pytest.raises(SpecError) as err:
        parse_spec({"name": "s", "model": {"name": "resnet8"}, "data": {"augment": "flip"}})
    expected = "data.augment: must be null, a built-in augmentation (flip-crop) or module:function"
    assert _one_line(err).startswith(expected)
    with pytest.raises(WorkloadError) as werr:  # a spec made without validation
        resolve_augment(DataSpec.model_construct(augment="flip"), SHAPE)
    assert _one_line(werr).startswith("data.augment: unknown augmentation 'flip'")


# --- flip-crop ---------------------------------------------------------------------------------


def test_flip_crop_keeps_the_shape_changes_pixels_and_is_reproducible() -> None:
    x = torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    a = flip_crop(x, torch.Generator().manual_seed(7))
    b = flip_crop(x, torch.Generator().manual_seed(7))
    c = flip_crop(x, torch.Generator().manual_seed(8))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert not torch.equal(a, x)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_the_teacher_trains_with_the_same_function() -> None:
    assert search.teacher.flip_crop is flip_crop  # moved, not copied


# --- the spec field: round trip, entry points, the service's allowlist ------------------------


def test_the_spec_round_trips_with_augment() -> None:
    spec = parse_spec_text(
        f"name: s\nmodel: {{name: resnet8}}\ndata: {{augment: '{HERE}:shift_right'}}\n"
    )
    assert spec.data.augment == f"{HERE}:shift_right"
    assert spec_to_json(spec)["data"]["augment"] == f"{HERE}:shift_right"
    assert parse_spec(spec_to_json(spec)) == spec
    plain = parse_spec({"name": "s", "model": {"name": "resnet8"}})
    assert spec_to_json(plain)["data"]["augment"] is None
    assert parse_spec(spec_to_json(plain)) == plain


def test_entry_points_list_augment_when_it_names_something() -> None:
    spec = parse_spec({"name": "s", "model": {"name": "resnet8"}, "data": {"augment": "flip-crop"}})
    assert entry_points(spec)["data.augment"] == "flip-crop"
    plain = parse_spec({"name": "s", "model": {"name": "resnet8"}})
    assert "data.augment" not in entry_points(plain)


@pytest.fixture
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ServiceConfig:
    monkeypatch.setenv("EDGETUNE_HOME", str(tmp_path / "home"))
    root = tmp_path / "root"
    root.mkdir()
    return ServiceConfig(
        storage=f"sqlite:///{tmp_path}/studies.db",
        home=tmp_path / "home",
        token="test-token-" + "x" * 24,
        allow_modules=("tests.search",),
        data_root=root,
        max_workers=2,
    )


def _network(data: str, cfg: ServiceConfig) -> DataSpec:
    text = f"name: s\nmodel: {{name: resnet8}}\ndata: {data}\nsearch: {{workers: 1}}\n"
    return network_spec_text(text, cfg).data


def test_the_service_refuses_an_augment_module_off_its_allowlist_like_a_data_module(
    service: ServiceConfig,
) -> None:
    for field, data in (
        ("data.name", "{name: 'os:system'}"),
        ("data.augment", "{augment: 'os:system'}"),
    ):
        with pytest.raises(SpecError) as err:
            _network(data, service)
        assert _one_line(err).startswith(
            f"{field}: module 'os' is not on this service's allowlist (allowed: tests.search)"
        )
    assert _network(f"{{augment: '{HERE}:shift_right'}}", service).augment == f"{HERE}:shift_right"
    assert _network("{augment: null}", service).augment is None


def test_the_service_accepts_the_builtin_augmentation(service: ServiceConfig) -> None:
    assert _network("{augment: flip-crop}", service).augment == "flip-crop"


# --- a real trial ------------------------------------------------------------------------------


def _with_augment(context: TrialContext, augment: str) -> TrialContext:
    raw = spec_to_json(context.spec)
    raw["data"]["augment"] = augment
    return replace(context, spec=parse_spec(raw), key=uuid.uuid4().hex)


def _keep_going(step: int, accuracy: float) -> bool:
    return True


def test_a_trial_fine_tunes_with_flip_crop(context: TrialContext) -> None:
    augmented = _with_augment(context, "flip-crop")
    assert pickle.loads(pickle.dumps(augmented)).spec.data.augment == "flip-crop"  # to workers
    params = context.teacher_and_space()[1].uniform_params(0.5, 8, 8)
    reports: list[tuple[int, float]] = []

    def report(step: int, accuracy: float) -> bool:
        reports.append((step, accuracy))
        return True

    outcome = run_trial(augmented, TrialTask(11, params), report)
    assert outcome.status == "complete", outcome.reason
    assert [s for s, _ in reports] == [3, 6]
    assert outcome.accuracy is not None and 0.0 <= outcome.accuracy <= 1.0
    assert outcome.state_dict and {"train", "eval"} <= set(outcome.timings_s)
    assert augmented.augmentation() is flip_crop

    plain = run_trial(context, TrialTask(11, params), _keep_going)
    assert plain.status == "complete", plain.reason
    assert not _same_weights(plain.state_dict, outcome.state_dict)  # augmentation changed it


def _same_weights(a: bytes | None, b: bytes | None) -> bool:
    sa, sb = (torch.load(io.BytesIO(s or b""), weights_only=True) for s in (a, b))
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_bad_augmentation_fails_the_trial_before_any_work(context: TrialContext) -> None:
    broken = _with_augment(context, f"{HERE}:as_numpy")
    params = context.teacher_and_space()[1].uniform_params(0.5, 8, 8)
    outcome = run_trial(broken, TrialTask(12, params), _keep_going)
    assert outcome.status == "failed"
    assert outcome.reason.startswith("data.augment: ") and "numpy.ndarray" in outcome.reason
    assert "\n" not in outcome.reason and "predict" not in outcome.timings_s

