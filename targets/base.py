"""A target: one device plus its runtime, with its calibrated cost model and provenance."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from cost_models.analytic import KernelCostModel
from cost_models.base import CostModel
from cost_models.errors import EdgetuneError, UnsupportedLayerError
from cost_models.graph import FLOAT_BITS, Bits, Costs, LayerGraph, Precision
from cost_models.layerwise import LayerTypeCostModel
from targets.errors import TargetError

__all__ = ["COST_MODELS", "AgentRef", "Provenance", "Target", "target_from_dict", "target_to_dict"]

COST_MODELS: dict[str, type[CostModel]] = {
    "kernel": KernelCostModel,
    "layer-type": LayerTypeCostModel,
}


@dataclass(frozen=True)
class Provenance:
    """Where a target's constants come from."""

    source: str
    n_measurements: int
    date: str
    machine: dict[str, Any] = field(default_factory=dict)
    fidelity: dict[str, Any] = field(default_factory=dict)
    notes: str = ""
    reference_ms: float | None = None  # the agent's reference model's latency at calibration


@dataclass(frozen=True)
class AgentRef:
    """Where a device's agent server listens, and the file that holds its bearer token. The
    token itself is read only when measuring, and never printed or stored elsewhere."""

    url: str
    token_file: str


@dataclass(frozen=True)
class Target:
    """A device and runtime, with the cost model and constants that predict its costs."""

    name: str
    description: str
    runtime: str
    cost_model: CostModel
    constants: Any
    provenance: Provenance
    int8_reduce_range: bool = False
    """8-bit weights use 7 bits (±63): the runtime's u8×s8 kernels saturate otherwise
    (onnxruntime on x86 without VNNI). The quantization knob simulates exactly that."""
    agent: AgentRef | None = None
    """The device's agent server, when it can be reached (see ``targets.measurer``)."""

    def prediction_margin(self) -> float:
        """The held-out median absolute percentage error of this target's latency model, as a
        fraction (0 when it was never measured). The search keeps that much below a latency or
        energy budget, so a winner that is right at the edge still fits on the device."""
        mdape = self.provenance.fidelity.get("mdape") if self.provenance.fidelity else None
        return float(mdape) / 100.0 if isinstance(mdape, int | float) and mdape > 0 else 0.0

    def predict(self, graph: LayerGraph, bits: Bits) -> Costs:
        """The four costs of ``graph`` at ``bits`` on this target. On a device that runs no
        float (int8 only), a layer ``bits`` leaves float runs at the device's precision, as
        its converter quantizes every layer: 8-bit weights, its narrowest activations."""
        if FLOAT_BITS not in self.act_bits:
            act = min(self.act_bits)
            bits = {
                **{
                    la.name: Precision(8 if la.kind in _WEIGHTED else FLOAT_BITS, act)
                    for la in graph.layers
                },
                **bits,
            }
        return self.cost_model.predict(graph, bits, self.constants)

    @property
    def energy_label(self) -> str:
        """How this target's energy figures are made: ``calibrated (...)`` from measured
        energy, or ``modelled (...)`` from published per-operation energies and a power
        figure, with their sources."""
        return str(self.constants.energy_label)

    @cached_property
    def act_bits(self) -> tuple[int, ...]:
        """The activation bit-widths this target's cost model prices (32 is float): a probe
        network of the common layers is priced at each, every layer at that precision (with
        8-bit weights below 32). A device calibrated for int8 only gives ``(8,)``."""
        graph = _probe_graph()
        out = []
        for act in (8, 16, FLOAT_BITS):
            weight = FLOAT_BITS if act == FLOAT_BITS else 8
            bits = {
                la.name: Precision(weight if la.kind in _WEIGHTED else FLOAT_BITS, act)
                for la in graph.layers
            }
            try:
                self.cost_model.predict(graph, bits, self.constants)
            except UnsupportedLayerError:
                continue
            out.append(act)
        return tuple(out)


_WEIGHTED = ("conv", "dwconv", "linear")


def _probe_graph() -> LayerGraph:
    """A 3x3 conv, a 1x1 conv, a residual add, global pooling and a classifier."""
    from cost_models.builder import GraphBuilder

    b = GraphBuilder((1, 8, 16, 16))
    x = b.relu(b.conv("", 16, 3))
    y = b.relu(b.add(b.conv(x, 16, 1), x))
    b.linear(b.gap(y), 10)
    return b.build()


def target_to_dict(target: Target) -> dict[str, Any]:
    p = target.provenance
    return {
        "name": target.name,
        "description": target.description,
        "runtime": target.runtime,
        "int8_reduce_range": target.int8_reduce_range,
        **({"agent": asdict(target.agent)} if target.agent else {}),
        "cost_model": target.cost_model.name,
        "constants": target.cost_model.constants_to_dict(target.constants),
        "provenance": {
            "source": p.source,
            "n_measurements": p.n_measurements,
            "date": p.date,
            "machine": p.machine,
            "fidelity": p.fidelity,
            "notes": p.notes,
            "reference_ms": p.reference_ms,
        },
    }


_KEYS = {"name", "description", "runtime", "cost_model", "constants", "provenance"}
_OPTIONAL_KEYS = {"int8_reduce_range", "agent"}


def target_from_dict(data: dict[str, Any], *, where: str = "target") -> Target:
    """A :class:`Target` from :func:`target_to_dict`'s output; every error names its field."""
    if not isinstance(data, dict):
        raise TargetError(f"{where}: must be a JSON object, got {type(data).__name__}")
    missing, unknown = _KEYS - set(data), set(data) - _KEYS - _OPTIONAL_KEYS
    if missing or unknown:
        raise TargetError(
            f"{where}: keys must be {sorted(_KEYS)}; missing {sorted(missing)}, "
            f"unknown {sorted(unknown)}"
        )
    cm_name = data["cost_model"]
    if cm_name not in COST_MODELS:
        raise TargetError(
            f"{where}.cost_model: unknown cost model {cm_name!r}; valid: {sorted(COST_MODELS)}"
        )
    cm = COST_MODELS[cm_name]()
    try:
        constants = cm.constants_from_dict(data["constants"])
        prov = Provenance(**data["provenance"])
    except (EdgetuneError, TypeError) as exc:
        raise TargetError(f"{where}.constants/provenance: {exc}") from exc
    reduce_range = data.get("int8_reduce_range", False)
    if not isinstance(reduce_range, bool):
        raise TargetError(f"{where}.int8_reduce_range: must be true or false, got {reduce_range!r}")
    return Target(
        str(data["name"]),
        str(data["description"]),
        str(data["runtime"]),
        cm,
        constants,
        prov,
        int8_reduce_range=reduce_range,
        agent=_agent_ref(data.get("agent"), where),
    )


def _agent_ref(raw: Any, where: str) -> AgentRef | None:
    if raw is None:
        return None
    if (
        not isinstance(raw, dict)
        or set(raw) != {"url", "token_file"}
        or not all(isinstance(v, str) and v for v in raw.values())
    ):
        raise TargetError(
            f'{where}.agent: must be {{"url": "http://HOST:PORT", "token_file": '
            f'"PATH"}}, got {str(raw)[:200]}'
        )
    if not raw["url"].startswith(("http://", "https://")):
        raise TargetError(
            f"{where}.agent.url: must start with http:// or https://, got {raw['url'][:200]!r}"
        )
    return AgentRef(raw["url"], raw["token_file"])


def load_target_file(path: str | Path) -> Target:
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TargetError(f"target file {str(p)!r} cannot be read as JSON: {exc}") from exc
    return target_from_dict(data, where=str(p))
