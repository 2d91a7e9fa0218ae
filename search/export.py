"""Export: rebuild a trial's student, write QDQ ONNX, measure it, and write the report.

The student is rebuilt from its parameters and the plain state_dict stored as the trial's
artifact (never from a pickled module). Its accuracy is measured with onnxruntime on the whole
test set. Its latency is measured on the target's device, beside the teacher in the same run,
where the target has a measurer (``host``: this machine; a device with an agent server); for
any other target the report says that its latency is the cost model's prediction.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from search.errors import ExportError, StudyError
from search.finalize import finalized_records
from search.record import StudyRecord, TrialRecord
from search.spec import Spec

if TYPE_CHECKING:
    import onnx
    import optuna
    from torch import nn

    from search.workloads.objects import Objects
    from spaces.student import Student


def choose_trial(
    study: optuna.Study, spec: Spec, number: int | None
) -> tuple[optuna.trial.FrozenTrial, TrialRecord]:
    """The best feasible trial (a finalized one ranks by its finalized validation accuracy),
    or trial ``number``; it must be complete with weights."""
    from search.study import best_rows

    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    if number is None:
        best = best_rows(study, spec, limit=1)
        if not best:
            raise StudyError(
                f"study {study.study_name!r} has no feasible complete trial yet; "
                "run more trials (`edgetune resume`) or pick one with --trial N"
            )
        number = best[0].trial
    if number not in trials:
        raise StudyError(
            f"--trial: study {study.study_name!r} has no trial {number}; "
            f"it has trials 0..{max(trials, default=-1)}"
        )
    record = TrialRecord.read(trials[number])
    if record is None or record.status != "complete" or record.artifact is None:
        status = record.status if record else "running"
        raise StudyError(
            f"--trial: trial {number} is {status}, not a complete trial with stored weights; "
            "pick a complete one (`edgetune show`)"
        )
    return trials[number], record


def rebuild(
    spec: Spec,
    trial: optuna.trial.FrozenTrial,
    record: TrialRecord,
    teacher: nn.Module,
    x_calib: Any,
    *,
    reduce_range: bool,
    artifact: str | None = None,
) -> Student:
    """The trial's student as it was at the end of its fine-tune: made by the student recipe
    from the trial's params, with the fine-tuned weights of its artifact (a plain state_dict;
    ``artifact`` names another, such as the finalized weights)."""
    import io

    import torch

    from search.artifacts import download
    from search.trial import space_for
    from spaces.student import build_student

    space = space_for(spec, teacher)
    student = build_student(
        teacher, dict(trial.params), space, calib=x_calib, reduce_range=reduce_range
    )
    artifact = artifact or record.artifact
    assert student.model is not None and artifact is not None
    state = torch.load(io.BytesIO(download(artifact)), weights_only=True)
    try:
        student.model.load_state_dict(state)
    except RuntimeError as exc:
        raise ExportError(
            f"trial {trial.number}: its stored weights do not fit the rebuilt "
            f"student ({str(exc)[:200]}); the space code changed since the study ran"
        ) from None
    student.model.eval()
    return student


def study_reduce_range(study: optuna.Study, spec: Spec) -> bool:
    """Whether the study's students keep 8-bit weights in ±63: as recorded when it started,
    else (a study of an earlier release) as its target says."""
    import targets

    record = StudyRecord.read(study)
    if record is not None and record.int8_reduce_range is not None:
        return record.int8_reduce_range
    return targets.get(spec.target).int8_reduce_range


def _latency_budget(
    record: StudyRecord | None, spec: Spec, student_ms: float | None, teacher_ms: float | None
) -> dict[str, Any] | None:
    """Whether the exported model meets its latency budget as measured here: its latency over
    the teacher's (same run) against a relative budget, or its latency against an absolute one."""
    if record is None or student_ms is None or teacher_ms is None:
        return None
    budgets = record.budgets_for(spec)
    if "latency_ms" not in budgets.limits:
        return None
    costs = {"latency_ms": student_ms, "latency_ratio": student_ms / teacher_ms}
    excess = budgets.excess(costs)["latency_ms"]
    return {
        "budget": f"{budgets.latency_share:.0%} of the teacher"
        if budgets.latency_share
        else f"{budgets.limits['latency_ms']:.4g} ms",
        "excess": excess,
        "met": excess <= 0,
    }


def onnx_accuracy(model: onnx.ModelProto, x: Any, y: Any, batch: int = 256) -> float:
    """Top-1 accuracy of ``model`` in onnxruntime on (``x``, ``y``): arrays, tensors or
    streamed images, read a batch at a time."""
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    correct = 0
    for i in range(0, len(x), batch):
        logits = session.run(None, {name: np.asarray(x[i : i + batch], dtype=np.float32)})[0]
        correct += int((np.argmax(logits, axis=1) == np.asarray(y[i : i + batch])).sum())
    return correct / len(x)


def export_trial(
    study: optuna.Study,
    spec: Spec,
    out: Path,
    *,
    number: int | None,
    log: Any = print,
    objects: Objects | None = None,
) -> dict[str, Any]:
    """Export trial ``number`` (default: the best feasible) into the new folder ``out``:
    written in a temporary folder beside it and renamed into place, so ``out`` holds all of
    ``model.onnx``, ``report.md``, ``summary.json`` and the figures, or does not exist."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(
            f"--out: {out} already exists and is not an empty folder; export into a new folder "
            "or remove it first"
        )
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        summary = _export_files(study, spec, tmp, out, number=number, log=log, objects=objects)
        if out.is_dir():
            out.rmdir()  # empty: checked above
        tmp.rename(out)  # every file appears at once, or none
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return summary


def _export_files(
    study: optuna.Study,
    spec: Spec,
    out: Path,
    final: Path,
    *,
    number: int | None,
    log: Any,
    objects: Objects | None,
) -> dict[str, Any]:
    """Write the export into ``out``; paths in the summary name ``final``."""
    import targets
    from cost_models import from_onnx
    from search.onnx_export import packed_size_bytes, to_onnx
    from search.study import best_rows, latency_fidelity
    from search.workloads import load_data, load_teacher, split
    from spaces.distillation import accuracy

    trial, record = choose_trial(study, spec, number)
    study_record = StudyRecord.read(study)
    shape = spec.model.input_shape
    target = targets.get(spec.target)
    teacher = load_teacher(spec, objects)
    data = load_data(spec.data, spec.model, objects.data if objects else None)
    parts = split(data, spec.data, spec.search.seed)
    finalized = finalized_records(study).get(trial.number)
    rebuilt = rebuild(
        spec, trial, record, teacher, parts["x_calib"],
        reduce_range=study_reduce_range(study, spec),
        artifact=finalized["artifact"] if finalized else None,
    )
    student = rebuilt.model
    assert student is not None
    model = to_onnx(student, shape)
    teacher_model = to_onnx(teacher, shape)
    path = out / "model.onnx"
    path.write_bytes(model.SerializeToString())

    from targets.measurer import measurer_for

    t = time.perf_counter()
    measurer = measurer_for(target)
    m_student = m_teacher = None
    if measurer is not None:
        log(f"measuring trial {trial.number} and the teacher on {measurer.where} (about 20 s)...")
        m_student, m_teacher = measurer.measure(
            [model.SerializeToString(), teacher_model.SerializeToString()],
            seconds=8.0,
            min_runs=200,
        )
    else:
        log(
            f"target {target.name} is not this machine and names no agent server: its latency "
            "is the cost model's prediction for that device, not measured"
        )
    x_test = data.normalize(data.x_test)  # a tensor, or streamed batch by batch
    acc_onnx = onnx_accuracy(model, x_test, data.y_test)
    acc_teacher = onnx_accuracy(teacher_model, x_test, data.y_test)
    acc_torch = accuracy(student, x_test, data.y_test)
    log(f"measured in {time.perf_counter() - t:.1f} s")

    costs = target.predict(rebuilt.graph, rebuilt.policy.bits)
    predicted = costs.as_dict()
    graph, bits = from_onnx(model)
    predicted_from_onnx = target.predict(graph, bits).as_dict()
    teacher_pred = dict(study_record.teacher) if study_record else {}
    lat_pred = predicted["latency_ms"]
    lat_meas = m_student.latency_ms if m_student else None
    teacher_meas = m_teacher.latency_ms if m_teacher else None
    summary: dict[str, Any] = {
        "study": study.study_name,
        "trial": trial.number,
        "target": spec.target,
        "onnx": str((final / path.name).resolve()),
        "accuracy_onnx": acc_onnx,
        "accuracy_torch": acc_torch,
        "accuracy_val_search": record.accuracy,
        "finalized": finalized,
        "latency_ms_measured": lat_meas,
        "latency_ms_predicted": lat_pred,
        "latency_error": None if lat_meas is None else lat_meas / lat_pred - 1.0,
        "measured_on": measurer.where if measurer else None,
        "size_kb_file": path.stat().st_size / 1024,
        "size_kb_packed": packed_size_bytes(student) / 1024,
        "predicted": predicted,
        "predicted_from_onnx": predicted_from_onnx,
        "energy_model": target.energy_label,
        "approximated_layers": list(costs.approximated),
        "budgets": dict(study_record.budgets) if study_record else {},
        "teacher_search": teacher_pred,
        "teacher": {
            "accuracy_onnx": acc_teacher,
            "latency_ms_measured": teacher_meas,
            "latency_ms_predicted": teacher_pred.get(
                "latency_ms_predicted", teacher_pred.get("latency_ms")
            ),
            "size_kb": teacher_pred.get("size_kb"),
        },
        "ratios_to_teacher": {
            "latency_measured": None
            if lat_meas is None or teacher_meas is None
            else lat_meas / teacher_meas,
            "size_packed": (packed_size_bytes(student) / 1024)
            / teacher_pred.get("size_kb", float("nan")),
        },
        "measurement": m_student.as_dict() if m_student else None,
        "policy": dict(record.policy),
        "latency_fidelity": latency_fidelity(study),
        "latency_budget": _latency_budget(study_record, spec, lat_meas, teacher_meas),
        "provenance": dict(record.provenance),
        "input": {
            "name": "input",
            "shape": [1, *shape],
            "dtype": "float32",
            "layout": "NCHW, batch dimension dynamic",
            "normalize": {
                "mean": list(data.mean),
                "std": list(data.std),
                "formula": "x = (pixels_in_0_1 - mean) / std",
            },
        },
    }
    from search.artifacts import upload
    from search.figures import write_figures
    from search.report import export_markdown
    from search.sensitivity import stored_sensitivity
    from spaces.pruning import kept_channels

    sens = stored_sensitivity(study)
    summary["sensitivity"] = sens.per_unit(record.policy.get("bits", {})) if sens else None
    summary["study_sensitivity"] = sens.as_dict() if sens else None
    summary["figures"] = write_figures(
        study, spec, out, trial=trial.number, teacher_channels=kept_channels(teacher),
        sensitivity=summary["sensitivity"],
    )
    for name in summary["figures"].values():  # optuna-dashboard shows the same figures
        upload(study, f"trial-{trial.number}-{name}", (out / name).read_bytes(), "image/png")
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "report.md").write_text(export_markdown(summary, best_rows(study, spec), spec))
    return summary
