"""The ensemble accuracy predictor: deterministic, as good as its best member, and less sure off the data."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import kendalltau
from threadpoolctl import threadpool_limits

from hwnas.job.checks import load_job_config as load_config
from hwnas.errors import ConfigError
from hwnas.predictors.accuracy import (REGRESSORS, AccuracyPredictor, ArchFeatures, BootstrapEnsemble,
                                      fit_with_holdout)
from hwnas.spaces.registry import build_space


def synthetic(n: int, seed: int, noise: float = 0.005):
    """Subnets of the default CNN space with an accuracy that rises with log MACs (a sigmoid with
    a wiggle) and drops when any active layer is quantised to 4 or 8 bits, plus noise."""
    space = build_space(load_config(None).space, (1, 8, 8), 10)
    rng = np.random.default_rng(seed)
    archs = [space.sample(rng) for _ in range(n)]
    X = ArchFeatures(space).transform(archs)
    min_bits = np.array([min(a[d.name] for d in space.dims
                             if d.name.endswith("bits") and d.name not in space.inactive_dims(a)) for a in archs])
    z = (X[:, -3] - 13.5) / 0.6  # log1p(MACs), standardised
    y = (0.6 + 0.25 / (1 + np.exp(-1.5 * z)) + 0.01 * np.sin(3 * z)
         - 0.08 * (min_bits == 4) - 0.02 * (min_bits == 8) + rng.normal(0, noise, n))
    return X, y


@pytest.fixture(scope="module")
def data():
    X, y = synthetic(400, seed=0)
    return X[:300], y[:300], X[300:], y[300:]


@pytest.fixture(scope="module")
def ensemble(data):
    X, y, _, _ = data
    return AccuracyPredictor("ensemble", seed=0).fit(X, y)


def test_ensemble_is_deterministic_for_a_seed(data, ensemble):
    X, y, Xt, _ = data
    again = AccuracyPredictor("ensemble", seed=0).fit(X, y)
    for a, b in zip(ensemble.predict_with_std(Xt), again.predict_with_std(Xt)):
        np.testing.assert_array_equal(a, b)
    other = AccuracyPredictor("ensemble", seed=1).fit(X, y)
    assert not np.array_equal(other.predict(Xt), ensemble.predict(Xt))


def test_predict_is_the_mean_and_std_is_a_spread(data, ensemble):
    X, y, Xt, _ = data
    assert ensemble.has_uncertainty
    mean, std = ensemble.predict_with_std(Xt)
    np.testing.assert_array_equal(ensemble.predict(Xt), mean)
    assert ((mean >= 0) & (mean <= 1)).all()
    assert (std >= 0).all() and (std > 0).any()
    single = AccuracyPredictor("ridge", seed=0).fit(X, y)
    assert not single.has_uncertainty
    mean, std = single.predict_with_std(Xt)
    np.testing.assert_array_equal(single.predict(Xt), mean)
    np.testing.assert_array_equal(std, np.zeros(len(Xt)))


def test_ensemble_ranks_as_well_as_its_best_member(data, ensemble):
    X, y, Xt, yt = data
    singles = BootstrapEnsemble.members(0) + [REGRESSORS["gbrt"](0)]
    with threadpool_limits(1, user_api="blas"):  # as the ensemble fits them: fast
        best = max(kendalltau(yt, m.fit(X, y).predict(Xt)).statistic for m in singles)
    tau = kendalltau(yt, ensemble.predict(Xt)).statistic
    assert tau >= 0.9 * best, (tau, best)


def test_uncertainty_grows_off_the_training_data(data, ensemble):
    _, _, Xt, _ = data
    far = Xt.copy()
    far[:, :-3] *= 2.0  # dimension values never sampled
    far[:, -3:] += 3.0  # ~20x the MACs, params and BitOps of any sampled subnet
    assert ensemble.predict_with_std(far)[1].mean() > 3 * ensemble.predict_with_std(Xt)[1].mean()


def test_unknown_model_names_the_known_ones(data):
    X, y, _, _ = data
    with pytest.raises(ConfigError, match="ensemble") as info:
        AccuracyPredictor("xgb").fit(X, y)
    assert all(name in str(info.value) for name in ("gbrt", "rf", "ridge"))


def test_holdout_quality_reports_the_uncertainty():
    X, y = synthetic(120, seed=1)
    predictor, quality = fit_with_holdout(X, y, "ensemble", 0.25, seed=0)
    assert predictor.has_uncertainty and quality["n"] == 30
    assert -1 <= quality["uncertainty_spearman"] <= 1 and quality["mean_std"] > 0
    _, quality = fit_with_holdout(X, y, "ridge", 0.25, seed=0)
    assert "uncertainty_spearman" not in quality and "mean_std" not in quality
