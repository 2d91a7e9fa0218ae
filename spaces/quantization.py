"""Quantization: per-layer fake quantization (weights and input activations), trainable (QAT).

:func:`quantize_model` folds every BatchNorm into the conv before it, then wraps each Conv1d,
Conv2d and Linear named in ``bits`` into :class:`QuantConv` / :class:`QuantLinear` (the original
layer stays as ``.layer``) and each ``Add``, ``Mul`` and ``Cat`` module (a join of activations,
written as a module or as ``+``, ``*``, ``torch.cat``: see :mod:`spaces.functional`) into
:class:`QuantJoin`, which quantizes every input and the output:

* weights: per output channel, symmetric, ``qmax = 2**(bits-1) - 1`` (so ``2*qmax + 1``
  levels); with ``reduce_range`` an 8-bit weight uses ±63, because onnxruntime's u8s8 kernels
  on x86 CPUs without VNNI can saturate u8×s8 products. The scale follows the weights during training.
* input activations: per tensor, 8 bits as asymmetric uint8 with a zero point, 16 bits as
  symmetric int16. Scales are calibrated once on ``calib`` with **min/max**: the fine-tune after
  it is QAT and adapts the weights to the grid, min/max never clips the largest activations
  (which carry the signal in a small ReLU net), and it is what onnxruntime's static quantizer
  does by default. The scales stay fixed during QAT.
* rounding uses a straight-through estimator; values outside the range get no gradient.

A ``weight_bits`` of 32 (or an ``act_bits`` of 32) leaves that part float; a layer not in
``bits`` stays float. :meth:`QuantLayer.int_weight` and the ``scale``/``zero_point`` buffers of
:class:`ActQuant` are the exact integers and scales the ONNX exporter writes.

Params: ``wbits.<layer>`` for every conv/linear layer and ``abits.<layer>`` for every conv,
linear, Add, Mul and Cat layer (granularity ``layer``); ``wbits.stage<i>`` /
``abits.stage<i>`` (stage); ``wbits.model`` / ``abits.model`` (model).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from cost_models.errors import UnsupportedLayerError
from cost_models.graph import FLOAT_BITS, Bits, Precision
from spaces.base import Knob, layer_kind, require, stage_names, trace_layers
from spaces.errors import SpaceError

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

    from spaces.config import QuantizationSpace

JOIN_KINDS = ("add", "mul", "concat")
W_PREFIX = "wbits."
A_PREFIX = "abits."
CALIB_BATCH = 256


def round_ste(x: Tensor) -> Tensor:
    """``round(x)`` forward, identity gradient backward (straight-through estimator)."""
    return x + (torch.round(x) - x).detach()


def weight_qmax(bits: int, *, reduce_range: bool) -> int:
    """Largest integer of a symmetric ``bits``-bit weight (63 for 8 bits with reduce_range)."""
    if bits == 8 and reduce_range:
        return 63
    return 2 ** (bits - 1) - 1


def quantize_weight(weight: Tensor, qmax: int) -> tuple[Tensor, Tensor]:
    """Per-output-channel symmetric integers (float dtype, on the grid) and scales (float32).

    Differentiable through :func:`round_ste` with respect to ``weight``; the scale is detached.
    """
    amax = weight.detach().abs().reshape(weight.shape[0], -1).amax(dim=1)
    scale = torch.where(amax > 0, amax / qmax, torch.ones_like(amax)).to(torch.float32)
    shape = (-1,) + (1,) * (weight.dim() - 1)
    q = torch.clamp(round_ste(weight / scale.reshape(shape)), -qmax, qmax)
    return q, scale


class _FakeQuantize(torch.autograd.Function):
    """``clamp(round(x / scale), lo, hi) * scale`` with the straight-through gradient of
    :class:`ActQuant`'s form (1 where ``round(x / scale)`` is within ``[lo, hi]``, else 0), in
    four in-place passes forward and one backward, where the same ops composed for autograd take
    sixteen (``experiments/bench_train_step.py``: a fine-tune step 0.63-0.74x as long)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, scale: float, lo: int, hi: int) -> Tensor:
        ctx.save_for_backward(x)
        ctx.bounds = ((lo - 0.5) * scale, (hi + 0.5) * scale)
        return torch.div(x, scale).round_().clamp_(lo, hi).mul_(scale)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None, None]:
        (x,) = ctx.saved_tensors
        return torch.ops.aten.hardtanh_backward(grad, x, *ctx.bounds), None, None, None


class ActQuant(nn.Module):
    """Per-tensor fake quantization of an activation: uint8 asymmetric (8) or int16 symmetric.

    While :attr:`observing` it records min/max and passes values through; :meth:`freeze` sets
    ``scale`` (float32) and ``zero_point`` from them.
    """

    scale: Tensor
    zero_point: Tensor
    lo: Tensor
    hi: Tensor

    def __init__(self, bits: int) -> None:
        super().__init__()
        if bits not in (8, 16):
            raise SpaceError(f"activation bits must be 8, 16 or 32 (float), got {bits}")
        self.bits = bits
        self.qmin, self.qmax = (0, 255) if bits == 8 else (-32768, 32767)
        self.observing = False
        self.register_buffer("scale", torch.tensor(1.0))
        self.register_buffer("zero_point", torch.tensor(0, dtype=torch.int32))
        self.register_buffer("lo", torch.tensor(float("inf")))
        self.register_buffer("hi", torch.tensor(float("-inf")))

    def freeze(self) -> None:
        """Set scale and zero point from the observed range; stop observing."""
        lo, hi = min(float(self.lo), 0.0), max(float(self.hi), 0.0)
        if self.bits == 8:
            scale = (hi - lo) / 255.0
            scale = scale if scale > 0 else 1.0
            zp = int(min(255, max(0, round(-lo / scale))))
        else:
            scale = max(-lo, hi) / 32767.0
            scale = scale if scale > 0 else 1.0
            zp = 0
        self.scale.fill_(scale)
        self.zero_point.fill_(zp)
        self.observing = False

    def forward(self, x: Tensor) -> Tensor:
        if self.observing:
            self.lo = torch.minimum(self.lo, x.detach().min())
            self.hi = torch.maximum(self.hi, x.detach().max())
            return x
        zp = int(self.zero_point)  # (q - zp) * scale, with q = clamp(round(x/scale) + zp)
        return cast(Tensor, _FakeQuantize.apply(x, float(self.scale), self.qmin - zp,
                                                self.qmax - zp))


class QuantLayer(nn.Module):
    """Base of the conv/linear wrappers: fake-quant input, then the layer with fake-quant weights."""

    def __init__(self, layer: nn.Conv1d | nn.Conv2d | nn.Linear, precision: Precision, *,
                 reduce_range: bool) -> None:
        super().__init__()
        self.layer = layer
        self.weight_bits = precision.weight_bits
        self.act_bits = precision.act_bits
        self.qmax = weight_qmax(self.weight_bits, reduce_range=reduce_range)
        self.act: ActQuant | None = ActQuant(self.act_bits) if self.act_bits != FLOAT_BITS else None

    def weight(self) -> Tensor:
        """The weight the forward uses: fake-quantized, or the float weight at 32 bits."""
        if self.weight_bits == FLOAT_BITS:
            return self.layer.weight
        q, scale = quantize_weight(self.layer.weight, self.qmax)
        return q * scale.reshape((-1,) + (1,) * (q.dim() - 1))

    @torch.no_grad()
    def int_weight(self) -> tuple[Tensor, Tensor]:
        """Integer weights (int8 tensor, values within ±qmax) and per-channel float32 scales."""
        if self.weight_bits == FLOAT_BITS:
            raise UnsupportedLayerError("a float (32-bit) weight has no integer form")
        q, scale = quantize_weight(self.layer.weight, self.qmax)
        return q.to(torch.int8), scale

    def quant_input(self, x: Tensor) -> Tensor:
        return x if self.act is None else self.act(x)


class QuantConv(QuantLayer):
    """A Conv1d or Conv2d with fake-quantized input and weights."""

    layer: nn.Conv1d | nn.Conv2d

    def forward(self, x: Tensor) -> Tensor:
        return self.layer._conv_forward(self.quant_input(x), self.weight(), self.layer.bias)


class QuantLinear(QuantLayer):
    layer: nn.Linear

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(self.quant_input(x), self.weight(), self.layer.bias)


class QuantJoin(nn.Module):
    """An ``Add``, ``Mul`` or ``Cat`` module with every input and its output fake-quantized (QDQ
    form in ONNX, which onnxruntime runs as ``QLinearAdd``/``QLinearMul``/``QLinearConcat``).
    The input quantizers are ``act_a``, ``act_b``...; the output's is ``act_out``."""

    def __init__(self, layer: nn.Module, act_bits: int, inputs: int) -> None:
        super().__init__()
        self.layer = layer
        self.weight_bits = FLOAT_BITS
        self.act_bits = act_bits
        self.inputs = inputs
        for i in range(inputs):
            self.add_module(input_quantizer(i), ActQuant(act_bits))
        self.act_out = ActQuant(act_bits)

    def input_quants(self) -> list[ActQuant]:
        return [cast(ActQuant, getattr(self, input_quantizer(i))) for i in range(self.inputs)]

    def forward(self, *xs: Tensor) -> Tensor:
        if len(xs) != self.inputs:
            raise UnsupportedLayerError(
                f"a {type(self.layer).__name__} traced with {self.inputs} inputs got {len(xs)}; "
                "give each join its own module"
            )
        quantized = (q(x) for q, x in zip(self.input_quants(), xs, strict=True))
        return self.act_out(self.layer(*quantized))


def input_quantizer(i: int) -> str:
    """The attribute of a join's ``i``-th input quantizer: ``act_a``, ``act_b``... ``act_z``,
    then ``act_26``..."""
    return f"act_{chr(ord('a') + i)}" if i < 26 else f"act_{i}"


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attr, module)


@torch.no_grad()
def fold_batchnorm(model: nn.Module, example: Tensor) -> nn.Module:
    """Fold each BatchNorm that directly consumes a conv's output (BatchNorm1d after a Conv1d,
    BatchNorm2d after a Conv2d) into that conv, in place.

    The BN becomes ``nn.Identity``. Pairs are found by running ``example`` (eval mode); the
    result is checked against the unfolded outputs, and a mismatch (a conv output also used
    elsewhere before its BN) raises UnsupportedLayerError.
    """
    model.eval()
    produced: dict[int, tuple[str, Tensor]] = {}
    pairs: list[tuple[str, str]] = []
    handles = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv1d | nn.Conv2d):
            handles.append(m.register_forward_hook(
                lambda _m, _i, out, n=name: produced.__setitem__(id(out), (n, out))))
        elif isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            def pre(_m: nn.Module, inputs: tuple[Tensor, ...], n: str = name) -> None:
                hit = produced.get(id(inputs[0]))
                if hit is not None and hit[1] is inputs[0]:
                    pairs.append((hit[0], n))
            handles.append(m.register_forward_pre_hook(pre))
    try:
        reference = model(example)
    finally:
        for h in handles:
            h.remove()
    for conv_name, bn_name in pairs:
        conv = model.get_submodule(conv_name)
        bn = model.get_submodule(bn_name)
        assert isinstance(conv, nn.Conv1d | nn.Conv2d)
        assert isinstance(bn, nn.BatchNorm1d | nn.BatchNorm2d)
        mean, var = bn.running_mean, bn.running_var
        if mean is None or var is None:
            raise UnsupportedLayerError(
                f"{bn_name}: a BatchNorm without running statistics cannot be folded; build it "
                "with track_running_stats=True"
            )
        gamma = bn.weight if bn.affine else torch.ones_like(var)
        beta = bn.bias if bn.affine else torch.zeros_like(var)
        factor = gamma / torch.sqrt(var + bn.eps)
        bias = conv.bias if conv.bias is not None else torch.zeros_like(mean)
        conv.weight.copy_(conv.weight * factor.reshape(-1, *([1] * (conv.weight.dim() - 1))))
        conv.bias = nn.Parameter((bias - mean) * factor + beta)
        _set_submodule(model, bn_name, nn.Identity())
    folded = model(example)
    tol = 1e-3 * max(1.0, float(reference.abs().max()))
    if not torch.allclose(folded, reference, atol=tol, rtol=1e-3):
        raise UnsupportedLayerError(
            f"{type(model).__name__}: folding BatchNorm into the conv before it changed the "
            "outputs, so a conv output is also used before its BatchNorm; give the BatchNorm "
            "its own conv"
        )
    return model


def quantize_model(model: nn.Module, bits: Bits, calib: Tensor, *, reduce_range: bool) -> nn.Module:
    """A fake-quantized, BN-folded deep copy of ``model``, calibrated on ``calib``.

    ``bits`` maps layer names (Conv1d, Conv2d, Linear, Add, Mul or Cat modules) to their
    Precision; other layers stay float. The copy is in eval mode; training it is QAT.
    """
    student = fold_batchnorm(copy.deepcopy(model), calib[:8])
    modules = dict(student.named_modules())
    arity = _join_arity(student, calib[:1])
    for name, precision in bits.items():
        module = modules.get(name)
        kind = None if module is None else layer_kind(module)
        if module is None or kind is None:
            found = "no such layer" if module is None else f"a {type(module).__name__}"
            raise UnsupportedLayerError(
                f"bits name {name!r}, which is {found}; give bits only for the conv, Linear, "
                "Add, Mul and Cat layers of the model (see QuantizationKnob.layers)"
            )
        if precision.weight_bits == FLOAT_BITS and precision.act_bits == FLOAT_BITS:
            continue
        wrapper: nn.Module
        if kind in JOIN_KINDS:
            if precision.act_bits == FLOAT_BITS:
                continue
            wrapper = QuantJoin(module, precision.act_bits, arity[name])
        elif isinstance(module, nn.Conv1d | nn.Conv2d):
            if module.padding_mode != "zeros":
                raise UnsupportedLayerError(f"{name}: padding_mode {module.padding_mode!r} "
                                            "cannot be exported; use padding_mode='zeros'")
            wrapper = QuantConv(module, precision, reduce_range=reduce_range)
        else:
            assert isinstance(module, nn.Linear)
            wrapper = QuantLinear(module, precision, reduce_range=reduce_range)
        _set_submodule(student, name, wrapper)
    calibrate(student, calib)
    return student


@torch.no_grad()
def _join_arity(model: nn.Module, example: Tensor) -> dict[str, int]:
    """How many inputs each Add, Mul and Cat module of ``model`` gets in a forward of
    ``example``."""
    arity: dict[str, int] = {}
    handles = [
        module.register_forward_pre_hook(
            lambda _m, args, n=name: arity.__setitem__(n, len(args)))
        for name, module in model.named_modules() if layer_kind(module) in JOIN_KINDS
    ]
    try:
        model.eval()(example)
    finally:
        for h in handles:
            h.remove()
    return arity


@torch.no_grad()
def calibrate(model: nn.Module, calib: Tensor) -> None:
    """Observe min/max of every ActQuant's input on ``calib`` (float activations), then freeze."""
    quants = [m for m in model.modules() if isinstance(m, ActQuant)]
    if not quants:
        return
    for q in quants:
        q.lo.fill_(float("inf"))
        q.hi.fill_(float("-inf"))
        q.observing = True
    model.eval()
    for start in range(0, len(calib), CALIB_BATCH):
        model(calib[start : start + CALIB_BATCH])
    for q in quants:
        q.freeze()


def wrappers(model: nn.Module) -> dict[str, QuantLayer | QuantJoin]:
    """Every quantization wrapper of a student, by layer name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, QuantLayer | QuantJoin)}


class QuantizationKnob(Knob):
    """Weight and activation bits per layer, stage or model (see the module docstring)."""

    prefix = W_PREFIX  # and A_PREFIX: see owns()

    def __init__(self, model: nn.Module, input_shape: Sequence[int], spec: QuantizationSpace) -> None:
        self.spec = spec
        self.layers = trace_layers(model, input_shape)
        stages = stage_names(self.layers)
        key = {"layer": lambda n: n, "stage": stages.__getitem__, "model": lambda n: "model"}[
            spec.granularity
        ]
        self._w: dict[str, str] = {
            i.name: W_PREFIX + key(i.name) for i in self.layers if i.kind not in JOIN_KINDS
        }
        self._a: dict[str, str] = {i.name: A_PREFIX + key(i.name) for i in self.layers}

    def owns(self, name: str) -> bool:
        return name.startswith((W_PREFIX, A_PREFIX))

    def distributions(self) -> dict[str, BaseDistribution]:
        from optuna.distributions import CategoricalDistribution

        dists: dict[str, BaseDistribution] = {}
        for p in self._w.values():
            dists[p] = CategoricalDistribution(self.spec.weight_bits)
        for p in self._a.values():
            dists[p] = CategoricalDistribution(self.spec.activation_bits)
        return dists

    def decode(self, params: Mapping[str, Any]) -> dict[str, Precision]:
        """Precision per layer: every conv, linear, Add, Mul and Cat layer (a join's weight
        bits are 32: it has none)."""
        return {
            info.name: Precision(
                int(require(params, self._w[info.name])) if info.name in self._w else FLOAT_BITS,
                int(require(params, self._a[info.name])),
            )
            for info in self.layers
        }

    def bit_units(self) -> dict[str, dict[str, tuple[int, ...]]]:
        """The units the bits are chosen for (a layer, stage or the model, by granularity),
        each with its params and their choices: ``{unit: {param: choices}}``. A unit's weight
        and activation bits are one coordinate for a search that moves them together."""
        units: dict[str, dict[str, tuple[int, ...]]] = {}
        for params, choices in ((self._w, self.spec.weight_bits),
                                (self._a, self.spec.activation_bits)):
            for param in params.values():
                unit = param.partition(".")[2]
                units.setdefault(unit, {})[param] = tuple(choices)
        return units

    def uniform_params(self, **setting: Any) -> dict[str, Any]:
        """Every ``wbits.*`` at ``weight_bits`` and every ``abits.*`` at ``act_bits``."""
        wb, ab = int(setting.get("weight_bits", FLOAT_BITS)), int(setting.get("act_bits", FLOAT_BITS))
        for value, choices, field in ((wb, self.spec.weight_bits, "weight_bits"),
                                      (ab, self.spec.activation_bits, "activation_bits")):
            if value not in choices:
                raise SpaceError(f"space.quantization.{field}: {value} is not one of the choices "
                                f"{list(choices)}; pick one of them or add it to the spec")
        return {**{p: wb for p in self._w.values()}, **{p: ab for p in self._a.values()}}


__all__ = [
    "ActQuant",
    "QuantConv",
    "QuantJoin",
    "QuantLayer",
    "QuantLinear",
    "QuantizationKnob",
    "calibrate",
    "fold_batchnorm",
    "input_quantizer",
    "quantize_model",
    "quantize_weight",
    "weight_qmax",
    "wrappers",
]
