"""Accuracy predictor: a scikit-learn regressor on architecture features.

Features are the value of every active dimension (numbers as themselves, categories such as the
operator type one-hot; zeros for inactive dimensions, so the features say what the subnet really
is) and the log of its MACs, params and BitOps from the op graph.
The regressor is chosen by name from :data:`REGRESSORS`. Fitting is deterministic for a seed, so
a fitted predictor is persisted as its training samples (CSV) and refitted on load: no pickle.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.ensemble import GradientBoostingRegressor, RandomForestRegressor
from sklearn.linear_model import RidgeCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from hwnas.errors import ConfigError
from hwnas.hwmodels.graph import count, op_graph
from hwnas.predictors.quality import regression_quality

REGRESSORS: dict[str, Callable[[int], Any]] = {
    "gbrt": lambda seed: GradientBoostingRegressor(n_estimators=300, max_depth=3, learning_rate=0.05,
                                                   subsample=0.8, random_state=seed),
    "rf": lambda seed: RandomForestRegressor(n_estimators=300, min_samples_leaf=2, random_state=seed, n_jobs=1),
    "ridge": lambda seed: make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13))),
}


class ArchFeatures:
    """Turns Archs of one space into a feature matrix."""

    def __init__(self, space):
        self.space = space

    def transform(self, archs: Sequence) -> np.ndarray:
        rows = []
        for arch in archs:
            inactive = self.space.inactive_dims(arch)
            values: list[float] = []
            for d in self.space.dims:
                values += self._encode(d, None if d.name in inactive else arch[d.name])
            counts = count(op_graph(self.space.subnet_spec(arch)))
            rows.append(values + [np.log1p(counts["macs"]), np.log1p(counts["params"]),
                                  np.log1p(counts["bitops"])])
        return np.asarray(rows, dtype=float)


    @staticmethod
    def _encode(dim, value) -> list[float]:
        """A number as itself, a category (an operator or attention kind) one-hot; inactive: zeros."""
        numeric = all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in dim.choices)
        if numeric:
            return [0.0 if value is None else float(value)]
        return [1.0 if value == c else 0.0 for c in dim.choices]


class AccuracyPredictor(BaseEstimator, RegressorMixin):
    """Predicts a subnet's accuracy (a fraction) from its feature row."""

    def __init__(self, model: str = "gbrt", seed: int = 0):
        self.model = model
        self.seed = seed

    def fit(self, X: np.ndarray, y: np.ndarray) -> "AccuracyPredictor":
        if self.model not in REGRESSORS:
            raise ConfigError(f"predictor.model: unknown model {self.model!r}; known: {sorted(REGRESSORS)}")
        self.estimator_ = REGRESSORS[self.model](self.seed).fit(X, y)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.clip(self.estimator_.predict(X), 0.0, 1.0)


def fit_with_holdout(X: np.ndarray, y: np.ndarray, model: str, holdout: float, seed: int
                     ) -> tuple[AccuracyPredictor, dict[str, float]]:
    """Measure quality on a seeded holdout, then refit on every sample for use."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    n_test = max(2, int(round(holdout * len(y))))
    test, train = order[:n_test], order[n_test:]
    probe = AccuracyPredictor(model, seed).fit(X[train], y[train])
    quality = regression_quality(y[test], probe.predict(X[test]))
    return AccuracyPredictor(model, seed).fit(X, y), quality
