"""Which layout and which MLAS kernel a float or fused int8 conv runs on, and the MACs it
does there (channels padded as MLAS packs them): helpers of :mod:`cost_models.kernels`, whose
docstring states the rules (read off onnxruntime's optimized graphs)."""

from __future__ import annotations

from cost_models.graph import Layer

__all__ = [
    "NCHWC_ACTS",
    "gemm_padded_macs",
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
