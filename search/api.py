"""edgetune from Python: ``search``, ``resume``, ``show`` and ``export``, as the CLI has them.

A spec is given as a dict, a path to a YAML or JSON file, or a :class:`~search.spec.Spec`. The
model and the data may be given as objects instead of names in the spec: ``model`` is the
trained teacher (an ``nn.Module``, its weights included) and ``data`` anything a ``data.name``
loader may return (``(train, test)`` Datasets or DataLoaders, or a dict of tensors). The study
then records ``model.name`` (or ``data.name``) as ``python-object``, and every later run of it
(``resume``, ``export``) needs the same objects again; ``edgetune show`` says so. On Ray the
objects travel to the workers pickled, so their classes must be importable there (defined at
module level, in a module on the workers' ``PYTHONPATH``, or in the script that runs).

Every function returns typed results (:class:`Study`, :class:`Candidate`, :class:`Exported`)
and raises :class:`~search.errors.EdgetuneError` subclasses with one-line messages on bad input.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from search.errors import SpecError, StudyError
from search.finalize import Finalized
from search.workloads.objects import OBJECT, Objects

if TYPE_CHECKING:
    from torch import nn

    from search.spec import Spec

__all__ = [
    "Candidate", "Exported", "Finalized", "Study", "export", "finalize", "resume", "search", "show",
]

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    """The default log: say nothing (pass ``log=print`` to follow a run)."""


@dataclass(frozen=True)
class Exported:
    """An exported candidate: the folder and its files, and what the export measured."""

    out: Path
    onnx: Path
    report: Path
    summary: Mapping[str, Any]

    @property
    def accuracy(self) -> float:
        """Test accuracy of ``model.onnx`` in onnxruntime."""
        return float(self.summary["accuracy_onnx"])

    @property
    def latency_ms_measured(self) -> float | None:
        """Latency measured on the target's device (None where it cannot be reached)."""
        value = self.summary.get("latency_ms_measured")
        return None if value is None else float(value)

    @property
    def latency_ms_predicted(self) -> float:
        return float(self.summary["latency_ms_predicted"])


@dataclass(frozen=True)
class Candidate:
    """One trial of a study: validation accuracy during the search, its scored costs (measured
    latency where it was measured), feasibility, sampled params and per-layer policy."""

    trial: int
    accuracy: float | None
    costs: Mapping[str, float]
    feasible: bool
    params: Mapping[str, Any]
    policy: Mapping[str, Any]
    study: Study = field(repr=False)

    def export(self, out: str | Path, *, log: Log = _quiet) -> Exported:
        """Write ``model.onnx``, ``report.md`` and ``summary.json`` of this candidate into the
        new folder ``out``, measuring its test accuracy and latency."""
        return self.study.export(out, trial=self.trial, log=log)

    def finalize(self, epochs: int | None = None, *, log: Log = _quiet) -> Finalized:
        """Train this candidate longer (see :func:`finalize`); its export then uses it."""
        (done,) = self.study.finalize([self.trial], epochs=epochs, log=log)
        return done


@dataclass(frozen=True)
class Study:
    """A study as ``edgetune show`` reports it, plus the objects it was run with."""

    name: str
    storage: str
    spec: Spec
    summary: Mapping[str, Any]
    objects: Objects = field(default=Objects(), repr=False)

    @property
    def trained(self) -> int:
        """Trials trained to the end or stopped early (what ``search.trials`` counts)."""
        return int(self.summary["trained"])

    @property
    def teacher(self) -> Mapping[str, float]:
        return dict(self.summary["teacher"])

    @property
    def budgets(self) -> Mapping[str, float]:
        return dict(self.summary["budgets"])

    def front(self) -> list[Candidate]:
        """The best feasible candidates: the Pareto front for several objectives, else the
        most accurate ones, best first (as ``edgetune show`` lists them)."""
        from search import study as studies
        from search.record import TrialRecord

        optuna_study, _ = studies.open_study(self.name, self.storage)
        trials = {t.number: t for t in optuna_study.get_trials(deepcopy=False)}
        out = []
        for row in studies.best_rows(optuna_study, self.spec):
            record = TrialRecord.read(trials[row.trial])
            policy = dict(record.policy) if record else {}
            out.append(Candidate(
                row.trial, row.accuracy, row.costs, row.feasible, row.params, policy, self
            ))
        return out

    def best(self) -> Candidate:
        """The best feasible candidate; StudyError when the study has none yet."""
        front = self.front()
        if not front:
            raise StudyError(
                f"study {self.name!r} has no feasible trained candidate yet; run more trials "
                "(Study.resume(trials=N)) or loosen the budgets"
            )
        return front[0]

    def resume(self, trials: int | None = None, *, log: Log = _quiet) -> Study:
        """Run the study on: to the trials its spec asked for, or ``trials`` more."""
        return resume(self.name, storage=self.storage, trials=trials, log=log,
                      model=self.objects.model, data=self.objects.data)

    def finalize(self, trials: list[int] | None = None, *, top: int | None = None,
                 epochs: int | None = None, log: Log = _quiet) -> list[Finalized]:
        """Train ``trials`` (default: the ``top`` best feasible) longer; see :func:`finalize`."""
        return finalize(self.name, trials=trials, top=top, epochs=epochs, storage=self.storage,
                        log=log, model=self.objects.model, data=self.objects.data)

    def export(self, out: str | Path, *, trial: int | None = None, log: Log = _quiet) -> Exported:
        """Export the best feasible candidate (or trial ``trial``) into the new folder ``out``."""
        return export(self.name, out, trial=trial, storage=self.storage, log=log,
                      model=self.objects.model, data=self.objects.data)


def _spec_of(spec: Spec | Mapping[str, Any] | str | Path, objects: Objects, **search: Any) -> Spec:
    """The validated spec, with model/data names set to :data:`OBJECT` where objects are given
    and the ``search`` section's overrides (None: keep the spec's) applied."""
    from search.spec import Spec as SpecModel
    from search.spec import load_spec, parse_spec, spec_to_json

    if isinstance(spec, str | Path):
        spec = load_spec(spec)
    if isinstance(spec, SpecModel):
        raw: dict[str, Any] = spec_to_json(spec)
        base = None
    elif isinstance(spec, Mapping):
        raw = {k: dict(v) if isinstance(v, Mapping) else v for k, v in spec.items()}
        base = Path.cwd()
    else:
        raise SpecError(f"spec: expected a dict, a path or a Spec, got {type(spec).__name__}")
    def merge(key: str, updates: Mapping[str, Any]) -> None:
        section = raw.get(key)
        raw[key] = {**(section if isinstance(section, Mapping) else {}), **updates}

    if objects.model is not None:
        merge("model", {"name": OBJECT})
    if objects.data is not None:
        merge("data", {"name": OBJECT})
    merge("search", {k: v for k, v in search.items() if v is not None})
    return parse_spec(raw, base=base, source="spec")


def _objects(model: nn.Module | None, data: Any) -> Objects:
    from torch import nn

    if model is not None and not isinstance(model, nn.Module):
        raise SpecError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    return Objects(model, data)


def _run(spec: Spec, storage: str, prepare: Callable[[Any], tuple[Any, Any]],
         target_done: int, timeout_s: float | None, objects: Objects, log: Log) -> Study:
    """Run the study (:func:`search.driver.run_study`); its summary."""
    from search import study as studies
    from search.driver import run_study

    study = run_study(spec, storage, prepare, target_done=target_done, timeout_s=timeout_s,
                      log=log, progress=False, objects=objects)
    return Study(study.study_name, storage, spec, studies.summary(study, spec, storage), objects)


def search(
    spec: Spec | Mapping[str, Any] | str | Path,
    *,
    model: nn.Module | None = None,
    data: Any = None,
    storage: str | None = None,
    study: str | None = None,
    trials: int | None = None,
    workers: int | None = None,
    executor: str | None = None,
    timeout_s: float | None = None,
    log: Log = _quiet,
) -> Study:
    """Start a study for ``spec`` and run it to its trials, as ``edgetune search`` does.

    ``model`` and ``data``, when given, replace the spec's ``model.name`` and ``data.name``
    (the spec's input shape, class count, sizes and budgets still apply). ``storage`` is an
    SQLAlchemy URL (default: ``.edgetune/studies.db``); the other keywords override the spec's
    ``search`` section."""
    from search import study as studies
    from search.lifecycle import start_study

    objects = _objects(model, data)
    parsed = _spec_of(spec, objects, storage=storage, study=study, trials=trials,
                      workers=workers, executor=executor, timeout=timeout_s)
    url = studies.resolve_storage(parsed.search.storage)
    return _run(
        parsed, url,
        lambda executor: start_study(parsed, url, parsed.study_name, log=log, objects=objects,
                                     executor=executor),
        parsed.search.trials, parsed.search.timeout, objects, log,
    )


def resume(
    study: str,
    *,
    model: nn.Module | None = None,
    data: Any = None,
    storage: str | None = None,
    trials: int | None = None,
    timeout_s: float | None = None,
    log: Log = _quiet,
) -> Study:
    """Continue a study with its stored spec, as ``edgetune resume`` does: until it has the
    trials its spec asked for, or ``trials`` more. A study started from objects needs them."""
    from search import study as studies
    from search.driver import trained_count
    from search.lifecycle import ensure_trials_left, resume_prepared

    url = studies.resolve_storage(storage)
    optuna_study, spec = studies.open_study(study, url)
    done = trained_count(optuna_study)
    target_done = done + trials if trials else spec.search.trials
    ensure_trials_left(done, target_done, study)
    objects = _objects(model, data)
    return _run(
        spec, url,
        lambda executor: (optuna_study, resume_prepared(optuna_study, spec, log=log,
                                                        objects=objects, executor=executor)),
        target_done, timeout_s, objects, log,
    )


def show(study: str, *, storage: str | None = None) -> Study:
    """A study's trial counts, teacher, budgets and best candidates, as ``edgetune show``."""
    from search import study as studies

    url = studies.resolve_storage(storage)
    optuna_study, spec = studies.open_study(study, url)
    return Study(study, url, spec, studies.summary(optuna_study, spec, url))


def export(
    study: str,
    out: str | Path,
    *,
    trial: int | None = None,
    model: nn.Module | None = None,
    data: Any = None,
    storage: str | None = None,
    log: Log = _quiet,
) -> Exported:
    """Export the best feasible candidate (or trial ``trial``) into the new folder ``out``,
    as ``edgetune export`` does. A study started from objects needs them."""
    from search import study as studies
    from search.export import export_trial

    url = studies.resolve_storage(storage)
    optuna_study, spec = studies.open_study(study, url)
    folder = Path(out)
    summary = export_trial(optuna_study, spec, folder, number=trial, log=log,
                           objects=_objects(model, data))
    return Exported(folder, folder / "model.onnx", folder / "report.md", summary)


def finalize(
    study: str,
    *,
    trials: list[int] | None = None,
    top: int | None = None,
    epochs: int | None = None,
    model: nn.Module | None = None,
    data: Any = None,
    storage: str | None = None,
    log: Log = _quiet,
) -> list[Finalized]:
    """Train ``trials`` (default: the ``top`` best feasible) for ``epochs`` more passes over the
    training images, as ``edgetune finalize`` does (defaults: the spec's ``finalize:``
    section): checkpointed, so a killed run resumes; ``export`` then uses the finalized
    weights. A study started from objects needs them."""
    from search import study as studies
    from search.finalize import Finalizer

    url = studies.resolve_storage(storage)
    optuna_study, spec = studies.open_study(study, url)
    finalizer = Finalizer(optuna_study, spec, log=log, progress=False,
                          objects=_objects(model, data))
    return finalizer.run(finalizer.choose(trials, top), epochs)
