"""Export a student (pruned, BN-folded, fake-quantized) to ONNX in QDQ form.

:func:`to_onnx` exports the float skeleton (every quantization wrapper replaced by its float
layer) with torch's legacy exporter, then edits the graph with ``onnx.helper`` to write the QDQ
convention of :mod:`cost_models.graph`:

* conv/linear with ``weight_bits`` 5..8: INT8 weight initializer, per output channel, zero
  point 0, then ``DequantizeLinear(axis=0)``; 2..4 bits the same with INT4; 32 stays float.
  A layer with float activations (weight-only quantization) writes ``Cast`` to float and a
  ``Mul`` by the per-channel scale instead: onnxruntime never folds a ``DequantizeLinear``
  (it keeps them for its QDQ fusions), so such weights would be dequantized at every run and
  the conv could not use its pre-packed fp32 kernel, about 2x slower on x86; a ``Cast`` and
  ``Mul`` of constants are folded into a float weight when the session loads. The file keeps
  the narrow integers either way;
* ``act_bits`` 8 / 16: the layer's input goes through ``QuantizeLinear`` -> ``DequantizeLinear``
  with the wrapper's per-tensor scale and a UINT8 / INT16 zero point; 32 stays float. Layers
  that read one tensor with equal quantizers (a block's input, read by its first conv and its
  shortcut) share one pair, as ``quantize_static`` writes it: onnxruntime would run each pair,
  and the layout transpose after it, once per reader;
* an ``Add``, ``Mul`` or ``Cat`` with ``act_bits`` 8 / 16 has every input and its output in that
  QDQ form.

The integers and scales are the wrapper's own (:meth:`QuantLayer.int_weight`, the ``scale`` and
``zero_point`` buffers of :class:`ActQuant`), so onnxruntime computes what the torch student
computes. The model uses opset 21 (the first with INT4 and INT16 Q/DQ).

Nodes are matched to modules by the legacy exporter's scope names: a module ``a.b.0`` becomes
nodes named ``/a/b/b.0/<Op>`` (each level is its name from its last non-numeric part on).
"""

from __future__ import annotations

import copy
import io
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from search.errors import ExportError

if TYPE_CHECKING:
    import numpy as np
    import onnx
    from torch import Tensor, nn

OPSET = 21
LEGACY_OPSET = 20  # the newest the legacy exporter writes; the ops used are unchanged in 21
_OPS = {"conv": ("Conv",), "linear": ("Gemm",), "add": ("Add",), "mul": ("Mul",),
        "concat": ("Concat",)}


def scope_path(name: str) -> str:
    """The legacy exporter's scope path of a module's qualified name (``a.b.0`` -> ``/a/b/b.0``)."""
    atoms = name.split(".")
    parts = []
    for end in range(1, len(atoms) + 1):
        prefix = atoms[:end]
        start = max((i for i, a in enumerate(prefix) if not a.isnumeric()), default=0)
        parts.append(".".join(prefix[start:]))
    return "/" + "/".join(parts)


def _float_skeleton(student: nn.Module) -> nn.Module:
    from spaces.quantization import _set_submodule, wrappers

    skeleton = copy.deepcopy(student).eval()
    for name, wrapper in wrappers(skeleton).items():
        _set_submodule(skeleton, name, wrapper.layer)
    return skeleton


def _export_float(skeleton: nn.Module, input_shape: Sequence[int]) -> onnx.ModelProto:
    import onnx
    import torch

    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=DeprecationWarning)
            torch.onnx.export(
                skeleton,
                (torch.zeros(1, *input_shape),),
                cast(Any, buffer),
                dynamo=False,
                opset_version=LEGACY_OPSET,
                input_names=["input"],
                output_names=["output"],
                dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
            )
    except Exception as exc:
        raise ExportError(
            f"torch.onnx.export failed on {type(skeleton).__name__}: {exc}; the model must be "
            "traceable with example input shape " + str(tuple(input_shape))
        ) from exc
    model = onnx.load_from_string(buffer.getvalue())
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            entry.version = OPSET
    return model


class _Editor:
    """Collects the nodes and initializers to insert before / after each original node."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.before: dict[int, list[Any]] = {}
        self.after: dict[int, list[Any]] = {}
        self.names = {node.name: i for i, node in enumerate(model.graph.node)}
        # (tensor, bits, scale, zero point) -> its dequantized name: readers share one Q -> DQ
        self.shared: dict[tuple[str, int, float, int], str] = {}

    def find(self, name: str, kind: str) -> int:
        scope = scope_path(name)
        hits = [
            i
            for i, node in enumerate(self.model.graph.node)
            if node.name.rpartition("/")[0] == scope and node.op_type in _OPS[kind]
        ]
        if len(hits) != 1:
            found = [n.op_type for n in self.model.graph.node if n.name.rpartition("/")[0] == scope]
            raise ExportError(
                f"{name}: expected one {'/'.join(_OPS[kind])} node under scope {scope} in the "
                f"exported graph, found {found}; a Linear must get 2-D input (flatten first) "
                "and each layer must be its own module"
            )
        return hits[0]

    def initializer(self, name: str, array: np.ndarray) -> str:
        """Add ``array`` as an initializer (raw bytes; ml_dtypes.int4 packs two per byte)."""
        from onnx import numpy_helper

        self.model.graph.initializer.append(numpy_helper.from_array(array, name))
        return name

    def qdq(
        self,
        index: int,
        tensor: str,
        prefix: str,
        act: Any,
        *,
        after: bool = False,
        out: str | None = None,
    ) -> str:
        """Q -> DQ of ``tensor`` with an ActQuant's scale/zp, inserted before (or after) node
        ``index``; returns the dequantized tensor's name (``out`` if given). Readers of one
        tensor whose quantizers agree share one pair, as in ``quantize_static``'s graphs:
        onnxruntime merges neither the pairs nor the layout transposes it puts after them."""
        import numpy as np
        from onnx import helper

        key = (tensor, int(act.bits), float(act.scale), int(act.zero_point))
        if out is None and key in self.shared:
            return self.shared[key]
        zp_type = np.uint8 if act.bits == 8 else np.int16
        scale = self.initializer(f"{prefix}_scale", act.scale.numpy().astype(np.float32))
        zp = self.initializer(f"{prefix}_zero_point", np.array(int(act.zero_point), dtype=zp_type))
        quantized, dequantized = f"{prefix}_quantized", out or f"{prefix}_dequantized"
        nodes = [
            helper.make_node(
                "QuantizeLinear", [tensor, scale, zp], [quantized], name=f"{prefix}_Q"
            ),
            helper.make_node(
                "DequantizeLinear", [quantized, scale, zp], [dequantized], name=f"{prefix}_DQ"
            ),
        ]
        (self.after if after else self.before).setdefault(index, []).extend(nodes)
        if out is None:
            self.shared[key] = dequantized
        return dequantized

    def weight(self, index: int, name: str, wrapper: Any, *, at_load: bool) -> str:
        """The layer's integer weight and the nodes that make it float: ``Cast`` and ``Mul``,
        folded when the session loads (``at_load``), else ``DequantizeLinear``."""
        import ml_dtypes
        import numpy as np
        from onnx import TensorProto, helper

        q, scale = wrapper.int_weight()
        dtype = ml_dtypes.int4 if wrapper.weight_bits <= 4 else np.int8
        weight = self.initializer(f"{name}.weight_quantized", q.numpy().astype(dtype))
        out = f"{name}.weight_dequantized"
        scale = scale.numpy().astype(np.float32)
        if at_load:
            w_scale = self.initializer(
                f"{name}.weight_scale", scale.reshape((-1,) + (1,) * (q.dim() - 1))
            )
            nodes = [
                helper.make_node("Cast", [weight], [f"{name}.weight_cast"], to=TensorProto.FLOAT,
                                 name=f"{name}.weight_Cast"),
                helper.make_node("Mul", [f"{name}.weight_cast", w_scale], [out],
                                 name=f"{name}.weight_Mul"),
            ]
        else:
            w_scale = self.initializer(f"{name}.weight_scale", scale)
            w_zp = self.initializer(f"{name}.weight_zero_point",
                                    np.zeros(q.shape[0], dtype=dtype))
            nodes = [helper.make_node("DequantizeLinear", [weight, w_scale, w_zp], [out], axis=0,
                                      name=f"{name}.weight_DQ")]
        self.before.setdefault(index, []).extend(nodes)
        return out

    def finish(self) -> None:
        graph = self.model.graph
        nodes = []
        for i, node in enumerate(graph.node):
            nodes.extend(self.before.get(i, []))
            nodes.append(node)
            nodes.extend(self.after.get(i, []))
        del graph.node[:]
        graph.node.extend(_topological(nodes, graph))
        _drop_unused(self.model)


def _topological(nodes: list[Any], graph: Any) -> list[Any]:
    """``nodes`` in an order where each reads only tensors written before it (a shared Q -> DQ
    pair sits before its first reader in module order, which need not be the first in the
    graph); nodes already in order keep it."""
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    ordered: list[Any] = []
    pending = list(nodes)
    while pending:
        waiting = []
        for node in pending:
            if all(i in ready for i in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                waiting.append(node)
        if len(waiting) == len(pending):
            raise ExportError(
                f"the exported graph has a cycle through {waiting[0].name!r}; report this model"
            )
        pending = waiting
    return ordered


def _drop_unused(model: onnx.ModelProto) -> None:
    """Remove nodes whose outputs nobody reads, then initializers nobody reads."""
    graph = model.graph
    outputs = {o.name for o in graph.output}
    while True:
        used = outputs | {i for node in graph.node for i in node.input}
        dead = [n for n in graph.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    used = {i for node in graph.node for i in node.input}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def onnx_bytes(model: nn.Module, input_shape: Sequence[int]) -> bytes:
    """:func:`to_onnx`, serialized: what a measurer runs."""
    return to_onnx(model, input_shape).SerializeToString()


def to_onnx(student: nn.Module, input_shape: Sequence[int]) -> onnx.ModelProto:
    """The student as an ONNX model in QDQ form (input ``input``, output ``output``, batch
    dimension dynamic). Raises ExportError if a wrapped layer cannot be found or checked."""
    import onnx

    from spaces.base import layer_kind
    from spaces.quantization import QuantConv, QuantJoin, input_quantizer, wrappers

    model = _export_float(_float_skeleton(student), input_shape)
    editor = _Editor(model)
    for name, wrapper in wrappers(student).items():
        if isinstance(wrapper, QuantJoin):
            index = editor.find(name, str(layer_kind(wrapper.layer)))
            node = model.graph.node[index]
            for i, act in enumerate(wrapper.input_quants()):
                prefix = f"{name}.{input_quantizer(i).replace('act', 'input')}"
                node.input[i] = editor.qdq(index, node.input[i], prefix, act)
            out = node.output[0]
            node.output[0] = f"{name}.output_float"
            editor.qdq(
                index, node.output[0], f"{name}.output", wrapper.act_out, after=True, out=out
            )
            continue
        index = editor.find(name, "conv" if isinstance(wrapper, QuantConv) else "linear")
        node = model.graph.node[index]
        if wrapper.act is not None:
            node.input[0] = editor.qdq(index, node.input[0], f"{name}.input", wrapper.act)
        if wrapper.weight_bits != 32:
            node.input[1] = editor.weight(index, name, wrapper, at_load=wrapper.act is None)
    editor.finish()
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        raise ExportError(f"the exported QDQ graph is invalid: {exc}; report this model") from exc
    return model


def packed_size_bytes(student: nn.Module, *, containers: bool = False) -> int:
    """Bytes of the student's parameters with each weight at its bit-width.

    Quantized weights count ``weight_bits`` each (``containers=True``: 4 or 8 bits, as the ONNX
    file stores them) plus a float32 scale per channel; biases, float layers and every other
    parameter or buffer count 4 bytes per value; each activation quantizer counts its float32
    scale and its zero point.
    """
    from spaces.quantization import ActQuant, QuantLayer

    bits = 0
    counted: set[int] = set()
    for module in student.modules():
        if isinstance(module, QuantLayer) and module.weight_bits != 32:
            weight = module.layer.weight
            per_weight = (4 if module.weight_bits <= 4 else 8) if containers else module.weight_bits
            bits += weight.numel() * per_weight + weight.shape[0] * 32
            counted.add(id(weight))
        elif isinstance(module, ActQuant):
            bits += 32 + module.bits
            counted.update(id(b) for b in module.buffers())
    for tensor in (*student.parameters(), *student.buffers()):
        if id(tensor) not in counted and tensor.is_floating_point():
            bits += tensor.numel() * 32
    return (bits + 7) // 8


def run_onnx(model: onnx.ModelProto, x: Tensor) -> Tensor:
    """Run an ONNX model on ``x`` with onnxruntime (CPU, all graph optimizations, 1 thread)."""
    import onnxruntime as ort
    import torch

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = 1
    try:
        session = ort.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:
        raise ExportError(f"onnxruntime cannot load the exported model: {exc}") from exc
    return torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
