"""Search algorithms over integer encodings, and the choice of candidates worth evaluating for real.

Every algorithm takes a pymoo :class:`~pymoo.core.problem.Problem` whose ``_evaluate`` scores a
whole population at once, and returns the final candidates' ``(X, F, feasible)``:

- ``nsga2`` (default) and ``nsga3`` (reference directions; for three or more objectives), from
  pymoo, with operators made for categorical choices: uniform sampling of each dimension's
  choices, uniform crossover, and a mutation that resets a dimension to a *different* choice
  (real-valued SBX / polynomial mutation on choice indices assume an order that kernel sizes or
  operator types do not have). :class:`~hwnas.search.problem.CanonicalRepair` rewrites inactive
  dimensions, so encodings of one subnet are one individual and duplicate elimination removes them.
- ``random``: as many uniform random encodings as the others evaluate; a baseline.
- ``optuna-nsga2`` and ``optuna-tpe``: optuna's samplers, asking one trial at a time; baselines.

Budgets are constraints (``G <= 0`` feasible), so an impossible budget ends with no feasible
candidate and the caller says so; nothing loops.
"""
from __future__ import annotations

import logging
from typing import Callable

import numpy as np
import optuna
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.algorithms.moo.nsga3 import NSGA3
from pymoo.core.callback import Callback
from pymoo.core.mutation import Mutation
from pymoo.core.sampling import Sampling
from pymoo.operators.crossover.ux import UX
from pymoo.optimize import minimize
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting
from pymoo.util.ref_dirs import get_reference_directions

from hwnas.errors import ConfigError
from hwnas.search.problem import CanonicalRepair


class ChoiceSampling(Sampling):
    """Each dimension's index drawn uniformly from its choices (from pymoo's seeded random state),
    after any ``seeds``: encodings to start from, such as the real front of earlier rounds."""

    def __init__(self, seeds: np.ndarray | None = None):
        super().__init__()
        self.seeds = None if seeds is None or len(seeds) == 0 else np.asarray(seeds, dtype=float)

    def _do(self, problem, n_samples, *args, random_state=None, **kwargs):
        upper = problem.xu.astype(int)
        X = np.column_stack([random_state.integers(0, u + 1, n_samples) for u in upper]).astype(float)
        if self.seeds is not None:
            k = min(len(self.seeds), n_samples)
            X[:k] = self.seeds[:k]
        return X


class ChoiceMutation(Mutation):
    """Each dimension, with probability ``1 / n_dims`` (at least one per individual on average),
    moves to a different choice drawn uniformly from the others."""

    def _do(self, problem, X, *args, random_state=None, **kwargs):
        X = np.asarray(X, dtype=float).copy()
        upper = problem.xu.astype(int)
        n, d = X.shape
        hit = random_state.random((n, d)) < 1.0 / d
        for j in np.flatnonzero(upper > 0):
            rows = np.flatnonzero(hit[:, j])
            if rows.size:
                shift = random_state.integers(1, upper[j] + 1, rows.size)  # never the current choice
                X[rows, j] = (X[rows, j].astype(int) + shift) % (upper[j] + 1)
        return X


def _nsga2(problem, population: int, seeds=None):
    return NSGA2(pop_size=population, sampling=ChoiceSampling(seeds), crossover=UX(), mutation=ChoiceMutation(),
                 repair=CanonicalRepair(problem.space), eliminate_duplicates=True)


def _nsga3(problem, population: int, seeds=None):
    n_obj = problem.n_obj
    partitions = {2: population - 1, 3: 12, 4: 7, 5: 5}.get(n_obj, 4)
    ref_dirs = get_reference_directions("das-dennis", n_obj, n_partitions=partitions)
    return NSGA3(ref_dirs=ref_dirs, pop_size=max(population, len(ref_dirs)), sampling=ChoiceSampling(seeds),
                 crossover=UX(), mutation=ChoiceMutation(), repair=CanonicalRepair(problem.space),
                 eliminate_duplicates=True)


PYMOO_ALGORITHMS: dict[str, Callable] = {"nsga2": _nsga2, "nsga3": _nsga3}
ALGORITHMS = (*PYMOO_ALGORITHMS, "random", "optuna-nsga2", "optuna-tpe")


class _Progress(Callback):
    def __init__(self, report: Callable[[int], None] | None):
        super().__init__()
        self.report = report

    def notify(self, algorithm):
        if self.report is not None:
            self.report(algorithm.n_gen)


def evaluate_population(problem, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(F, feasible) of encodings ``X`` under ``problem``, in one vectorized call."""
    out: dict = {}
    problem._evaluate(X, out)
    feasible = (out["G"] <= 0).all(axis=1) if problem.n_ieq_constr else np.ones(len(X), dtype=bool)
    return np.asarray(out["F"], dtype=float), feasible


def run_search(problem, algorithm: str, population: int, generations: int, seed: int | list[int],
               on_generation: Callable[[int], None] | None = None, seeds: np.ndarray | None = None):
    """Return the final candidates' (X, F, feasible mask); ``seed`` may be a list (e.g. [seed, round]).
    ``seeds`` (encodings) start the pymoo algorithms' first population."""
    if algorithm not in ALGORITHMS:
        raise ConfigError(f"search.algorithm: unknown algorithm {algorithm!r}; known: {list(ALGORITHMS)}")
    seed_int = int(np.random.SeedSequence(seed).generate_state(1)[0] % (2**31))
    if algorithm == "random":
        return _random_search(problem, population * generations, seed_int, on_generation, generations)
    if algorithm.startswith("optuna-"):
        return _optuna_search(problem, algorithm, population, generations, seed_int, on_generation)
    result = minimize(problem, PYMOO_ALGORITHMS[algorithm](problem, population, seeds), ("n_gen", generations),
                      seed=seed_int, callback=_Progress(on_generation), verbose=False, save_history=False)
    pop = result.pop
    X, F = pop.get("X").astype(int), pop.get("F")
    feasible = (pop.get("CV").ravel() <= 0) if problem.n_ieq_constr else np.ones(len(X), dtype=bool)
    return X, F, feasible


def _random_search(problem, n: int, seed: int, on_generation, generations: int):
    rng = np.random.default_rng(seed)
    upper = problem.xu.astype(int)
    X = np.column_stack([rng.integers(0, u + 1, n) for u in upper])
    X = CanonicalRepair(problem.space)._do(problem, X).astype(int)
    X = np.unique(X, axis=0)
    F, feasible = evaluate_population(problem, X)
    if on_generation is not None:
        on_generation(generations)
    return X, F, feasible


def _optuna_search(problem, algorithm: str, population: int, generations: int, seed: int, on_generation):
    optuna.logging.set_verbosity(logging.WARNING)
    sampler = (optuna.samplers.NSGAIISampler(population_size=population, seed=seed)
               if algorithm == "optuna-nsga2" else optuna.samplers.TPESampler(seed=seed, multivariate=True))
    study = optuna.create_study(directions=["minimize"] * problem.n_obj, sampler=sampler)
    names = problem.space.names
    upper = problem.xu.astype(int)
    rows, values, feasible = [], [], []
    for i in range(population * generations):
        trial = study.ask()
        x = np.array([trial.suggest_int(n, 0, int(u)) for n, u in zip(names, upper)])
        F, ok = evaluate_population(problem, x[None, :])
        study.tell(trial, list(F[0]) if ok[0] else [float("inf")] * problem.n_obj)
        rows.append(x), values.append(F[0]), feasible.append(bool(ok[0]))
        if on_generation is not None and (i + 1) % population == 0:
            on_generation((i + 1) // population)
    return np.array(rows), np.array(values), np.array(feasible)


def select_for_evaluation(F: np.ndarray, n: int, exclude: np.ndarray | None = None) -> list[int]:
    """Indices of up to ``n`` rows: the non-dominated ones spread evenly along the first cost
    objective, then the next fronts' if the first has fewer than ``n``. Rows flagged in
    ``exclude`` (already evaluated) are never chosen but still shape the fronts."""
    if len(F) == 0 or n <= 0:
        return []
    skip = np.zeros(len(F), dtype=bool) if exclude is None else np.asarray(exclude, dtype=bool)
    chosen: list[int] = []
    for front in NonDominatedSorting().do(F):
        front = np.asarray([i for i in front if not skip[i]], dtype=int)
        need = n - len(chosen)
        if need <= 0:
            break
        if front.size == 0:
            continue
        order = front[np.lexsort(F[front].T[::-1])] if F.shape[1] < 2 else front[np.argsort(F[front, 1], kind="stable")]
        if len(order) > need:
            picks = np.unique(np.round(np.linspace(0, len(order) - 1, need)).astype(int))
            order = order[picks]
        chosen.extend(int(i) for i in order)
    return chosen[:n]
