"""The validation pass edgetune evaluates with gives what the plain NCHW form it replaced did,
and the benchmark's copies stay in the layout each form names."""

from __future__ import annotations

import torch

from experiments.bench_eval import plain, time_passes
from experiments.bench_util import nchw
from search.workloads.models import resnet8
from spaces.distillation import accuracy


def test_edgetunes_pass_scores_what_the_plain_one_does_and_leaves_the_copy_nchw() -> None:
    torch.manual_seed(0)
    model = resnet8((1, 16, 16), 10).eval()
    with torch.no_grad():  # BN statistics of a trained model, not of initialisation
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                assert m.running_var is not None and m.running_mean is not None
                m.running_var.uniform_(0.5, 2.0)
                m.running_mean.normal_(0.0, 0.1)
    x = torch.randn(200, 1, 16, 16)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[::4] = (y[::4] + 1) % 10  # a quarter wrong: the score is not trivially 1
    base = nchw(model)
    assert plain(base, x, y, 512) == plain(base, x, y, 64) == accuracy(model, x, y) == 0.75
    assert all(p.is_contiguous() for p in base.parameters())
    assert any(not p.is_contiguous() for p in model.parameters())  # edgetune's moved
    assert all(p.is_contiguous() for p in nchw(model).parameters())


def test_time_passes_gives_each_pass_its_median() -> None:
    calls = {"a": 0, "b": 0}

    def count(key: str) -> float:
        calls[key] += 1
        return 0.0

    times = time_passes({"a": lambda: count("a"), "b": lambda: count("b")}, repeats=3)
    assert set(times) == {"a", "b"}
    assert calls == {"a": 4, "b": 4}  # one warm-up each, then the repeats
    assert all(t >= 0 for t in times.values())
