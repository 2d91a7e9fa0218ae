"""The committed corpus of malformed specs (tests/search/data/spec_corpus, made by its
``generate.py``) through ``edgetune check`` and through the service's spec check: every one
is refused with a one-line error (exit 2 or 3 on the command line, a SpecError in the service),
never an internal error or a traceback."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from search.cli import main
from search.errors import SpecError
from search.service.config import ServiceConfig, network_spec, network_spec_text

CORPUS = Path(__file__).resolve().parent / "data" / "spec_corpus"
CASES = sorted(CORPUS.glob("case-*"))
BUDGET_S = 40.0  # for the whole corpus, per test; it takes a few seconds


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private EDGETUNE_HOME, and the SIGTERM handler that ``main`` replaces, restored."""
    monkeypatch.setenv("EDGETUNE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("EDGETUNE_DEBUG", raising=False)
    handler = signal.getsignal(signal.SIGTERM)
    yield tmp_path / "home"
    signal.signal(signal.SIGTERM, handler)


def test_the_corpus_is_committed_and_small() -> None:
    assert len(CASES) >= 200
    assert sum(p.stat().st_size for p in CASES) < 1_000_000
    kinds = {p.stem.split("-", 2)[2] for p in CASES}
    assert kinds >= {"mutation", "tagged", "bomb", "aliases", "deep", "junk", "json", "semantic"}


def test_check_refuses_every_case_on_one_line(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    start = time.perf_counter()
    for path in CASES:
        code = main(["check", str(path), "--json"], isolate_stdout=False)
        out, err = capsys.readouterr()
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert code in (2, 3), (path.name, code, err[-500:])
        assert len(lines) == 1 and lines[0].startswith("edgetune: "), (path.name, err[-500:])
        assert "Traceback" not in err and "internal error" not in err, path.name
        assert out == "", path.name
    assert time.perf_counter() - start < BUDGET_S


def test_the_service_check_refuses_or_accepts_every_case(home: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    cfg = ServiceConfig(
        storage=f"sqlite:///{tmp_path}/studies.db",
        home=home,
        token="t" * 32,
        allow_modules=("tests.search",),
        data_root=root,
    )
    start = time.perf_counter()
    refused = 0
    for path in CASES:
        body = path.read_bytes()
        try:
            network_spec_text(body, cfg, as_json=path.suffix == ".json")
        except SpecError as exc:
            refused += 1
            assert "\n" not in str(exc) and len(str(exc)) < 4000, path.name
        # what the service did before parsing within limits: yaml.safe_load, then the check
        if path.suffix == ".yaml":
            try:
                raw = yaml.safe_load(body)
            except Exception:  # that parser's own failures (RecursionError...) are app.py's
                continue
            try:
                network_spec(raw, cfg)
            except SpecError as exc:
                assert "\n" not in str(exc) and len(str(exc)) < 4000, path.name
    assert refused == len(CASES)  # semantic cases too: an unknown target or built-in model
    assert time.perf_counter() - start < BUDGET_S
