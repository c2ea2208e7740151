"""synflow: the synaptic flow through the network's absolute weights, with no data at all."""
from __future__ import annotations

import torch
from torch import nn

from hwnas.proxies.batch import ProxyBatch, logits_of, weight_parameters
from hwnas.proxies.registry import register_proxy


@register_proxy("synflow", train=False, samples="one")
def synflow(model: nn.Module, batch: ProxyBatch) -> float:
    """Synaptic flow (Tanaka et al., "Pruning neural networks without any data by iteratively
    conserving synaptic flow", NeurIPS 2020): every parameter replaced by its absolute value, one
    all-ones input (for token ids: the first sample's ids), ``R = sum(logits)``, and the score
    ``sum |W * dR/dW|`` over the weights. It measures how much signal can flow from input to output
    through the weights, independently of data; it grows with width and depth, and a layer that
    cuts the flow (a collapsed bottleneck) sends it to zero.

    Computed in float64, as the reference code does, because the flow is a product over layers
    that overflows float32 in deep networks (it can still reach inf). Evaluation mode, as in
    Tanaka et al.'s default; BatchNorm layers use running statistics reset to mean 0, variance 1,
    so they act as the positive affine map ``|gamma| x / sqrt(1 + eps) + |beta|`` whatever
    statistics the model carries (Abdelfattah et al. 2021 drop BatchNorm, the same map for a
    freshly initialised layer). Layers that are not positively homogeneous (LayerNorm, softmax
    attention) are run as they are: the score is defined, but it no longer is a pure path sum.
    """
    model.double()
    with torch.no_grad():
        for p in model.parameters():
            p.abs_()
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                m.running_mean.zero_()
                m.running_var.fill_(1.0)
    if batch.tokens:
        x = batch.inputs[:1]
    else:
        x = torch.ones((1, *batch.inputs.shape[1:]), dtype=torch.float64, device=batch.inputs.device)
    logits_of(model(x)).sum().backward()
    return float(sum((p.detach() * p.grad).abs().sum() for p in weight_parameters(model) if p.grad is not None))
