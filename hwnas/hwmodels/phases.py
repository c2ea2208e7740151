"""A subnet as a measured device times one of its space's latency phases (an LM's prefill).

A measured device times a model by the call ``deployed_call`` finds on it (``timed_call``, or the
plain forward); :class:`PhaseModel` is the standalone model with the phase's call as its
``timed_call``. So timing whole models in interleaved rounds, and timing each op in place between
hooks on its module for the lookup table, run unchanged for a phase: the wrapper adds no module of
its own, and the model's op modules run once per call, in the order of the phase's op graph. (The
input a device makes to time with gives the phase's call its batch size only.)
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from hwnas.spaces.registry import LatencyPhase


class PhaseModel(nn.Module):
    """``model`` timed as ``phase`` says (see :class:`~hwnas.spaces.registry.LatencyPhase`)."""

    def __init__(self, model: nn.Module, phase: LatencyPhase):
        super().__init__()
        self.model = model
        self.phase = phase

    def timed_call(self, batch_size: int) -> Callable[[], Any]:
        return self.phase.timed_call(self.model, batch_size)

    def forward(self, x: torch.Tensor) -> Any:
        return self.model(x)
