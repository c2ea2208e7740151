"""meco: how decorrelated the channels of each feature map are, for one input."""
from __future__ import annotations

import torch
from torch import nn

from hwnas.proxies.batch import ProxyBatch
from hwnas.proxies.registry import register_proxy


def min_correlation_eigenvalue(feature: torch.Tensor) -> float:
    """The smallest eigenvalue of the correlation matrix between the rows of ``feature`` (channels
    of a ``[C, H, W]`` map, tokens of a ``[T, D]`` one), undefined entries (a constant row) set
    to 0 as in the reference; float64."""
    corr = torch.corrcoef(feature.reshape(feature.shape[0], -1).double())
    corr = torch.nan_to_num(corr, nan=0.0, posinf=0.0, neginf=0.0)
    return float(torch.linalg.eigvalsh(corr)[0])


@register_proxy("meco", samples="one")
def meco(model: nn.Module, batch: ProxyBatch) -> float:
    """MeCo (Jiang et al., "MeCo: Zero-Shot NAS with One Data and Single Forward Pass via Minimum
    Eigenvalue of Correlation", NeurIPS 2023): one forward pass of the batch's first sample; for
    the output of every module (as the reference hooks every module, so a container's output
    counts again) with at least two dimensions besides the batch and two positions per channel,
    the smallest eigenvalue of the correlation matrix between its channels
    (:func:`min_correlation_eigenvalue`); the score is their sum. A high minimum eigenvalue
    means no channel is nearly a combination of the others, which the paper ties to
    trainability. Training mode, as in the reference (BatchNorm normalizes the one sample over
    its positions; BatchNorm1d cannot, and raises)."""
    found: list[float] = []

    def read(module: nn.Module, args: tuple, output) -> None:
        out = output[0] if isinstance(output, (tuple, list)) and output else output
        # a map of one position per channel (after global pooling) has no correlation: the
        # reference scores it 0, so it is skipped; so is a map of one channel (one attention
        # head), whose correlation matrix is the number 1 and has no smallest eigenvalue to speak of
        if isinstance(out, torch.Tensor) and out.is_floating_point() and out.dim() >= 3 \
                and out.shape[1] >= 2 and out[0].numel() >= 2 * out.shape[1]:
            found.append(min_correlation_eigenvalue(out[0].detach()))

    handles = [m.register_forward_hook(read) for m in model.modules()]
    try:
        with torch.no_grad():
            model(batch.inputs[:1])
    finally:
        for h in handles:
            h.remove()
    return float(sum(found))
