"""The command line's arguments: the parser, the types that validate flags, and the spec with
the flags that override it applied.

Each command's handler lives in :mod:`search.cli`, keyed by the command's name.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from search.spec import Spec


def _positive_int(flag: str) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {raw!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
        return value

    parse.__name__ = flag
    return parse


def _positive_float(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {raw!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def _study_name(raw: str) -> str:
    from search.spec import STUDY_NAME

    if not STUDY_NAME.match(raw):
        raise argparse.ArgumentTypeError(
            f"must be 1-100 letters, digits, '_', '.' or '-', starting with a letter or digit, got {raw!r}"
        )
    return raw


def _access_flags(p: argparse.ArgumentParser) -> None:
    """Who may call a server: its token, and the Host names it answers (``serve`` and
    ``dashboard`` alike)."""
    p.add_argument("--token-file", type=Path, help="file holding the bearer token")
    p.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME[:PORT]",
        help="a Host name to answer besides the bound address (repeatable), e.g. a proxy's",
    )


def _setting(text: str) -> tuple[tuple[str, ...], object]:
    """``section.field=value`` -> (("section", "field"), value read as YAML)."""
    import yaml

    key, sep, value = text.partition("=")
    path = tuple(key.strip().split("."))
    if not sep or not all(path):
        raise argparse.ArgumentTypeError(
            f"expected KEY=VALUE with a dotted spec field, e.g. constraints.latency_ms=50%, "
            f"got {text!r}"
        )
    try:
        return path, yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        raise argparse.ArgumentTypeError(f"{key}: the value {value!r} is not YAML") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgetune", description="Joint compression search for edge devices."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--json", action="store_true", help="print one JSON object")
        return p

    p = add("search", "Start a study for a spec and run its trials.")
    p.add_argument("spec", type=Path)
    p.add_argument("--trials", type=_positive_int("--trials"))
    p.add_argument("--timeout", type=_positive_float, help="seconds; no new trials after it")
    p.add_argument("--workers", type=_positive_int("--workers"))
    p.add_argument(
        "--storage", help="sqlite:///PATH (default .edgetune/studies.db) or postgresql://..."
    )
    p.add_argument("--study", type=_study_name, help="study name (default: the spec's name)")
    p.add_argument("--ray-address", dest="ray_address")
    p.add_argument("--executor", choices=("ray", "process"))
    p.add_argument("--set", dest="sets", action="append", type=_setting, metavar="KEY=VALUE",
                   help="set a spec field, e.g. --set constraints.latency_ms=50%% (repeatable; "
                   "VALUE is read as YAML)")

    p = add("resume", "Continue a study with the spec stored in it.")
    p.add_argument("study", type=_study_name)
    p.add_argument("--storage")
    p.add_argument("--trials", type=_positive_int("--trials"), help="run N more trials")
    p.add_argument("--workers", type=_positive_int("--workers"))
    p.add_argument("--timeout", type=_positive_float)
    p.add_argument("--ray-address", dest="ray_address")

    p = add("show", "Show a study's trial counts and best candidates.")
    p.add_argument("study", type=_study_name)
    p.add_argument("--storage")

    p = add("export", "Export a trial (default: the best feasible) to QDQ ONNX, measured.")
    p.add_argument("study", type=_study_name)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--storage")
    p.add_argument("--trial", type=int)

    p = add(
        "finalize",
        "Train the best feasible trial (or --trial N, or the --top K) longer; export uses it.",
    )
    p.add_argument("study", type=_study_name)
    p.add_argument("--storage")
    p.add_argument("--trial", type=int, action="append", help="a trial to finalize (repeatable)")
    p.add_argument("--top", type=_positive_int("--top"),
                   help="without --trial: the K best feasible trials (default: the spec's "
                   "finalize.top, else 1), chosen by the spec's finalize.shortlist if it has one")
    p.add_argument("--epochs", type=_positive_int("--epochs"),
                   help="passes over the training images (default: the spec's finalize.epochs, "
                   "else 2)")

    p = add("check", "Validate a spec and say whether its budgets can be met at all.")
    p.add_argument("spec", type=Path)

    p = add("train", "Train and cache the teacher a spec names.")
    p.add_argument("spec", type=Path)
    p.add_argument("--epochs", type=_positive_int("--epochs"), default=4)

    add("targets", "List the targets with their calibration and fidelity.")

    p = add(
        "calibrate",
        "Calibrate a target: `host` here, NAME from measurements, or emit the suite.",
    )
    p.add_argument("name", nargs="?", help="host, or the target to create or refit")
    p.add_argument("--measurements", type=Path, help="the agent's .json or a model,latency_ms CSV")
    p.add_argument("--like", help="a new target starts from this target's cost model and power")
    p.add_argument(
        "--power-w",
        dest="power_w",
        type=_positive_float,
        help="device power (W) for energy = power x latency",
    )
    p.add_argument("--models", type=Path, help="folder of the ONNX files the agent measured")
    p.add_argument("--holdout", type=float, default=0.25, help="share of rows held out")
    p.add_argument(
        "--emit-suite",
        dest="emit_suite",
        type=Path,
        metavar="DIR",
        help="write the micro-benchmark suite's ONNX models to DIR and stop",
    )
    p.add_argument("--suite-size", dest="suite_size", choices=("full", "small"), default="full")

    p = add("dashboard", "Serve optuna-dashboard on the study storage, behind a token.")
    p.add_argument("--storage", help="default: $EDGETUNE_STORAGE, else .edgetune/studies.db")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8089)
    _access_flags(p)

    p = add("serve", "Serve the HTTP API and web page: submit, watch, stop, resume.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--storage", help="default: $EDGETUNE_STORAGE, else .edgetune/studies.db")
    p.add_argument("--ray-address", dest="ray_address")
    _access_flags(p)
    p.add_argument(
        "--allow-module",
        action="append",
        default=[],
        metavar="MODULE",
        help="a module specs may name as module:function (repeatable)",
    )
    p.add_argument("--data-root", type=Path, help="folder specs may name files in")
    p.add_argument(
        "--dashboard-port",
        type=int,
        help="optuna-dashboard's port (default PORT+1; 0 turns it off)",
    )
    for flag, what in (
        ("--max-runs", "studies running at once; more wait in a queue (default: 1 per 2 cores)"),
        ("--max-queued", "studies waiting in the queue (default 16)"),
        ("--max-exports", "exports running at once, one per study (default 2)"),
        ("--max-workers", "a spec's search.workers (default: the cores)"),
        ("--max-trials", "a spec's search.trials and a resume's trials (default 500)"),
        ("--max-steps", "a spec's space.distillation.steps (default 20000)"),
        ("--max-input-elems", "values per model input, C x H x W (default 150528)"),
        ("--max-classes", "a spec's model.num_classes (default 1000)"),
    ):
        p.add_argument(flag, type=_positive_int(flag), metavar="N", help=what)

    p = add("predict", "Predict latency, energy, peak memory and size of ONNX models.")
    p.add_argument("models", nargs="+")
    p.add_argument("--target", required=True)
    return parser


def spec_with_overrides(spec: Spec, args: argparse.Namespace) -> Spec:
    """The spec with the command line's --set and --trials/--timeout/--workers/... applied
    (validated)."""
    from search.errors import SpecError
    from search.spec import parse_spec, spec_to_json

    raw = spec_to_json(spec)
    for path, value in getattr(args, "sets", None) or ():
        section = raw
        for i, key in enumerate(path[:-1]):
            if section.get(key) is None:  # an absent or null section: set its defaults
                section[key] = {}
            section = section[key]
            if not isinstance(section, dict):
                raise SpecError(f"--set {'.'.join(path)}: {'.'.join(path[: i + 1])} is not a "
                                "section of the spec; name a field inside a section")
        section[path[-1]] = value
    for flag, key in (
        ("trials", "trials"),
        ("timeout", "timeout"),
        ("workers", "workers"),
        ("storage", "storage"),
        ("study", "study"),
        ("ray_address", "ray_address"),
        ("executor", "executor"),
    ):
        value = getattr(args, flag, None)
        if value is not None:
            raw["search"][key] = value
    return parse_spec(raw, source="command line")
