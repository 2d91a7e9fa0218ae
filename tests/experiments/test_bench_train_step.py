"""The fake quantization edgetune trains with computes what the composed form it replaced did:
the same values forward, the same straight-through gradient back."""

from __future__ import annotations

import pytest
import torch

from cost_models.graph import Precision
from experiments.bench_train_step import Composed, composed, gradient_gap
from search.workloads.models import resnet8
from spaces.quantization import ActQuant, quantize_model, wrappers

SHAPE = (1, 16, 16)


@pytest.mark.parametrize(("bits", "scale", "zero_point"), [(8, 0.1, 17), (8, 0.037, 0),
                                                           (16, 0.003, 0)])
def test_the_fake_quantization_equals_the_composed_form(bits: int, scale: float,
                                                        zero_point: int) -> None:
    gen = torch.Generator().manual_seed(bits)
    fused, reference = ActQuant(bits), Composed(bits)
    for act in (fused, reference):
        act.scale.fill_(scale)
        act.zero_point.fill_(zero_point)
    lo, hi = (fused.qmin - zero_point) * scale, (fused.qmax - zero_point) * scale
    edges = torch.tensor([lo - 0.49 * scale, lo - 0.51 * scale, hi + 0.49 * scale,
                          hi + 0.51 * scale, lo, hi, 0.0, 1e9, -1e9])
    x = torch.cat([torch.randn(5000, generator=gen) * (hi - lo) / 2, edges])
    upstream = torch.randn(len(x), generator=gen)
    outs, grads = [], []
    for act in (fused, reference):
        xx = x.clone().requires_grad_()
        out = act(xx)
        out.backward(upstream)
        assert xx.grad is not None
        outs.append(out.detach())
        grads.append(xx.grad)
    assert torch.equal(outs[0], outs[1])
    assert torch.equal(grads[0] == 0, grads[1] == 0)  # the same values pass their gradient
    assert torch.allclose(grads[0], grads[1], rtol=1e-6, atol=0)
    # half a step beyond the range still rounds into it; more does not
    assert grads[0][-9:-5].tolist() == [upstream[-9].item(), 0.0, upstream[-7].item(), 0.0]
    assert 0 < int((grads[0] == 0).sum()) < len(x)


def test_a_students_loss_and_gradients_are_the_same_in_both_forms() -> None:
    torch.manual_seed(0)
    calib = torch.randn(32, *SHAPE)
    student = quantize_model(resnet8(SHAPE).eval(), {name: Precision(8, 8) for name in
                             ("stem.0", "stage1.conv1.0", "stage2.conv1.0", "classifier")},
                             calib, reduce_range=False)
    other = composed(student)
    assert {type(m) for m in student.modules() if isinstance(m, ActQuant)} == {ActQuant}
    assert {type(m) for m in other.modules() if isinstance(m, ActQuant)} == {Composed}
    assert len(wrappers(other)) == len(wrappers(student)) == 4
    x, y = torch.randn(16, *SHAPE), torch.randint(0, 10, (16,))
    logits = torch.randn(16, 10)
    assert gradient_gap(student, other, x, logits, y) < 1e-5
    with torch.no_grad():  # a copy: a change to one does not reach the other
        next(student.parameters()).add_(1.0)
    assert gradient_gap(student, other, x, logits, y) > 1e-3
