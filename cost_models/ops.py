"""Conventions shared by :func:`cost_models.from_torch` and :func:`cost_models.from_onnx`, so
that both give the same layers for the same network (see :mod:`cost_models.graph`)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "NEVER_FUSED_ACTS",
    "act_kind",
    "act_name",
    "as_4d",
    "broadcast",
    "pad_mode",
    "prod",
    "resize_factor",
    "spatial_axes",
]

# SiLU (x·sigmoid(x)) is never fused into its producer: torch exports it as Sigmoid + Mul, so the
# producer has two readers, and onnxruntime runs it as a kernel of its own (QuickGelu in fp32,
# QLinearSigmoid + QLinearMul in int8).
NEVER_FUSED_ACTS = ("silu",)

# MACs per output element of a resize, by interpolation mode (the input points it reads)
_RESIZE_MACS = {"nearest": 1, "linear": 4, "bilinear": 4, "cubic": 16, "bicubic": 16}


def act_name(op: str) -> str:
    """The name of an activation, as the ONNX op it exports to, lower case: ``relu``, ``clip``
    (ReLU6, clamp, hardtanh), ``sigmoid``, ``hardsigmoid``, ``hardswish``, ``silu``, ``tanh``,
    ``leakyrelu``, ``gelu``, ``elu``..."""
    a = op.lower().replace("_", "")
    if a in ("relu6", "clamp", "hardtanh", "clip"):
        return "clip"
    return "silu" if a == "swish" else a


def act_kind(act: str) -> str:
    """The kind of a standalone activation layer: ``relu`` for ReLU, ``act`` for the others."""
    return "relu" if act == "relu" else "act"


def prod(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def as_4d(shape: Sequence[int]) -> tuple[int, ...]:
    """A 1-D spatial shape ``(N, C, L)`` as ``(N, C, 1, L)``; other shapes unchanged."""
    s = tuple(int(d) for d in shape)
    return (s[0], s[1], 1, s[2]) if len(s) == 3 else s


def spatial_axes(axes: Sequence[int], rank: int) -> bool:
    """Whether ``axes`` are exactly the spatial axes (2.. of an NC... tensor of ``rank``)."""
    return rank >= 3 and sorted(int(a) % rank for a in axes) == list(range(2, rank))


def broadcast(a: Sequence[int], b: Sequence[int]) -> tuple[int, ...]:
    """The numpy broadcast of two shapes."""
    n = max(len(a), len(b))
    pa = (1,) * (n - len(a)) + tuple(a)
    pb = (1,) * (n - len(b)) + tuple(b)
    return tuple(max(x, y) for x, y in zip(pa, pb, strict=True))


def resize_factor(mode: str) -> int:
    """MACs per output element of a resize: 1 for nearest, 4 for (bi)linear, 16 for cubic."""
    return _RESIZE_MACS.get(mode.lower(), 1)


def pad_mode(mode: str) -> str:
    """A pad's ``act`` field: "" for a constant pad, else the ONNX mode (``reflect``, ``edge``
    for torch's replicate, ``wrap`` for circular)."""
    m = mode.lower()
    if m.startswith("reflect"):
        return "reflect"
    if m.startswith("replicat") or m == "edge":
        return "edge"
    if m in ("circular", "wrap"):
        return "wrap"
    return ""
