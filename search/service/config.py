"""How the service is configured: where studies live, who may call it, what a spec may name.

Access: every API call carries ``Authorization: Bearer TOKEN``. The token comes from
``EDGETUNE_TOKEN`` or ``--token-file``. Without one, the service binds to loopback only, and then
makes a token itself, kept in ``$EDGETUNE_HOME/service/token`` (mode 0600) so it survives
restarts and only users who can read that file can call the service.

Specs that come over the network are checked before anything else happens: a ``module:function``
model or data set must be on the operator's allowlist (``--allow-module``), and files
(``model.weights``, ``data.path``, a target file) must lie inside ``--data-root``.
"""

from __future__ import annotations

import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search.errors import EdgetuneError, SpecError
from search.spec import STUDY_NAME, Spec, parse_spec

LOOPBACK = ("127.0.0.1", "localhost", "::1")
MAX_BODY_BYTES = 256 * 1024
MIN_TOKEN_CHARS = 16


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
        return path.read_text().strip(), str(path)
    if len(token) < MIN_TOKEN_CHARS:
        raise ServiceError(
            f"{source}: the token must be at least {MIN_TOKEN_CHARS} characters, got "
            f"{len(token)}; make one with `openssl rand -hex 32`"
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


def _check_entry_points(raw: dict[str, Any], cfg: ServiceConfig) -> None:
    for section, what in (("model", "model"), ("data", "data set")):
        sec = raw.get(section)
        name = sec.get("name") if isinstance(sec, dict) else None
        if isinstance(name, str) and ":" in name:
            module = name.partition(":")[0]
            if not _module_allowed(module, cfg.allow_modules):
                allowed = ", ".join(cfg.allow_modules) or "none"
                raise SpecError(
                    f"{section}.name: module {module!r} is not on this service's allowlist "
                    f"(allowed: {allowed}); use a built-in {what}, or ask the operator to start "
                    f"the service with --allow-module {module}"
                )


def _inside_root(value: Any, field_name: str, cfg: ServiceConfig) -> None:
    if value is None:
        return
    if cfg.data_root is None:
        raise SpecError(
            f"{field_name}: this service takes no file paths in specs, got {str(value)!r}; ask "
            "the operator to start it with --data-root DIR and name a file inside DIR"
        )
    root = cfg.data_root.resolve()
    path = Path(str(value))
    resolved = (path if path.is_absolute() else root / path).resolve()
    if not resolved.is_relative_to(root):
        raise SpecError(
            f"{field_name}: {str(value)!r} is outside the service's data folder; name a file "
            f"inside it (relative paths are taken from it)"
        )


def network_spec(
    raw: Any, cfg: ServiceConfig, *, study: str | None = None, trials: int | None = None
) -> Spec:
    """Validate a spec that came over the network, without importing anything it names."""
    if not isinstance(raw, dict):
        raise SpecError(
            f"spec: must be a mapping of sections (name, model, ...), got {type(raw).__name__}"
        )
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    _check_entry_points(raw, cfg)
    search = raw.get("search")
    search = dict(search) if isinstance(search, dict) else ({} if search is None else search)
    if isinstance(search, dict):
        if search.get("storage") not in (None, cfg.storage):
            raise SpecError(
                "search.storage: the service keeps studies in its own storage; leave it out"
            )
        if search.get("ray_address") is not None:
            raise SpecError(
                "search.ray_address: the operator sets the Ray cluster (serve --ray-address); "
                "leave it out"
            )
        if study is not None:
            search["study"] = check_study_name(study)
        if trials is not None:
            search["trials"] = trials
        raw["search"] = search
    spec = parse_spec(raw, base=cfg.data_root, source="spec")
    _inside_root(spec.model.weights, "model.weights", cfg)
    _inside_root(spec.data.path, "data.path", cfg)
    if spec.target.endswith((".yaml", ".yml", ".json")) or "/" in spec.target:
        _inside_root(spec.target, "target", cfg)
    return spec
