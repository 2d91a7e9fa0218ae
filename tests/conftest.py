"""Shared fixtures: one EDGETUNE_HOME per test session, so the host target is calibrated once."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import PostgresServer

ROOT = Path(__file__).resolve().parents[1]
TEACHER = ROOT / "experiments" / "fashion_mnist" / "resnet8_teacher.pt"
# The tiny spec's latency budget, a share of the teacher's measured latency. Its cheapest
# candidate measured 57% on one CPU and 70% on another (a 0.16 ms network is dominated by
# per-operator overhead): the budget must hold on any CI machine, not only this one.
LATENCY_SHARE = 0.85
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def tiny_spec(name: str = "tiny", trials: int = 4, weights: Path | str = TEACHER) -> str:
    """A spec small enough for a search in well under a minute: a few hundred images, a few
    fine-tune steps, the real teacher, budgets that rule some candidates out."""
    return f"""
name: {name}
model: {{name: resnet8, weights: {weights}, input_shape: [1, 28, 28]}}
data: {{finetune_size: 512, val_size: 512, calibration_size: 64, batch_size: 64}}
target: host
constraints: {{latency_ms: {LATENCY_SHARE:.0%}, size_kb: 15%}}
space:
  quantization: {{weight_bits: [4, 8, 32], activation_bits: [8, 32]}}
  pruning: {{max_ratio: 0.6, step: 0.2, round_to: 4}}
  distillation: {{steps: 8, eval_every: 4, lr: 0.002}}
search: {{trials: {trials}, workers: 1, executor: process, seed: 0, seed_trials: 2}}
"""


@pytest.fixture(scope="session")
def edgetune_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A session-wide EDGETUNE_HOME (set in os.environ, so subprocesses inherit it)."""
    home = Path(os.environ.get("EDGETUNE_TEST_HOME") or tmp_path_factory.mktemp("edgetune-home"))
    old = os.environ.get("EDGETUNE_HOME")
    os.environ["EDGETUNE_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("EDGETUNE_HOME", None)
    else:
        os.environ["EDGETUNE_HOME"] = old


@pytest.fixture(scope="session")
def needs_fashion_mnist() -> None:
    if not (FASHION_MNIST / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("Debian dataset-fashion-mnist is not installed (make test installs it)")


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL server on 127.0.0.1 for the session; each test makes its own database."""
    server = PostgresServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres: PostgresServer, request: pytest.FixtureRequest) -> str:
    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name.lower())[:50]
    return postgres.create_database(name)
