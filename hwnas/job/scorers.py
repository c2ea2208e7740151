"""What ranks subnets during a job (``search.scorer``), each the stages it runs.

``supernet``: train a weight-sharing supernet and rank by its subnets' validation quality
(:data:`hwnas.job.stages.STAGES`). ``proxy``: training-free, rank by a zero-cost proxy and train
only the chosen subnets (:data:`hwnas.job.training_free.STAGES`). Adding a scorer is one entry
here (and its name in the config's ``search.scorer``).
"""
from __future__ import annotations

from hwnas.config import Config
from hwnas.job import stages, training_free
from hwnas.job.stages import Stage

SCORERS: dict[str, tuple[Stage, ...]] = {"supernet": stages.STAGES, "proxy": training_free.STAGES}

# Every stage whose time a job of any scorer records (the search stage's real evaluations are "evaluate").
TIMED = tuple(dict.fromkeys(s.name for chain in SCORERS.values() for s in chain)) + ("evaluate",)


def stages_for(config: Config) -> tuple[Stage, ...]:
    """The stages a job of ``config`` runs, in order."""
    return SCORERS[config.search.scorer]
