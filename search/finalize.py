"""Finalize: train the chosen candidates longer, on the whole training set.

A trial's fine-tune is short and sees a subset, so that a study can afford many of them; the
winner deserves more. ``finalize`` rebuilds a trial's student with its search-time weights and
goes on with the same distillation and quantization-aware training (the trial's temperature and
alpha, and its learning rate unless the spec's ``finalize.lr`` sets one, with a cosine schedule
over the whole run), for ``epochs`` passes over every training image outside the validation
subset (or the spec's ``finalize.images`` of them; the validation subset stays unseen). Teacher
logits are computed once, in batches.

The spec's ``finalize:`` section (:class:`search.spec.FinalizeSpec`) gives the defaults; with
it, ``search`` finalizes its best feasible trials when it ends (:func:`finalize_at_end`), and
``export`` takes the one finalized to the best validation accuracy. The search's fine-tunes are
too short to rank its students for a long training (underfit, a smaller one can lead), so with
``finalize.shortlist`` the best few by search-time accuracy are first trained a few passes
each, and the best of them by that validation accuracy are finalized; with
``finalize.fastest``, the fastest trials too, so the front's fast end is finalized as well as
its most accurate point (:meth:`Finalizer.choose`).

Progress is checkpointed (student, optimizer, schedule and step) to
``<artifacts>/finalize/<study>-trial<N>.pt`` (``-shortlist.pt`` for a shortlist's run) every
:data:`CHECKPOINT_EVERY_S` seconds and at each epoch's end, so a killed finalize resumes where it
stopped. The result, its weights in the artifact store and its figures in the study's
``finalized`` user attribute, is what ``export`` uses for that trial; a shortlist's results are
in its ``shortlisted`` attribute, which a resumed study or a later finalize reuses.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from search.errors import StudyError
from search.record import TrialRecord
from search.spec import FinalizeSpec, Spec

if TYPE_CHECKING:
    import optuna
    import torch
    from torch import nn

    from search.workloads.objects import Objects
    from spaces.distillation import Images

FINALIZED = "finalized"
"""The study user attribute holding each finalized trial's record, by trial number."""
SHORTLISTED = "shortlisted"
"""The study user attribute holding each shortlisted trial's short finalize, by trial number."""
CHECKPOINT_EVERY_S = 30.0


@dataclass(frozen=True)
class Finalized:
    """One finalized trial: how long it trained, its validation accuracy at the end of the
    search and after finalizing, and the artifact holding its weights."""

    trial: int
    epochs: int
    steps: int
    images: int
    val_accuracy_search: float | None
    val_accuracy: float
    artifact: str
    seconds: float
    lr: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def finalized_records(study: optuna.Study) -> dict[int, dict[str, Any]]:
    """The study's finalized trials (their :meth:`Finalized.as_dict`), by trial number."""
    return _records(study, FINALIZED)


def shortlisted_records(study: optuna.Study) -> dict[int, dict[str, Any]]:
    """The study's shortlisted trials (epochs, validation accuracy, seconds), by trial number."""
    return _records(study, SHORTLISTED)


def _records(study: optuna.Study, attr: str) -> dict[int, dict[str, Any]]:
    return {int(k): dict(v) for k, v in study.user_attrs.get(attr, {}).items()}


def finalize_choice(
    study: optuna.Study, spec: Spec, trials: list[int] | None, top: int | None = None
) -> list[int]:
    """The trials to finalize: ``trials`` when given, else the ``top`` (default: the spec's
    ``finalize.top``) best feasible ones by search-time accuracy."""
    from search.study import best_rows

    if trials:
        return list(dict.fromkeys(trials))
    top = (spec.finalize or FinalizeSpec()).top if top is None else top
    best = [r.trial for r in best_rows(study, spec, limit=top, finalized=False)][:top]
    if not best:
        raise StudyError(
            f"study {study.study_name!r} has no feasible complete trial to finalize; run more "
            "trials (`edgetune resume`) or name one with --trial N"
        )
    return best


def fastest_trials(study: optuna.Study, n: int, *, exclude: list[int]) -> list[int]:
    """The ``n`` complete feasible trials of least latency (measured where it was), but
    ``exclude``: the fast end of the front of accuracy against latency."""
    from search.study import rows

    fast = sorted((r for r in rows(study) if r.status == "complete" and r.feasible
                   and r.trial not in exclude),
                  key=lambda r: (r.costs.get("latency_ms", float("inf")), -(r.accuracy or 0.0)))
    return [r.trial for r in fast[:n]]


def checkpoint_path(study_name: str, trial: int, stage: str = "finalize") -> Path:
    from search.artifacts import artifact_dir

    suffix = "" if stage == "finalize" else f"-{stage}"
    return artifact_dir() / "finalize" / f"{study_name}-trial{trial}{suffix}.pt"


@dataclass(frozen=True)
class _Training:
    """What every finalize of a study trains with: loaded once."""

    teacher: nn.Module
    parts: dict[str, Any]
    x: Images
    y: torch.Tensor
    logits: torch.Tensor


@dataclass(frozen=True)
class _Trained:
    """One trial's student after :meth:`Finalizer._train`."""

    student: nn.Module  # in eval mode
    steps: int
    seconds: float
    val_accuracy: float
    lr: float  # the learning rate it started at


class Finalizer:
    """Chooses and finalizes trials of one study; the teacher, the data and the teacher's
    logits are loaded when first needed, once."""

    def __init__(self, study: optuna.Study, spec: Spec, *, log: Callable[[str], None],
                 progress: bool = True, objects: Objects | None = None) -> None:
        self.study, self.spec, self.log = study, spec, log
        self.progress, self.objects = progress, objects
        self.settings = spec.finalize or FinalizeSpec()
        self._training: _Training | None = None

    def choose(self, trials: list[int] | None = None, top: int | None = None) -> list[int]:
        """``trials`` when given, else the ``top`` best feasible trials (default: the spec's
        ``finalize.top``) and the spec's ``finalize.fastest``. With ``finalize.shortlist`` above
        ``top``, that many are taken by search-time accuracy, each trained
        ``finalize.shortlist_epochs`` passes from its search-time weights, and the ``top`` best
        by that validation accuracy are chosen: successive halving with the fine-tune as the
        resource, as the search's short fine-tunes rank underfit students."""
        if trials:
            return list(dict.fromkeys(trials))
        top = self.settings.top if top is None else top
        chosen = best = finalize_choice(self.study, self.spec, None,
                                        max(top, self.settings.shortlist))
        if len(best) > top:
            scores = self._shortlist(best)
            chosen = sorted(best, key=lambda n: -scores[n])[:top]  # stable: search order on ties
            self.log("shortlist: " + ", ".join(f"trial {n} {scores[n]:.4f}" for n in best)
                     + f" after {self.settings.shortlist_epochs} epochs; finalizing "
                     + ", ".join(f"trial {n}" for n in chosen))
        fast = fastest_trials(self.study, self.settings.fastest, exclude=chosen)
        if fast:
            self.log("finalizing the fastest too: " + ", ".join(f"trial {n}" for n in fast))
        return chosen + fast

    def run(self, trials: list[int], epochs: int | None = None) -> list[Finalized]:
        """Finalize each of ``trials`` (complete trials with stored weights) for ``epochs``
        passes (default: the spec's ``finalize.epochs``) over the training images."""
        import torch

        from search.artifacts import upload
        from search.export import choose_trial

        epochs = self.settings.epochs if epochs is None else epochs
        if epochs < 1:
            raise StudyError(f"--epochs: must be at least 1, got {epochs}")
        chosen = [choose_trial(self.study, self.spec, n) for n in trials]  # all checked first
        done = []
        for trial, record in chosen:
            trained = self._train(trial, record, epochs, "finalize")
            buf = io.BytesIO()
            torch.save(trained.student.state_dict(), buf)
            artifact = upload(self.study, f"trial-{trial.number}-finalized.pt", buf.getvalue())
            result = Finalized(trial.number, epochs, trained.steps, len(self.training.x),
                               record.accuracy, trained.val_accuracy, artifact, trained.seconds,
                               trained.lr)
            self._record(FINALIZED, trial.number, result.as_dict())
            checkpoint_path(self.study.study_name, trial.number).unlink(missing_ok=True)
            self.log(
                f"trial {trial.number}: validation accuracy {_pct(result.val_accuracy_search)} "
                f"at the end of the search, {result.val_accuracy:.4f} finalized "
                f"({result.epochs} epochs, {result.steps} steps, {result.seconds:.0f} s)"
            )
            done.append(result)
        return done

    def at_end(self) -> list[Finalized]:
        """What ``search`` does when it ends, if the spec has a ``finalize:`` section: finalize
        the chosen trials, but for those already finalized for as many epochs (a resumed study
        keeps them, and its shortlist). Nothing if it has none, or no trial is feasible."""
        if self.spec.finalize is None:
            return []
        try:
            best = self.choose()
        except StudyError as exc:
            self.log(f"finalize: {exc}")
            return []
        done = finalized_records(self.study)
        epochs = self.settings.epochs
        kept = [n for n in best if done.get(n, {}).get("epochs") == epochs]
        if kept:
            names = ", ".join(f"trial {n}" for n in kept)
            self.log(f"finalize: {names} finalized already for {epochs} epochs; kept")
        todo = [n for n in best if n not in kept]
        return self.run(todo) if todo else []

    @property
    def training(self) -> _Training:
        if self._training is None:
            from search.workloads import load_data, load_teacher, split, training_images
            from spaces.distillation import teacher_logits

            spec, objects = self.spec, self.objects
            teacher = load_teacher(spec, objects)
            data = load_data(spec.data, spec.model, objects.data if objects else None)
            parts = split(data, spec.data, spec.search.seed)
            x, y = training_images(data, spec.data, spec.search.seed, self.settings.images)
            t = time.perf_counter()
            logits = teacher_logits(teacher, x)
            self.log(f"teacher logits on {len(x)} training images in "
                     f"{time.perf_counter() - t:.1f} s")
            self._training = _Training(teacher, parts, x, y, logits)
        return self._training

    def _shortlist(self, trials: list[int]) -> dict[int, float]:
        """Each trial's validation accuracy after ``finalize.shortlist_epochs`` passes; those
        the study has for as many epochs are not trained again."""
        from search.export import choose_trial

        epochs = self.settings.shortlist_epochs
        stored = shortlisted_records(self.study)
        scores = {n: float(stored[n]["val_accuracy"]) for n in trials
                  if stored.get(n, {}).get("epochs") == epochs}
        for n in trials:
            if n in scores:
                continue
            trial, record = choose_trial(self.study, self.spec, n)
            trained = self._train(trial, record, epochs, "shortlist")
            scores[n], seconds = trained.val_accuracy, trained.seconds
            self._record(SHORTLISTED, n, {"epochs": epochs, "val_accuracy": scores[n],
                                          "seconds": seconds})
            self.log(f"shortlisting trial {n}: validation accuracy {scores[n]:.4f} after "
                     f"{epochs} epochs ({seconds:.0f} s)")
            checkpoint_path(self.study.study_name, n, "shortlist").unlink(missing_ok=True)
        return scores

    def _record(self, attr: str, trial: int, value: dict[str, Any]) -> None:
        records = dict(self.study.user_attrs.get(attr, {}))
        records[str(trial)] = value
        self.study.set_user_attr(attr, records)

    def _train(self, trial: optuna.trial.FrozenTrial, record: TrialRecord, epochs: int,
               stage: str) -> _Trained:
        """The trial's student trained ``epochs`` passes on from its search-time weights,
        checkpointed."""
        import torch

        from search.console import StepBar
        from search.export import rebuild, study_reduce_range
        from search.workloads.augment import resolve_augment
        from spaces.distillation import (
            DistillConfig,
            accuracy,
            augmented_batch,
            channels_last_weights,
            distill_step,
        )

        spec, t = self.spec, self.training
        student = rebuild(
            spec, trial, record, t.teacher, t.parts["x_calib"],
            reduce_range=study_reduce_range(self.study, spec),
        ).model
        assert student is not None
        channels_last_weights(student, t.x)
        kd = record.policy.get("distillation", {})
        batch = spec.data.batch_size
        per_epoch = max(1, len(t.x) // batch)
        total = per_epoch * epochs
        cfg = DistillConfig(temperature=float(kd["temperature"]), alpha=float(kd["alpha"]),
                            lr=self.settings.lr or float(kd["lr"]), steps=total,
                            eval_every=total, batch_size=batch)
        augment = resolve_augment(spec.data, spec.model.input_shape)
        opt = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=cfg.lr)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
        path = checkpoint_path(self.study.study_name, trial.number, stage)
        step, seconds = _resume(path, trial.number, total, student, opt, schedule, self.log)
        doing = {"finalize": "finalizing", "shortlist": "shortlisting"}[stage]
        bar = StepBar(total, enabled=self.progress, label=f"{doing} trial {trial.number}")
        started, saved = time.perf_counter() - seconds, time.perf_counter()
        order, gen = _epoch(len(t.x), spec.search.seed, step // per_epoch)
        while step < total:
            if step % per_epoch == 0:
                order, gen = _epoch(len(t.x), spec.search.seed, step // per_epoch)
            idx = order[(step % per_epoch) * batch : (step % per_epoch + 1) * batch]
            xb, targets = t.x[idx], t.logits[idx]
            if augment is not None:
                xb, targets = augmented_batch(xb, augment, gen, t.teacher)
            step += 1
            loss = distill_step(student, opt, xb, targets, t.y[idx], cfg, step=step,
                                augmented=augment is not None)
            schedule.step()
            bar.update(step, f"epoch {(step - 1) // per_epoch + 1}/{epochs}, loss {loss:.4f}")
            if step % per_epoch == 0 or time.perf_counter() - saved > CHECKPOINT_EVERY_S:
                _save(path, trial.number, total, step, time.perf_counter() - started,
                      student, opt, schedule)
                saved = time.perf_counter()
        bar.close()
        student.eval()
        val = accuracy(student, t.parts["x_val"], t.parts["y_val"])  # within the seconds
        return _Trained(student, total, time.perf_counter() - started, val, cfg.lr)


def finalize_at_end(study: optuna.Study, spec: Spec, *, log: Callable[[str], None],
                    progress: bool = True, objects: Objects | None = None) -> list[Finalized]:
    """:meth:`Finalizer.at_end`: what ``search`` does when it ends."""
    return Finalizer(study, spec, log=log, progress=progress, objects=objects).at_end()


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _epoch(n: int, seed: int, epoch: int) -> tuple[torch.Tensor, torch.Generator]:
    """Epoch ``epoch``'s shuffle and augmentation generator: the same on a resumed run."""
    import torch

    key = seed * 1_000_003 + epoch
    return (torch.randperm(n, generator=torch.Generator().manual_seed(key)),
            torch.Generator().manual_seed(key + 1))


def _save(path: Path, trial: int, total: int, step: int, seconds: float, student: nn.Module,
          opt: torch.optim.Optimizer, schedule: Any) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"trial": trial, "total": total, "step": step, "seconds": seconds,
                "model": student.state_dict(), "opt": opt.state_dict(),
                "schedule": schedule.state_dict()}, tmp)
    tmp.replace(path)  # a kill mid-write leaves the previous checkpoint whole


def _resume(path: Path, trial: int, total: int, student: nn.Module, opt: torch.optim.Optimizer,
            schedule: Any, log: Callable[[str], None]) -> tuple[int, float]:
    """Load the checkpoint of an interrupted run of the same trial and length; (step, seconds)
    it had reached, or (0, 0.0) to start afresh."""
    import torch

    if not path.exists():
        return 0, 0.0
    try:
        state = torch.load(path, weights_only=True)
        if (state["trial"], state["total"]) != (trial, total):
            log(f"{path}: a checkpoint of another run ({state['total']} steps); starting afresh")
            return 0, 0.0
        student.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        schedule.load_state_dict(state["schedule"])
    except Exception as exc:  # a damaged checkpoint costs the progress, never the run
        log(f"{path}: unreadable checkpoint ({type(exc).__name__}); starting afresh")
        return 0, 0.0
    log(f"resuming trial {trial} at step {state['step']} of {total} from {path}")
    return int(state["step"]), float(state["seconds"])
