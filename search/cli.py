"""The ``edgetune`` command line. Every command takes ``--json`` and then prints one JSON object.

Errors edgetune raises on purpose print as one line, ``edgetune: error: ...``, with exit code 2
and no traceback. Progress and logs go to stderr; results to stdout.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from search.cli_args import build_parser, spec_with_overrides
from search.errors import EdgetuneError, InfeasibleSpecError, SpecError

EXIT_ERROR = 2
EXIT_INFEASIBLE = 3


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


_OUT: TextIO = sys.stdout
"""Where results go. ``main`` points it at the real stdout and sends fd 1 to stderr, so that
whatever a library prints there (Ray's raylet messages) cannot corrupt ``--json`` output."""


def _emit(args: argparse.Namespace, obj: Any, text: str) -> None:
    from search.study import dumps

    print(dumps(obj) if args.json else text, file=_OUT, flush=True)


def _isolate_stdout() -> None:
    global _OUT
    sys.stdout.flush()
    _OUT = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)


def _run_and_report(
    args: argparse.Namespace,
    spec: Any,
    storage: str,
    prepare: Callable[[Any], tuple[Any, Any]],
    *,
    target_done: int,
    timeout: float | None,
    workers: int | None = None,
    ray_address: str | None = None,
) -> int:
    """Run the study (:func:`search.driver.run_study`), then print it."""
    from search import study as studies
    from search.driver import run_study
    from search.report import study_text

    study = run_study(spec, storage, prepare, target_done=target_done, timeout_s=timeout,
                      log=_log, progress=True, workers=workers, ray_address=ray_address)
    summary = studies.summary(study, spec, storage)
    _emit(args, summary, study_text(summary))
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from search import study as studies
    from search.lifecycle import start_study
    from search.spec import load_spec

    spec = spec_with_overrides(load_spec(args.spec), args)
    storage = studies.resolve_storage(spec.search.storage)
    return _run_and_report(
        args, spec, storage,
        lambda executor: start_study(spec, storage, spec.study_name, log=_log, executor=executor),
        target_done=spec.search.trials,
        timeout=spec.search.timeout,
    )


def cmd_resume(args: argparse.Namespace) -> int:
    from search import study as studies
    from search.driver import trained_count
    from search.lifecycle import ensure_trials_left, resume_prepared

    storage = studies.resolve_storage(args.storage)
    study, spec = studies.open_study(args.study, storage)
    done = trained_count(study)
    target_done = done + args.trials if args.trials else spec.search.trials
    ensure_trials_left(done, target_done, args.study)
    return _run_and_report(
        args, spec, storage,
        lambda executor: (study, resume_prepared(study, spec, log=_log, executor=executor)),
        target_done=target_done,
        timeout=args.timeout,
        workers=args.workers,
        ray_address=args.ray_address,
    )


def cmd_show(args: argparse.Namespace) -> int:
    from search import study as studies
    from search.report import study_text

    storage = studies.resolve_storage(args.storage)
    study, spec = studies.open_study(args.study, storage)
    summary = studies.summary(study, spec, storage)
    _emit(args, summary, study_text(summary))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from search import study as studies
    from search.export import export_trial
    from search.report import export_text

    storage = studies.resolve_storage(args.storage)
    study, spec = studies.open_study(args.study, storage)
    summary = export_trial(study, spec, Path(args.out), number=args.trial, log=_log)
    _emit(args, summary, export_text(summary, Path(args.out) / "report.md"))
    return 0


def cmd_finalize(args: argparse.Namespace) -> int:
    from search import study as studies
    from search.finalize import Finalizer

    storage = studies.resolve_storage(args.storage)
    study, spec = studies.open_study(args.study, storage)
    finalizer = Finalizer(study, spec, log=_log)
    done = finalizer.run(finalizer.choose(args.trial, args.top), args.epochs)
    text = "\n".join(
        f"trial {f.trial}: validation accuracy {f.val_accuracy:.4f} finalized "
        f"({f.epochs} epochs from learning rate {f.lr:.3g}), "
        f"`edgetune export {args.study} --trial {f.trial}` uses it"
        for f in done
    )
    _emit(args, {"study": args.study, "finalized": [f.as_dict() for f in done]}, text)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    import targets
    from search.budgets import check_spec
    from search.spec import load_spec
    from search.workloads import build_model

    spec = load_spec(args.spec)
    # costs depend on the architecture, not the weights: an untrained model will do
    result = check_spec(spec, targets.get(spec.target), build_model(spec.model).eval())
    out = {"spec": str(args.spec), "valid": True, "target": spec.target, **result.as_dict()}
    _emit(args, out, f"spec {args.spec}: valid; target {spec.target}\n{result.text()}")
    return EXIT_INFEASIBLE if result.broken else 0


def cmd_train(args: argparse.Namespace) -> int:
    from search.train import train_from_spec

    result = train_from_spec(args.spec, epochs=args.epochs, log=_log)
    _emit(
        args,
        result,
        f"teacher: test accuracy {result['test_accuracy']:.4f}, saved to {result['path']}",
    )
    return 0


def cmd_targets(args: argparse.Namespace) -> int:
    from targets import describe_targets

    rows = describe_targets()
    lines = []
    for r in rows:
        f, e = r.get("fidelity") or {}, r.get("energy") or {}
        fid = (
            f"held-out within ±10% {f['within_10pct']:.0%}, Spearman {f['spearman']:.2f} "
            f"(FLOPs baseline {f['flops_baseline']['within_10pct']:.0%}, "
            f"{f['flops_baseline']['spearman']:.2f})"
            if "flops_baseline" in f
            else "not calibrated yet"
        )
        lines.append(
            f"{r['name']}: {r.get('description', '')}\n    {fid}; energy: {e.get('method', '-')}"
            + _kernel_rules_line(f)
        )
    _emit(args, {"targets": rows}, "\n".join(lines))
    return 0


def _kernel_rules_line(fidelity: dict[str, Any]) -> str:
    """How many suite models' kernel lists match onnxruntime's optimized graphs here."""
    k = fidelity.get("kernel_rules")
    if not k:
        return ""
    off = sorted(k["disagree"])
    more = f" (not: {', '.join(off[:5])}{' ...' if len(off) > 5 else ''})" if off else ""
    return (
        f"\n    kernel rules match onnxruntime's optimized graphs on {k['agree']}/{k['models']} "
        f"suite models at NCHWc block {k['nchwc_block']}{more}"
    )


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Emit the suite, calibrate ``host`` here, or fit NAME from a measurements file."""
    from targets import calibrate as cal

    if args.emit_suite:
        paths = cal.emit_suite(args.emit_suite, size=args.suite_size)
        agent = Path(cal.__file__).with_name("agent.py")
        _emit(
            args,
            {"suite_dir": str(args.emit_suite), "models": len(paths), "agent": str(agent)},
            f"wrote {len(paths)} suite models to {args.emit_suite}; copy it and {agent} to the "
            f"device, run `python agent.py {Path(args.emit_suite).name} --out measurements.json`"
            f" there, then `edgetune calibrate NAME --measurements measurements.json`",
        )
        return 0
    if not args.name:
        raise SpecError("calibrate: give a target NAME (or --emit-suite DIR)")
    if args.name == "host" and not args.measurements:
        from targets.host import cache_path, calibrate_host

        target, path = calibrate_host(force=True), cache_path()
    elif not args.measurements:
        raise SpecError(
            f"calibrate {args.name}: --measurements FILE is required (the agent's "
            f".json or a CSV with columns model, latency_ms[, energy_mj])"
        )
    else:
        target, path = cal.calibrate_file(
            args.name,
            args.measurements,
            like=args.like,
            power_w=args.power_w,
            models_dir=args.models,
            holdout=args.holdout,
        )
    f = target.provenance.fidelity
    b = f["flops_baseline"]
    _emit(
        args,
        {"target": target.name, "path": str(path), "fidelity": f},
        f"calibrated {target.name} from {target.provenance.n_measurements} measurements; "
        f"stored in {path}\nheld-out ({f['n_heldout']} rows): within ±10% {f['within_10pct']:.0%}"
        f", Spearman {f['spearman']:.3f}, MdAPE {f['mdape']:.1f}%\nFLOPs baseline: within ±10% "
        f"{b['within_10pct']:.0%}, Spearman {b['spearman']:.3f}, MdAPE {b['mdape']:.1f}%"
        + _kernel_rules_line(f),
    )
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import targets
    from targets import predict_onnx

    target = targets.get(args.target)
    rows = predict_onnx([Path(p) for p in args.models], target)
    if args.json:
        from search.study import dumps

        print(dumps(rows if len(rows) > 1 else rows[0]), file=_OUT, flush=True)
        return 0
    for row in rows:
        rough = row["approximated"]
        print(
            f"{row['model']}: "
            + ", ".join(
                f"{k} {row[k]:.4g}"
                for k in ("latency_ms", "energy_mj", "peak_memory_kb", "size_kb")
            )
            + (
                f" ({len(rough)} layer(s) priced from the bytes they move, no fitted "
                f"coefficients: {', '.join(rough[:5])})"
                if rough
                else ""
            ),
            file=_OUT,
        )
    print(f"energy: {target.energy_label}", file=_OUT)
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    """optuna-dashboard alone, behind the service's token and Host check (see `serve`)."""
    from search import study as studies
    from search.service import ServiceConfig, load_token
    from search.service.files import redacted_errors
    from search.service.server import serve_dashboard
    from search.study import STORAGE_ENV
    from targets.home import edgetune_home

    os.umask(0o077)  # whatever it writes (a new SQLite file) is the operator's alone
    url = args.storage or os.environ.get(STORAGE_ENV) or None
    with redacted_errors(url):
        token, source = load_token(args.host, args.token_file, edgetune_home())
        cfg = ServiceConfig(
            storage=studies.resolve_storage(url),
            home=edgetune_home(),
            token=token,
            host=args.host,
            port=args.port,
            dashboard_port=args.port,
        )
        serve_dashboard(cfg, source, allow_hosts=args.allow_host)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from search import study as studies
    from search.service import Limits, ServiceConfig, load_token, serve
    from search.service.files import redacted_errors
    from search.service.runs import default_max_runs
    from search.study import STORAGE_ENV
    from targets.home import edgetune_home

    os.umask(0o077)  # the token, the records, logs, specs, a new SQLite file: 0600 / 0700
    url = args.storage or os.environ.get(STORAGE_ENV) or None
    with redacted_errors(url):
        token, source = load_token(args.host, args.token_file, edgetune_home())
        data_root = args.data_root.resolve() if args.data_root else None
        if data_root is not None and not data_root.is_dir():
            raise SpecError(
                f"--data-root: {args.data_root} is not a folder; create it or fix the path"
            )
        bounds = {
            key: getattr(args, key)
            for key in ("max_workers", "max_trials", "max_steps", "max_input_elems", "max_classes")
            if getattr(args, key) is not None
        }
        dashboard_port = args.port + 1 if args.dashboard_port is None else args.dashboard_port
        cfg = ServiceConfig(
            storage=studies.resolve_storage(url),
            home=edgetune_home(),
            token=token,
            host=args.host,
            port=args.port,
            dashboard_port=dashboard_port,
            ray_address=args.ray_address,
            allow_modules=tuple(args.allow_module),
            data_root=data_root,
            **bounds,
        )
        limits = Limits(
            max_runs=args.max_runs or default_max_runs(),
            max_queued=args.max_queued or Limits.max_queued,
            max_exports=args.max_exports or Limits.max_exports,
        )
        serve(cfg, source, limits=limits, allow_hosts=args.allow_host)
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "search": cmd_search,
    "resume": cmd_resume,
    "show": cmd_show,
    "export": cmd_export,
    "finalize": cmd_finalize,
    "check": cmd_check,
    "train": cmd_train,
    "targets": cmd_targets,
    "calibrate": cmd_calibrate,
    "dashboard": cmd_dashboard,
    "serve": cmd_serve,
    "predict": cmd_predict,
}


def _quiet_libraries() -> None:
    """Optuna's experimental-feature warnings and INFO logs are noise for a user of edgetune."""
    import warnings

    warnings.filterwarnings("ignore", module="optuna")
    warnings.filterwarnings("ignore", message=".*experimental.*")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def _stop_on_sigterm() -> None:
    """SIGTERM (a service's Stop, a cluster's time limit) ends a run like Ctrl-C: the trials
    running are marked failed and enqueued again, and everything told is kept."""
    import signal

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def main(argv: Sequence[str] | None = None, *, isolate_stdout: bool = True) -> int:
    args = build_parser().parse_args(argv)
    _quiet_libraries()
    _stop_on_sigterm()
    if isolate_stdout:
        _isolate_stdout()
    try:
        code: int = COMMANDS[args.command](args)
        return code
    except InfeasibleSpecError as exc:
        print(f"edgetune: infeasible: {exc}", file=sys.stderr)
        return EXIT_INFEASIBLE
    except (EdgetuneError, SpecError) as exc:
        print(f"edgetune: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(
            "edgetune: interrupted; "
            + (
                "its progress is checkpointed every 30 s. Continue with the same "
                "`edgetune finalize` command."
                if args.command == "finalize"
                else "every trial told so far is stored. Continue with `edgetune resume STUDY`."
            ),
            file=sys.stderr,
        )
        return 130
    except Exception as exc:
        if os.environ.get("EDGETUNE_DEBUG"):
            raise
        print(
            f"edgetune: internal error: {type(exc).__name__}: {exc}. This is a bug; rerun with "
            "EDGETUNE_DEBUG=1 for the traceback and report it.",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
