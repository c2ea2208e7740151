"""Where an exported candidate's weights come from, by the job's scorer (``search.scorer``).

A supernet job's candidates were evaluated in its trained supernet, so an export loads that
(``supernet.safetensors``). A training-free job (``proxy``) trained none: each candidate was
trained alone from the job's initial weights for ``search.train_epochs`` epochs
(:func:`~hwnas.train.alone.train_alone`, deterministic for the seed), so an export trains it
again the same way, on the CPU, and gets the weights that were evaluated (the manifest's
``export_test_accuracy`` beside the stored one shows it). Adding a scorer is one entry in
:data:`CANDIDATE_WEIGHTS`.
"""
from __future__ import annotations

from typing import Callable

from hwnas.errors import HwnasError
from hwnas.spaces.dims import Arch
from hwnas.train.alone import train_alone
from hwnas.train.components import Components


def supernet_weights(job, parts: Components, arch: Arch) -> Components:
    if not job.paths.supernet.exists():
        raise HwnasError(f"job {job.name!r} has no trained supernet at {job.paths.supernet}")
    parts.load_weights(job.paths.supernet)
    return parts


def trained_alone_weights(job, parts: Components, arch: Arch) -> Components:
    return train_alone(parts, arch, job.config.search.train_epochs)


CANDIDATE_WEIGHTS: dict[str, Callable[..., Components]] = {"supernet": supernet_weights,
                                                           "proxy": trained_alone_weights}


def candidate_components(job, parts: Components, arch: Arch) -> Components:
    """``parts`` (built from the job's config) holding the weights ``arch`` was evaluated with."""
    return CANDIDATE_WEIGHTS[job.config.search.scorer](job, parts, arch)
