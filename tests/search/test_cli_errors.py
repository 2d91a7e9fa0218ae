"""Bad input on the command line: one line naming what is wrong, no traceback, nothing changed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def run(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EDGETUNE_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "search.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_broken_spec_names_the_field(tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text("name: x\nmodel: {name: resnet8}\nconstraints: {latency_ms: -3}\n")
    proc = run("search", str(spec), home=tmp_path)
    assert_one_line_error(proc, "constraints.latency_ms: must be > 0, got -3")
    assert not (tmp_path / "studies.db").exists()


def test_check_rejects_an_unknown_key(tmp_path: Path) -> None:
    spec = tmp_path / "typo.yaml"
    spec.write_text("name: x\nmodel: {name: resnet8, wieghts: a.pt}\n")
    assert_one_line_error(run("check", str(spec), home=tmp_path), "model.wieghts: unknown key")


def test_unknown_study_lists_what_is_there(tmp_path: Path) -> None:
    proc = run("show", "nope", home=tmp_path)
    assert_one_line_error(proc, "no study 'nope'", "holds no studies")


@pytest.mark.parametrize("name", ["../etc", "a/b", ""])
def test_study_names_cannot_escape(tmp_path: Path, name: str) -> None:
    proc = run("show", name, home=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "must be 1-100 letters" in proc.stderr


def test_unsupported_storage_url(tmp_path: Path) -> None:
    proc = run("show", "x", "--storage", "mysql://h/db", home=tmp_path)
    assert_one_line_error(proc, "--storage: unsupported storage URL")


def test_bad_trials_flag(tmp_path: Path) -> None:
    proc = run("resume", "x", "--trials", "0", home=tmp_path)
    assert proc.returncode == 2 and "--trials" in proc.stderr and "Traceback" not in proc.stderr
