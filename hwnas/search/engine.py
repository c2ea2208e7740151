"""Run a pymoo algorithm on the predictors and pick the candidates worth evaluating for real.

Problem, algorithm and termination stay apart, as in pymoo's own ``minimize``; algorithms are
looked up by name in :data:`ALGORITHMS`.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.core.callback import Callback
from pymoo.operators.crossover.sbx import SBX
from pymoo.operators.mutation.pm import PM
from pymoo.operators.sampling.rnd import IntegerRandomSampling
from pymoo.optimize import minimize
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

from hwnas.errors import ConfigError
from hwnas.search.problem import CanonicalRepair, SubnetProblem


def _nsga2(space, population: int):
    return NSGA2(pop_size=population, sampling=IntegerRandomSampling(),
                 crossover=SBX(prob_var=0.5, eta=15, vtype=float), mutation=PM(eta=20, vtype=float),
                 repair=CanonicalRepair(space), eliminate_duplicates=True)


ALGORITHMS: dict[str, Callable] = {"nsga2": _nsga2}


class _Progress(Callback):
    def __init__(self, report: Callable[[int], None] | None):
        super().__init__()
        self.report = report

    def notify(self, algorithm):
        if self.report is not None:
            self.report(algorithm.n_gen)


def run_search(problem: SubnetProblem, algorithm: str, population: int, generations: int, seed: int,
               on_generation: Callable[[int], None] | None = None):
    """Return the final population's (X, F, feasible mask)."""
    try:
        factory = ALGORITHMS[algorithm]
    except KeyError:
        raise ConfigError(f"search.algorithm: unknown algorithm {algorithm!r}; known: {sorted(ALGORITHMS)}") from None
    result = minimize(problem, factory(problem.space, population), ("n_gen", generations), seed=seed,
                      callback=_Progress(on_generation), verbose=False, save_history=False)
    pop = result.pop
    X, F = pop.get("X").astype(int), pop.get("F")
    feasible = pop.get("feasible").ravel() if problem.n_ieq_constr else np.ones(len(X), dtype=bool)
    return X, F, feasible


def select_for_evaluation(F: np.ndarray, n: int) -> list[int]:
    """Indices of up to ``n`` rows: the non-dominated ones spread evenly along the first cost
    objective, then the next fronts' if the first has fewer than ``n``."""
    if len(F) == 0:
        return []
    chosen: list[int] = []
    for front in NonDominatedSorting().do(F):
        front = np.asarray(front)
        need = n - len(chosen)
        if need <= 0:
            break
        order = front[np.lexsort(F[front].T[::-1])] if F.shape[1] < 2 else front[np.argsort(F[front, 1])]
        if len(order) > need:
            picks = np.unique(np.round(np.linspace(0, len(order) - 1, need)).astype(int))
            order = order[picks]
        chosen.extend(int(i) for i in order)
    return chosen[:n]
