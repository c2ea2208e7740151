"""Accuracy predictor: a scikit-learn regressor on architecture features.

Features are the value of every active dimension (numbers as themselves, categories such as the
operator type one-hot; zeros for inactive dimensions, so the features say what the subnet really
is) and the log of its MACs, params and BitOps from the op graph.
The regressor is chosen by name from :data:`REGRESSORS`. Fitting is deterministic for a seed, so
a fitted predictor is persisted as its training samples (CSV) and refitted on load: no pickle.

``"ensemble"`` (:class:`BootstrapEnsemble`) also says how sure it is: a search can then tell a
subnet predicted to be good from one merely far from every sampled subnet. Its mean is the
average of its members and its uncertainty their standard deviation (disagreement); see the class
for why the members are bootstrapped.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable, Sequence

import numpy as np
from scipy.stats import spearmanr
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.compose import TransformedTargetRegressor
from sklearn.ensemble import GradientBoostingRegressor, RandomForestRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import RidgeCV
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from hwnas.errors import ConfigError
from hwnas.ir import count
from hwnas.metrics import QUALITY_METRICS
from hwnas.predictors.quality import regression_quality
from hwnas.spaces.registry import op_graph


class BootstrapEnsemble:
    """Ridge, gradient-boosted trees and a small MLP, each fitted on ``rounds`` bootstrap resamples.

    ``predict_with_std`` gives the mean over all ``3 * rounds`` members and their standard
    deviation. Three different model kinds disagree most where the data say least (a linear model,
    trees that extrapolate flat and an MLP part ways outside the sampled range), and the bootstrap
    adds the spread that comes from which subnets happened to be sampled. On a synthetic check
    (320 training subnets of the default CNN space, 6 data seeds) bootstrapping with 3 rounds
    ranked holdout errors better than the three members fitted once on all the data (Spearman of
    std vs |error| 0.32 vs 0.26; 0.16 vs 0.09 with noisier targets) and its std was nearer the
    real error (RMSE / mean std 1.5 vs 1.9), while more seeds without resampling did worse (0.20)
    and 5 rounds no better than 3, for 3x the fitting time (1.5-2 s for 400 subnets, one core). The std is
    epistemic only: noise in the measured accuracies themselves is not in it.
    """

    def __init__(self, seed: int = 0, rounds: int = 3):
        self.seed, self.rounds = seed, rounds

    @staticmethod
    def members(seed: int) -> list:
        # The MLP learns a standardised target: accuracies span a few hundredths, far below
        # Adam's stopping tolerance; strong L2 (alpha) suits a few hundred samples.
        mlp = make_pipeline(StandardScaler(), MLPRegressor(hidden_layer_sizes=(64, 32), alpha=1.0,
                                                           max_iter=1000, random_state=seed))
        return [REGRESSORS["ridge"](seed),
                GradientBoostingRegressor(n_estimators=150, max_depth=3, learning_rate=0.1,
                                          subsample=0.8, random_state=seed),
                TransformedTargetRegressor(regressor=mlp, transformer=StandardScaler())]

    def fit(self, X: np.ndarray, y: np.ndarray) -> "BootstrapEnsemble":
        X, y = np.asarray(X, float), np.asarray(y, float)
        rng = np.random.default_rng([self.seed, 7])
        self.members_ = []
        # One BLAS thread: the MLP's matrices are tiny, and threads that wait for a busy core
        # made its fit 10x slower on a loaded 2-core machine.
        with threadpool_limits(1, user_api="blas"):
            for _ in range(self.rounds):
                rows = rng.integers(0, len(y), len(y))
                for member in self.members(int(rng.integers(2**31))):
                    with warnings.catch_warnings():  # a member short of convergence still counts
                        warnings.simplefilter("ignore", ConvergenceWarning)
                        self.members_.append(member.fit(X[rows], y[rows]))
        return self

    def predict_with_std(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        preds = np.stack([m.predict(X) for m in self.members_])
        return preds.mean(axis=0), preds.std(axis=0)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.predict_with_std(X)[0]


REGRESSORS: dict[str, Callable[[int], Any]] = {
    "gbrt": lambda seed: GradientBoostingRegressor(n_estimators=300, max_depth=3, learning_rate=0.05,
                                                   subsample=0.8, random_state=seed),
    "rf": lambda seed: RandomForestRegressor(n_estimators=300, min_samples_leaf=2, random_state=seed, n_jobs=1),
    "ridge": lambda seed: make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13))),
    "ensemble": BootstrapEnsemble,
}


class ArchFeatures:
    """Turns Archs of one space into a feature matrix: the dimensions and counts of each arch,
    then the columns of ``proxies`` (a :class:`~hwnas.predictors.proxy_features.ProxyFeatures`,
    zero-cost proxy scores at initialization) when given."""

    def __init__(self, space, proxies=None):
        self.space = space
        self.proxies = proxies

    @property
    def has_extra(self) -> bool:
        """Whether rows carry columns beyond what the vectorized search computes (proxy scores)."""
        return self.proxies is not None and bool(self.proxies.proxies)

    def extra(self, archs: Sequence) -> np.ndarray:
        """The proxy columns of ``archs`` (none without proxies)."""
        return self.proxies.transform(archs) if self.has_extra else np.zeros((len(archs), 0))

    def transform(self, archs: Sequence) -> np.ndarray:
        base = self._dims_and_counts(archs)
        return np.hstack([base.reshape(len(archs), -1), self.extra(archs)]) if self.has_extra else base

    def _dims_and_counts(self, archs: Sequence) -> np.ndarray:
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
    """Predicts a subnet's quality from its feature row: accuracy (a fraction), or another metric
    of :data:`hwnas.metrics.QUALITY_METRICS` named by ``metric``.

    ``predict`` gives the mean clipped to the metric's range for every model; ``predict_with_std``
    gives it with a standard deviation: the members' spread for a model that has one
    (``has_uncertainty``, "ensemble"), zeros for single models, which do not say how sure they are.
    A metric with ``log_target`` (perplexity) is fitted on its log, which for perplexity is the
    mean per-token loss: that is roughly additive in what a subnet drops, while perplexity is
    exponential in it and spans orders of magnitude between a trained and a barely trained subnet,
    which squashes the good end of the range for a regressor fitted on squared errors. Its mean is
    mapped back with exp and its std with the delta method (``exp(m) * s``).
    """

    def __init__(self, model: str = "gbrt", seed: int = 0, metric: str = "accuracy"):
        self.model = model
        self.seed = seed
        self.metric = metric

    def fit(self, X: np.ndarray, y: np.ndarray) -> "AccuracyPredictor":
        if self.model not in REGRESSORS:
            raise ConfigError(f"predictor.model: unknown model {self.model!r}; known: {sorted(REGRESSORS)}")
        y = np.asarray(y, dtype=float)
        self.estimator_ = REGRESSORS[self.model](self.seed).fit(X, np.log(y) if self._log else y)
        return self

    @property
    def _log(self) -> bool:
        return QUALITY_METRICS[self.metric].log_target

    @property
    def has_uncertainty(self) -> bool:
        return hasattr(REGRESSORS.get(self.model), "predict_with_std")

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.predict_with_std(X)[0]

    def predict_with_std(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.has_uncertainty:
            mean, std = self.estimator_.predict_with_std(X)
        else:
            mean = self.estimator_.predict(X)
            std = np.zeros(len(mean))
        if self._log:
            mean = np.exp(np.minimum(mean, 700.0))
            std = mean * std
        q = QUALITY_METRICS[self.metric]
        return np.clip(mean, q.lower, q.upper), std


def fit_with_holdout(X: np.ndarray, y: np.ndarray, model: str, holdout: float, seed: int, metric: str = "accuracy"
                     ) -> tuple[AccuracyPredictor, dict[str, float]]:
    """Measure quality on a seeded holdout, then refit on every sample for use.

    With uncertainty the quality also has ``mean_std`` and ``uncertainty_spearman``: the Spearman
    correlation of the holdout std with the absolute error (above 0: the std flags bad guesses).
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    n_test = max(2, int(round(holdout * len(y))))
    test, train = order[:n_test], order[n_test:]
    probe = AccuracyPredictor(model, seed, metric).fit(X[train], y[train])
    mean, std = probe.predict_with_std(X[test])
    quality = regression_quality(y[test], mean)
    if probe.has_uncertainty:
        error = np.abs(mean - y[test])
        rho = spearmanr(std, error).statistic if np.ptp(std) > 0 and np.ptp(error) > 0 else np.nan
        quality.update(uncertainty_spearman=float(rho), mean_std=float(np.mean(std)))
    return AccuracyPredictor(model, seed, metric).fit(X, y), quality
