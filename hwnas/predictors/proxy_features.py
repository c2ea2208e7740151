"""Zero-cost proxy scores as features of the accuracy predictor (``predictor.proxies``).

A proxy says something about a subnet that its dimensions and counts do not (how its untrained
activations separate the inputs, how its gradients flow), so it may help a predictor fitted on a
few dozen samples. Each subnet is scored once, at initialization (a standalone model the caller
makes: see :meth:`hwnas.train.components.Components.initial_subnet`), on one fixed batch under
one seed; scores are cached by architecture, since a search asks for the same subnets again and
again. A score enters as ``sign(v) * log1p(|v|)``: synflow and the gradient norms span orders of
magnitude between subnets, which would drown the other features of a linear model.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from hwnas.proxies import score
from hwnas.utils.timing import pinned_threads


class ProxyFeatures:
    """``proxies`` scored on ``model_of(arch)`` with ``(inputs, targets)`` under ``seed``: one column each."""

    def __init__(self, proxies: Sequence[str], model_of: Callable[[object], nn.Module],
                 inputs: torch.Tensor, targets: torch.Tensor, seed: int = 0):
        self.proxies, self.model_of = tuple(proxies), model_of
        self.inputs, self.targets, self.seed = inputs, targets, seed
        self.cache: dict[str, np.ndarray] = {}

    def scores(self, arch) -> np.ndarray:
        """The raw scores of one arch, in the order of ``proxies`` (computed once, on one thread:
        float sums depend on the thread count, and the scores must not)."""
        key = arch.to_json()
        if key not in self.cache:
            with pinned_threads(1):
                found = score(self.model_of(arch), self.inputs, self.targets, self.proxies, self.seed)
            self.cache[key] = np.array([found[name].value for name in self.proxies], dtype=float)
        return self.cache[key]

    def transform(self, archs: Sequence) -> np.ndarray:
        if not archs:
            return np.zeros((0, len(self.proxies)))
        raw = np.stack([self.scores(a) for a in archs])
        raw = np.nan_to_num(raw, nan=0.0, posinf=1e300, neginf=-1e300)
        return np.sign(raw) * np.log1p(np.abs(raw))
