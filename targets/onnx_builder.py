"""An ONNX graph builder: small NCHW float models written with ``onnx.helper`` (no torch).

:class:`OnnxBuilder` adds layers one by one in the QDQ convention of :mod:`cost_models.graph`
(quantized weights as INT8/INT4 initializers + ``DequantizeLinear``, or ``Cast`` and ``Mul`` in a
layer with float activations; quantized activations as
``QuantizeLinear`` -> ``DequantizeLinear``), so ``cost_models.from_onnx`` gives back the layer
graph and bit-widths it was built with. The micro-benchmark suite (:mod:`targets.suite`) and
tests build their models with it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import onnx

__all__ = ["OPSET", "OnnxBuilder"]

OPSET = 21


@dataclass
class OnnxBuilder:
    """Builds one NCHW float model layer by layer, in the QDQ convention.

    ``prec`` arguments are ``(weight_bits, act_bits)``; 32 means float.
    """

    input_shape: tuple[int, int, int]
    seed: int = 0
    nodes: list[Any] = field(default_factory=list)
    inits: list[Any] = field(default_factory=list)
    _n: int = 0
    _qcache: dict[tuple[str, int], str] = field(default_factory=dict)
    _clipped: set[str] = field(default_factory=set)  # ReLU6 outputs
    _relu_out: set[str] = field(default_factory=set)  # outputs of standalone Relu nodes

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def _name(self, base: str) -> str:
        self._n += 1
        return f"{base}_{self._n}"

    def _init(self, name: str, array: Any) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(array, name))
        return name

    def quant_act(self, x: str, bits: int) -> str:
        """Q -> DQ of an activation, per tensor (UINT8 for 8 bits, INT16 for 16)."""
        import numpy as np

        if bits == 32:
            return x
        key = (x, bits)
        if key in self._qcache:
            return self._qcache[key]
        n = self._name("act")
        # a calibrated quantizer of a ReLU6 output spans [0, 6], so onnxruntime drops the Clip;
        # a standalone ReLU's output gets a scale of its own (half its input's range), as a
        # calibrating quantizer gives it
        s = 6 / 256 if x in self._clipped else 0.025 if x in self._relu_out else 0.05
        scale = self._init(n + "_scale", np.array(s, dtype=np.float32))
        zp_arr = np.array(0, dtype=np.uint8) if bits == 8 else np.array(0, dtype=np.int16)
        zp = self._init(n + "_zp", zp_arr)
        from onnx import helper

        self.nodes.append(helper.make_node("QuantizeLinear", [x, scale, zp], [n + "_q"]))
        self.nodes.append(helper.make_node("DequantizeLinear", [n + "_q", scale, zp], [n + "_dq"]))
        self._qcache[key] = n + "_dq"
        return n + "_dq"

    def weight(self, shape: tuple[int, ...], prec: tuple[int, int]) -> str:
        """A float weight, or an INT8/INT4 per-channel symmetric weight made float as the export
        does it: ``DequantizeLinear`` for a layer with quantized activations, else ``Cast`` and
        ``Mul``, which onnxruntime folds when the session loads."""
        import numpy as np
        from onnx import TensorProto, helper

        n = self._name("w")
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        w = np.random.default_rng(self.rng.randrange(1 << 30)).standard_normal(shape)
        w = (w / np.sqrt(fan_in)).astype(np.float32)
        bits = prec[0]
        if bits == 32:
            return self._init(n, w)
        qmax = 127 if bits > 4 else 7
        scale = (np.abs(w).reshape(shape[0], -1).max(axis=1) / qmax).astype(np.float32)
        q = np.clip(np.round(w / scale.reshape((-1,) + (1,) * (len(shape) - 1))), -qmax, qmax)
        int_type = TensorProto.INT8 if bits > 4 else TensorProto.INT4
        self.inits.append(
            helper.make_tensor(n + "_q", int_type, shape, q.astype(np.int64).flatten().tolist())
        )
        if prec[1] == 32:
            self._init(n + "_s", scale.reshape((-1,) + (1,) * (len(shape) - 1)))
            self.nodes.append(helper.make_node("Cast", [n + "_q"], [n + "_f"],
                                               to=TensorProto.FLOAT))
            self.nodes.append(helper.make_node("Mul", [n + "_f", n + "_s"], [n]))
            return n
        self._init(n + "_s", scale)
        self.inits.append(helper.make_tensor(n + "_zp", int_type, [shape[0]], [0] * shape[0]))
        self.nodes.append(
            helper.make_node("DequantizeLinear", [n + "_q", n + "_s", n + "_zp"], [n], axis=0)
        )
        return n

    def conv(
        self,
        x: str,
        cin: int,
        cout: int,
        k: int,
        *,
        stride: int = 1,
        groups: int = 1,
        relu: bool = True,
        relu6: bool = False,
        prec: tuple[int, int] = (32, 32),
    ) -> str:
        import numpy as np
        from onnx import helper

        w = self.weight((cout, cin // groups, k, k), prec)
        b = self._init(self._name("b"), np.zeros(cout, dtype=np.float32))
        y = self._name("conv")
        pad = (k - 1) // 2
        self.nodes.append(
            helper.make_node(
                "Conv",
                [self.quant_act(x, prec[1]), w, b],
                [y],
                kernel_shape=[k, k],
                strides=[stride, stride],
                pads=[pad] * 4,
                group=groups,
            )
        )
        return self.relu(y, six=relu6) if relu else y

    def relu(self, x: str, *, six: bool = False) -> str:
        """ReLU, or ReLU6 (``Clip(0, 6)``) with ``six``."""
        import numpy as np
        from onnx import helper

        y = self._name("relu")
        if six:
            lo = self._init(y + "_min", np.array(0.0, dtype=np.float32))
            hi = self._init(y + "_max", np.array(6.0, dtype=np.float32))
            self.nodes.append(helper.make_node("Clip", [x, lo, hi], [y]))
            self._clipped.add(y)
        else:
            self.nodes.append(helper.make_node("Relu", [x], [y]))
        return y

    def add(self, a: str, b: str, *, act_bits: int = 32, relu: bool = False) -> str:
        from onnx import helper

        y = self._name("add")
        self.nodes.append(
            helper.make_node("Add", [self.quant_act(a, act_bits), self.quant_act(b, act_bits)], [y])
        )
        if relu:
            y = self.relu(y)
        return self.quant_act(y, act_bits) if act_bits == 8 else y

    def pool(self, x: str, kind: str, *, k: int = 2, stride: int = 2, pad: int = 0,
             act_bits: int = 32) -> str:
        """GlobalAveragePool (``gap``), MaxPool or AveragePool (padded by ``pad``; an average
        excludes the padding, as ``count_include_pad=False`` pools do)."""
        from onnx import helper

        y = self._name(kind)
        x = self.quant_act(x, act_bits)
        if kind == "gap":
            self.nodes.append(helper.make_node("GlobalAveragePool", [x], [y]))
        else:
            op = "MaxPool" if kind == "maxpool" else "AveragePool"
            attrs: dict[str, Any] = {"pads": [pad] * 4} if pad else {}
            self.nodes.append(
                helper.make_node(op, [x], [y], kernel_shape=[k, k], strides=[stride, stride],
                                 **attrs)
            )
        return y

    def node(self, op: str, xs: list[str], *, act_bits: int = 32, consts: tuple[Any, ...] = (),
             **attrs: Any) -> str:
        """One op without weights on activations ``xs`` (each through Q -> DQ at ``act_bits``
        8/16), then constant inputs ``consts`` (numpy arrays; None for an empty input):
        ``Mul``, ``Concat``, ``Sigmoid``, ``HardSwish``, ``Resize``, ``Pad``, ``Softmax``..."""
        from onnx import helper

        y = self._name(op.lower())
        ins = [self.quant_act(x, act_bits) for x in xs]
        ins += ["" if c is None else self._init(self._name(y + "_c"), c) for c in consts]
        self.nodes.append(helper.make_node(op, ins, [y], **attrs))
        if op == "Relu":
            self._relu_out.add(y)
        return y

    def bn(self, x: str, c: int, *, act_bits: int = 32) -> str:
        """A standalone BatchNormalization over ``c`` channels (not folded into a conv)."""
        import numpy as np

        r = np.random.default_rng(self.rng.randrange(1 << 30))
        scale, bias = (1 + 0.1 * r.standard_normal(c)).astype(np.float32), np.zeros(c, np.float32)
        mean, var = (0.1 * r.standard_normal(c)).astype(np.float32), np.ones(c, np.float32)
        return self.node("BatchNormalization", [x], act_bits=act_bits,
                         consts=(scale, bias, mean, var))

    def linear(self, x: str, fin: int, fout: int, *, prec: tuple[int, int] = (32, 32)) -> str:
        import numpy as np
        from onnx import helper

        flat = self._name("flat")
        self.nodes.append(helper.make_node("Flatten", [x], [flat], axis=1))
        w = self.weight((fout, fin), prec)
        b = self._init(self._name("b"), np.zeros(fout, dtype=np.float32))
        y = self._name("gemm")
        self.nodes.append(
            helper.make_node("Gemm", [self.quant_act(flat, prec[1]), w, b], [y], transB=1)
        )
        # an int8 classifier has its output in QDQ form too (as quantize_static writes it)
        return self.quant_act(y, 8) if prec[1] == 8 and 5 <= prec[0] <= 8 else y

    def build(self, out: str, name: str) -> onnx.ModelProto:
        from onnx import TensorProto, helper

        c, h, w = self.input_shape
        graph = helper.make_graph(
            self.nodes,
            name,
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, c, h, w])],
            [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
            initializer=self.inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        model.ir_version = 10
        return model
