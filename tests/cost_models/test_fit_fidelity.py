"""NNLS recovers known coefficients; fidelity metrics on known inputs."""

from __future__ import annotations

import random

import numpy as np
import pytest

from cost_models import (
    KernelCoefficients,
    KernelConstants,
    Layer,
    LayerGraph,
    Precision,
    fidelity,
    fit_kernel_constants,
    kernels,
    latency_ms,
    nnls,
    spearman,
)
from cost_models.errors import CalibrationError


def test_nnls_matches_unconstrained_when_positive_and_clips_negative() -> None:
    rng = np.random.default_rng(0)
    a = rng.random((30, 4))
    x_true = np.array([1.0, 2.0, 0.5, 3.0])
    assert np.allclose(nnls(a, a @ x_true), x_true, atol=1e-8)
    # b = -a[:,0]: the best non-negative solution is 0 for that column
    x = nnls(np.eye(2), np.array([-1.0, 2.0]))
    assert np.allclose(x, [0.0, 2.0])


def _random_graph(rng: random.Random) -> tuple[LayerGraph, dict[str, Precision]]:
    layers, bits, prev, c, hw = [], {}, "", rng.choice((1, 3)), rng.choice((8, 16, 28))
    for i in range(rng.randint(1, 4)):
        cout = rng.choice((4, 8, 16, 32))
        name = f"c{i}"
        layers.append(
            Layer(
                name,
                "conv",
                (1, c, hw, hw),
                (1, cout, hw, hw),
                macs=cout * hw * hw * c * 9,
                params=cout * c * 9 + cout,
                kernel=3,
                inputs=(prev,),
            )
        )
        if rng.random() < 0.4:
            bits[name] = Precision(rng.choice((4, 8)), 16)  # runtime-dequantized
        prev, c = name, cout
    layers.append(
        Layer("gap", "gap", (1, c, hw, hw), (1, c, 1, 1), macs=c * hw * hw, inputs=(prev,))
    )
    layers.append(
        Layer("fc", "linear", (1, c), (1, 10), macs=c * 10, params=c * 10 + 10, inputs=("gap",))
    )
    return LayerGraph(tuple(layers), (1, layers[0].in_shape[1], hw, hw)), bits


def test_fit_recovers_known_coefficients() -> None:
    rng = random.Random(0)
    graphs = [_random_graph(rng) for _ in range(400)]
    classes = sorted({k.cls for g, b in graphs for k in kernels(g, b)})
    assert {"conv:f32", "conv:rt", "dqw4", "dqw8", "gap:f32", "linear:f32"} <= set(classes)
    crng = random.Random(1)
    true = KernelConstants(
        session_ms=0.01,
        power_w=1.0,
        coefficients=tuple(
            KernelCoefficients(
                c,
                crng.uniform(0, 0.005),
                crng.uniform(0, 0.1),
                crng.uniform(0, 2.0),
                crng.uniform(0, 20.0),
            )
            for c in classes
        ),
    )
    train, test = graphs[:300], graphs[300:]
    fitted = fit_kernel_constants([(g, b, latency_ms(g, b, true)) for g, b in train], power_w=1.0)
    # the recovered constants predict unseen graphs exactly
    for g, b in test:
        assert latency_ms(g, b, fitted) == pytest.approx(latency_ms(g, b, true), rel=1e-6)
    got = {c.cls: c for c in fitted.coefficients}
    want = {c.cls: c for c in true.coefficients}
    assert got["dqw4"].ns_per_elem == pytest.approx(want["dqw4"].ns_per_elem, rel=1e-4)


def test_fit_uses_and_records_the_nchwc_block() -> None:
    rng = random.Random(2)
    graphs = [_random_graph(rng) for _ in range(60)]
    classes = sorted({k.cls for g, b in graphs for block in (8, 16)
                      for k in kernels(g, b, nchwc_block=block)})
    true = KernelConstants(
        0.01, 1.0, tuple(KernelCoefficients(c, 0.001, 0.05) for c in classes), nchwc_block=16
    )
    rows = [(g, b, latency_ms(g, b, true)) for g, b in graphs]
    fitted = fit_kernel_constants(rows, power_w=1.0, nchwc_block=16)
    assert fitted.nchwc_block == 16
    assert fit_kernel_constants(rows, power_w=1.0).nchwc_block == 8  # the default
    for g, b, t in rows:
        assert latency_ms(g, b, fitted) == pytest.approx(t, rel=1e-6)


def test_fit_needs_enough_rows() -> None:
    g, b = _random_graph(random.Random(1))
    with pytest.raises(CalibrationError, match="at least"):
        fit_kernel_constants([(g, b, 1.0)], power_w=1.0)


def test_fidelity_known_values() -> None:
    f = fidelity([1.0, 1.05, 2.0, 4.0], [1.0, 1.0, 1.0, 4.0])
    assert f["within_10pct"] == pytest.approx(0.75)
    assert f["mdape"] == pytest.approx(2.5)  # median of 0, 5, 100, 0 %
    # ranks (1,2,3,4) vs (2,2,2,4): sum of products 3, norms 5 and 3
    assert f["spearman"] == pytest.approx(3 / np.sqrt(15))
    assert spearman([1, 2, 3], [30, 20, 10]) == pytest.approx(-1.0)
    with pytest.raises(CalibrationError):
        fidelity([1.0], [1.0, 2.0])
