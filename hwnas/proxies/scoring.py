"""score(): run zero-cost proxies on a model and a batch without touching the model.

Each proxy runs on its own deep copy of the model (so the user's weights, gradients, train/eval
mode and buffers such as BatchNorm statistics are never changed, and one proxy's changes, like
synflow's absolute weights, never reach another), under ``torch.manual_seed(seed)`` set afresh for
that proxy inside a forked RNG (so the caller's random state is unchanged and a proxy's score does
not depend on which other proxies ran). The same model, batch and seed give bit-identical scores
on the same machine and PyTorch build (on a GPU, as far as its kernels are deterministic:
``torch.use_deterministic_algorithms`` makes them so).
"""
from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from torch import nn

from hwnas.errors import ProxyError
from hwnas.proxies.batch import LossFn, ProxyBatch, default_loss
from hwnas.proxies.registry import ProxyEntry, proxy_entry

DEFAULT_PROXIES = ("synflow", "naswot", "grad_norm", "snip", "jacob_cov", "zico", "meco", "params", "flops")


@dataclass(frozen=True)
class ProxyScore:
    """One proxy's score and what it was computed on: ``batch_size`` samples of the batch (1 for a
    proxy that reads one input, 0 for one that reads none) under ``seed``. ``float(score)`` is
    the value."""

    proxy: str
    value: float
    batch_size: int
    seed: int

    def __float__(self) -> float:
        return self.value


def score(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor | None = None,
          proxies: str | Sequence[str] = DEFAULT_PROXIES, seed: int = 0,
          loss: LossFn | None = None) -> dict[str, ProxyScore]:
    """Score ``model`` on one batch with each of ``proxies``, in the order given.

    ``inputs``: the batch, first dimension the samples (images or features, or token ids);
    ``targets``: class or token ids, needed by the loss-based proxies (``grad_norm``, ``snip``,
    ``zico``); ``loss(logits, targets)``: defaults to cross entropy over every leading position
    (:func:`~hwnas.proxies.batch.default_loss`). Every name is checked before any work is done.
    """
    names = (proxies,) if isinstance(proxies, str) else tuple(dict.fromkeys(proxies))
    entries = [proxy_entry(name) for name in names]
    if not isinstance(inputs, torch.Tensor) or inputs.dim() == 0:
        raise ProxyError("proxies: inputs must be a tensor whose first dimension is the batch")
    needy = [e.name for e in entries if e.needs_targets]
    if targets is None and needy:
        raise ProxyError(f"proxies {', '.join(needy)} need targets (pass targets=, or score only "
                         f"proxies without a loss)")
    if targets is not None and targets.shape[:1] != inputs.shape[:1]:
        raise ProxyError(f"proxies: targets hold {targets.shape[0]} samples, inputs {inputs.shape[0]}")
    batch = ProxyBatch(inputs.detach(), None if targets is None else targets.detach(), loss or default_loss, seed)
    return {e.name: ProxyScore(e.name, run_proxy(e, model, batch), e.batch_size(batch), seed) for e in entries}


def run_proxy(entry: ProxyEntry, model: nn.Module, batch: ProxyBatch) -> float:
    """One proxy on a fresh copy of ``model``, seeded with ``batch.seed``."""
    work = working_copy(model, train=entry.train)
    with seeded(batch.seed), torch.enable_grad():
        return float(entry.fn(work, batch))


def working_copy(model: nn.Module, train: bool) -> nn.Module:
    """A deep copy in the given mode, every parameter trainable and without a gradient."""
    work = copy.deepcopy(model)
    work.train(train)
    for p in work.parameters():
        p.grad = None
        p.requires_grad_(True)
    return work


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """``torch.manual_seed(seed)`` inside, the caller's CPU and CUDA random state restored after."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
