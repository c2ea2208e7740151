"""Search anything a user can score: a space made of dimensions and objectives as plain callables.

No supernet is needed. A space is a :class:`~hwnas.spaces.dims.SearchSpace` of
:class:`~hwnas.spaces.dims.Dim` (subclass it to declare inactive dimensions). Objectives are
``callable(arch) -> float``: *expensive* ones (a training run, a measurement on a board) are called
only for the candidates chosen for real evaluation, and an ensemble predictor (mean and
uncertainty) stands in for them during the search; *cheap* ones (a parameter count, a table
lookup) are called for every candidate the search looks at. The engine is the same
predictor-in-the-loop engine a hwnas job runs (:mod:`hwnas.search.loop`)::

    from hwnas.search.custom import search
    from hwnas.spaces.dims import Dim, SearchSpace

    space = SearchSpace([Dim("width", (16, 32, 64)), Dim("depth", (2, 3, 4)), Dim("bits", (4, 8))])
    result = search(space, {"error": train_and_test, "params": count_params},
                    cheap={"params"}, budget=60)
    result.front   # a DataFrame of really evaluated, Pareto-optimal candidates

Objectives are minimized; name the ones to maximize in ``maximize``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

import numpy as np
import pandas as pd
from pymoo.core.problem import Problem
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

from hwnas.errors import ConfigError
from hwnas.predictors.accuracy import AccuracyPredictor
from hwnas.search.loop import LoopSettings, LoopState, objective_bounds, run_loop
from hwnas.spaces.dims import Arch, SearchSpace


class DimFeatures:
    """Feature rows of encodings: numeric choices as their value, categorical ones one-hot, and
    the cheap objectives' values (known for every candidate; a cost such as latency tells the
    predictor much about an expensive objective such as error)."""

    def __init__(self, space: SearchSpace, cheap_columns: list[int] | None = None):
        self.cheap_columns = list(cheap_columns or [])
        self.tables = []
        for d in space.dims:
            numeric = all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in d.choices)
            self.tables.append(np.array(d.choices, dtype=float)[:, None] if numeric else np.eye(len(d.choices)))

    def transform(self, X: np.ndarray, cheap_rows: list[list[float]] | None = None) -> np.ndarray:
        X = np.asarray(X, dtype=int)
        parts = [table[X[:, j]] for j, table in enumerate(self.tables)]
        if self.cheap_columns and cheap_rows is not None:
            values = np.asarray(cheap_rows, dtype=float)[:, self.cheap_columns]
            parts.append(np.sign(values) * np.log1p(np.abs(values)))  # costs span orders of magnitude
        return np.hstack(parts)


class PredictedProblem(Problem):
    """Cheap objectives computed, expensive ones predicted (with their std), for whole populations."""

    def __init__(self, space: SearchSpace, names: list[str], signs: np.ndarray, cheap: Callable[[Arch], list[float]],
                 models: dict[str, AccuracyPredictor], features: DimFeatures):
        self.space, self.names, self.signs, self.cheap = space, names, signs, cheap
        self.models, self.features = models, features
        super().__init__(n_var=len(space), n_obj=len(names), xl=np.zeros(len(space)),
                         xu=space.upper_bounds.astype(float), vtype=int)

    def _predict(self, X) -> tuple[np.ndarray, np.ndarray]:
        X = np.asarray(X, dtype=int)
        F, S = np.zeros((len(X), len(self.names))), np.zeros((len(X), len(self.names)))
        rows = [self.cheap(self.space.decode(x)) for x in X]
        feats = self.features.transform(X, rows) if self.models else None
        for j, name in enumerate(self.names):
            if name in self.models:
                F[:, j], S[:, j] = self.models[name].predict_with_std(feats)
            else:
                F[:, j] = [r[j] for r in rows]
        return F * self.signs, S

    def uncertainty(self, X) -> np.ndarray:
        return self._predict(X)[1]

    def _evaluate(self, X, out, *args, **kwargs):
        out["F"] = self._predict(X)[0]


class _Unclipped(AccuracyPredictor):
    """The ensemble without clipping to [0, 1]: custom objectives can have any range."""

    def predict_with_std(self, X):
        return self.estimator_.predict_with_std(X)


@dataclass
class SearchResult:
    evaluated: pd.DataFrame        # every real evaluation: dims, objectives, round
    objectives: list[str]
    state: LoopState

    @property
    def front(self) -> pd.DataFrame:
        """The Pareto-optimal rows of ``evaluated`` (under each objective's direction)."""
        if self.evaluated.empty:
            return self.evaluated
        F = self.evaluated[[f"_min_{n}" for n in self.objectives]].to_numpy()
        idx = NonDominatedSorting().do(F, only_non_dominated_front=True)
        return self.evaluated.iloc[sorted(idx)].drop(columns=[f"_min_{n}" for n in self.objectives])


def search(space: SearchSpace, objectives: Mapping[str, Callable[[Arch], float]], *, maximize: Iterable[str] = (),
           cheap: Iterable[str] = (), budget: int = 100, batch: int = 10, initial: int | None = None,
           seed: int = 0, algorithm: str = "nsga2", population: int = 64, generations: int = 30,
           patience: int = 3, uncertainty_weight: float = 1.0,
           on_evaluation: Callable[[Arch, dict], None] | None = None) -> SearchResult:
    """Find the Pareto front of ``objectives`` over ``space`` with at most ``budget`` calls of each
    expensive objective. ``initial`` candidates (default: a quarter of the budget, at least
    ``2 * batch``: the space's largest and smallest, then random ones) seed the predictors before
    the first round."""
    names = list(objectives)
    maximize, cheap = set(maximize), set(cheap)
    unknown = (maximize | cheap) - set(names)
    if unknown:
        raise ConfigError(f"{sorted(unknown)[0]!r} is not one of the objectives {names}")
    if len(names) < 2:
        raise ConfigError("a Pareto search needs at least two objectives")
    signs = np.array([-1.0 if n in maximize else 1.0 for n in names])
    expensive = [n for n in names if n not in cheap]
    features = DimFeatures(space, [names.index(n) for n in names if n in cheap])
    cheap_cache: dict[Arch, list[float]] = {}
    records: list[dict] = []
    index: dict[Arch, int] = {}

    def cheap_values(arch: Arch) -> list[float]:
        if arch not in cheap_cache:
            cheap_cache[arch] = [float(objectives[n](arch)) if n in cheap else float("nan") for n in names]
        return cheap_cache[arch]

    def evaluate(archs: list[Arch], r: int) -> None:
        for arch in archs:
            if arch in index:
                continue
            values = {n: float(objectives[n](arch)) for n in names}
            index[arch] = len(records)
            records.append({"arch": arch, "round": r, **values})
            if on_evaluation is not None:
                on_evaluation(arch, values)

    def done(r: int | None) -> tuple[list[Arch], np.ndarray]:
        rows = [rec for rec in records if r is None or rec["round"] < r]
        F = np.array([[rec[n] for n in names] for rec in rows]).reshape(len(rows), len(names)) * signs
        return [rec["arch"] for rec in rows], F

    def make_problem(r: int) -> PredictedProblem:
        archs, F = done(r)
        X = np.array([space.encode(a) for a in archs])
        feats = features.transform(X, [cheap_values(a) for a in archs])
        models = {n: _Unclipped("ensemble", seed + r).fit(feats, F[:, names.index(n)] * signs[names.index(n)])
                  for n in expensive}
        return PredictedProblem(space, names, signs, cheap_values, models, features)

    rng = np.random.default_rng(seed)
    first = initial if initial is not None else max(2 * batch, budget // 4)
    # The space's extremes anchor the front's two ends (the most capable and the cheapest subnet).
    seeds = list(dict.fromkeys([space.largest(), space.smallest()] + [space.sample(rng) for _ in range(4 * first)]))
    seeds = seeds[: min(first, budget)]
    evaluate(seeds, -1)
    settings = LoopSettings(budget=budget, batch=batch, algorithm=algorithm, population=population,
                            generations=generations, seed=seed, patience=patience,
                            uncertainty_weight=uncertainty_weight)
    bounds = objective_bounds(done(None)[1])
    state = run_loop(settings, make_problem, done, evaluate, bounds)
    frame = pd.DataFrame([{**rec["arch"].to_dict(), "round": rec["round"], **{n: rec[n] for n in names},
                           **{f"_min_{n}": rec[n] * s for n, s in zip(names, signs)}} for rec in records])
    return SearchResult(frame, names, state)
