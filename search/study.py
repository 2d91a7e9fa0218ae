"""Opening, creating and reading studies. The spec lives in the study itself.

What edgetune stores on a study and its trials is written and read by :mod:`search.record`;
this module opens storages and studies, and turns the records into the rows and summaries the
reports, the export and the service show.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from search.errors import StudyError
from search.finalize import finalized_records, shortlisted_records
from search.record import STATUSES, StudyRecord, TrialRecord
from search.spec import Spec, parse_spec
from search.workloads.objects import needs_objects

if TYPE_CHECKING:
    import optuna
    from optuna.study import StudyDirection

def default_storage() -> str:
    from targets.home import edgetune_home

    path = edgetune_home() / "studies.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


STORAGE_ENV = "EDGETUNE_STORAGE"
"""The storage URL when ``--storage`` is absent (the service passes it to its runs this way)."""


def resolve_storage(url: str | None) -> str:
    """The storage URL: as given, else ``$EDGETUNE_STORAGE`` (how the service hands a URL with
    a password to its runs, off the command line), else the default SQLite file. Rejects
    unknown schemes."""
    if url is None:
        url = os.environ.get(STORAGE_ENV) or None
    if url is None:
        return default_storage()
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///") :]).expanduser().resolve().parent.mkdir(
            parents=True, exist_ok=True
        )
        return url
    if url.startswith(("postgresql://", "postgresql+psycopg2://", "postgresql+psycopg://")):
        return url
    raise StudyError(
        f"--storage: unsupported storage URL {url!r}; use sqlite:///PATH "
        "or postgresql://USER@HOST/DB"
    )


HEARTBEAT_S = int(os.environ.get("EDGETUNE_HEARTBEAT_S", "5"))
GRACE_S = int(os.environ.get("EDGETUNE_GRACE_S", "20"))


def storage_for(url: str) -> optuna.storages.RDBStorage:
    """The study storage, with heartbeats: a trial whose driver stopped beating for
    ``GRACE_S`` seconds is marked failed and its parameters are enqueued again (once)."""
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        engine_kwargs["connect_args"] = {"timeout": 60}
    try:
        return RDBStorage(
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=HEARTBEAT_S,
            grace_period=GRACE_S,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
        )
    except Exception as exc:
        raise StudyError(
            f"cannot open storage {url} ({type(exc).__name__}: {str(exc)[:300]}); check the URL, "
            "that the server runs and that the user may connect"
        ) from None


def sampler_for(spec: Spec) -> optuna.samplers.BaseSampler:
    """The sampler the spec names, honouring constraints set with ``trial.set_constraint``."""
    import optuna

    seed = spec.search.seed
    name = spec.search.sampler
    if name == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed,
            constant_liar=True,
            multivariate=True,
            n_startup_trials=min(10, max(2, spec.search.trials // 3)),
        )
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(
            seed=seed, population_size=max(4, min(20, spec.search.trials // 3))
        )
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def stopper_for(spec: Spec) -> optuna.pruners.BasePruner:
    """Optuna's trial stopper (Optuna calls it a pruner; here pruning means removing channels)."""
    import optuna

    if spec.multi_objective or spec.search.stopper == "none":
        return optuna.pruners.NopPruner()
    if spec.search.stopper == "hyperband":
        steps = spec.space.distillation.steps
        return optuna.pruners.HyperbandPruner(
            min_resource=spec.space.distillation.eval_every, max_resource=steps
        )
    return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0)


def directions(spec: Spec) -> list[StudyDirection]:
    from optuna.study import StudyDirection

    return [
        StudyDirection.MAXIMIZE if o == "accuracy" else StudyDirection.MINIMIZE
        for o in spec.objectives
    ]


def create(spec: Spec, url: str, name: str) -> optuna.Study:
    import optuna

    from search.spec import spec_to_json

    storage = storage_for(url)
    require_new(storage, url, name)
    study = optuna.create_study(
        storage=storage,
        study_name=name,
        directions=directions(spec),
        sampler=sampler_for(spec),
        pruner=stopper_for(spec),
    )
    StudyRecord(spec_to_json(spec)).write(study)
    return study


def require_new(storage: optuna.storages.BaseStorage, url: str, name: str) -> None:
    """StudyError if ``name`` is taken in the storage (checked before a search loads anything,
    and again when it creates the study)."""
    if name in _study_names(storage, url):
        raise StudyError(
            f"study {name!r} already exists in {url}; continue it with "
            f"`edgetune resume {name}`, or pass --study NEW_NAME"
        )


def _study_names(storage: optuna.storages.BaseStorage, url: str) -> list[str]:
    try:
        return [s.study_name for s in storage.get_all_studies()]
    except Exception as exc:
        raise StudyError(
            f"cannot read storage {url} ({type(exc).__name__}: {str(exc)[:300]})"
        ) from None


def load(storage: optuna.storages.BaseStorage, name: str, where: str) -> tuple[optuna.Study, Spec]:
    """A study of ``storage`` and the spec stored in it, with its sampler and stopper rebuilt.
    ``where`` names the storage in errors."""
    import optuna

    names = _study_names(storage, where)
    if name not in names:
        hint = f"studies there: {', '.join(sorted(names))}" if names else "it holds no studies"
        raise StudyError(f"no study {name!r} in {where}; {hint}")
    record = StudyRecord.read(optuna.load_study(study_name=name, storage=storage))
    if record is None:
        raise StudyError(f"study {name!r} has no edgetune spec stored; it was not made by edgetune")
    spec = parse_spec(dict(record.spec), source=f"study {name}")
    study = optuna.load_study(
        study_name=name, storage=storage, sampler=sampler_for(spec), pruner=stopper_for(spec)
    )
    return study, spec


def open_study(name: str, url: str) -> tuple[optuna.Study, Spec]:
    """Open the storage at ``url`` and load a study and its spec from it."""
    return load(storage_for(url), name, url)


@dataclass(frozen=True)
class Row:
    """One trial, as the reports show it."""

    trial: int
    status: str
    accuracy: float | None
    costs: dict[str, float]
    feasible: bool
    params: dict[str, Any]
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "trial": self.trial,
            "status": self.status,
            "accuracy": self.accuracy,
            **self.costs,
            "feasible": self.feasible,
            "params": self.params,
        }


def rows(study: optuna.Study) -> list[Row]:
    """Every finished trial of the study (running and waiting ones are left out)."""
    out = []
    for t in study.get_trials(deepcopy=False):
        record = TrialRecord.read(t)
        if record is not None:
            out.append(
                Row(
                    t.number,
                    record.status,
                    record.accuracy,
                    record.scored,
                    record.feasible,
                    dict(t.params),
                    record.reason,
                )
            )
    return out


def best_rows(
    study: optuna.Study, spec: Spec, limit: int = 5, *, finalized: bool = True
) -> list[Row]:
    """The best feasible trials: the Pareto front for several objectives, else by accuracy.

    A finalized trial ranks by its finalized validation accuracy, the accuracy of the weights
    ``export`` uses; with ``finalized=False`` every trial ranks by its search-time accuracy, as
    the choice of what to finalize does (those accuracies come from the same fine-tune)."""
    final = (
        {n: float(f["val_accuracy"]) for n, f in finalized_records(study).items()}
        if finalized
        else {}
    )

    def accuracy(r: Row) -> float:
        return final.get(r.trial, r.accuracy or 0.0)

    candidates = [r for r in rows(study) if r.feasible and r.accuracy is not None]
    if not spec.multi_objective:
        return sorted(
            candidates, key=lambda r: (-accuracy(r), r.costs.get("latency_ms", 0.0))
        )[:limit]

    def vec(r: Row) -> list[float]:
        return [
            -accuracy(r) if o == "accuracy" else r.costs.get(o, math.inf)
            for o in spec.objectives
        ]

    front = [
        r
        for r in candidates
        if not any(
            all(a <= b for a, b in zip(vec(o), vec(r), strict=True)) and vec(o) != vec(r)
            for o in candidates
        )
    ]
    return sorted(front, key=lambda r: -accuracy(r))


def latency_fidelity(study: optuna.Study) -> dict[str, Any] | None:
    """How well the target's cost model predicted the latency the study measured: MdAPE, share
    within ±10% and Spearman ρ over every measured candidate, and over the earlier and the
    later half (by trial number). Each prediction was made before its candidate was measured,
    so the error is prequential. None when fewer than two candidates were measured."""
    from cost_models import fidelity

    pairs = [
        (float(r.predicted["latency_ms"]), float(r.measured["latency_ms"]))
        for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
        if (r := TrialRecord.read(t)) is not None
        and "latency_ms" in r.measured
        and "latency_ms" in r.predicted
    ]
    if len(pairs) < 2:
        return None

    def fid(part: list[tuple[float, float]]) -> dict[str, float] | None:
        if len(part) < 2:
            return None
        return fidelity([p for p, _ in part], [m for _, m in part])

    half = len(pairs) // 2
    return {"all": fid(pairs), "early": fid(pairs[:half]), "late": fid(pairs[half:])}


def summary(study: optuna.Study, spec: Spec, storage: str) -> dict[str, Any]:
    """The JSON that ``search``, ``resume`` and ``show`` print."""
    all_rows = rows(study)
    record = StudyRecord.read(study)
    states = {s: sum(1 for r in all_rows if r.status == s) for s in STATUSES}
    return {
        "study": study.study_name,
        "storage": storage,
        "target": spec.target,
        "objectives": list(spec.objectives),
        "n_trials": len(all_rows),
        "requested_trials": spec.search.trials,
        # what `trials` counts: trained to the end or stopped early (not ruled out by the cost
        # model, which costs no training, and not failed, which is run again)
        "trained": states["complete"] + states["stopped"],
        "states": states,
        "budgets": dict(record.budgets) if record else {},
        "teacher": dict(record.teacher) if record else {},
        "best": [r.as_dict() for r in best_rows(study, spec)],
        "latency_fidelity": latency_fidelity(study),
        # model or data given as Python objects: every run of the study needs them again
        "needs_objects": needs_objects(record.spec) if record else [],
        "shortlisted": {str(k): v for k, v in shortlisted_records(study).items()},
        "finalized": {str(k): v for k, v in finalized_records(study).items()},
    }


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=False, default=str)
