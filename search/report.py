"""Human-readable reports: the table beside the teacher, and the export's report.md."""

from __future__ import annotations

from typing import Any

from search.spec import Spec
from search.study import Row


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def best_table(summary: dict[str, Any]) -> str:
    """The best feasible candidates under the teacher, with ratios to it."""
    teacher = summary.get("teacher", {})
    head = ["", "accuracy", "latency_ms", "energy_mj", "peak_memory_kb", "size_kb"]
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    lines.append(" | ".join(["teacher"] + [_fmt(teacher.get(k)) for k in head[1:]]))
    budgets = summary.get("budgets", {})
    if budgets:
        lines.append(
            " | ".join(
                ["budget"] + [_fmt(budgets.get(k)) if k in budgets else "-" for k in head[1:]]
            )
        )
    for row in summary.get("best", []):
        cells = [f"trial {row['trial']}"]
        for k in head[1:]:
            v = row.get(k)
            ratio = (
                f" ({v / teacher[k]:.2f}x)"
                if k != "accuracy" and isinstance(v, float) and teacher.get(k)
                else ""
            )
            cells.append(_fmt(v) + ratio)
        lines.append(" | ".join(cells))
    if not summary.get("best"):
        lines.append("(no feasible candidate yet)")
    return "\n".join(lines)


def fidelity_text(fid: dict[str, Any] | None) -> str:
    """The cost model's latency error over a study's measured candidates, early and late."""
    if not fid:
        return "latency: predicted only (no candidate was measured on the device)"
    parts = []
    for key in ("all", "early", "late"):
        f = fid.get(key)
        if f:
            parts.append(
                f"{key} {int(f['n'])}: MdAPE {f['mdape']:.1f}%, within ±10% "
                f"{f['within_10pct']:.0%}, Spearman {f['spearman']:.2f}"
            )
    return "cost model vs measured latency (prequential): " + "; ".join(parts)


def study_text(summary: dict[str, Any]) -> str:
    s = summary["states"]
    needs = summary.get("needs_objects")
    exported = next((row["trial"] for row in summary.get("best", [])), None)
    return (
        f"study {summary['study']} ({summary['storage']}), target {summary['target']}\n"
        f"{summary['n_trials']} trials: {s['complete']} complete, {s['infeasible']} infeasible "
        f"(no training), {s['stopped']} stopped early, {s['failed']} failed\n"
        + (
            f"started from Python with the {' and '.join(needs)} as objects: resume and export "
            "it from Python (search.api) with the same objects\n"
            if needs
            else ""
        )
        + fidelity_text(summary.get("latency_fidelity"))
        + "".join(
            f"\nshortlisted trial {n}: validation accuracy {f['val_accuracy']:.4f} after "
            f"{f['epochs']} epochs"
            for n, f in summary.get("shortlisted", {}).items()
        )
        + "".join(
            f"\nfinalized trial {n}: validation accuracy {f['val_accuracy_search'] or 0:.4f} in "
            f"the search, {f['val_accuracy']:.4f} after {f['epochs']} epochs{_from_lr(f)} ("
            + ("export takes it" if int(n) == exported else f"`export --trial {n}` uses it")
            + ")"
            for n, f in summary.get("finalized", {}).items()
        )
        + "\n\n"
        + best_table(summary)
    )


def _policy_table(policy: dict[str, Any], sensitivity: dict[str, float] | None = None) -> str:
    """Bits and kept channels per layer; with the study's sensitivity, the validation accuracy
    each layer's bits lose when applied alone to the teacher."""
    bits = policy.get("bits", {})
    kept = policy.get("kept_channels", {})
    names = list(dict.fromkeys([*kept, *bits]))
    head = ["layer", "weight bits", "activation bits", "kept channels"]
    if sensitivity is not None:
        head.append("accuracy lost alone at these bits")
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for name in names:
        w, a = bits.get(name, [32, 32])
        cells = [name, "float" if w == 32 else str(w), "float" if a == 32 else str(a),
                 _fmt(kept.get(name))]
        if sensitivity is not None:
            loss = sensitivity.get(name)
            cells.append("-" if loss is None else f"{loss:+.2%}")
        lines.append(" | ".join(cells))
    return "\n".join(lines)


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _latency_source(summary: dict[str, Any]) -> str:
    if summary.get("measured_on"):
        m = summary.get("measurement") or {}
        return f"measured on {summary['measured_on']} ({m.get('protocol', '')})"
    return (
        f"not measured: `{summary['target']}` is not this machine and names no agent server, "
        "so the figures are the cost model's predictions for that device"
    )


def _error_sentence(summary: dict[str, Any]) -> str:
    if summary.get("latency_error") is None:
        return "Latency was not measured."
    return f"Measured latency is {summary['latency_error']:+.1%} off the prediction."


def _budget_sentence(summary: dict[str, Any]) -> str:
    b = summary.get("latency_budget")
    if not b:
        return ""
    verdict = "meets" if b["met"] else "misses"
    return f" As measured here, it {verdict} its latency budget ({b['budget']}; {b['excess']:+.0%})."


def _approximated_sentence(summary: dict[str, Any]) -> str:
    layers = summary.get("approximated_layers") or []
    if not layers:
        return ""
    return (
        f" {len(layers)} layer(s) ({', '.join(layers[:5])}) have no fitted coefficients on "
        "this target and are priced from the bytes they move: their latency and energy are rough."
    )


def export_text(summary: dict[str, Any], report: Any) -> str:
    """What ``edgetune export`` prints."""
    t = summary["teacher"]
    if summary.get("latency_ms_measured") is not None:
        latency = (
            f"latency on {summary['measured_on']}: measured {summary['latency_ms_measured']:.4f}"
            f" ms, predicted {summary['latency_ms_predicted']:.4f} ms "
            f"({summary['latency_error']:+.1%}); teacher measured "
            f"{_fmt(t['latency_ms_measured'])} ms"
        )
    else:
        latency = (
            f"latency on {summary['target']}: predicted {summary['latency_ms_predicted']:.4f} ms "
            "(not measured: no measurer for that device)"
        )
    return (
        f"exported trial {summary['trial']} to {summary['onnx']}"
        + (" (finalized weights)\n" if summary.get("finalized") else " (search-time weights)\n")
        + f"test accuracy (onnxruntime): {summary['accuracy_onnx']:.4f} "
        f"(teacher {t['accuracy_onnx']:.4f})\n{latency}\n"
        f"size: packed {summary['size_kb_packed']:.1f} KiB, file {summary['size_kb_file']:.1f} KiB\n"
        f"report: {report}"
    )


def _from_lr(finalized: dict[str, Any]) -> str:
    """The learning rate a finalize started from (a record stored before it was kept has none)."""
    return f" from learning rate {finalized['lr']:.3g}" if "lr" in finalized else ""


def _finalized_row(summary: dict[str, Any]) -> str:
    """The table row of validation accuracy at the end of the search and after finalizing."""
    fin = summary.get("finalized")
    search_acc = _fmt(summary.get("accuracy_val_search"))
    if not fin:
        return f"| validation accuracy, search (not finalized) | | {search_acc} | |\n"
    return (
        f"| validation accuracy: search, then finalized ({fin['epochs']} epochs on "
        f"{fin['images']} images{_from_lr(fin)}) | | {search_acc}, "
        f"then {fin['val_accuracy']:.4f} | "
        f"{fin['val_accuracy'] - (summary.get('accuracy_val_search') or 0.0):+.4f} |\n"
    )


def _grid(title: str, rows: dict[str, dict[str, float]]) -> str:
    cols = sorted({c for r in rows.values() for c in r}, key=float)
    lines = [" | ".join([title, *cols]), " | ".join("---" for _ in range(len(cols) + 1))]
    lines += [
        " | ".join([name, *(f"{r[c]:+.2%}" if c in r else "-" for c in cols)])
        for name, r in rows.items()
    ]
    return "\n".join(lines)


def _sensitivity_text(sens: dict[str, Any] | None) -> str:
    """The study's sensitivity tables: accuracy lost by each unit's bits and each pruning
    ratio, applied alone to the teacher (no fine-tune)."""
    if not sens:
        return ""
    parts = [
        f"\n## Sensitivity of the teacher\n\nValidation accuracy lost when one part is "
        f"compressed alone, no fine-tune (teacher {sens['teacher_accuracy']:.4f}; measured once "
        f"for this study, in {sens['seconds']:.0f} s). The repair and the seeds spend bits and "
        "channels where these losses are smallest.\n"
    ]
    for key, title in (("weight", "weight bits"), ("act", "activation bits"),
                       ("pruning", "pruning ratio")):
        if sens.get(key):
            parts.append(_grid(title, sens[key]) + "\n")
    return "\n".join(parts)


def _figure(summary: dict[str, Any], key: str, caption: str) -> str:
    """A markdown image line for one of the export's figures (empty if it was not written)."""
    name = summary.get("figures", {}).get(key)
    return f"\n![{caption}]({name})\n" if name else ""


def export_markdown(summary: dict[str, Any], best: list[Row], spec: Spec) -> str:
    t = summary["teacher"]
    pred, pred_onnx = summary["predicted"], summary["predicted_from_onnx"]
    best_summary = {
        # the teacher as the study saw it: validation accuracy, costs the budgets came from
        "teacher": summary.get("teacher_search", {}),
        "best": [r.as_dict() for r in best],
        "budgets": summary["budgets"],
    }
    kd = summary["policy"].get("distillation", {})
    inp = summary["input"]
    return f"""# edgetune export: study {summary["study"]}, trial {summary["trial"]}

Target `{summary["target"]}`; objectives {", ".join(spec.objectives)}.

## Accuracy, latency and size

Accuracy: onnxruntime on this machine. Latency: {_latency_source(summary)}.

| | teacher (fp32) | this model | ratio |
|---|---|---|---|
| test accuracy (ONNX, {spec.data.name} test set) | {t["accuracy_onnx"]:.4f} | {summary["accuracy_onnx"]:.4f} | {summary["accuracy_onnx"] - t["accuracy_onnx"]:+.4f} |
| latency, measured (ms) | {_fmt(t["latency_ms_measured"])} | {_fmt(summary["latency_ms_measured"])} | {_ratio(summary["ratios_to_teacher"]["latency_measured"])} |
| latency, predicted (ms) | {_fmt(t.get("latency_ms_predicted"))} | {summary["latency_ms_predicted"]:.4f} | |
| size (KiB) | {_fmt(t.get("size_kb"))} | packed {summary["size_kb_packed"]:.1f}, file {summary["size_kb_file"]:.1f} | {summary["ratios_to_teacher"]["size_packed"]:.3f}x packed |
{_finalized_row(summary)}
{_error_sentence(summary)}{_budget_sentence(summary)} The file stores bit-widths below 8 in the nearest container
onnxruntime runs (int8 or int4), so the file is larger than the packed size, which counts the
bits a device would store.

## Predicted costs on `{summary["target"]}`

| | latency_ms | energy_mj | peak_memory_kb | size_kb |
|---|---|---|---|---|
| from the torch student | {pred["latency_ms"]:.4g} | {pred["energy_mj"]:.4g} | {pred["peak_memory_kb"]:.4g} | {pred["size_kb"]:.4g} |
| from model.onnx | {pred_onnx["latency_ms"]:.4g} | {pred_onnx["energy_mj"]:.4g} | {pred_onnx["peak_memory_kb"]:.4g} | {pred_onnx["size_kb"]:.4g} |

Energy: {summary.get("energy_model") or "-"}.{_approximated_sentence(summary)}

{fidelity_text(summary.get("latency_fidelity"))}.

## The best feasible candidates of the study (validation accuracy during the search)

{best_table(best_summary)}
{_figure(summary, "front", "validation accuracy against latency, every trained trial")}
## Per-layer policy

{_policy_table(summary["policy"], summary.get("sensitivity"))}
{_figure(summary, "policy", "bits and kept channels per layer")}{_sensitivity_text(summary.get("study_sensitivity"))}
Distillation: {", ".join(f"{k} {_fmt(v)}" for k, v in kd.items()) or "-"}.

## Running it

Input `{inp["name"]}`, shape {inp["shape"]} ({inp["layout"]}), float32. Pixels in [0, 1] are
normalized as `{inp["normalize"]["formula"]}` with mean {inp["normalize"]["mean"]} and std
{inp["normalize"]["std"]}. Output: logits, one per class.

```python
import numpy as np, onnxruntime as ort
session = ort.InferenceSession("model.onnx")
logits = session.run(None, {{"{inp["name"]}": x.astype(np.float32)}})[0]
```
"""
