"""The spec: validation, field-named errors, relative budgets, round trips."""

from __future__ import annotations

from pathlib import Path

import pytest

from search.errors import SpecError
from search.spec import load_spec, parse_spec, parse_spec_text, spec_to_json

EXAMPLE = (
    Path(__file__).resolve().parents[2] / "experiments" / "fashion_mnist" / "resnet8_host.yaml"
)


def minimal(**sections: object) -> dict[str, object]:
    raw: dict[str, object] = {"name": "s", "model": {"name": "resnet8"}}
    raw.update(sections)
    return raw


def test_example_spec_loads_with_relative_budgets_and_absolute_weights() -> None:
    spec = load_spec(EXAMPLE)
    budgets = spec.constraints.budgets()
    assert budgets["latency_ms"].relative and budgets["latency_ms"].value == pytest.approx(0.7)
    assert budgets["size_kb"].relative and budgets["size_kb"].value == pytest.approx(0.125)
    assert spec.model.weights is not None and spec.model.weights.is_absolute()
    assert spec.model.weights.parent == EXAMPLE.parent


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"constraints": {"latency_ms": -3}}, "constraints.latency_ms: must be > 0, got -3"),
        (
            {"constraints": {"latency_ms": "fast"}},
            "constraints.latency_ms: must be a number or a percentage",
        ),
        ({"constraints": {"max_accuracy_drop": 2}}, "constraints.max_accuracy_drop: must be <= 1"),
        ({"constraints": {"latency": 3}}, "constraints.latency: unknown key"),
        ({"space": {"pruning": {"max_ratio": 1.5}}}, "space.pruning.max_ratio: must be < 1"),
        (
            {"space": {"quantization": {"weight_bits": [1, 8]}}},
            "space.quantization.weight_bits: must be",
        ),
        (
            {"space": {"quantization": {"activation_bits": [4]}}},
            "space.quantization.activation_bits",
        ),
        (
            {"space": {"distillation": {"alpha": [0.5, 1.5]}}},
            "space.distillation.alpha: must lie in [0, 1]",
        ),
        ({"space": {"quantization": {"granularity": "block"}}}, "space.quantization.granularity"),
        ({"search": {"sampler": "cmaes"}}, "search.sampler"),
        ({"search": {"workers": 0}}, "search.workers: must be >= 1, got 0"),
        ({"search": {"study": "../etc"}}, "search.study: must be 1-100 letters"),
        ({"objectives": ["latency_ms"]}, "objectives: must include accuracy"),
        ({"objectives": ["accuracy", "speed"]}, "objectives[1]"),
        ({"space": {"quantization": None, "pruning": None}}, "space: enable at least one"),
    ],
)
def test_errors_name_the_field(sections: dict[str, object], message: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_spec(minimal(**sections))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_sections_are_named() -> None:
    with pytest.raises(SpecError, match=r"model: required, but missing"):
        parse_spec({"name": "x"})


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodel: {name: resnet8\n")
    with pytest.raises(SpecError, match=r"bad.yaml: .* line \d+"):
        load_spec(bad)


def test_missing_file_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read the spec"):
        load_spec(tmp_path / "nope.yaml")


def test_spec_is_frozen() -> None:
    spec = parse_spec(minimal())
    with pytest.raises(Exception):  # noqa: B017 - pydantic raises ValidationError on assignment
        spec.name = "other"  # type: ignore[misc]


def test_json_round_trip_keeps_relative_budgets() -> None:
    spec = parse_spec_text(EXAMPLE.read_text(), base=EXAMPLE.parent)
    again = parse_spec(spec_to_json(spec))
    assert again == spec


def test_fixed_and_searched_ranges() -> None:
    spec = parse_spec(minimal(space={"distillation": {"temperature": 4, "lr": [1e-4, 1e-2]}}))
    t, lr = spec.space.distillation.temperature, spec.space.distillation.lr
    assert (t.low, t.high) == (4.0, 4.0)
    assert lr.log and (lr.low, lr.high) == (1e-4, 1e-2)
