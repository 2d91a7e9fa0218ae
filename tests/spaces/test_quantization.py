from __future__ import annotations

import pytest
import torch
from torch import nn

from cost_models.errors import UnsupportedLayerError
from cost_models.graph import Precision
from spaces.config import QuantizationSpace
from spaces.quantization import (
    ActQuant,
    QuantConv,
    QuantizationKnob,
    QuantJoin,
    QuantLinear,
    fold_batchnorm,
    quantize_model,
    quantize_weight,
    weight_qmax,
    wrappers,
)

SHAPE = (1, 16, 16)  # the resnet fixture's input shape


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 7, 8])
def test_weight_fake_quant_is_on_grid_with_right_levels(bits: int) -> None:
    torch.manual_seed(bits)
    weight = torch.randn(8, 4, 3, 3)
    qmax = weight_qmax(bits, reduce_range=False)
    q, scale = quantize_weight(weight, qmax)
    assert qmax == 2 ** (bits - 1) - 1
    assert torch.equal(q, q.round()) and int(q.abs().max()) == qmax
    assert len(q.unique()) <= 2 * qmax + 1
    assert (q.reshape(8, -1).abs().amax(dim=1) == qmax).all()  # per output channel
    error = (q * scale.reshape(-1, 1, 1, 1) - weight).abs()
    assert (error <= scale.reshape(-1, 1, 1, 1) / 2 + 1e-6).all()


def test_reduce_range_uses_seven_bits_for_int8_only() -> None:
    assert weight_qmax(8, reduce_range=True) == 63
    assert weight_qmax(8, reduce_range=False) == 127
    assert weight_qmax(6, reduce_range=True) == 31


@pytest.mark.parametrize(("bits", "qmin", "qmax"), [(8, 0, 255), (16, -32768, 32767)])
def test_activation_fake_quant_is_on_grid(bits: int, qmin: int, qmax: int) -> None:
    act = ActQuant(bits)
    x = torch.randn(4096) * 3 + 1
    act.observing = True
    act(x)
    act.freeze()
    out = act(x)
    levels = out / act.scale + act.zero_point
    assert torch.allclose(levels, levels.round(), atol=1e-3)
    assert int(levels.round().min()) >= qmin and int(levels.round().max()) <= qmax
    assert (out - x).abs().max() <= act.scale * 0.5 + 1e-6  # min/max: nothing clipped
    if bits == 16:
        assert int(act.zero_point) == 0
    else:
        assert 0 < int(act.zero_point) < 255 and len(out.unique()) <= 256


def test_ste_gives_gradients_to_weights_and_inputs() -> None:
    conv = QuantConv(nn.Conv2d(2, 3, 3), Precision(4, 8), reduce_range=False)
    conv.act.observing = True  # type: ignore[union-attr]
    conv(torch.randn(4, 2, 5, 5))
    conv.act.freeze()  # type: ignore[union-attr]
    x = torch.randn(4, 2, 5, 5, requires_grad=True)
    conv(x).sum().backward()
    assert conv.layer.weight.grad is not None and conv.layer.weight.grad.abs().sum() > 0
    assert x.grad is not None and x.grad.abs().sum() > 0
    act = ActQuant(8)
    act.scale.fill_(0.1)
    act.zero_point.fill_(0)
    y = torch.tensor([0.33, 5.0, 30.0], requires_grad=True)  # 30 is beyond 255 * 0.1
    act(y).sum().backward()
    assert y.grad is not None and y.grad.tolist() == [1.0, 1.0, 0.0]


def test_fold_batchnorm_preserves_outputs(resnet: nn.Module) -> None:
    x = torch.randn(8, *SHAPE)
    with torch.no_grad():
        reference = resnet(x)
    folded = fold_batchnorm(resnet, x[:2])
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    with torch.no_grad():
        assert torch.allclose(folded(x), reference, atol=1e-5, rtol=1e-4)


def test_quantize_model_wraps_named_layers_only(resnet: nn.Module) -> None:
    bits = {
        "stem.0": Precision(8, 8),
        "stage1.conv1.0": Precision(4, 32),
        "stage1.add": Precision(32, 16),
        "stage2.conv1.0": Precision(32, 32),  # float: left alone
        "classifier": Precision(6, 8),
    }
    student = quantize_model(resnet, bits, torch.randn(32, *SHAPE), reduce_range=True)
    found = wrappers(student)
    assert set(found) == {"stem.0", "stage1.conv1.0", "stage1.add", "classifier"}
    assert isinstance(found["stem.0"], QuantConv) and found["stem.0"].qmax == 63
    assert isinstance(found["stage1.add"], QuantJoin) and found["stage1.add"].input_quants()[0].bits == 16
    assert isinstance(found["classifier"], QuantLinear)
    assert found["stage1.conv1.0"].act is None  # type: ignore[union-attr]
    assert type(student.get_submodule("stage2.conv1.0")) is nn.Conv2d
    assert isinstance(resnet.get_submodule("stem.0"), nn.Conv2d)  # the input is untouched
    q, scale = found["stem.0"].int_weight()  # type: ignore[union-attr]
    assert q.dtype == torch.int8 and int(q.abs().max()) == 63 and scale.shape == (16,)
    out = student(torch.randn(4, *SHAPE))
    assert out.shape == (4, 10) and torch.isfinite(out).all()


def test_quantize_model_rejects_unknown_layers(resnet: nn.Module) -> None:
    with pytest.raises(UnsupportedLayerError, match=r"stage1\.relu"):
        quantize_model(resnet, {"stage1.relu": Precision(8, 8)}, torch.randn(4, *SHAPE), reduce_range=False)


@pytest.mark.parametrize(
    ("granularity", "w", "a"), [("layer", 10, 13), ("stage", 4, 4), ("model", 1, 1)]
)
def test_granularity_param_count(resnet: nn.Module, granularity: str, w: int, a: int) -> None:
    knob = QuantizationKnob(resnet, SHAPE, QuantizationSpace(granularity=granularity))  # type: ignore[arg-type]
    names = list(knob.distributions())
    assert sum(n.startswith("wbits.") for n in names) == w
    assert sum(n.startswith("abits.") for n in names) == a
    bits = knob.decode({n: 8 for n in names})
    assert len(bits) == 13 and bits["stage1.add"] == Precision(32, 8)
