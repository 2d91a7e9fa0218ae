"""The host's cost model corrects itself: measured candidates become calibration rows."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from search.refit import REFIT_EVERY, Refit
from search.trial import TrialOutcome
from spaces.config import PruningSpace, QuantizationSpace, Space
from spaces.joint import JointSpace
from spaces.student import Student, build_student

pytestmark = pytest.mark.slow  # calibrates this machine once per test session


def _candidates(n: int) -> list[tuple[bytes, Student]]:
    """ONNX students of the search's own recipe, with their layer graphs and bits."""
    import optuna

    from search.onnx_export import to_onnx
    from search.workloads.models import resnet8

    shape = (1, 28, 28)
    teacher = resnet8(shape).eval()
    space = JointSpace(
        teacher,
        shape,
        Space(
            quantization=QuantizationSpace(weight_bits=(4, 8, 32), activation_bits=(8, 32)),
            pruning=PruningSpace(max_ratio=0.6, step=0.2, round_to=4),
        ),
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=7))
    out = []
    for _ in range(n):
        student = build_student(
            teacher,
            space.suggest(study.ask()),
            space,
            calib=torch.randn(8, *shape),
            reduce_range=False,
        )
        assert student.model is not None
        out.append((to_onnx(student.model, shape).SerializeToString(), student))
    return out


def test_measured_candidates_refit_the_host_and_persist(edgetune_home: Path) -> None:
    import targets
    from cost_models import fidelity
    from targets.host import cached_host
    from targets.measurer import measurer_for

    host = targets.get("host")  # calibrated once per session
    index = edgetune_home / "targets" / "host_candidates" / "index.json"
    before_kept = len(json.loads(index.read_text())["rows"]) if index.is_file() else 0
    candidates = _candidates(2 * REFIT_EVERY)
    measurer = measurer_for(host)
    assert measurer is not None
    measured = measurer.measure([b for b, _ in candidates], seconds=3.0)
    # the calibration's reference model is measured in the same run: each candidate also has
    # its latency at the calibration's machine speed, which its calibration row takes
    assert all(m.calibration_speed_ms and 0.2 < m.calibration_speed_ms / m.latency_ms < 5
               for m in measured)
    before = [host.predict(s.graph, s.policy.bits).latency_ms for _, s in candidates]

    logs: list[str] = []
    refit = Refit(host, enabled=True, log=logs.append)
    refitted = None
    for (onnx_bytes, _), m in zip(candidates, measured, strict=True):
        outcome = TrialOutcome(0, "complete", measured=m.as_dict(), onnx=onnx_bytes)
        refitted = refit.add(outcome) or refitted
    assert refit.refits == 2 and refitted is not None, logs
    # every candidate is kept with the target (beside any an earlier search kept)
    rows = json.loads(index.read_text())["rows"]
    names = {"cand-" + hashlib.sha256(b).hexdigest()[:12] for b, _ in candidates}
    assert names <= {r["name"] for r in rows} and len(rows) >= before_kept
    kept_ms = {r["name"]: r["latency_ms"] for r in rows}
    assert [kept_ms["cand-" + hashlib.sha256(b).hexdigest()[:12]] for b, _ in candidates] == [
        m.calibration_speed_ms for m in measured]
    assert f"{len(rows)} of the rows are measured search candidates" in refitted.provenance.notes

    after = [refitted.predict(s.graph, s.policy.bits).latency_ms for _, s in candidates]
    lat = [m.calibration_speed_ms or m.latency_ms for m in measured]
    # fitted on them, it predicts them at least about as well as before
    assert fidelity(after, lat)["mdape"] <= fidelity(before, lat)["mdape"] * 1.05 + 1.0
    # kept with the target: the next study starts from it
    cached = cached_host()
    assert cached is not None and cached.constants == refitted.constants


def test_a_device_with_an_agent_is_refitted_from_its_measured_candidates(
    tmp_path: Path, edgetune_home: Path
) -> None:
    """A device reached through its agent server, calibrated from networks measured there:
    the candidates a study measures on it refit it, and the refit is kept with the target."""
    from dataclasses import replace

    import targets
    from targets.base import AgentRef
    from targets.calibrate import calibrate_file, save_user_target
    from targets.remote import AgentMeasurer
    from tests.targets.test_agent_server import _start, _stop, _token_file

    token_file = _token_file(tmp_path / "lab-dev.token")
    agent = _start(["-m", "targets.agent", "serve", "--token-file", str(token_file)], tmp_path)
    try:
        ref = AgentRef(agent.url, str(token_file))
        measurer = AgentMeasurer(ref)
        candidates = _candidates(12 + 2 * REFIT_EVERY)
        first, later = candidates[:12], candidates[12:]
        lines = ["model,latency_ms"]
        for i, m in enumerate(measurer.measure([b for b, _ in first], seconds=3.0)):
            (tmp_path / f"n{i}.onnx").write_bytes(first[i][0])
            lines.append(f"n{i}.onnx,{m.latency_ms}")
        (tmp_path / "lab-dev.csv").write_text("\n".join(lines) + "\n")
        device, _ = calibrate_file("lab-dev", tmp_path / "lab-dev.csv")
        save_user_target(replace(device, agent=ref))
        device = targets.get("lab-dev")
        assert device.agent == ref and device.provenance.n_measurements == 12

        logs: list[str] = []
        refit = Refit(device, enabled=True, log=logs.append)
        measured = measurer.measure([b for b, _ in later], seconds=3.0)
        for (onnx_bytes, _), m in zip(later, measured, strict=True):
            refit.add(TrialOutcome(0, "complete", measured=m.as_dict(), onnx=onnx_bytes))
        assert refit.refits == 2, logs
        kept = targets.get("lab-dev")  # stored: the next study starts from it
        assert kept.agent == ref and kept.provenance.n_measurements == 12 + 2 * REFIT_EVERY
        assert f"refitted with {2 * REFIT_EVERY} measured search candidates" in kept.provenance.notes
        assert kept.constants == refit.target.constants
        index = edgetune_home / "targets" / "lab-dev_candidates" / "index.json"
        assert len(json.loads(index.read_text())["rows"]) == 2 * REFIT_EVERY
    finally:
        _stop(agent.proc)
