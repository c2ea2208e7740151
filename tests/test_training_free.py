"""The training-free job mode (``search.scorer: proxy``) through the real CLI: no supernet trained,
the front measured (each chosen subnet trained alone), and its parts on their own."""
from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from hwnas.config import load_config
from hwnas.errors import ConfigError
from hwnas.job.checks import load_job_config
from hwnas.job.scorers import SCORERS, TIMED
from hwnas.job.training_free import proxy_percentiles
from tests.conftest import TINY
from tests.test_cli import run_cli

FAST = ["search.scorer=proxy", "search.proxy=naswot", "search.train_epochs=1", "search.evaluate=3",
        "predictor.samples=12", "device.name=edge-accel-45nm", "train.max_steps=4"]


def test_proxy_job_searches_without_a_supernet_and_measures_its_front(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    work = tmp_path / "w"
    sets = [arg for item in FAST for arg in ("--set", item)]
    r = run_cli("search", str(config), "--workdir", str(work), "--quiet", *sets)
    assert r.returncode == 0, r.stderr
    job_dir = work / "tiny"
    assert not (job_dir / "supernet.safetensors").exists() and not (job_dir / "checkpoint.pt").exists()
    assert (job_dir / "proxy_samples.csv").exists()

    r = run_cli("front", "tiny", "--workdir", str(work), "--format", "json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert rows
    for row in rows:  # measured on the validation and test splits after training alone
        assert 0.0 < row["val_accuracy"] <= 1.0 and 0.0 < row["test_accuracy"] <= 1.0
    r = run_cli("jobs", "--workdir", str(work))
    assert r.returncode == 0 and "5/5" in r.stdout  # the budget (3 plus the two extremes), in one round

    # the export trains the chosen subnet alone again, the same way: the weights that were evaluated
    best = max(rows, key=lambda row: row["val_accuracy"])
    r = run_cli("export", "tiny", "--candidate", str(best["id"]), "--workdir", str(work), "--out", str(tmp_path / "x"))
    assert r.returncode == 0, r.stderr
    evaluated = json.loads((tmp_path / "x" / "manifest.json").read_text())["metrics"]["evaluated"]
    assert evaluated["export_test_accuracy"] == pytest.approx(best["test_accuracy"], abs=1e-9)


def test_percentiles_rank_scores_and_sink_non_numbers():
    np.testing.assert_allclose(proxy_percentiles(np.array([3.0, -1.0, 10.0, np.nan])), [2 / 3, 1 / 3, 1.0, 0.0])
    np.testing.assert_allclose(proxy_percentiles(np.array([1.0, 1.0])), [0.5, 0.5])


def test_scorer_config_is_checked():
    assert set(SCORERS) == {"supernet", "proxy"} and "proxy_scores" in TIMED and "train" in TIMED
    assert load_config(None).search.scorer == "supernet" and load_config(None).predictor.proxies == []
    with pytest.raises(ConfigError, match="search.scorer"):
        load_config(None, ["search.scorer=oracle"])
    with pytest.raises(ConfigError, match="search.proxy: unknown proxy 'nope'"):
        load_job_config(None, ["search.scorer=proxy", "search.proxy=nope"])
    with pytest.raises(ConfigError, match="predictor.proxies: unknown proxy 'nope'"):
        load_job_config(None, ["predictor.proxies=[synflow, nope]"])


def test_proxies_as_predictor_features_are_extra_columns_computed_once(one_thread):
    import torch

    from hwnas.job.stages import sample_archs
    from hwnas.predictors.accuracy import ArchFeatures
    from hwnas.predictors.proxy_features import ProxyFeatures
    from hwnas.train.components import Components

    config = load_job_config(TINY)
    parts = Components.build(config, torch.device("cpu"))
    archs = sample_archs(parts.space, 4, 0)
    inputs, targets = parts.proxy_batch(16, 0)
    calls = []

    def model_of(arch):
        calls.append(arch)
        return parts.initial_subnet(arch)

    plain = ArchFeatures(parts.space)
    with_proxies = ArchFeatures(parts.space, ProxyFeatures(["naswot", "synflow"], model_of, inputs, targets, 0))
    X, Xp = plain.transform(archs), with_proxies.transform(archs)
    assert Xp.shape == (4, X.shape[1] + 2) and np.array_equal(Xp[:, :-2], X) and np.isfinite(Xp).all()
    assert not plain.has_extra and with_proxies.has_extra
    np.testing.assert_array_equal(with_proxies.transform(archs[::-1]), Xp[::-1])  # from the cache
    assert len(calls) == 4
    # the same batch and seed give the same scores; the supernet's own weights are not the ones scored
    again = ProxyFeatures(["naswot", "synflow"], parts.initial_subnet, *parts.proxy_batch(16, 0), 0)
    np.testing.assert_array_equal(again.transform(archs), Xp[:, -2:])
