"""Predictor in the loop: search on predictors, evaluate a batch for real, refit, repeat.

Each round ``r``:

1. the caller builds the round's problem from its predictors refitted on every real evaluation of
   rounds ``< r`` (so a round depends only on earlier rounds, and replaying it after a kill picks
   the same batch);
2. the search (``algorithm``, seeded with ``[seed, r]``) finds the predicted front;
3. a batch is chosen on and near that front (the search starts from the real front of earlier
   rounds, so it refines what is known to be good), spread along the first cost objective, by an
   optimistic score (predicted value minus ``uncertainty_weight`` x the predictor's standard
   deviation, for objectives that are minimized) that favours subnets the predictor is unsure
   about, never one already evaluated;
4. the caller evaluates the batch for real and commits each result as it finishes;
5. the hypervolume of the real front is recomputed; the loop stops when it has not grown by more
   than ``tolerance`` (relative) for ``patience`` rounds, when the budget of real evaluations is
   spent, or when the predicted front holds nothing new.

The front a user sees is made of really evaluated candidates only.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, ContextManager, Sequence

import numpy as np
from pymoo.indicators.hv import HV
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

from hwnas.errors import NoCandidateError
from hwnas.search.engine import run_search, select_for_evaluation
from hwnas.spaces.dims import Arch


def hypervolume(F: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    """Hypervolume of minimization points ``F`` scaled to [0, 1] by ``lower`` / ``upper`` (the
    reference point is ``upper``; points beyond it add nothing)."""
    F = np.asarray(F, dtype=float)
    if F.size == 0:
        return 0.0
    span = np.where(np.asarray(upper) > np.asarray(lower), np.asarray(upper) - np.asarray(lower), 1.0)
    scaled = (F - lower) / span
    inside = (scaled < 1.0).all(axis=1)
    if not inside.any():
        return 0.0
    return float(HV(ref_point=np.ones(F.shape[1]))(scaled[inside]))


@dataclass
class LoopSettings:
    budget: int                    # real evaluations in all (including any before round 0)
    batch: int                     # real evaluations per round
    algorithm: str = "nsga2"
    population: int = 64
    generations: int = 40
    seed: int = 0
    patience: int = 2              # rounds without hypervolume growth before stopping
    tolerance: float = 1e-3        # relative growth that counts
    uncertainty_weight: float = 1.0


@dataclass
class LoopState:
    rounds: list[dict] = field(default_factory=list)
    stopped: str = ""


def run_loop(settings: LoopSettings, make_problem: Callable[[int], object],
             done: Callable[[int | None], tuple[list[Arch], np.ndarray]],
             evaluate: Callable[[list[Arch], int], None], bounds: tuple[np.ndarray, np.ndarray],
             first_round: int = 0, extra_picks: Callable[[int, object], list[Arch]] | None = None,
             on_round: Callable[[dict], None] | None = None,
             searching: Callable[[int], ContextManager[Callable[[int], None]]] | None = None) -> LoopState:
    """Run rounds until a stop rule holds (see the module docstring).

    ``done(r)`` returns the really evaluated (archs, minimization rows) of rounds ``< r`` (all of
    them for ``None``); ``make_problem(r)`` the round's problem (with ``space`` and, if it has
    uncertainty, ``uncertainty(X)`` giving per-objective standard deviations); ``evaluate(archs, r)``
    evaluates and commits them (skipping any already stored); ``extra_picks(r, problem)`` may add
    archs to a round's batch (the space's extremes, as anchors). ``searching(r)``, if given, is a
    context around round ``r``'s search yielding the generation callback (a progress bar).
    """
    state, best, stale = LoopState(), -1.0, 0
    r = first_round
    while True:
        archs_before, real_before = done(r)
        left = settings.budget - len(archs_before)
        if left <= 0:
            state.stopped = "budget spent"
            break
        problem = make_problem(r)
        seeds = _front_first(problem, archs_before, real_before, settings.population // 2)
        with searching(r) if searching is not None else nullcontext() as generation_done:
            X, F, feasible = run_search(problem, settings.algorithm, settings.population, settings.generations,
                                        [settings.seed, r], generation_done, seeds=seeds)
        if not feasible.any():
            if r == first_round:
                raise NoCandidateError("no subnet meets the search budgets; loosen them or check the smallest "
                                       "subnet's predicted costs (hwnas front on a finished job shows them)")
            state.stopped = "no feasible candidate"
            break
        X, F = X[feasible], F[feasible]
        archs = [problem.space.decode(x) for x in X]
        optimistic = F
        if settings.uncertainty_weight > 0 and hasattr(problem, "uncertainty"):
            optimistic = F - settings.uncertainty_weight * problem.uncertainty(X)
        seen = set(archs_before)  # a replayed round after a kill must not exclude its own picks
        extras = [a for a in dict.fromkeys(extra_picks(r, problem) if extra_picks else []) if a not in seen]
        extras = extras[:left]
        exclude = np.array([a in seen or a in extras for a in archs])
        n = max(min(settings.batch, left) - len(extras), 0)
        picked = [archs[i] for i in select_for_evaluation(optimistic, n, exclude)] + extras
        if not picked:
            state.stopped = "predicted front holds nothing new"
            break
        evaluate(picked, r)
        _, real = done(r + 1)
        hv = hypervolume(real, *bounds)
        stale = stale + 1 if hv <= best * (1 + settings.tolerance) else 0
        best = max(best, hv)
        info = {"round": r, "evaluated": len(real), "picked": len(picked), "hypervolume": hv}
        state.rounds.append(info)
        if on_round is not None:
            on_round(info)
        r += 1
        if stale >= settings.patience:
            state.stopped = f"hypervolume flat for {settings.patience} rounds"
            break
    return state


def _front_first(problem, archs: list[Arch], F: np.ndarray, n: int) -> np.ndarray | None:
    """Encodings of up to ``n`` evaluated archs, the real front first (by non-dominated rank): the
    next round's search starts from what is known to be good and varies it."""
    if not archs or n <= 0:
        return None

    order = [i for front in NonDominatedSorting().do(np.asarray(F, dtype=float)) for i in front][:n]
    return np.array([problem.space.encode(archs[i]) for i in order])


def objective_bounds(points: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) of minimization rows, padded by 10 % of the span at the top so the worst
    points still add a sliver of hypervolume."""
    P = np.asarray(points, dtype=float)
    lower, upper = P.min(axis=0), P.max(axis=0)
    return lower, upper + 0.1 * np.where(upper > lower, upper - lower, np.abs(upper) + 1e-12)
