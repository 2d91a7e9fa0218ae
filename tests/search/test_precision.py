"""A study searches only the precisions its target prices: the ten shipped targets, each with
the example spec, and a two-trial search on each."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import targets
from cost_models import from_torch, size_kb
from cost_models.graph import Precision
from search.budgets import check_spec, teacher_costs
from search.precision import restrict_to_target
from search.spec import load_spec, parse_spec
from search.workloads import build_model
from search.workloads.models import resnet8
from tests.conftest import tiny_spec
from tests.search.test_search_e2e import as_json, edgetune

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "experiments" / "fashion_mnist" / "resnet8_host.yaml"
SHIPPED = (
    "cortex-m4",
    "cortex-m7",
    "edge-tpu",
    "jetson-nano",
    "jetson-nano-fp16",
    "pixel-3",
    "raspberry-pi-4",
    "samsung-note10-cpu",
    "snapdragon-855-cpu",
)
SHAPE = (1, 28, 28)


def _example(target: str) -> str:
    return EXAMPLE.read_text().replace("\ntarget: host\n", f"\ntarget: {target}\n")


def test_shipped_targets_say_which_precisions_they_price() -> None:
    assert targets.get("edge-tpu").act_bits == (8,)
    assert targets.get("snapdragon-855-cpu").act_bits == (8,)
    assert targets.get("pixel-3").act_bits == (32,)
    assert targets.get("jetson-nano-fp16").act_bits == (32,)
    assert targets.get("cortex-m4").act_bits == (8, 32)


def test_a_float_only_target_keeps_low_weight_bits_as_storage_only() -> None:
    spec = load_spec(EXAMPLE)
    cut = restrict_to_target(spec, targets.get("raspberry-pi-4"))
    q = cut.spec.space.quantization
    assert q is not None and q.activation_bits == (32,)
    assert q.weight_bits == spec.space.quantization.weight_bits  # type: ignore[union-attr]
    assert any("activation_bits [8, 32] -> [32]" in n for n in cut.notes)
    assert any("storage-only" in n for n in cut.notes)
    # priced at fp32 latency, counted at their bits in the size
    graph = from_torch(resnet8(SHAPE).eval(), SHAPE)
    pi = targets.get("raspberry-pi-4")
    four = {la.name: Precision(4, 32) for la in graph.layers if la.kind in ("conv", "linear")}
    low, full = pi.predict(graph, four), pi.predict(graph, {})
    assert low.latency_ms == pytest.approx(full.latency_ms)
    assert low.size_kb < full.size_kb / 6


def test_an_int8_only_target_prices_everything_in_int8() -> None:
    tpu = targets.get("edge-tpu")
    cut = restrict_to_target(load_spec(EXAMPLE), tpu)
    q = cut.spec.space.quantization
    assert q is not None and q.activation_bits == (8,) and 32 not in q.weight_bits
    assert restrict_to_target(cut.spec, tpu).spec == cut.spec  # applying it again: no change
    model = resnet8(SHAPE).eval()
    graph = from_torch(model, SHAPE)
    int8 = {
        la.name: Precision(8 if la.kind in ("conv", "linear") else 32, 8) for la in graph.layers
    }
    # a layer left float runs as the device's converter runs it: int8
    assert tpu.predict(graph, {}) == tpu.predict(graph, int8)
    teacher = teacher_costs(model, cut.spec, tpu)
    assert teacher["latency_ms"] == pytest.approx(tpu.predict(graph, int8).latency_ms)
    assert teacher["size_kb"] == pytest.approx(size_kb(graph, {}))  # size: the fp32 teacher's


def test_a_pruning_only_spec_on_an_int8_only_target_is_quantized() -> None:
    raw = yaml.safe_load(_example("snapdragon-855-cpu"))
    raw["space"]["quantization"] = None
    cut = restrict_to_target(parse_spec(raw), targets.get("snapdragon-855-cpu"))
    q = cut.spec.space.quantization
    assert q is not None and (q.weight_bits, q.activation_bits) == ((8,), (8,))


def test_a_target_that_prices_everything_changes_nothing() -> None:
    spec = load_spec(EXAMPLE)
    cut = restrict_to_target(spec, targets.get("cortex-m7"))
    assert cut.spec == spec and cut.notes == ()


@pytest.mark.parametrize("name", SHIPPED)
def test_the_example_spec_can_be_met_on_every_shipped_target(name: str, tmp_path: Path) -> None:
    spec = parse_spec(yaml.safe_load(_example(name)), base=EXAMPLE.parent)
    result = check_spec(spec, targets.get(name), build_model(spec.model).eval())
    assert not result.broken, result.text()
    out = result.as_dict()
    assert out["feasible"] is True and json.dumps(out)  # what `check --json` prints


@pytest.mark.slow
def test_check_on_the_host(tmp_path: Path, edgetune_home: Path) -> None:
    path = tmp_path / "example.yaml"
    path.write_text(_example("host"))
    (tmp_path / "resnet8_teacher.pt").symlink_to(EXAMPLE.parent / "resnet8_teacher.pt")
    out = as_json(edgetune("check", str(path), "--json"))
    assert out["feasible"] is True and out["restricted"] == []


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED)
def test_a_two_trial_search_on_every_shipped_target(
    name: str, tmp_path: Path, edgetune_home: Path, needs_fashion_mnist: None
) -> None:
    path = tmp_path / "tiny.yaml"
    path.write_text(tiny_spec(f"t-{name}", 2).replace("\ntarget: host\n", f"\ntarget: {name}\n"))
    storage = f"sqlite:///{tmp_path}/s.db"
    out = as_json(edgetune("search", str(path), "--storage", storage, "--json"))
    assert out["target"] == name and out["trained"] == 2, out
    assert out["best"], "the feasible seeds must give a feasible candidate"
    runs = targets.get(name).act_bits
    from search import study as studies

    study, _ = studies.open_study(f"t-{name}", storage)
    for trial in study.trials:
        abits = {v for k, v in trial.params.items() if k.startswith("abits.")}
        assert abits <= set(runs), (name, abits)  # only what the target prices was searched
