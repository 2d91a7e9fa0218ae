"""The per-study sensitivity: measured on the real teacher, stored as JSON, and the repair's
accuracy prior (the bits a budget forces down go where they cost the least)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from search.budgets import Budgets
from search.repair import repair_bits
from search.sensitivity import (
    Sensitivity,
    context_job,
    measure_sensitivity,
    reestimate_batchnorm,
)
from search.trial import TrialContext
from spaces.distillation import accuracy
from spaces.student import student_architecture


@pytest.fixture(scope="module")
def measured(context: TrialContext) -> Sensitivity:
    teacher, space = context.teacher_and_space()
    w = context.workload
    return measure_sensitivity(teacher, space, (w.x_val, w.y_val), w.x_calib, reduce_range=False)


def test_every_unit_bit_width_and_ratio_is_measured_against_the_teacher(
    context: TrialContext, measured: Sensitivity
) -> None:
    teacher, space = context.teacher_and_space()
    assert space.quantization is not None and space.pruning is not None
    w = context.workload
    assert measured.teacher_accuracy == accuracy(teacher, w.x_val, w.y_val)
    units = space.quantization.bit_units()
    assert set(measured.weight) == {u for u, ps in units.items() if f"wbits.{u}" in ps}
    assert set(measured.act) == {u for u, ps in units.items() if f"abits.{u}" in ps}
    assert set(measured.act) - set(measured.weight) == {"stage1.add", "stage2.add", "stage3.add"}
    for tables, choices in ((measured.weight, (4, 8)), (measured.act, (8,))):
        assert all(set(t) == set(choices) for t in tables.values())  # float is not measured
    assert set(measured.pruning) == set(space.pruning.distributions())
    assert all(set(t) == set(space.pruning.grid[1:]) for t in measured.pruning.values())
    # pruning alone, with no fine-tune, costs accuracy, and more of it at the largest ratio
    most = max(space.pruning.grid)
    least = min(space.pruning.grid[1:])
    assert sum(t[most] for t in measured.pruning.values()) > sum(
        t[least] for t in measured.pruning.values()
    )
    assert max(t[most] for t in measured.pruning.values()) > 0.02
    assert measured.seconds > 0


def test_it_round_trips_through_json(measured: Sensitivity) -> None:
    assert Sensitivity.from_dict(json.loads(json.dumps(measured.as_dict()))) == measured


def test_batchnorm_statistics_become_those_of_the_calibration_images() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
    x = torch.randn(200, 1, 8, 8) * 3 + 1
    reestimate_batchnorm(model, x, batch=50)  # equal batches: the average of their means
    with torch.no_grad():
        conv_out = model[0](x)
    bn = model[1]
    assert isinstance(bn, nn.BatchNorm2d) and bn.running_mean is not None
    torch.testing.assert_close(bn.running_mean, conv_out.mean(dim=(0, 2, 3)), atol=1e-4, rtol=1e-4)
    assert not model.training and bn.momentum == 0.1  # restored


def test_the_repair_lowers_the_bits_of_the_unit_that_costs_nothing(context: TrialContext) -> None:
    teacher, space = context.teacher_and_space()
    assert space.quantization is not None
    units = [u for u, ps in space.quantization.bit_units().items() if f"wbits.{u}" in ps]
    cheap = "stage3.conv2.0"  # the largest layer: 4-bit weights there alone save the most
    assert cheap in units
    # every unit loses 5 points at 4-bit weights, except the one that loses nothing
    sens = Sensitivity(
        0.9,
        {u: {4: 0.0 if u == cheap else 0.05, 8: 0.001} for u in units},
        {u: {8: 0.001} for u in space.quantization.bit_units()},
        {},
        1.0,
    )
    eight = space.uniform_params(0.0, 8, 8)
    fits = {**eight, f"wbits.{cheap}": 4}
    arch = student_architecture(teacher, fits, space)
    size = context.target.predict(arch.graph, arch.policy.bits).as_dict()["size_kb"]
    start = student_architecture(teacher, eight, space)
    params, feasible = repair_bits(
        space, start, context.target, Budgets({"size_kb": size * 1.001}), sensitivity=sens
    )
    assert feasible
    lowered = {k for k, v in params.items() if k.startswith("wbits.") and v == 4}
    assert lowered == {f"wbits.{cheap}"}
    # activations do not count towards size: they go back to float, which costs nothing here
    assert sens.bits_loss(space, params) < sens.bits_loss(space, fits)


def test_a_space_without_float_is_measured_against_its_most_bits(context: TrialContext) -> None:
    """An int8-only target's space (weights 4 or 8 bits, activations 8): each unit's 4-bit
    weights against the model at 8 bits everywhere; nothing to measure for activations."""
    from spaces.joint import JointSpace

    teacher, _ = context.teacher_and_space()
    spec = context.spec
    assert spec.space.quantization is not None
    int8 = spec.space.model_copy(update={"quantization": spec.space.quantization.model_copy(
        update={"weight_bits": (4, 8), "activation_bits": (8,)})})
    space = JointSpace(teacher, spec.model.input_shape, int8, batch_size=spec.data.batch_size)
    w = context.workload
    sens = measure_sensitivity(teacher, space, (w.x_val, w.y_val), w.x_calib, reduce_range=False)
    assert sens.act == {} and sens.weight and all(set(t) == {4} for t in sens.weight.values())
    assert sens.bits_loss(space, space.uniform_params(0.0, 8, 8)) == 0.0


def _pid_after(_context: TrialContext, seconds: float) -> int:
    import os
    import time

    time.sleep(seconds)
    return os.getpid()


@pytest.mark.slow
def test_on_the_executor_the_jobs_run_in_parallel_and_measure_the_same(
    context: TrialContext, measured: Sensitivity
) -> None:
    """The study's executor runs the sensitivity's jobs on its workers (a local Ray of 2), and
    they measure what the driver measures alone."""
    from search.executors import RayExecutor
    from search.sensitivity import context_sensitivity

    executor = RayExecutor(workers=2)
    try:
        pids = executor.map(_pid_after, context, [1.0] * 4)
        assert len(set(pids)) == 2  # both workers took jobs
        logged: list[str] = []
        on_workers = context_sensitivity(
            context, logged.append, lambda jobs: executor.map(context_job, context, jobs)
        )
    finally:
        executor.shutdown()
    assert "sensitivity of the teacher measured in" in logged[0]
    one_image = 1 / len(context.workload.y_val)
    for table in ("weight", "act", "pruning"):
        here, there = getattr(measured, table), getattr(on_workers, table)
        assert here.keys() == there.keys()
        for key, row in here.items():
            assert row.keys() == there[key].keys()
            for value, loss in row.items():
                assert there[key][value] == pytest.approx(loss, abs=2 * one_image)


def test_a_study_that_uses_no_sensitivity_does_not_measure_it(
    tmp_path: Path, needs_fashion_mnist: None, edgetune_home: Path
) -> None:
    """Plain sampling with no seeds (the benchmark's random search) neither measures the
    sensitivity when it starts nor when it resumes; a study with seeds does."""
    import yaml

    from search.lifecycle import resume_prepared, start_study
    from search.sensitivity import stored_sensitivity
    from search.spec import parse_spec
    from tests.conftest import tiny_spec

    raw = yaml.safe_load(tiny_spec("plain"))
    raw["target"] = "jetson-nano"  # priced on its cost model: no calibration of this machine
    raw["search"].update(seed_trials=0, feasible_sampling=False, sampler="random")
    url = f"sqlite:///{tmp_path / 's.db'}"
    lines: list[str] = []
    plain = parse_spec(raw)
    study, prepared = start_study(plain, url, "plain", log=lines.append)
    assert prepared.context.sensitivity is None and stored_sensitivity(study) is None
    assert resume_prepared(study, plain, log=lines.append).context.sensitivity is None
    assert not [line for line in lines if "sensitivity" in line]
    raw["search"]["seed_trials"] = 1
    seeded = parse_spec({**raw, "name": "seeded"})
    study, prepared = start_study(seeded, url, "seeded", log=lines.append)
    assert prepared.context.sensitivity is not None
    assert stored_sensitivity(study) == prepared.context.sensitivity
