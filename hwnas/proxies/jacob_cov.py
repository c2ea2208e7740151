"""jacob_cov: how differently the network's output responds to each input of the batch."""
from __future__ import annotations

import math

import torch
from torch import nn

from hwnas.errors import ProxyError
from hwnas.proxies.batch import ProxyBatch, logits_of
from hwnas.proxies.registry import register_proxy

EPSILON = 1e-5  # added to every eigenvalue, as in the reference


def input_jacobians(model: nn.Module, batch: ProxyBatch) -> torch.Tensor:
    """``d sum(logits) / d input``, one row per sample. For token ids (no gradient) the input is the
    output of the ``nn.Embedding`` that reads the ids (the token embedding, found by the ids it is
    called with), so a language model's Jacobian is taken at its embedded tokens."""
    if not batch.tokens:
        x = batch.inputs.clone().requires_grad_(True)
        out = logits_of(model(x))
        out.backward(torch.ones_like(out))
        return x.grad.reshape(batch.size, -1)
    embedded: list[torch.Tensor] = []

    def keep(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        ids = args[0] if args else None
        if not embedded and isinstance(ids, torch.Tensor) and ids.shape == batch.inputs.shape \
                and torch.equal(ids, batch.inputs):
            output.retain_grad()
            embedded.append(output)

    handles = [m.register_forward_hook(keep) for m in model.modules() if isinstance(m, nn.Embedding)]
    try:
        out = logits_of(model(batch.inputs))
    finally:
        for h in handles:
            h.remove()
    if not embedded:
        raise ProxyError("proxy 'jacob_cov' does not apply: the inputs are token ids, which have no "
                         "gradient, and no nn.Embedding of the model reads them")
    out.backward(torch.ones_like(out))
    return embedded[0].grad.reshape(batch.size, -1)


@register_proxy("jacob_cov")
def jacob_cov(model: nn.Module, batch: ProxyBatch) -> float:
    """Jacobian covariance (Mellor et al., "Neural Architecture Search without Training", arXiv
    2006.04647 v1, 2020): the correlation matrix of the samples' input Jacobians
    (:func:`input_jacobians`), scored ``-sum_i (log(v_i + k) + 1 / (v_i + k))`` over its
    eigenvalues ``v_i`` with ``k = 1e-5``. The score is highest (0 is its limit from below as the
    eigenvalues approach 1) when the Jacobians are uncorrelated: the network can tell the inputs
    apart locally. NaN when a sample's Jacobian is constant (its correlation is undefined), as in
    the reference. Training mode, as in the reference."""
    batch.require_samples("jacob_cov")
    corr = torch.corrcoef(input_jacobians(model, batch).double())
    if not bool(torch.isfinite(corr).all()):
        return math.nan
    v = torch.linalg.eigvalsh(corr) + EPSILON
    return float(-(v.log() + 1.0 / v).sum())
