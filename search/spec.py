"""The constraint spec: a YAML file, validated into frozen pydantic models.

``load_spec(path)`` reads YAML with ``yaml.safe_load`` and returns a :class:`Spec`. Every
section rejects unknown keys, and every error names its field, as in
``constraints.latency_ms: must be > 0, got -3``. A budget is either absolute (``latency_ms:
0.2``) or relative to the teacher's own predicted cost on the target (``latency_ms: 60%``).
Relative paths in the spec (weights, data folders) are resolved against the spec's folder, so a
spec stored in a study can be resumed from anywhere.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from search.errors import SpecError
from spaces.config import (
    Space,
)

COST_KEYS = ("latency_ms", "energy_mj", "peak_memory_kb", "size_kb")
OBJECTIVES = ("accuracy", *COST_KEYS)
SAMPLERS = ("tpe", "nsga2", "random", "gp")
STOPPERS = ("median", "hyperband", "none")
EXECUTORS = ("ray", "process")
STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
ENTRY_POINT = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Budget(_Frozen):
    """A hard limit: an absolute value in the key's unit, or a share of the teacher's cost
    (resolved to an absolute value by ``search.budgets.Budgets.resolve``)."""

    value: float
    relative: bool = False

    def __str__(self) -> str:
        return f"{self.value * 100:g}% of the teacher" if self.relative else f"{self.value:g}"


def _parse_budget(raw: Any) -> Any:
    if isinstance(raw, Budget | dict):
        return raw
    if isinstance(raw, str):
        text = raw.strip()
        if text.endswith("%"):
            try:
                share = float(text[:-1]) / 100.0
            except ValueError:
                raise ValueError(
                    f"must be a number or a percentage such as '60%', got {raw!r}"
                ) from None
            if not 0 < share:
                raise ValueError(f"must be > 0%, got {raw!r}")
            return Budget(value=share, relative=True)
        raise ValueError(f"must be a number or a percentage such as '60%', got {raw!r}")
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise ValueError(f"must be a number or a percentage such as '60%', got {raw!r}")
    if raw <= 0:
        raise ValueError(f"must be > 0, got {raw!r}")
    return Budget(value=float(raw))


class ModelSpec(_Frozen):
    name: str = Field(
        description="a built-in model (resnet8, dscnn, mobilenetv2) or module:function"
    )
    weights: Path | None = None
    input_shape: tuple[int, int, int] = (1, 28, 28)
    num_classes: int = Field(default=10, ge=2)

    @field_validator("input_shape")
    @classmethod
    def _positive_shape(cls, v: tuple[int, int, int]) -> tuple[int, int, int]:
        if any(d <= 0 for d in v):
            raise ValueError(
                f"must be three positive sizes [channels, height, width], got {list(v)}"
            )
        return v


class DataSpec(_Frozen):
    name: str = "fashion-mnist"
    path: Path | None = None
    finetune_size: int = Field(default=8000, ge=64)
    val_size: int = Field(default=2000, ge=64)
    calibration_size: int = Field(default=256, ge=16)
    batch_size: int = Field(default=64, ge=1)


class Constraints(_Frozen):
    latency_ms: Budget | None = None
    energy_mj: Budget | None = None
    peak_memory_kb: Budget | None = None
    size_kb: Budget | None = None
    max_accuracy_drop: float | None = Field(default=None, ge=0.0, le=1.0)

    @field_validator("latency_ms", "energy_mj", "peak_memory_kb", "size_kb", mode="before")
    @classmethod
    def _budget(cls, v: Any) -> Any:
        return None if v is None else _parse_budget(v)

    def budgets(self) -> dict[str, Budget]:
        return {k: b for k in COST_KEYS if (b := getattr(self, k)) is not None}


class SearchSpec(_Frozen):
    sampler: Literal["tpe", "nsga2", "random", "gp"] = "tpe"
    trials: int = Field(default=20, ge=1)
    timeout: float | None = Field(default=None, gt=0)
    workers: int = Field(default=1, ge=1)
    executor: Literal["ray", "process"] = "ray"
    storage: str | None = None
    study: str | None = None
    seed: int = 0
    ray_address: str | None = None
    stopper: Literal["median", "hyperband", "none"] = "median"
    seed_trials: int = Field(default=3, ge=0)

    @field_validator("study")
    @classmethod
    def _study_name(cls, v: str | None) -> str | None:
        if v is not None and not STUDY_NAME.match(v):
            raise ValueError(
                "must be 1-100 letters, digits, '_', '.' or '-', starting with a letter or digit, "
                f"got {v!r}"
            )
        return v


class Spec(_Frozen):
    name: str
    model: ModelSpec
    data: DataSpec = DataSpec()
    target: str = "host"
    constraints: Constraints = Constraints()
    objectives: tuple[
        Literal["accuracy", "latency_ms", "energy_mj", "peak_memory_kb", "size_kb"], ...
    ] = ("accuracy",)
    space: Space = Space()
    search: SearchSpec = SearchSpec()

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not STUDY_NAME.match(v):
            raise ValueError(
                "must be 1-100 letters, digits, '_', '.' or '-', starting with a letter or digit, "
                f"got {v!r}"
            )
        return v

    @field_validator("objectives", mode="before")
    @classmethod
    def _objectives(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [v]
        if isinstance(v, list | tuple):
            if len(set(v)) != len(v):
                raise ValueError(f"must not repeat an objective, got {list(v)}")
            if "accuracy" not in v:
                raise ValueError(f"must include accuracy, got {list(v)}")
        return v

    @model_validator(mode="after")
    def _sampler_fits(self) -> Spec:
        if self.space.quantization is None and self.space.pruning is None:
            raise ValueError("space: enable at least one of quantization and pruning")
        return self

    @property
    def study_name(self) -> str:
        return self.search.study or self.name

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1


def _field_path(loc: tuple[int | str, ...]) -> str:
    parts = [str(p) for p in loc if not (isinstance(p, str) and p.startswith("function-"))]
    out = ""
    for p in parts:
        if p.isdigit():
            out += f"[{p}]"
        else:
            out += ("." if out else "") + p
    return out or "spec"


def _message(err: dict[str, Any]) -> str:
    msg = str(err["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix) :]
    kind = err.get("type", "")
    got = err.get("input")
    if kind == "extra_forbidden":
        return "unknown key; check its spelling against the spec reference in README.md"
    if kind == "missing":
        return "required, but missing"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        ctx = err.get("ctx", {})
        op = {
            "greater_than": ">",
            "greater_than_equal": ">=",
            "less_than": "<",
            "less_than_equal": "<=",
        }[kind]
        limit = next(iter(ctx.values()), "?")
        return f"must be {op} {limit}, got {got!r}"
    if kind == "literal_error":
        return f"{msg[0].lower()}{msg[1:]}, got {got!r}"
    if "got" not in msg and got is not None and not isinstance(got, dict):
        return f"{msg[0].lower()}{msg[1:]}, got {got!r}"
    return msg


def spec_error(exc: ValidationError, source: str = "") -> SpecError:
    """Turn pydantic's report into one line per field, each naming the field."""
    lines = [f"{_field_path(e['loc'])}: {_message(dict(e))}" for e in exc.errors()]
    prefix = f"{source}: " if source else ""
    return SpecError(prefix + "; ".join(lines))


def _resolve_paths(raw: dict[str, Any], base: Path) -> None:
    for section, key in (("model", "weights"), ("data", "path")):
        sec = raw.get(section)
        if isinstance(sec, dict) and isinstance(sec.get(key), str):
            p = Path(sec[key]).expanduser()
            sec[key] = str(p if p.is_absolute() else (base / p).resolve())
    target = raw.get("target")
    if isinstance(target, str) and target.endswith((".yaml", ".yml", ".json")):
        p = Path(target).expanduser()
        raw["target"] = str(p if p.is_absolute() else (base / p).resolve())


def parse_spec(raw: Any, *, base: Path | None = None, source: str = "") -> Spec:
    """Validate an already-parsed mapping (from YAML, JSON or a study) into a Spec."""
    if not isinstance(raw, dict):
        raise SpecError(
            f"{source or 'spec'}: must be a mapping of sections (name, model, ...), "
            f"got {type(raw).__name__}"
        )
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    if base is not None:
        _resolve_paths(raw, base)
    try:
        return Spec.model_validate(raw)
    except ValidationError as exc:
        raise spec_error(exc, source) from None


def load_spec(path: str | Path) -> Spec:
    """Read and validate a YAML spec file."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise SpecError(f"{p}: cannot read the spec ({exc.strerror}); check the path") from None
    return parse_spec_text(text, base=p.resolve().parent, source=str(p))


def parse_spec_text(text: str, *, base: Path | None = None, source: str = "spec") -> Spec:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise SpecError(f"{source}: {problem}{where}; fix the YAML syntax") from None
    return parse_spec(raw, base=base, source=source)


def spec_to_json(spec: Spec) -> dict[str, Any]:
    """A plain dict that :func:`parse_spec` turns back into the same spec."""
    data = spec.model_dump(mode="json")
    for key, budget in spec.constraints.budgets().items():
        data["constraints"][key] = f"{budget.value * 100!r}%" if budget.relative else budget.value
    return data
