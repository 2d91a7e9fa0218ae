"""How the service is configured: where studies live, who may call it, what a spec may name.

Access: every API call carries ``Authorization: Bearer TOKEN``. The token comes from
``EDGETUNE_TOKEN`` or ``--token-file``. Without one, the service binds to loopback only, and then
makes a token itself, kept in ``$EDGETUNE_HOME/service/token`` (mode 0600) so it survives
restarts and only users who can read that file can call the service.

Specs that come over the network are checked before anything else happens
(:func:`network_spec_text`, :func:`network_spec`): the text is parsed within the limits of
:mod:`search.spec_text` (plain types only: no ``!!binary``, dates, sets or python tags; bounded
size, nesting, aliases and values), validated into a :class:`~search.spec.Spec`, and then the
validated spec is checked (:func:`check_spec_allowed`, which the resume path calls too): every
name a spec may import (:func:`search.spec.entry_points`) is a built-in or a
``module:function`` whose module is on the operator's allowlist (``--allow-module``); files
(``model.weights``, ``data.path``, a target file) lie inside ``--data-root``, and a target is a
registered name or a ``.json``/``.yaml`` file there; workers, trials, distillation steps, the
input size and the classes stay within the operator's bounds.
"""

from __future__ import annotations

import hmac
import math
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from search.errors import EdgetuneError, SpecError
from search.spec import (
    BUILTIN_AUGMENT_NAMES,
    BUILTIN_DATA_NAMES,
    BUILTIN_MODEL_NAMES,
    ENTRY_POINT,
    STUDY_NAME,
    Spec,
    entry_points,
    parse_spec,
)
from search.spec_text import check_plain, load_spec_data, quote

LOOPBACK = ("127.0.0.1", "localhost", "::1")
MAX_BODY_BYTES = 256 * 1024
MIN_TOKEN_CHARS = 16
MAX_TRIALS = 500
MAX_STEPS = 20_000
MAX_INPUT_ELEMS = 3 * 224 * 224
MAX_CLASSES = 1000
TARGET_SUFFIXES = (".json", ".yaml", ".yml")
BUILTINS = {
    "model.name": ("model", BUILTIN_MODEL_NAMES),
    "data.name": ("data set", BUILTIN_DATA_NAMES),
    "data.augment": ("augmentation", BUILTIN_AUGMENT_NAMES),
}


def _cores() -> int:
    return os.cpu_count() or 1


class ServiceError(EdgetuneError):
    """The service cannot start as configured (a token, a host, a folder)."""


@dataclass(frozen=True)
class ServiceConfig:
    storage: str
    home: Path
    token: str
    host: str = "127.0.0.1"
    port: int = 8080
    dashboard_port: int | None = None
    ray_address: str | None = None
    allow_modules: tuple[str, ...] = ()
    data_root: Path | None = None
    max_body_bytes: int = MAX_BODY_BYTES
    max_workers: int = field(default_factory=_cores)  # search.workers
    max_trials: int = MAX_TRIALS  # search.trials, and ?trials= of a resume
    max_steps: int = MAX_STEPS  # space.distillation.steps
    max_input_elems: int = MAX_INPUT_ELEMS  # channels x height x width of model.input_shape
    max_classes: int = MAX_CLASSES  # model.num_classes

    def token_ok(self, given: str | None) -> bool:
        """Constant-time comparison of a presented token with the configured one."""
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())


def service_home(edgetune_home: Path) -> Path:
    path = edgetune_home / "service"
    path.mkdir(parents=True, exist_ok=True)
    return path


def load_token(host: str, token_file: Path | None, home: Path) -> tuple[str, str]:
    """The token and where it came from. Generates one only for a loopback-only service."""
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError as exc:
            raise ServiceError(
                f"--token-file: cannot read {token_file} ({exc.strerror}); check the path"
            ) from None
        source = str(token_file)
    elif os.environ.get("EDGETUNE_TOKEN"):
        token, source = os.environ["EDGETUNE_TOKEN"].strip(), "EDGETUNE_TOKEN"
    else:
        if host not in LOOPBACK:
            raise ServiceError(
                f"--host {host}: a service reachable from the network needs a token; set "
                "EDGETUNE_TOKEN or pass --token-file FILE (e.g. `openssl rand -hex 32 > FILE`), "
                "or bind to 127.0.0.1"
            )
        path = service_home(home) / "token"
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(32) + "\n")
        token, source = path.read_text().strip(), str(path)
    if len(token) < MIN_TOKEN_CHARS:
        raise ServiceError(
            f"{source}: the token must be at least {MIN_TOKEN_CHARS} characters, got "
            f"{len(token)}; make one with `openssl rand -hex 32`"
        )
    if token_file is None and source != "EDGETUNE_TOKEN" and Path(source).stat().st_mode & 0o077:
        raise ServiceError(
            f"{source}: the generated token is readable by other users; run `chmod 600 "
            f"{source}` (or delete it to make a new one)"
        )
    return token, source


def check_study_name(name: str, field_name: str = "study") -> str:
    if not STUDY_NAME.match(name):
        raise SpecError(
            f"{field_name}: must be 1-100 letters, digits, '_', '.' or '-', starting with a "
            f"letter or digit, got {name!r}"
        )
    return name


def _module_allowed(module: str, allowlist: tuple[str, ...]) -> bool:
    return any(module == m or module.startswith(m + ".") for m in allowlist)


def check_entry_points(spec: Spec, cfg: ServiceConfig) -> None:
    """Every name the spec may import is a built-in or an allowed ``module:function``."""
    for field_name, value in entry_points(spec).items():
        what, builtins = BUILTINS.get(field_name, ("module:function", ()))
        if ":" not in value:
            if value not in builtins:
                known = f"a built-in {what} ({', '.join(builtins)}) or " if builtins else ""
                raise SpecError(
                    f"{field_name}: unknown {what} {quote(value)}; use {known}module:function "
                    "from a module this service allows"
                )
            continue
        module = value.partition(":")[0]
        if not ENTRY_POINT.match(value):
            raise SpecError(
                f"{field_name}: must be module:function, such as mypkg.models:build, got "
                f"{quote(value)}"
            )
        if not _module_allowed(module, cfg.allow_modules):
            allowed = ", ".join(cfg.allow_modules) or "none"
            raise SpecError(
                f"{field_name}: module {quote(module)} is not on this service's allowlist "
                f"(allowed: {allowed}); use a built-in {what}, or ask the operator to start "
                f"the service with --allow-module {module}"
            )


def _inside_root(value: Any, field_name: str, cfg: ServiceConfig) -> Path | None:
    if value is None:
        return None
    if cfg.data_root is None:
        raise SpecError(
            f"{field_name}: this service takes no file paths in specs, got {quote(str(value))}; "
            "ask the operator to start it with --data-root DIR and name a file inside DIR"
        )
    root = cfg.data_root.resolve()
    path = Path(str(value))
    resolved = (path if path.is_absolute() else root / path).resolve()
    if not resolved.is_relative_to(root):
        raise SpecError(
            f"{field_name}: {quote(str(value))} is outside the service's data folder; name a "
            "file inside it (relative paths are taken from it)"
        )
    return resolved


def check_target(target: str, cfg: ServiceConfig) -> None:
    """A registered target name, or a target file inside the data root (never any other file)."""
    import targets

    known = targets.names()
    if target in known:
        return
    if not target.endswith(TARGET_SUFFIXES):
        raise SpecError(
            f"target: unknown target {quote(target)}; use a registered target "
            f"({', '.join(known)}) or a .json or .yaml target file inside the service's data "
            "folder"
        )
    path = _inside_root(target, "target", cfg)
    if path is not None and cfg.data_root is not None and not path.is_file():
        shown = path.relative_to(cfg.data_root.resolve())  # never the server's own folders
        raise SpecError(
            f"target: no target file {quote(str(shown))} in the service's data folder; check "
            f"the name, or use a registered target ({', '.join(known)})"
        )


def _at_most(value: int, limit: int, field_name: str, flag: str) -> None:
    if value > limit:
        raise SpecError(
            f"{field_name}: must be <= {limit} on this service, got {value}; ask for less, or "
            f"ask the operator to raise serve {flag}"
        )


def check_bounds(spec: Spec, cfg: ServiceConfig, *, trials: int | None = None) -> None:
    """The operator's bounds on what one study may cost."""
    _at_most(spec.search.workers, cfg.max_workers, "search.workers", "--max-workers")
    _at_most(spec.search.trials, cfg.max_trials, "search.trials", "--max-trials")
    if trials is not None:
        _at_most(trials, cfg.max_trials, "trials", "--max-trials")
    steps = spec.space.distillation.steps
    _at_most(steps, cfg.max_steps, "space.distillation.steps", "--max-steps")
    elems = math.prod(spec.model.input_shape)
    if elems > cfg.max_input_elems:
        shape = "x".join(str(d) for d in spec.model.input_shape)
        raise SpecError(
            f"model.input_shape: {shape} is {elems} values per input, over this service's limit "
            f"of {cfg.max_input_elems}; use a smaller input, or ask the operator to raise serve "
            "--max-input-elems"
        )
    _at_most(spec.model.num_classes, cfg.max_classes, "model.num_classes", "--max-classes")


def check_spec_allowed(spec: Spec, cfg: ServiceConfig, *, trials: int | None = None) -> None:
    """Everything a validated spec must satisfy before the service runs it: at submit
    (:func:`network_spec`) and at resume, on the spec stored in the study (``trials``: the
    resume's ``?trials=``). Imports nothing the spec names and reads no file."""
    check_entry_points(spec, cfg)
    _inside_root(spec.model.weights, "model.weights", cfg)
    _inside_root(spec.data.path, "data.path", cfg)
    check_target(spec.target, cfg)
    if spec.search.ray_address not in (None, cfg.ray_address):
        raise SpecError(
            "search.ray_address: the operator sets the Ray cluster (serve --ray-address); "
            "leave it out"
        )
    check_bounds(spec, cfg, trials=trials)


def network_spec(
    raw: Any, cfg: ServiceConfig, *, study: str | None = None, trials: int | None = None
) -> Spec:
    """Validate a spec that came over the network, without importing anything it names."""
    if not isinstance(raw, dict):
        raise SpecError(
            f"spec: must be a mapping of sections (name, model, ...), got {type(raw).__name__}"
        )
    check_plain(raw, "spec", strict=True)
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    search = raw.get("search")
    search = dict(search) if isinstance(search, dict) else ({} if search is None else search)
    if isinstance(search, dict):
        if study is not None:
            search["study"] = check_study_name(study)
        if trials is not None:
            search["trials"] = trials
        raw["search"] = search
    spec = parse_spec(raw, base=cfg.data_root, source="spec")
    if spec.search.storage not in (None, cfg.storage):
        raise SpecError(
            "search.storage: the service keeps studies in its own storage; leave it out"
        )
    check_spec_allowed(spec, cfg)
    return spec


def network_spec_text(
    text: str | bytes,
    cfg: ServiceConfig,
    *,
    as_json: bool = False,
    study: str | None = None,
    trials: int | None = None,
) -> Spec:
    """A spec body from the network (YAML, or JSON when ``as_json``): parsed within the limits
    of :mod:`search.spec_text`, validated and checked as :func:`network_spec` does."""
    raw = load_spec_data(text, source="spec", as_json=as_json)
    return network_spec(raw, cfg, study=study, trials=trials)
