from __future__ import annotations

import onnx
import pytest
import torch
from torch import nn

from cost_models.graph import Precision
from search.onnx_export import packed_size_bytes, run_onnx, scope_path, to_onnx
from search.workloads.models import resnet8
from spaces.config import PruningSpace, QuantizationSpace, Space
from spaces.joint import JointSpace
from spaces.quantization import quantize_model
from spaces.student import build_student

SHAPE = (1, 16, 16)
LAYERS = (
    "stem.0",
    "stage1.conv1.0",
    "stage1.conv2.0",
    "stage1.add",
    "stage2.conv1.0",
    "stage2.conv2.0",
    "stage2.shortcut",
    "stage2.add",
    "stage3.conv1.0",
    "stage3.conv2.0",
    "stage3.shortcut",
    "stage3.add",
    "classifier",
)
MIXED = (
    Precision(8, 8),
    Precision(4, 16),
    Precision(32, 8),
    Precision(6, 32),
    Precision(2, 8),
    Precision(32, 32),
    Precision(8, 16),
)


@pytest.fixture(scope="module")
def teacher() -> nn.Module:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = resnet8(SHAPE)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert m.running_mean is not None and m.running_var is not None
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
    return model.eval()


def _bits(kind: str) -> dict[str, Precision]:
    if kind == "mixed":
        return {n: MIXED[i % len(MIXED)] for i, n in enumerate(LAYERS)}
    w, a = {"int8": (8, 8), "int4": (4, 8), "act16": (8, 16), "float": (32, 32)}[kind]
    return {n: Precision(w, a) for n in LAYERS}


def _initializer_types(model: onnx.ModelProto) -> dict[str, int]:
    return {t.name: t.data_type for t in model.graph.initializer}


@pytest.mark.parametrize("kind", ["int8", "int4", "act16", "mixed", "float"])
def test_onnxruntime_matches_the_torch_student(teacher: nn.Module, kind: str) -> None:
    torch.manual_seed(1)
    student = quantize_model(teacher, _bits(kind), torch.randn(64, *SHAPE), reduce_range=True)
    model = to_onnx(student, SHAPE)
    x = torch.randn(256, *SHAPE)
    with torch.no_grad():
        expected = student(x)
    got = run_onnx(model, x)
    assert (got - expected).abs().max() <= 0.02 * expected.abs().max()
    assert (got.argmax(1) == expected.argmax(1)).float().mean() >= 0.99
    types = _initializer_types(model)
    ops = [n.op_type for n in model.graph.node]
    if kind == "float":
        assert "QuantizeLinear" not in ops and "DequantizeLinear" not in ops
        assert (got - expected).abs().max() <= 1e-4
    if kind == "int8":
        assert types["stem.0.weight_quantized"] == onnx.TensorProto.INT8
        assert types["stem.0.input_zero_point"] == onnx.TensorProto.UINT8
        assert (
            onnx.numpy_helper.to_array(
                next(t for t in model.graph.initializer if t.name == "stem.0.weight_quantized")
            ).max()
            <= 63
        )
        # 10 conv/linear inputs and 3 x (Add a, b, out), less the 3 tensors two layers read
        # with the same quantizer (a block's input: its conv and its shortcut or Add)
        quantized = [n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"]
        assert len(quantized) == len(set(quantized)) == 10 + 3 * 3 - 3
    if kind == "int4":
        assert types["classifier.weight_quantized"] == onnx.TensorProto.INT4
    if kind == "act16":
        assert types["stage1.add.input_a_zero_point"] == onnx.TensorProto.INT16
        assert (got - expected).abs().max() <= 1e-3 * expected.abs().max()
    if kind == "mixed":
        assert "stage1.add.output_scale" not in types  # Precision(6, 32): a float Add
        assert "stage2.add.output_scale" in types  # Precision(8, 8)
        assert "stage1.conv2.0.weight_quantized" not in types  # Precision(32, 8)
        assert "stage1.conv2.0.input_scale" in types
        assert "stage3.shortcut.input_scale" not in types  # Precision(6, 32)
        assert types["stage3.shortcut.weight_quantized"] == onnx.TensorProto.INT8
        assert types["stage2.conv1.0.weight_quantized"] == onnx.TensorProto.INT4  # 2 bits
        assert types["stage2.shortcut.input_zero_point"] == onnx.TensorProto.INT16
        assert not any(
            n.startswith(("stage2.conv2.0.", "classifier.w")) and "quant" in n for n in types
        )  # Precision(32, 32): untouched


@pytest.mark.parametrize("bits", [8, 4])
def test_weight_only_weights_are_folded_when_the_session_loads(
    teacher: nn.Module, bits: int
) -> None:
    """Quantized weights read by float activations are written as Cast and Mul, which
    onnxruntime folds at load: the file keeps the integers, and the session runs float convs in
    NCHWc with no dequantization at run time, as the cost model prices them."""
    from cost_models import from_onnx
    from cost_models.kernels import kernels
    from targets.kernel_check import optimized_ops

    torch.manual_seed(1)
    prec = {n: Precision(bits, 32) for n in LAYERS if not n.endswith(".add")}
    student = quantize_model(teacher, prec, torch.randn(64, *SHAPE), reduce_range=False)
    model = to_onnx(student, SHAPE)
    x = torch.randn(256, *SHAPE)
    with torch.no_grad():
        expected = student(x)
    assert (run_onnx(model, x) - expected).abs().max() <= 1e-4 * expected.abs().max()
    ops = [n.op_type for n in model.graph.node]
    assert "DequantizeLinear" not in ops and ops.count("Cast") == len(prec)
    int_type = onnx.TensorProto.INT8 if bits == 8 else onnx.TensorProto.INT4
    assert _initializer_types(model)["stage2.conv1.0.weight_quantized"] == int_type
    ran = [op for op, _ in optimized_ops(model)]
    assert not {"DequantizeLinear", "Cast", "Mul"} & set(ran)
    assert ran.count("Conv") >= 7  # the NCHWc convs: weights pre-packed at load
    graph, read = from_onnx(model)
    assert {read[n].weight_bits for n in read} == {bits}
    classes = [k.cls for k in kernels(graph, read)]
    assert classes == [k.cls for k in kernels(graph, {})]  # priced as the float model


@pytest.mark.parametrize(
    ("eight_bit", "weight_bits"),
    [(LAYERS[4:9], 32), (LAYERS[4:9], 8), (LAYERS[:-1], 8), (LAYERS[4:8], 32)],
    ids=["middle-run-float-weights", "middle-run-int8", "all-int8-but-the-classifier", "stage2"],
)
def test_the_kernel_rules_list_what_onnxruntime_runs_for_a_student(
    teacher: nn.Module, eight_bit: tuple[str, ...], weight_bits: int
) -> None:
    """A tensor that several 8-bit layers read with one quantizer is quantized once (onnxruntime
    merges neither the Q -> DQ pairs nor the layout transposes after them), and an 8-bit Add
    quantizes its output before the ReLU after it (``Layer.act_after_quant``: its readers
    quantize it again). The kernels the rules list, from the torch student as the search prices
    it and from the exported file, are those onnxruntime's optimized graph runs."""
    from cost_models import from_onnx, from_torch
    from targets.host import nchwc_block_size
    from targets.kernel_check import check_kernel_rules, ort_kernel_counts, rule_kernel_counts

    torch.manual_seed(1)
    prec = {n: Precision(32 if n.endswith(".add") else weight_bits, 8) for n in eight_bit}
    student = quantize_model(teacher, prec, torch.randn(64, *SHAPE), reduce_range=True)
    model = to_onnx(student, SHAPE)
    x = torch.randn(128, *SHAPE)
    with torch.no_grad():
        expected = student(x)
    assert (run_onnx(model, x) - expected).abs().max() <= 0.02 * expected.abs().max()
    quantized = [n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert len(quantized) == len(set(quantized))
    graph, _ = from_onnx(model)
    adds = [la.name for la in graph.layers if la.act_after_quant]
    assert adds == [f"/{n.replace('.', '/')}/Add" for n in eight_bit if n.endswith(".add")]
    torch_graph = from_torch(teacher, SHAPE)
    assert [la.name for la in torch_graph.layers if la.act_after_quant] == [
        n for n in LAYERS if n.endswith(".add")
    ]
    block = nchwc_block_size()
    assert check_kernel_rules([("student", model)], block)["agree"] == 1
    assert rule_kernel_counts(torch_graph, prec, block) == ort_kernel_counts(model)


def test_pruned_quantized_student_exports(teacher: nn.Module) -> None:
    space = JointSpace(
        teacher, SHAPE, Space(quantization=QuantizationSpace(), pruning=PruningSpace(round_to=4))
    )
    student = build_student(
        teacher,
        space.uniform_params(0.5, 8, 8),
        space,
        calib=torch.randn(64, *SHAPE),
        reduce_range=False,
    ).model
    assert student is not None
    model = to_onnx(student, SHAPE)
    x = torch.randn(128, *SHAPE)
    with torch.no_grad():
        expected = student(x)
    got = run_onnx(model, x)
    assert (got.argmax(1) == expected.argmax(1)).float().mean() >= 0.99
    weight = next(t for t in model.graph.initializer if t.name == "stage3.conv1.0.weight_quantized")
    assert list(weight.dims) == [32, 16, 3, 3]


def test_packed_size_counts_bits(teacher: nn.Module) -> None:
    calib = torch.randn(16, *SHAPE)
    sizes = {
        k: packed_size_bytes(quantize_model(teacher, _bits(k), calib, reduce_range=False))
        for k in ("float", "int8", "int4")
    }
    params = sum(p.numel() for p in teacher.parameters())
    assert sizes["int4"] < 0.6 * sizes["int8"] < 0.6 * 0.3 * sizes["float"] * 2
    assert sizes["float"] >= 4 * params - 4 * 2 * sum(
        m.num_features for m in teacher.modules() if isinstance(m, nn.BatchNorm2d)
    )
    int8 = quantize_model(teacher, _bits("int8"), calib, reduce_range=False)
    file_size = len(to_onnx(int8, SHAPE).SerializeToString())
    assert packed_size_bytes(int8) <= file_size < 1.3 * packed_size_bytes(int8) + 16_000


def test_scope_path_follows_the_legacy_exporter() -> None:
    assert scope_path("stage1.conv1.0") == "/stage1/conv1/conv1.0"
    assert scope_path("blocks.0.body.1.0") == "/blocks/blocks.0/body/body.1/body.1.0"
    assert scope_path("classifier") == "/classifier"


def test_packed_size_is_what_the_cost_model_budgets() -> None:
    """The size the search holds to its budget is the size the export reports as packed."""
    import optuna

    from cost_models import size_kb
    from search.spec import parse_spec

    spec = parse_spec(
        {
            "name": "s",
            "model": {"name": "resnet8"},
            "space": {
                "quantization": {"weight_bits": [3, 5, 8, 32], "activation_bits": [8, 16, 32]}
            },
        }
    )
    teacher = resnet8((1, 28, 28), 10).eval()
    space = JointSpace(teacher, (1, 28, 28), spec.space)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    for _ in range(4):
        trial = study.ask()
        policy = space.decode(space.suggest(trial))
        study.tell(trial, 0.0)
        built = build_student(
            teacher, dict(trial.params), space, calib=torch.randn(8, 1, 28, 28), reduce_range=True
        )
        assert built.model is not None
        student = built.model
        predicted = size_kb(built.graph, policy.bits)
        assert predicted * 1024 == pytest.approx(packed_size_bytes(student), abs=1)
