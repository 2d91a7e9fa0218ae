"""Weight-only quantization on the host: the export's Cast + Mul form against DequantizeLinear.

    python -m experiments.bench_weight_only [--ratios 0.5 0.7] [--label L]

Builds students of the built-in ResNet-8 teacher (uniform pruning, 8- and 4-bit weights, float
activations), exports them as edgetune does (integer weights, ``Cast``, ``Mul``: folded into
float weights when onnxruntime loads the session) and rewrites each into the form it replaced
(the same integers through ``DequantizeLinear``, which onnxruntime keeps for its QDQ fusions
and so runs at every inference); the float pruned student is the reference. Every model and
the teacher are measured interleaved in one run (``HostMeasurer``), twice, and the ratios to
the teacher are written to ``experiments/results/weight_only_<label>.{json,md}`` with the CPU.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "experiments" / "fashion_mnist" / "resnet8_host.yaml"
RESULTS = ROOT / "experiments" / "results"


def as_dequantize(model: Any) -> Any:
    """The same model with each ``Cast`` -> ``Mul`` weight written as ``DequantizeLinear``."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    inits = {t.name: t for t in model.graph.initializer}
    by_output = {n.output[0]: n for n in model.graph.node}
    nodes = []
    for node in model.graph.node:
        if node.op_type == "Cast" and node.input[0] in inits:
            continue
        cast = by_output.get(node.input[0]) if node.op_type == "Mul" else None
        if cast is not None and cast.op_type == "Cast" and cast.input[0] in inits:
            scale = numpy_helper.to_array(inits[node.input[1]]).reshape(-1)
            q = inits[cast.input[0]]
            name = node.output[0]
            model.graph.initializer.append(numpy_helper.from_array(scale, f"{name}.s"))
            model.graph.initializer.append(
                helper.make_tensor(f"{name}.zp", q.data_type, [len(scale)], [0] * len(scale)))
            nodes.append(helper.make_node("DequantizeLinear", [q.name, f"{name}.s", f"{name}.zp"],
                                          [name], axis=0))
            continue
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    used = {i for n in model.graph.node for i in n.input}
    keep = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    return model


def main() -> None:
    from search.onnx_export import onnx_bytes, to_onnx
    from search.spec import load_spec
    from search.workloads import load_data, load_teacher, split
    from spaces.joint import JointSpace
    from spaces.student import build_student
    from targets.agent import device_info
    from targets.host import cpu_isa
    from targets.measurer import HostMeasurer

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ratios", type=float, nargs="+", default=[0.5, 0.7])
    p.add_argument("--label", default="host")
    args = p.parse_args()
    spec = load_spec(SPEC)
    teacher = load_teacher(spec)
    parts = split(load_data(spec.data, spec.model), spec.data, 0)
    space = JointSpace(teacher, spec.model.input_shape, spec.space)
    names, models = ["teacher"], [onnx_bytes(teacher, spec.model.input_shape)]
    for ratio in args.ratios:
        for bits in (32, 8, 4):
            student = build_student(teacher, space.uniform_params(ratio, bits, 32), space,
                                    calib=parts["x_calib"], reduce_range=False).model
            assert student is not None
            exported = to_onnx(student, spec.model.input_shape)
            names.append(f"pruned {ratio:g}, {'float' if bits == 32 else f'{bits}-bit'} weights"
                         + (", Cast+Mul" if bits != 32 else ""))
            models.append(exported.SerializeToString())
            if bits != 32:
                names.append(f"pruned {ratio:g}, {bits}-bit weights, DequantizeLinear")
                models.append(as_dequantize(exported).SerializeToString())
    runs = [HostMeasurer().measure(models, seconds=4.0) for _ in range(2)]
    rows = [{"model": n, "ratio_to_teacher": [r[i].latency_ms / r[0].latency_ms for r in runs]}
            for i, n in enumerate(names) if i]
    result = {"cpu": device_info()["cpu_model"], "isa": cpu_isa(), "date": time.strftime("%Y-%m-%d"),
              "teacher_ms": [r[0].latency_ms for r in runs], "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"weight_only_{args.label}.json").write_text(json.dumps(result, indent=1))
    md = [f"# Weight-only quantization on the host ({result['date']})", "",
          f"CPU: {result['cpu']} ({', '.join(result['isa'])}). Latency over the teacher's, "
          "measured interleaved in one run, two runs.", "",
          "| student | run 1 | run 2 |", "|---|---|---|"]
    md += [f"| {r['model']} | {r['ratio_to_teacher'][0]:.3f}x | {r['ratio_to_teacher'][1]:.3f}x |"
           for r in rows]
    (RESULTS / f"weight_only_{args.label}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
