"""Sampling within the feasible region: the study's sampler, its proposals screened on the cost
model before they become trials.

:class:`FeasibleSampler` wraps the sampler the spec names (TPE, NSGA-II, GP, random). Each time
Optuna asks it for a trial's params it draws a whole proposal from the wrapped sampler (params
the wrapped sampler draws one by one, as TPE does in its start-up trials, it asks for one by
one) and hands it on only if ``feasible(params)`` says the cost model predicts it within
budget; else it draws again, up to ``tries`` times (the second half uniformly at random: a
model-based sampler's draws for one trial cluster near its favourite point). If none fits,
``repair`` (the driver's: pruning and bits, :func:`search.repair.repair_pruning`) turns the
last draw into its feasible neighbour, which is handed on instead; failing that, the last draw
is (and the driver rules it out, as before). ``rejected`` counts the draws thrown away,
``repaired`` the repairs. A rejected draw costs one prediction (a few tenths of a second),
never a trial, a worker or a measurement; the sampler still learns from every trial told.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import optuna

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution
    from optuna.trial import FrozenTrial, TrialState


class FeasibleSampler(optuna.samplers.BaseSampler):
    """``base``'s proposals, redrawn while ``feasible(params)`` is False (see the module doc)."""

    def __init__(self, base: optuna.samplers.BaseSampler,
                 feasible: Callable[[dict[str, Any]], bool], *, tries: int = 6,
                 repair: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None,
                 seed: int | None = None) -> None:
        self.base, self.feasible, self.tries, self.repair = base, feasible, tries, repair
        self.rejected = 0
        self.repaired = 0
        self._uniform = optuna.samplers.RandomSampler(seed=seed)
        self._space = optuna.search_space.IntersectionSearchSpace(include_pruned=True)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        """Every param the finished trials share (a whole proposal can be screened), not only
        those the base samples jointly."""
        return {**self._space.calculate(study),
                **self.base.infer_relative_search_space(study, trial)}

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if "fixed_params" in trial.system_attrs:  # an enqueued trial: its params are set
            return self.base.sample_relative(study, trial, search_space)
        params: dict[str, Any] = {}
        for attempt in range(self.tries):
            # the base's draws first; a model-based sampler's repeat near its favourite point,
            # so the second half are uniform draws
            base = self.base if attempt < (self.tries + 1) // 2 else self._uniform
            params = base.sample_relative(study, trial, search_space)
            for name, dist in search_space.items():  # those the base samples on their own
                if name not in params:
                    params[name] = base.sample_independent(study, trial, name, dist)
            if not params or self.feasible(params):
                return params
            self.rejected += 1
        fixed = self.repair(params) if self.repair else None
        if fixed is not None and self.feasible(fixed):
            self.repaired += 1
            return {name: fixed[name] for name in search_space}
        return params

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        return self.base.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.base.before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Any) -> None:
        self.base.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.base.reseed_rng()
        self._uniform.reseed_rng()
