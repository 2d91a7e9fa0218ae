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


EXAMPLE = Path(__file__).resolve().parents[2] / "experiments" / "fashion_mnist" / "resnet8_host.yaml"


def test_set_changes_spec_fields_and_adds_sections() -> None:
    from search.cli_args import build_parser, spec_with_overrides
    from search.spec import load_spec

    args = build_parser().parse_args([
        "search", str(EXAMPLE), "--set", "constraints.latency_ms=50%",
        "--set", "finalize.epochs=3", "--set", "space.pruning.max_ratio=0.6", "--trials", "2",
    ])
    spec = spec_with_overrides(load_spec(EXAMPLE), args)
    latency = spec.constraints.latency_ms
    assert latency is not None and latency.relative and latency.value == 0.5
    assert spec.finalize is not None and spec.finalize.epochs == 3
    assert spec.space.pruning is not None and spec.space.pruning.max_ratio == 0.6
    assert spec.search.trials == 2
    no_finalize = build_parser().parse_args(["search", str(EXAMPLE), "--set", "finalize=null"])
    assert spec_with_overrides(load_spec(EXAMPLE), no_finalize).finalize is None


@pytest.mark.parametrize(
    ("setting", "fragment"),
    [
        ("name.x=1", "--set name.x: name is not a section"),
        ("constraints.latency_ms=fast", "constraints.latency_ms"),
        ("finalize.epochs=0", "finalize.epochs"),
        ("finalize.lr=-0.01", "finalize.lr"),
    ],
)
def test_a_bad_set_is_one_line(tmp_path: Path, setting: str, fragment: str) -> None:
    proc = run("search", str(EXAMPLE), "--set", setting, "--storage",
               f"sqlite:///{tmp_path}/s.db", home=tmp_path)
    assert_one_line_error(proc, fragment)
    assert not (tmp_path / "s.db").exists()  # nothing started
    unparsed = run("search", str(EXAMPLE), "--set", "constraints.latency_ms", home=tmp_path)
    assert unparsed.returncode == 2 and "Traceback" not in unparsed.stderr
    assert "--set: expected KEY=VALUE" in unparsed.stderr  # argparse's usage, then this line
