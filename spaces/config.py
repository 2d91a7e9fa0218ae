"""The search-space section of a spec: which knobs are on and the ranges they search.

These are the validated, frozen models of ``space.quantization``, ``space.pruning`` and
``space.distillation``. They live with the knobs that read them; ``search.spec`` embeds
:class:`Space` in the whole spec and turns their validation errors into field-named messages.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

GRANULARITIES = ("layer", "stage", "model")


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class QuantizationSpace(_Frozen):
    weight_bits: tuple[int, ...] = (4, 6, 8, 32)
    activation_bits: tuple[int, ...] = (8, 32)
    granularity: Literal["layer", "stage", "model"] = "layer"

    @field_validator("weight_bits")
    @classmethod
    def _wbits(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        bad = [b for b in v if not (2 <= b <= 8 or b == 32)]
        if not v or bad:
            raise ValueError(
                f"must be a non-empty list of bits in 2..8 (or 32 for float), got {list(v)}"
            )
        return tuple(sorted(set(v)))

    @field_validator("activation_bits")
    @classmethod
    def _abits(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        bad = [b for b in v if b not in (8, 16, 32)]
        if not v or bad:
            raise ValueError(f"must be a non-empty list of 8, 16 or 32 (float), got {list(v)}")
        return tuple(sorted(set(v)))


class PruningSpace(_Frozen):
    max_ratio: float = Field(default=0.6, ge=0.0, lt=1.0)
    step: float = Field(default=0.1, gt=0.0, le=1.0)
    round_to: int = Field(default=4, ge=1)
    granularity: Literal["layer", "stage", "model"] = "layer"


class FloatRange(_Frozen):
    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> FloatRange:
        if self.high < self.low:
            raise ValueError(f"high must be >= low, got low={self.low}, high={self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0, got low={self.low}")
        return self


def _range(raw: Any, *, log: bool = False) -> Any:
    """``0.5`` (fixed), ``[0.3, 0.9]`` (searched) or ``{low, high, log}``."""
    if isinstance(raw, bool):
        raise ValueError(f"must be a number or [low, high], got {raw!r}")
    if isinstance(raw, int | float):
        return FloatRange(low=float(raw), high=float(raw), log=False)
    if isinstance(raw, list | tuple):
        if len(raw) != 2:
            raise ValueError(f"must be a number or [low, high], got {list(raw)}")
        return FloatRange(low=raw[0], high=raw[1], log=log)
    return raw


class DistillationSpace(_Frozen):
    temperature: FloatRange = FloatRange(low=2.0, high=6.0)
    alpha: FloatRange = FloatRange(low=0.5, high=0.95)
    lr: FloatRange = FloatRange(low=3e-4, high=3e-3, log=True)
    steps: int = Field(default=150, ge=1)
    eval_every: int = Field(default=50, ge=1)
    granularity: Literal["model"] = "model"

    @field_validator("temperature", "alpha", mode="before")
    @classmethod
    def _float_range(cls, v: Any) -> Any:
        return _range(v)

    @field_validator("lr", mode="before")
    @classmethod
    def _log_range(cls, v: Any) -> Any:
        return _range(v, log=True)

    @field_validator("alpha")
    @classmethod
    def _alpha_in_unit(cls, v: FloatRange) -> FloatRange:
        if v.low < 0 or v.high > 1:
            raise ValueError(f"must lie in [0, 1], got [{v.low}, {v.high}]")
        return v

    @field_validator("temperature", "lr")
    @classmethod
    def _positive(cls, v: FloatRange) -> FloatRange:
        if v.low <= 0:
            raise ValueError(f"must be > 0, got {v.low}")
        return v


class Space(_Frozen):
    quantization: QuantizationSpace | None = QuantizationSpace()
    pruning: PruningSpace | None = PruningSpace()
    distillation: DistillationSpace = DistillationSpace()
