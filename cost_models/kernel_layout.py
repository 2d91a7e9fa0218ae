"""Which layout and which MLAS kernel a float or fused int8 conv runs on, and the MACs it
does there (channels padded as MLAS packs them): helpers of :mod:`cost_models.kernels`, whose
docstring states the rules (read off onnxruntime's optimized graphs)."""

from __future__ import annotations

from cost_models.graph import Layer

__all__ = [
    "FILTER_SET_BLOCKS",
    "NCHWC_ACTS",
    "edge_columns",
    "gemm_padded_macs",
    "im2col",
    "nchwc_calls",
    "nchwc_conv",
    "nchwc_layer",
    "padded_macs",
    "round_up",
    "sym_conv",
    "sym_padded_macs",
]

# fp32 activations that run elementwise on an NCHWc tensor (no reorder; LeakyRelu needs one)
NCHWC_ACTS = ("sigmoid", "tanh", "hardsigmoid", "hardswish", "silu")


def nchwc_layer(
    layer: Layer, nchwc: dict[str, bool], shapes: dict[str, tuple[int, ...]], block: int
) -> bool:
    """Whether a float layer other than a conv or pool runs in (and writes) NCHWc."""
    srcs = layer.inputs or ("",)
    all_in = all(nchwc.get(s, False) for s in srcs)
    if layer.kind in ("add", "mul"):  # elementwise on blocked tensors: no broadcast
        return all_in and len(srcs) == 2 and shapes[srcs[0]] == shapes[srcs[1]]
    if layer.kind == "relu" or (layer.kind == "act" and layer.act in NCHWC_ACTS):
        return all_in
    if layer.kind == "bn":  # an NCHWc depthwise 1x1 conv, channels padded to the block
        return all_in
    if layer.kind == "concat":  # along channels, each part a whole number of blocks
        chans = [shapes[s][1] if len(shapes[s]) > 1 else 0 for s in srcs]
        return all_in and all(c % block == 0 for c in chans) and sum(chans) == layer.out_shape[1]
    return False


def round_up(n: int, multiple: int) -> int:
    """``n`` rounded up to a multiple of ``multiple`` (how MLAS pads channel counts)."""
    return -(-n // multiple) * multiple


def nchwc_conv(layer: Layer, block: int) -> bool:
    cin, cout = layer.in_shape[1], layer.out_shape[1]
    if layer.kind == "dwconv" or layer.groups > 1:
        return layer.groups == cin == cout and cin % 4 == 0
    return cin < block or cin % 4 == 0


def edge_columns(layer: Layer) -> int:
    """Output columns (of ``out_shape[-1]``) whose window reaches into the left or right
    padding, with the padding split as evenly as the shapes allow (the left side gets the
    smaller half; a k x kw kernel is taken to be max(k, kw) wide). MLAS's NCHWc conv kernels
    compute those one output at a time, the others several per step, so a conv on a narrow
    map (a 49x10 spectrogram) pays more per MAC."""
    if len(layer.out_shape) < 4 or layer.kernel <= 1:
        return 0
    w_in, w_out, k, s = layer.in_shape[-1], layer.out_shape[-1], layer.kernel, layer.stride
    total = max(0, (w_out - 1) * s + k - w_in)
    left = total // 2
    inner_start = -(-left // s)  # first output whose window starts at or after column 0
    inner_end = (w_in + left - k) // s + 1  # first output whose window ends past the input
    inner = max(0, min(w_out, inner_end) - min(w_out, inner_start))
    return w_out - inner


FILTER_SET_BLOCKS = 4  # output-channel blocks one MLAS NCHWc conv kernel call computes


def nchwc_calls(layer: Layer, block: int) -> tuple[int, int]:
    """(kernel calls, edge taps) of an NCHWc float conv. MLAS calls its kernel once per output
    row, per filter set (up to :data:`FILTER_SET_BLOCKS` blocks of output channels) and per
    input channel block (per input channel when the input is plain NCHW: fewer than ``block``
    channels; a depthwise conv: per channel block). Within a call the output columns that read
    padding (:func:`edge_columns`) are computed one at a time: ``edge taps`` = those columns x
    input channels x kernel area, per filter set (their cost does not grow with the output
    channels of a set). Timed on one 3x3/5x5 conv at widths 6..48 and 49 or 98 rows: the time
    not proportional to the width grows with the rows, the input channels and the kernel size,
    not with 16 -> 64 output channels."""
    if len(layer.out_shape) < 4:
        return 0, 0
    cin, cout, rows = layer.in_shape[1], layer.out_shape[1], layer.out_shape[2]
    area = layer.macs // max(1, layer.out_elems * (cin // layer.groups))  # k x kw
    if layer.groups > 1:
        blocks = -(-cout // block)
        return rows * blocks, rows * edge_columns(layer) * area * blocks
    sets = -(-cout // (block * FILTER_SET_BLOCKS))
    units = cin if cin < block else -(-cin // block)
    return rows * sets * units, rows * edge_columns(layer) * cin * area * sets


def padded_macs(layer: Layer, block: int) -> int:
    """MACs of an NCHWc conv: channels padded to the NCHWc block (input channels only when
    the input is itself in NCHWc, i.e. has >= ``block`` channels)."""
    cin, cout = layer.in_shape[1], layer.out_shape[1]
    if layer.groups > 1:
        return layer.macs * round_up(cout, block) // cout
    cin_pad = cin if cin < block else round_up(cin, block)
    return layer.macs * round_up(cout, block) * cin_pad // (cout * cin)


def gemm_padded_macs(layer: Layer) -> int:
    """MACs of an im2col + GEMM conv (fp32 or u8s8) with the GEMM's N (output channels)
    padded to 16 and K (input channels x kernel area) to 4, as the MLAS kernels pack them."""
    cin, cout = layer.in_shape[1], layer.out_shape[1]
    pixels = layer.out_elems // cout
    if layer.groups > 1:
        return layer.macs * round_up(cout, 16) // cout
    k_dim = layer.macs // (pixels * cout)  # cin x kernel area
    return pixels * round_up(cout, 16) * round_up(k_dim, 4) if cin else layer.macs


def im2col(layer: Layer) -> tuple[str, int] | None:
    """The im2col kernel of a conv that runs outside NCHWc (float ``f32p`` or ``rt``), as its
    class and ``elems``; None for other layers and a dense 1x1 stride-1 conv (its GEMM reads
    the input as it is).

    * A grouped conv runs one group at a time, an im2col and a one-row GEMM each:
      ``im2col:f32``, priced by the rows it copies (groups x kernel area x output rows).
    * A dense one copies its input into a (input channels x kernel area) x (output positions)
      matrix that MLAS's GEMM packs again: ``im2col:dense``, priced by its elements. With few
      output channels this costs more than the MACs: timed on 3x3 convs reading 24 channels
      at 6x6..16x16 maps, 8 output channels took 71-82% of the time of 32.
    """
    if layer.kind not in ("conv", "dwconv"):
        return None
    cin, cout = layer.in_shape[1], layer.out_shape[1]
    area = layer.macs // (layer.out_elems * (cin // layer.groups))
    if layer.groups > 1:
        return "im2col:f32", layer.groups * area * (
            layer.out_shape[2] if len(layer.out_shape) > 2 else 1)
    if area == 1 and layer.stride == 1:
        return None
    return "im2col:dense", layer.macs // cout


def sym_conv(layer: Layer) -> bool:
    """onnxruntime runs a fused u8s8 conv with symmetric (zero-point 0) weights on MLAS's
    indirect "symmetric" kernels when the shapes allow (x86 AVX2/VNNI: a dense conv with input
    channels a multiple of 4 and output channels a multiple of 8 and at least 16; a depthwise
    conv with channels a multiple of 16); otherwise on im2col + u8s8 GEMM (dense) or the generic
    depthwise kernel. The symmetric kernels are the faster ones."""
    cin, cout = layer.in_shape[1], layer.out_shape[1]
    if layer.kind == "dwconv" or layer.groups > 1:
        return layer.groups == cin == cout and cin % 16 == 0
    return cin % 4 == 0 and cout % 8 == 0 and cout >= 16


def sym_padded_macs(layer: Layer) -> int:
    """MACs of the symmetric dense kernel: output channels packed in blocks of 16."""
    if layer.groups > 1:
        return layer.macs
    cout = layer.out_shape[1]
    return layer.macs * round_up(cout, 16) // cout
