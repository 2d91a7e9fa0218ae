"""The constraint spec: a YAML file, validated into frozen pydantic models.

``load_spec(path)`` reads YAML (JSON for a ``.json`` file) with the limits and plain types of
:mod:`search.spec_text` and returns a :class:`Spec`. Every section rejects unknown keys, and
every error names its field, as in ``constraints.latency_ms: must be > 0, got -3`` (quoting at
most a couple hundred characters of a bad value). A budget is either absolute (``latency_ms:
0.2``) or relative to the teacher's own predicted cost on the target (``latency_ms: 60%``).
Relative paths in the spec (weights, data folders) are resolved against the spec's folder, so a
spec stored in a study can be resumed from anywhere.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from search.errors import SpecError
from search.spec_text import MAX_QUOTE, MAX_TEXT_BYTES, check_plain, load_spec_data, quote
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
# search.workloads.models, without importing torch
BUILTIN_MODEL_NAMES = ("resnet8", "dscnn", "mobilenetv2", "mobilenetv3", "densenet")
BUILTIN_DATA_NAMES = ("fashion-mnist",)
BUILTIN_AUGMENT_NAMES = ("flip-crop",)  # search.workloads.augment, no torch
MAX_ERRORS = 10
MAX_NAME_CHARS = 1000  # model.name, data.name, data.augment
MAX_PATH_CHARS = 4096  # target (a name or a file): PATH_MAX


class EntryPointField:
    """Marks a spec field that names a built-in or a ``module:function`` to import: every such
    field is listed by :func:`entry_points`, which the service checks against its allowlist."""


ENTRY_POINT_FIELD = EntryPointField()


def _entry_point_name(v: str, builtins: tuple[str, ...]) -> str:
    if ":" in v and not ENTRY_POINT.match(v):
        raise ValueError(
            f"must be a built-in name ({', '.join(builtins)}) or module:function, such as "
            f"mypkg.models:build, got {quote(v)}"
        )
    return v


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
                    f"must be a number or a percentage such as '60%', got {quote(raw)}"
                ) from None
            if not 0 < share:
                raise ValueError(f"must be > 0%, got {quote(raw)}")
            return Budget(value=share, relative=True)
        raise ValueError(f"must be a number or a percentage such as '60%', got {quote(raw)}")
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise ValueError(f"must be a number or a percentage such as '60%', got {quote(raw)}")
    if raw <= 0:
        raise ValueError(f"must be > 0, got {quote(raw)}")
    return Budget(value=float(raw))


class ModelSpec(_Frozen):
    name: Annotated[str, ENTRY_POINT_FIELD] = Field(
        description="a built-in model (resnet8, dscnn, mobilenetv2, mobilenetv3, densenet) or "
        "module:function",
        max_length=MAX_NAME_CHARS,
    )
    weights: Path | None = None
    input_shape: tuple[int, ...] = Field(
        default=(1, 28, 28),
        description="one input without the batch: [channels, height, width], or [channels, "
        "length] for a 1-D network (Conv1d)",
    )
    num_classes: int = Field(default=10, ge=2)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _entry_point_name(v, BUILTIN_MODEL_NAMES)

    @field_validator("input_shape")
    @classmethod
    def _positive_shape(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if len(v) not in (2, 3) or any(d <= 0 for d in v):
            raise ValueError(
                "must be positive sizes [channels, height, width] (or [channels, length] for a "
                f"1-D network), got {list(v)}"
            )
        return v


class DataSpec(_Frozen):
    name: Annotated[str, ENTRY_POINT_FIELD] = Field(
        default="fashion-mnist", max_length=MAX_NAME_CHARS
    )
    path: Path | None = None
    finetune_size: int = Field(default=8000, ge=64)
    val_size: int = Field(default=2000, ge=64)
    calibration_size: int = Field(default=256, ge=16)
    batch_size: int = Field(default=64, ge=1)
    stream: bool | None = Field(
        default=None,
        description="Datasets and DataLoaders: null streams one larger than half the available "
        "memory (images read batch by batch), true streams any, false refuses a large one",
    )
    augment: Annotated[str | None, ENTRY_POINT_FIELD] = Field(
        default=None,
        description="null (none), the built-in flip-crop, or module:function called as "
        "fn(x, generator) on each normalized fine-tune batch",
        max_length=MAX_NAME_CHARS,
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _entry_point_name(v, BUILTIN_DATA_NAMES)

    @field_validator("augment")
    @classmethod
    def _augment(cls, v: str | None) -> str | None:
        if v is not None and v not in BUILTIN_AUGMENT_NAMES and not ENTRY_POINT.match(v):
            raise ValueError(
                f"must be null, a built-in augmentation ({', '.join(BUILTIN_AUGMENT_NAMES)}) "
                f"or module:function, such as mypkg.augment:jitter, got {quote(v)}"
            )
        return v


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
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    ray_address: str | None = None
    stopper: Literal["median", "hyperband", "none"] = "median"
    seed_trials: int = Field(default=3, ge=0)
    feasible_sampling: bool = True
    """Draw proposals within the budgets: each draw the cost model rules out is drawn again
    (and repaired if none fits), and a candidate ruled out gets its feasible neighbour tried
    next. False: the sampler's proposals as drawn, those over budget ruled out and left so
    (plain Optuna, as a baseline)."""
    measure: Literal["auto", "always", "never"] = "auto"
    """Measure candidates on the target's device before training: ``auto`` where the target
    has a measurer (``host``, or a device with an agent server), ``always`` (an error where it
    has none), ``never`` (the cost model alone)."""

    @field_validator("study")
    @classmethod
    def _study_name(cls, v: str | None) -> str | None:
        if v is not None and not STUDY_NAME.match(v):
            raise ValueError(
                "must be 1-100 letters, digits, '_', '.' or '-', starting with a letter or digit, "
                f"got {quote(v)}"
            )
        return v


class FinalizeSpec(_Frozen):
    """Finalize: the chosen candidates trained longer once the search is done (see
    :mod:`search.finalize`). With this section in the spec, ``search`` finalizes its ``top`` best
    feasible trials at the end; ``edgetune finalize`` takes its settings as defaults."""

    epochs: int = Field(default=2, ge=1)
    images: int | None = Field(default=None, ge=64)
    """Training images per epoch: None, every training image outside the validation subset;
    a number, that many drawn from them (the fine-tune subset first)."""
    top: int = Field(default=1, ge=1)
    shortlist: int = Field(default=1, ge=1)
    """Above ``top``: this many of the best by search-time accuracy are trained
    ``shortlist_epochs`` passes first, and the ``top`` best of them by that are finalized."""
    shortlist_epochs: int = Field(default=1, ge=1)
    fastest: int = Field(default=0, ge=0)
    """Beside those: this many of the fastest complete feasible trials, the fast end of the
    front, so that it holds a point well below the budget as well as the most accurate."""
    lr: float | None = Field(default=None, gt=0, le=1)
    """The learning rate the finalize and the shortlist start their cosine schedule at: None,
    each trial's own ``kd.lr``, which the search chose for its short fine-tune; a long run
    gains from a larger one."""


class Spec(_Frozen):
    name: str
    model: ModelSpec
    data: DataSpec = DataSpec()
    target: str = Field(default="host", max_length=MAX_PATH_CHARS)
    constraints: Constraints = Constraints()
    objectives: tuple[
        Literal["accuracy", "latency_ms", "energy_mj", "peak_memory_kb", "size_kb"], ...
    ] = ("accuracy",)
    space: Space = Space()
    search: SearchSpec = SearchSpec()
    finalize: FinalizeSpec | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not STUDY_NAME.match(v):
            raise ValueError(
                "must be 1-100 letters, digits, '_', '.' or '-', starting with a letter or digit, "
                f"got {quote(v)}"
            )
        return v

    @field_validator("objectives", mode="before")
    @classmethod
    def _objectives(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [v]
        if isinstance(v, list | tuple):
            if not all(isinstance(o, str) for o in v):
                raise ValueError(
                    f"must be a list of objective names ({', '.join(OBJECTIVES)}), "
                    f"got {quote(list(v))}"
                )
            if len(set(v)) != len(v):
                raise ValueError(f"must not repeat an objective, got {quote(list(v))}")
            if "accuracy" not in v:
                raise ValueError(f"must include accuracy, got {quote(list(v))}")
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


def entry_points(model: BaseModel, prefix: str = "") -> dict[str, str]:
    """Every field of a validated spec (or section) that names something to import, by field
    path: ``{"model.name": "resnet8", "data.name": "mypkg.data:load"}``. A field is listed
    when it is marked with :data:`ENTRY_POINT_FIELD`, so one added later is listed too; an
    optional one left null (``data.augment``) names nothing to import and is not listed."""
    out: dict[str, str] = {}
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        path = f"{prefix}.{name}" if prefix else name
        if any(isinstance(m, EntryPointField) for m in info.metadata):
            if value is not None:
                out[path] = str(value)
        elif isinstance(value, BaseModel):
            out.update(entry_points(value, path))
        elif isinstance(value, tuple | list):
            for i, item in enumerate(value):
                if isinstance(item, BaseModel):
                    out.update(entry_points(item, f"{path}[{i}]"))
    return out


def _field_path(loc: tuple[int | str, ...]) -> str:
    parts = [p for p in loc if not (isinstance(p, str) and p.startswith("function-"))]
    out = ""
    for p in parts:
        text = str(p)
        if isinstance(p, int) or text.isdigit():
            out += f"[{text}]"
        elif re.fullmatch(r"[\w-]{1,60}", text):
            out += ("." if out else "") + text
        else:  # a key that is not a word (spaces, newlines, a huge string): quoted and cut
            out += ("." if out else "") + quote(text, 60)
    return out or "spec"


def _one_line(text: str, limit: int = 4 * MAX_QUOTE) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def _message(err: dict[str, Any]) -> str:
    msg = str(err["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix) :]
    kind = err.get("type", "")
    got = err.get("input")
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        return "unknown key; check its spelling against the spec reference in README.md"
    if kind == "missing":
        return "required, but missing"
    if isinstance(ctx.get("error"), ValidationError):  # a section built inside a validator
        inner: ValidationError = ctx["error"]
        return "; ".join(f"{_field_path(e['loc'])}: {_message(dict(e))}" for e in inner.errors())
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        op = {
            "greater_than": ">",
            "greater_than_equal": ">=",
            "less_than": "<",
            "less_than_equal": "<=",
        }[kind]
        limit = next(iter(ctx.values()), "?")
        return f"must be {op} {limit}, got {quote(got)}"
    msg = _one_line(msg[:1].lower() + msg[1:])
    if "got" not in msg and not isinstance(got, dict):
        return f"{msg}, got {'null' if got is None else quote(got)}"
    return msg


def spec_error(exc: ValidationError, source: str = "") -> SpecError:
    """Turn pydantic's report into one line, one part per field (at most :data:`MAX_ERRORS`),
    each naming the field and quoting at most a couple hundred characters of the bad value."""
    errors = exc.errors()
    lines = [f"{_field_path(e['loc'])}: {_message(dict(e))}" for e in errors[:MAX_ERRORS]]
    if len(errors) > MAX_ERRORS:
        lines.append(f"and {len(errors) - MAX_ERRORS} more errors")
    prefix = f"{source}: " if source else ""
    return SpecError(_one_line(prefix + "; ".join(lines), limit=MAX_ERRORS * 4 * MAX_QUOTE))


def _resolved(value: str, base: Path, field_name: str) -> str:
    try:
        p = Path(value).expanduser()
    except RuntimeError:  # ~user with no such user
        raise SpecError(
            f"{field_name}: cannot expand {quote(value)} (no such user's home); give the path"
        ) from None
    return str(p if p.is_absolute() else (base / p).resolve())


def _resolve_paths(raw: dict[str, Any], base: Path) -> None:
    for section, key in (("model", "weights"), ("data", "path")):
        sec = raw.get(section)
        if isinstance(sec, dict) and isinstance(sec.get(key), str):
            sec[key] = _resolved(sec[key], base, f"{section}.{key}")
    target = raw.get("target")
    if isinstance(target, str) and target.endswith((".yaml", ".yml", ".json")):
        raw["target"] = _resolved(target, base, "target")


def parse_spec(raw: Any, *, base: Path | None = None, source: str = "") -> Spec:
    """Validate an already-parsed mapping (from YAML, JSON or a study) into a Spec."""
    if not isinstance(raw, dict):
        raise SpecError(
            f"{source or 'spec'}: must be a mapping of sections (name, model, ...), "
            f"got {type(raw).__name__}"
        )
    check_plain(raw, source or "spec")
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    if base is not None:
        _resolve_paths(raw, base)
    try:
        return Spec.model_validate(raw)
    except ValidationError as exc:
        raise spec_error(exc, source) from None


def load_spec(path: str | Path) -> Spec:
    """Read and validate a YAML spec file (JSON if it is named ``*.json``)."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            text = f.read(MAX_TEXT_BYTES + 1)  # enough to tell that it is too long
    except OSError as exc:
        raise SpecError(f"{p}: cannot read the spec ({exc.strerror}); check the path") from None
    data = load_spec_data(text, source=str(p), as_json=p.suffix == ".json")
    return parse_spec(data, base=p.resolve().parent, source=str(p))


def parse_spec_text(
    text: str | bytes, *, base: Path | None = None, source: str = "spec", as_json: bool = False
) -> Spec:
    """Validate spec text (YAML, or JSON when ``as_json``) within the limits of
    :mod:`search.spec_text`: plain types only, bounded size, depth, aliases and values."""
    return parse_spec(
        load_spec_data(text, source=source, as_json=as_json), base=base, source=source
    )


def spec_to_json(spec: Spec) -> dict[str, Any]:
    """A plain dict that :func:`parse_spec` turns back into the same spec."""
    data = spec.model_dump(mode="json")
    for key, budget in spec.constraints.budgets().items():
        data["constraints"][key] = f"{budget.value * 100!r}%" if budget.relative else budget.value
    return data
