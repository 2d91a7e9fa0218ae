"""The host micro-benchmark suite: small ONNX models written with ``onnx.helper`` (no torch).

Every model is built with :class:`targets.onnx_builder.OnnxBuilder` in the QDQ convention of
:mod:`cost_models.graph`, so ``cost_models.from_onnx`` gives back its layer graph and
bit-widths. The suite covers single layers (conv k1/3/5/7, stride 1/2, depthwise, linear,
pools, add), residual blocks and short chains shaped like ResNet-8, DS-CNN and MobileNetV2
layers at 7x7..32x32 and, for 12 of them, on larger and non-square inputs (10x49, 49x10,
98x5, 40x40, 64x64, 96x96), and global average pools of large maps after a 1x1 conv, each
in several precision schemes: fp32, int8 QDQ, weight-only int8,
int4 weights, int16 activations, and mixed (some layers quantized, some not, so that Q/DQ
boundaries are measured too). Small networks with the other ops a layer graph may hold
(a standalone BatchNormalization, a squeeze-and-excitation Mul, hard-swish and sigmoid
activations, Concat, Resize, Pad, Softmax) come in fp32 and int8 only: 16 models; so do
networks shaped like NAS-Bench-201 cells (standalone ReLUs, stride-1 average pools that exclude
their padding, unfused adds), DenseNet blocks (BN-ReLU on concatenations, 2x2 average pools)
and MobileNetV3 blocks (hard-swish, 3x3/5x5 depthwise and squeeze-and-excitation on channel
counts that are often not a multiple of 4): 36 models, and 3x3/5x5 depthwise convs on
channel counts that are not: 12, dense convs on input channels past the NCHWc block and not a
multiple of 4 (onnxruntime's im2col + GEMM path, as in a DenseNet stage): 16, and stride-1
average pools and a ReLU + add on their own: 20 (of these, the small suite has two cells).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from targets.onnx_builder import OnnxBuilder

if TYPE_CHECKING:
    import onnx

__all__ = ["SCHEMES", "reference_model", "suite"]

# scheme -> (weight_bits, act_bits) of a quantizable layer; "mixed" alternates.
SCHEMES: dict[str, tuple[int, int]] = {
    "fp32": (32, 32),
    "int8": (8, 8),
    "w8": (8, 32),
    "w4": (4, 32),
    "w4a8": (4, 8),
    "a16": (8, 16),
}

Prec = tuple[int, int]
PrecFn = Callable[[int], Prec]


def _prec_fn(scheme: str, rng: random.Random) -> PrecFn:
    if scheme == "mixed":
        pattern = [rng.choice([(8, 8), (32, 32), (8, 8), (4, 8), (8, 32)]) for _ in range(16)]
        return lambda i: pattern[i % len(pattern)]
    p = SCHEMES[scheme]
    return lambda i: p


def _single(b: OnnxBuilder, kind: str, c: int, cout: int, k: int, s: int, p: PrecFn) -> str:
    x = "input"
    # an int8 layer's graph output is in QDQ form (as quantize_static writes it)
    qout = p(0)[1] if p(0)[1] == 8 and p(0)[0] <= 8 else 32
    if kind == "conv":
        return b.quant_act(b.conv(x, c, cout, k, stride=s, prec=p(0)), qout)
    if kind == "dwconv":
        return b.quant_act(b.conv(x, c, c, k, stride=s, groups=c, prec=p(0)), qout)
    if kind in ("maxpool", "avgpool", "gap"):
        return b.pool(x, kind, act_bits=p(0)[1] if p(0)[1] == 8 else 32)
    if kind == "add":
        y = b.conv(x, c, c, 1, prec=p(0))
        return b.add(y, x, act_bits=p(1)[1] if p(1)[1] == 8 else 32)
    raise ValueError(kind)


def _resnet_chain(
    b: OnnxBuilder, c: int, widths: list[int], p: PrecFn, mids: list[int] | None = None
) -> str:
    """Stem conv, then one residual block per width (stride 1 first, then 2), GAP, linear."""
    mids = mids or widths
    x = b.conv("input", c, widths[0], 3, prec=p(0))
    i = 1
    cin = widths[0]
    for j, (w, mid) in enumerate(zip(widths, mids, strict=True)):
        s = 1 if j == 0 else 2
        y = b.conv(x, cin, mid, 3, stride=s, prec=p(i))
        y = b.conv(y, mid, w, 3, relu=False, prec=p(i + 1))
        sc = (
            x
            if (s == 1 and cin == w)
            else b.conv(x, cin, w, 1, stride=s, relu=False, prec=p(i + 2))
        )
        x = b.add(y, sc, act_bits=8 if p(i + 1)[1] == 8 else 32, relu=True)
        i += 3
        cin = w
    x = b.pool(x, "gap", act_bits=8 if p(i)[1] == 8 else 32)
    return b.linear(x, cin, 10, prec=p(i))


def _dscnn_chain(b: OnnxBuilder, c: int, widths: list[int], p: PrecFn) -> str:
    """Stride-2 stem conv, depthwise-separable blocks (dw 3x3 + pw 1x1), GAP, linear."""
    x = b.conv("input", c, widths[0], 3, stride=2, prec=p(0))
    cin = widths[0]
    for i, w in enumerate(widths[1:]):
        x = b.conv(x, cin, cin, 3, groups=cin, prec=p(2 * i + 1))
        x = b.conv(x, cin, w, 1, prec=p(2 * i + 2))
        cin = w
    n = len(widths) - 1
    x = b.pool(x, "gap", act_bits=8 if p(2 * n + 1)[1] == 8 else 32)
    return b.linear(x, cin, 10, prec=p(2 * n + 1))


def _mbv2_chain(b: OnnxBuilder, c: int, widths: list[int], expand: list[int], p: PrecFn) -> str:
    """Stride-2 stem, inverted residual blocks (1x1 expand, dw 3x3, 1x1 project; residual add
    where the shape allows), GAP, linear, with MobileNetV2's ReLU6. ``widths[0]`` is the stem
    width."""
    x = b.conv("input", c, widths[0], 3, stride=2, relu6=True, prec=p(0))
    cin = widths[0]
    k = 1
    for w, e in zip(widths[1:], expand, strict=True):
        s = 1 if w == cin else 2
        h = cin * e
        y = b.conv(x, cin, h, 1, relu6=True, prec=p(k))
        y = b.conv(y, h, h, 3, stride=s, groups=h, relu6=True, prec=p(k + 1))
        y = b.conv(y, h, w, 1, relu=False, prec=p(k + 2))
        x = b.add(y, x, act_bits=8 if p(k + 2)[1] == 8 else 32) if s == 1 else y
        k += 3
        cin = w
    x = b.pool(x, "gap", act_bits=8 if p(k)[1] == 8 else 32)
    return b.linear(x, cin, 10, prec=p(k))


def _op_net(b: OnnxBuilder, c: int, net: str, p: PrecFn) -> str:
    """A small network around the ops beyond conv/pool/add (every op reads QDQ activations in
    the int8 scheme): ``bn`` (a BatchNormalization after an add, then a Sigmoid), ``se`` (a
    squeeze-and-excitation Mul with a hard sigmoid, then a hard-swish), ``cat`` (Concat,
    nearest Resize, Pad) or ``head`` (Softmax after a classifier)."""
    import numpy as np

    a = 8 if p(0)[1] == 8 else 32
    x = b.conv("input", c, 16, 3, prec=p(0))
    if net == "bn":
        y = b.add(b.conv(x, 16, 16, 3, relu=False, prec=p(1)), x, act_bits=a)
        y = b.node("Sigmoid", [b.bn(y, 16, act_bits=a)], act_bits=a)
        return b.quant_act(b.conv(y, 16, 16, 1, prec=p(2)), a)
    if net == "se":
        h = b.conv(x, 16, 16, 3, groups=16, prec=p(1))
        s = b.conv(b.conv(b.pool(h, "gap", act_bits=a), 16, 8, 1, prec=p(2)), 8, 16, 1,
                   relu=False, prec=p(3))
        y = b.node("Mul", [h, b.node("HardSigmoid", [s], act_bits=a)], act_bits=a)
        y = b.node("HardSwish", [y], act_bits=a)
        return b.quant_act(b.conv(y, 16, 16, 1, relu=False, prec=p(4)), a)
    if net == "cat":
        y = b.conv(x, 16, 16, 3, stride=2, prec=p(1))
        up = b.node("Resize", [y], act_bits=a, mode="nearest",
                    consts=(None, np.array([1, 1, 2, 2], np.float32)))
        y = b.node("Concat", [up, x], act_bits=a, axis=1)
        y = b.node("Pad", [y], act_bits=a, consts=(np.array([0, 0, 1, 1, 0, 0, 1, 1]),))
        return b.quant_act(b.conv(y, 32, 16, 3, prec=p(2)), a)
    y = b.linear(b.pool(x, "gap", act_bits=a), 16, 10, prec=p(1))
    return b.quant_act(b.node("Softmax", [y], act_bits=a, axis=1), a)


def _op_spec(b: OnnxBuilder, p: PrecFn, *, c: int, net: str) -> str:
    return _op_net(b, c, net, p)


def _cell_net(b: OnnxBuilder, cin: int, c: int, p: PrecFn) -> str:
    """A stem conv and two NAS-Bench-201-like cells on ``c`` channels: node 1 = 3x3 average
    pool (stride 1, padding excluded) of the input; node 2 = conv1x1(ReLU(input)) +
    conv3x3(ReLU(node 1)); node 3 = input + pool(node 2) + node 1. Standalone ReLUs (their
    input has other readers), unfused adds and stride-1 pools, in fp32 and int8."""
    a = 8 if p(0)[1] == 8 else 32
    x = b.conv("input", cin, c, 3, relu=False, prec=p(0))
    for i in (1, 3):
        n1 = b.pool(x, "avgpool", k=3, stride=1, pad=1, act_bits=a)
        y0 = b.conv(b.node("Relu", [x], act_bits=a), c, c, 1, relu=False, prec=p(i))
        y1 = b.conv(b.node("Relu", [n1], act_bits=a), c, c, 3, relu=False, prec=p(i + 1))
        n2 = b.add(y0, y1, act_bits=a)
        n3 = b.add(x, b.pool(n2, "avgpool", k=3, stride=1, pad=1, act_bits=a), act_bits=a)
        x = b.add(n3, n1, act_bits=a)
    return x


def _dense_net(b: OnnxBuilder, cin: int, c: int, g: int, p: PrecFn) -> str:
    """A DenseNet-like net: stem conv (``c`` channels), two layers of BN-ReLU-conv1x1-ReLU-
    conv3x3 (``g`` channels) concatenated to their input, a transition (BN-ReLU-conv1x1-2x2
    average pool), BN-ReLU, GAP and a classifier. In int8 the ReLU after a BN is left out: a
    quantizer after it clips (quantize_static's graphs have none)."""
    a = 8 if p(0)[1] == 8 else 32

    def bn_relu(x: str, ch: int) -> str:
        y = b.bn(x, ch, act_bits=a)
        return y if a == 8 else b.node("Relu", [y])

    x = b.conv("input", cin, c, 3, relu=False, prec=p(0))
    for _ in range(2):
        h = b.conv(bn_relu(x, c), c, 2 * g, 1, prec=p(1))
        h = b.conv(h, 2 * g, g, 3, relu=False, prec=p(2))
        x = b.node("Concat", [x, h], act_bits=a, axis=1)
        c += g
    h = b.conv(bn_relu(x, c), c, c // 2, 1, relu=False, prec=p(3))
    h = bn_relu(b.pool(h, "avgpool", act_bits=a), c // 2)
    return b.linear(b.pool(h, "gap", act_bits=a), c // 2, 10, prec=p(4))


def _mbv3_net(b: OnnxBuilder, cin: int, hid: int, k: int, p: PrecFn) -> str:
    """A MobileNetV3-like block on ``hid`` channels (often not a multiple of 4): stride-2 stem
    with hard-swish, 1x1 expand with hard-swish, kxk depthwise with hard-swish,
    squeeze-and-excitation (GAP, 1x1 ReLU, 1x1 hard sigmoid, broadcast Mul), 1x1 project."""
    a = 8 if p(0)[1] == 8 else 32

    def hswish(x: str) -> str:  # fused into the conv before it in the layer graph; in int8
        # the conv's output is quantized before it, as quantize_static writes it
        return b.node("HardSwish", [x], act_bits=a)

    x = hswish(b.conv("input", cin, 16, 3, stride=2, relu=False, prec=p(0)))
    h = hswish(b.conv(x, 16, hid, 1, relu=False, prec=p(1)))
    h = hswish(b.conv(h, hid, hid, k, groups=hid, relu=False, prec=p(2)))
    mid = max(4, hid // 4)
    s = b.conv(b.pool(h, "gap", act_bits=a), hid, mid, 1, prec=p(3))
    s = b.node("HardSigmoid", [b.conv(s, mid, hid, 1, relu=False, prec=p(4))], act_bits=a)
    y = b.node("Mul", [h, s], act_bits=a)
    return b.quant_act(b.conv(y, hid, 24, 1, relu=False, prec=p(5)), a)


def _pool3_spec(b: OnnxBuilder, p: PrecFn, *, c: int) -> str:
    """1x1 conv, 3x3 stride-1 average pool that excludes its padding, 1x1 conv (int8: the pool
    runs channels-last between two QLinearConvs)."""
    a = 8 if p(0)[1] == 8 else 32
    x = b.conv("input", c, c, 1, relu=False, prec=p(0))
    x = b.pool(x, "avgpool", k=3, stride=1, pad=1, act_bits=a)
    return b.quant_act(b.conv(x, c, 16, 1, relu=False, prec=p(1)), a)


def _pool3out_spec(b: OnnxBuilder, p: PrecFn, *, c: int) -> str:
    """1x1 conv, then a 3x3 stride-1 average pool as the (int8: re-quantized) graph output: in
    int8 the pool runs in NCHW, after a transpose back."""
    a = 8 if p(0)[1] == 8 else 32
    x = b.conv("input", c, c, 1, relu=False, prec=p(0))
    return b.quant_act(b.pool(x, "avgpool", k=3, stride=1, pad=1, act_bits=a), a)


def _reluadd_spec(b: OnnxBuilder, p: PrecFn, *, c: int) -> str:
    """A 1x1 conv read by a standalone ReLU and by the add of the two (neither fusable)."""
    a = 8 if p(0)[1] == 8 else 32
    x = b.conv("input", c, c, 1, relu=False, prec=p(0))
    return b.add(b.node("Relu", [x], act_bits=a), x, act_bits=a)


def _convgap_spec(b: OnnxBuilder, p: PrecFn, *, c: int) -> str:
    """A 1x1 conv, then global average pooling of its whole map, quantized before the
    classifier's Flatten (in int8 a channels-last QLinearGlobalAveragePool between the fused
    conv and GEMM; the chains' GAPs are quantized after it and run in float)."""
    a = 8 if p(1)[1] == 8 else 32
    x = b.conv("input", c, c, 1, prec=p(0))
    # quantized before the classifier's Flatten, as quantize_static writes it
    x = b.quant_act(b.pool(x, "gap", act_bits=a), a)
    return b.linear(x, c, 10, prec=p(1))


def _cell_spec(b: OnnxBuilder, p: PrecFn, *, cin: int, c: int) -> str:
    return _cell_net(b, cin, c, p)


def _dense_spec(b: OnnxBuilder, p: PrecFn, *, cin: int, c: int, g: int) -> str:
    return _dense_net(b, cin, c, g, p)


def _mbv3_spec(b: OnnxBuilder, p: PrecFn, *, cin: int, hid: int, k: int) -> str:
    return _mbv3_net(b, cin, hid, k, p)


def _single_spec(b: OnnxBuilder, p: PrecFn, *, kind: str, c: int, cout: int, k: int, s: int) -> str:
    return _single(b, kind, c, cout, k, s, p)


def _resnet_spec(b: OnnxBuilder, p: PrecFn, *, cin: int, ws: list[int], mids: list[int]) -> str:
    return _resnet_chain(b, cin, ws, p, mids)


def _dscnn_spec(b: OnnxBuilder, p: PrecFn, *, cin: int, ws: list[int]) -> str:
    return _dscnn_chain(b, cin, ws, p)


def _mbv2_spec(b: OnnxBuilder, p: PrecFn, *, cin: int, ws: list[int], ex: list[int]) -> str:
    return _mbv2_chain(b, cin, ws, ex, p)


def suite(*, seed: int = 0, size: str = "full") -> list[tuple[str, onnx.ModelProto]]:
    """The micro-benchmark suite as ``(name, model)`` pairs; ``size="small"`` for tests."""
    rng = random.Random(seed)
    specs: list[tuple[str, tuple[int, int, int], Callable[[OnnxBuilder, PrecFn], str]]] = []

    def add_spec(
        name: str, shape: tuple[int, int, int], fn: Callable[[OnnxBuilder, PrecFn], str]
    ) -> None:
        specs.append((f"{name}_{len(specs)}", shape, fn))

    def pruned(base: int) -> int:
        return max(2, int(base * rng.choice((0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0))))

    hw_choices = (7, 14, 28, 32)
    # Single layers, conv and depthwise most: their cost depends on whether the channel counts
    # fit onnxruntime's vector widths (multiples of 4, 8 and 16 pick different kernels), so the
    # widths mix aligned and odd counts.
    n_single = 4 if size == "small" else 36
    kinds = ["conv", "conv", "dwconv", "add", "maxpool", "avgpool", "gap"]
    for i in range(n_single):
        kind = kinds[i % 7] if i < 14 else rng.choice(["conv", "conv", "conv", "dwconv", "dwconv"])
        hw = rng.choice(hw_choices)
        if kind == "dwconv":
            c = rng.choice((6, 8, 12, 16, 20, 24, 32, 40, 48, 64, 72, 96, 144))
        else:
            c = rng.choice((1, 3, 6, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64))
        cout = rng.choice((6, 8, 10, 12, 16, 20, 24, 28, 32, 40, 48, 64))
        k = rng.choice((1, 1, 3, 3, 5, 7)) if kind == "conv" else 3
        s = rng.choice((1, 1, 2)) if kind in ("conv", "dwconv") else 1
        add_spec(
            f"{kind}{k}s{s}_c{c}x{cout}_hw{hw}",
            (c, hw, hw),
            partial(_single_spec, kind=kind, c=c, cout=cout, k=k, s=s),
        )
    n_chain = 2 if size == "small" else 16
    for _ in range(n_chain):
        hw = rng.choice((28, 28, 32, 14))
        cin = 1 if hw != 32 else 3
        ws = [pruned(16), pruned(32), pruned(64)]  # stem (= first block) and two stages
        mids = [pruned(16), pruned(32), pruned(64)]
        add_spec(f"resnet_hw{hw}", (cin, hw, hw), partial(_resnet_spec, cin=cin, ws=ws, mids=mids))
        dw = [pruned(64) for _ in range(5)]
        add_spec(f"dscnn_hw{hw}", (cin, hw, hw), partial(_dscnn_spec, cin=cin, ws=dw))
        c0 = pruned(16)
        c1 = pruned(24)
        mw = [c0, c0, c1, c1, pruned(32)]
        ex = [rng.choice((2, 4, 6)) for _ in range(4)]
        add_spec(f"mbv2_hw{hw}", (cin, hw, hw), partial(_mbv2_spec, cin=cin, ws=mw, ex=ex))

    # Larger and non-square inputs (a keyword-spotting spectrogram, 64x64 and 96x96 images):
    # per-row and edge-column costs (see cost_models.kernels) and tensors past the L1 cache
    big = ((49, 10), (10, 49), (98, 5), (40, 40), (64, 64), (96, 96))
    for j in range(0 if size == "small" else 2 * len(big)):
        h, w = big[j % len(big)]
        if j < len(big):
            kind, k = rng.choice((("conv", 3), ("conv", 3), ("conv", 5), ("dwconv", 3)))
            c, cout = rng.choice((1, 3, 8, 12, 16, 24, 32, 48)), rng.choice((8, 16, 24, 32, 48))
            if kind == "dwconv":
                c = cout
            add_spec(f"{kind}{k}s1_c{c}x{cout}_{h}x{w}", (c, h, w),
                     partial(_single_spec, kind=kind, c=c, cout=cout, k=k, s=1))
            continue
        cin = rng.choice((1, 3))
        fam = ("resnet", "dscnn", "mbv2")[j % 3]
        chain: Callable[[OnnxBuilder, PrecFn], str]
        if fam == "resnet":
            ws = [pruned(16), pruned(32), pruned(64)]
            mids = [pruned(16), pruned(32), pruned(64)]
            chain = partial(_resnet_spec, cin=cin, ws=ws, mids=mids)
        elif fam == "dscnn":
            chain = partial(_dscnn_spec, cin=cin, ws=[pruned(64) for _ in range(5)])
        else:
            c0, c1 = pruned(16), pruned(24)
            chain = partial(_mbv2_spec, cin=cin, ws=[c0, c0, c1, c1, pruned(32)],
                            ex=[rng.choice((2, 4, 6)) for _ in range(4)])
        add_spec(f"{fam}_{h}x{w}", (cin, h, w), chain)

    # global average pooling of large maps inside a network (the chains pool 4x4..8x8 maps)
    for c, h, w in [] if size == "small" else [(56, 48, 48), (32, 96, 96), (24, 49, 10),
                                                 (64, 32, 32)]:
        add_spec(f"convgap_c{c}_{h}x{w}", (c, h, w), partial(_convgap_spec, c=c))

    n_main = len(specs)
    # Networks with the other ops (standalone BN, SE Mul, Concat, activations, Resize, Pad,
    # Softmax), in fp32 and int8 only: 2 sizes x 4 nets x 2 schemes = 16 models (8 if small).
    for hw in (14,) if size == "small" else (14, 28):
        for net in ("bn", "se", "cat", "head"):
            add_spec(f"ops{net}_hw{hw}", (8, hw, hw), partial(_op_spec, c=8, net=net))
    # Networks shaped like NAS-Bench-201 cells, DenseNet and MobileNetV3 blocks (standalone
    # ReLUs and BNs, stride-1 average pools, unfused adds, odd channel counts), fp32 and int8.
    cells = [(16, 28), (24, 14)] if size == "small" else [
        (16, 28), (32, 14), (64, 7), (24, 14), (12, 28), (40, 7)]
    for c, hw in cells:
        add_spec(f"cell_c{c}_hw{hw}", (3, hw, hw), partial(_cell_spec, cin=3, c=c))
    dense = [] if size == "small" else [
        (12, 8, 28), (24, 12, 28), (16, 16, 14), (18, 12, 32)]
    for c, g, hw in dense:
        add_spec(f"dense_c{c}g{g}_hw{hw}", (3, hw, hw), partial(_dense_spec, cin=3, c=c, g=g))
    mbv3 = [] if size == "small" else [
        (27, 5, 14), (90, 5, 14), (36, 3, 28), (54, 5, 28), (42, 3, 14), (120, 5, 14),
        (84, 3, 28), (66, 5, 32)]
    for hid, k, hw in mbv3:
        add_spec(f"mbv3_h{hid}k{k}_hw{hw}", (3, hw, hw), partial(_mbv3_spec, cin=3, hid=hid, k=k))
    # depthwise convs on channel counts that are not a multiple of 4 (fp32: one im2col + GEMM
    # per channel), 3x3 and 5x5
    dws = [] if size == "small" else [(27, 5, 7), (54, 3, 14), (90, 5, 7), (150, 3, 7),
                                      (30, 3, 28), (66, 5, 14)]
    for c, k, hw in dws:
        add_spec(f"dwconv{k}s1_c{c}x{c}_hw{hw}", (c, hw, hw),
                 partial(_single_spec, kind="dwconv", c=c, cout=c, k=k, s=1))
    # dense k x k convs whose input channels are past the NCHWc block (8 or 16) and not a
    # multiple of 4 (fp32: im2col + GEMM, class conv:f32p), as in a DenseNet stage
    dense_convs = [] if size == "small" else [
        (26, 12, 3, 14), (38, 12, 3, 14), (50, 12, 3, 7), (18, 16, 3, 28), (31, 24, 3, 7),
        (62, 32, 5, 7), (22, 8, 3, 28), (45, 20, 1, 14)]
    for c, cout, k, hw in dense_convs:
        add_spec(f"conv{k}s1_c{c}x{cout}_hw{hw}", (c, hw, hw),
                 partial(_single_spec, kind="conv", c=c, cout=cout, k=k, s=1))
    # the cells' ops alone: a stride-1 average pool, a standalone ReLU and an unfused add, on
    # NCHWc-sized (16, 32) and other channel counts
    for c, hw in [] if size == "small" else [(16, 28), (24, 14), (32, 14), (12, 28)]:
        add_spec(f"pool3conv_c{c}_hw{hw}", (c, hw, hw), partial(_pool3_spec, c=c))
        add_spec(f"reluadd_c{c}_hw{hw}", (c, hw, hw), partial(_reluadd_spec, c=c))
    for c, hw in [] if size == "small" else [(16, 14), (24, 28)]:
        add_spec(f"pool3out_c{c}_hw{hw}", (c, hw, hw), partial(_pool3out_spec, c=c))

    # 1x1 convs on a plain NCHW input (fewer channels than the NCHWc block, 8 or 16): MLAS's
    # direct NCHW-input kernel, not the pointwise one (pwconv:f32n), as in a pruned bottleneck
    plain_pw = [] if size == "small" else [
        (2, 32, 28), (4, 48, 14), (4, 16, 28), (6, 64, 7), (6, 24, 14), (8, 64, 28),
        (12, 96, 14), (12, 32, 7)]
    for c, cout, hw in plain_pw:
        add_spec(f"conv1s1_c{c}x{cout}_hw{hw}", (c, hw, hw),
                 partial(_single_spec, kind="conv", c=c, cout=cout, k=1, s=1))

    schemes = ["fp32", "int8", "w8", "w4", "a16", "mixed", "w4a8"]
    out: list[tuple[str, onnx.ModelProto]] = []
    for i, (name, shape, fn) in enumerate(specs):
        for scheme in schemes:
            if size == "small" and scheme not in ("fp32", "int8", "mixed"):
                continue
            if i >= n_main and scheme not in ("fp32", "int8"):
                continue
            b = OnnxBuilder(shape, seed=seed * 1000 + i)
            y = fn(b, _prec_fn(scheme, random.Random(seed + i)))
            out.append((f"{name}_{scheme}", b.build(y, f"{name}_{scheme}")))
    return out


def reference_model() -> onnx.ModelProto:
    """The fixed reference the agent measures between models: an fp32 ResNet-8 at 28x28x1
    (16/32/64 channels). Its latency at calibration time lets later measurements be given at
    the calibration's machine speed."""
    b = OnnxBuilder((1, 28, 28), seed=12345)
    y = _resnet_chain(b, 1, [16, 32, 64], lambda i: (32, 32))
    return b.build(y, "reference_resnet8")
