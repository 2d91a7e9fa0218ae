"""A search whose candidates are measured on a device: the agent server runs as a separate
process on 127.0.0.1, a user target names it, and the study scores candidates by what it
measures there."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import LATENCY_SHARE, tiny_spec
from tests.search.test_search_e2e import as_json, edgetune
from tests.targets.test_agent_server import TOKEN, _start, _stop, _token_file

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("needs_fashion_mnist")]


def test_a_study_measured_by_the_agent_server(tmp_path: Path, edgetune_home: Path) -> None:
    import optuna

    import targets
    from search.record import StudyRecord, TrialRecord
    from targets.base import target_to_dict

    host = targets.get("host")  # its cost model stands in for the device's
    token_file = _token_file(tmp_path / "lab-pi.token")
    agent = _start(["-m", "targets.agent", "serve", "--token-file", str(token_file)], tmp_path)
    try:
        device = {
            **target_to_dict(host),
            "name": "lab-pi",
            "agent": {"url": agent.url, "token_file": str(token_file)},
        }
        (edgetune_home / "targets" / "lab-pi.json").write_text(json.dumps(device))
        spec = tiny_spec(name="measured", trials=2).replace("target: host", "target: lab-pi")
        spec = spec.replace("seed_trials: 2}", "seed_trials: 2, measure: always}")
        (tmp_path / "spec.yaml").write_text(spec)
        storage = f"sqlite:///{tmp_path / 'studies.db'}"

        run = edgetune("search", str(tmp_path / "spec.yaml"), "--storage", storage, "--json")
        out = as_json(run)
        assert out["trained"] == 2
        study = optuna.load_study(study_name="measured", storage=storage)
        record = StudyRecord.read(study)
        assert record is not None and "latency_ms_predicted" in record.teacher  # measured
        measured = [
            r for t in study.trials if (r := TrialRecord.read(t)) and "latency_ms" in r.measured
        ]
        assert measured, "no candidate was measured"
        for r in measured:
            assert r.provenance["measured_on"] == agent.url
            assert r.scored["latency_ms"] == r.measured["latency_ms"]
            assert r.measured["ratio_to_teacher"] == pytest.approx(
                r.measured["latency_ms"] / r.measured["teacher_latency_ms"]
            )
            if r.feasible:  # within the budget's share of the teacher measured beside it
                assert r.measured["ratio_to_teacher"] <= LATENCY_SHARE
        # the seeds, chosen before anything was measured, aim below the share by the cost
        # model's held-out error
        aim = LATENCY_SHARE / (1 + host.prediction_margin())
        seeds = [r for t in study.trials
                 if "fixed_params" in t.system_attrs and (r := TrialRecord.read(t))]
        assert seeds
        for r in seeds:
            ratio = r.predicted["latency_ms"] / record.teacher["latency_ms_predicted"]
            assert ratio <= aim + 1e-9
        assert "POST /measure" in agent.logs()
        # a second device-side check: the export measures there too, not on this machine
        summary = (
            as_json(
                edgetune(
                    "export",
                    "measured",
                    "--storage",
                    storage,
                    "--out",
                    str(tmp_path / "x"),
                    "--json",
                )
            )
            if out["best"]
            else None
        )
        if summary is not None:
            assert summary["measured_on"] == agent.url
            assert summary["latency_ms_measured"] > 0
        for text in (run.stderr, run.stdout, agent.logs()):
            assert TOKEN not in text
    finally:
        _stop(agent.proc)
