"""A training-free job (``search.scorer: proxy``): search on a zero-cost proxy and the costs, then
train only the chosen subnets for real.

No supernet is trained. The ``proxy_scores`` stage scores the sampled subnets with
``search.proxy`` at initialization (on one fixed seeded training batch,
:meth:`~hwnas.train.components.Components.initial_subnet`) and fits the job's predictor to their
*rank* among the samples (a percentile in [0, 1], where 1 is the best-scored subnet): a proxy's raw
values mean nothing on an accuracy scale and span orders of magnitude, while the search needs
only their order. The ``search`` stage then runs one round of the usual predictor-in-the-loop
search on that predictor and the device's costs, and "evaluates for real" each chosen subnet by
training it alone for ``search.train_epochs`` epochs (:func:`~hwnas.train.alone.train_alone`)
and measuring its validation and test quality, committed to the store as it finishes. So the front
a user queries holds measured figures, as in a supernet job; ``predicted_val_accuracy`` of a
candidate is its predicted proxy percentile.
"""
from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
from scipy.stats import rankdata

from hwnas.job.rounds import SearchRounds, subnet_accuracies
from hwnas.job.stages import Stage, arch_features, load, profile, run_rounds, sample_archs
from hwnas.metrics import quality_of
from hwnas.predictors.accuracy import fit_with_holdout
from hwnas.predictors.proxy_features import ProxyFeatures
from hwnas.spaces.dims import Arch
from hwnas.train.alone import train_alone
from hwnas.train.components import Components


def proxy_percentiles(scores: np.ndarray) -> np.ndarray:
    """Each score's rank among ``scores`` as a fraction in [0, 1] (ties share their mean rank); a
    score that is not a number (a proxy that overflowed) ranks lowest."""
    scores = np.where(np.isfinite(scores), scores, -np.inf)
    if len(scores) < 2:
        return np.ones(len(scores))
    return (rankdata(scores) - 1) / (len(scores) - 1)


def fit_proxy_predictor(job, results: dict[str, Any]):
    """Score the sampled subnets with the proxy (resumably, in ``proxy_samples.csv``) and fit the
    predictor to their percentiles; returns what the ``predictor`` stage of a supernet job does."""
    parts: Components = results["load"]
    config, cfg = job.config, job.config.predictor
    quality = quality_of(config.search.objectives)  # a maximized one (hwnas.job.checks.check_quality)
    proxy = config.search.proxy
    archs = sample_archs(parts.space, cfg.samples, config.seed)
    inputs, targets = parts.proxy_batch(cfg.proxy_batch, config.seed)
    scorer = ProxyFeatures([proxy], parts.initial_subnet, inputs, targets, config.seed)
    raw = job.measure_resumably(archs, job.paths.root / "proxy_samples.csv", proxy,
                                lambda arch: float(scorer.scores(arch)[0]), f"score subnets ({proxy})")
    y = proxy_percentiles(raw)
    features = arch_features(job, parts)
    predictor, fit = fit_with_holdout(features.transform(archs), y, cfg.model, cfg.holdout, config.seed,
                                      quality.name)
    job.study.set_user_attr("scorer", {"scorer": "proxy", "proxy": proxy, "batch": int(inputs.shape[0]),
                                       "seed": config.seed, "train_epochs": config.search.train_epochs})
    job.study.set_user_attr("predictor_quality", {f"{proxy}_percentile": fit})
    job.reporter.info(f"{proxy} percentile predictor ({cfg.model}): holdout Kendall tau {fit['kendall_tau']:.3f} "
                      f"on {fit['n']} subnets")
    return predictor, features, (archs, y)


def trained_alone_quality(parts: Components, epochs: int, arch_json: str) -> dict[str, float]:
    """Validation and test quality of one subnet trained alone for ``epochs`` epochs."""
    arch = parts.space.validate(Arch.from_json(arch_json).to_dict())
    return subnet_accuracies(train_alone(parts, arch, epochs), arch_json)


def search_and_train(job, results: dict[str, Any]) -> None:
    """One round on the proxy's predictor and the costs; every chosen subnet trained alone."""
    parts: Components = results["load"]
    cost_model, extra_costs, device = results["profile"]
    predictor, features, samples = results["proxy_scores"]
    cfg = job.config.search
    rounds = SearchRounds(job, parts, cost_model, extra_costs, predictor, features, samples, device,
                          quality=partial(trained_alone_quality, parts, cfg.train_epochs), batch=cfg.evaluate + 2,
                          refit=False)
    run_rounds(job, rounds)


STAGES: tuple[Stage, ...] = (
    Stage("load", reads=("config",), writes=("store: input_shape, num_classes",),
          resumes="always reruns (data and space are rebuilt from the config)", run=load),
    Stage("profile", reads=("load", "device"), writes=("luts/DEVICE.csv", "lut.csv", "latency_samples.csv",
                                                      "PHASE_samples.csv"),
          resumes="measures only the ops (and subnets) the cached table lacks", run=profile),
    Stage("proxy_scores", reads=("load",), writes=("proxy_samples.csv", "store: scorer, predictor_quality"),
          resumes="scores only the subnets the sample cache lacks", run=fit_proxy_predictor),
    Stage("search", reads=("load", "profile", "proxy_scores"),
          writes=("store: candidates (each trained alone), search_rounds",),
          resumes="evaluates (trains) only candidates not yet stored", run=search_and_train, journaled=False),
)
