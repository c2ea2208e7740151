"""Proxies from the gradient of the loss over the weights: grad_norm, snip, zico.

Each runs the model in training mode on the batch (dropout seeded) and reads the gradients of the
weights (:func:`~hwnas.proxies.batch.weight_parameters`); sums are taken in float64.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from hwnas.proxies.batch import ProxyBatch, weight_parameters
from hwnas.proxies.registry import register_proxy

ZICO_SPLITS = 2  # mini-batches the batch is split into for zico's mean and deviation of gradients


def loss_gradients(model: nn.Module, batch: ProxyBatch, index: torch.Tensor | None = None) -> list[torch.Tensor]:
    """The gradient of the loss (on the batch, or its samples ``index``) for each weight, zeros for
    a weight the loss does not reach."""
    model.zero_grad(set_to_none=True)
    batch.loss_of(model, index).backward()
    return [torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in weight_parameters(model)]


@register_proxy("grad_norm", needs_targets=True)
def grad_norm(model: nn.Module, batch: ProxyBatch) -> float:
    """The L2 norm of the loss gradient over all weights, ``sqrt(sum_l ||dL/dW_l||^2)``: how strongly
    one batch pulls the weights at this point (Abdelfattah et al., "Zero-Cost Proxies for
    Lightweight NAS", ICLR 2021, who sum per-layer norms instead)."""
    grads = loss_gradients(model, batch)
    return math.sqrt(float(sum(g.double().pow(2).sum() for g in grads)))


@register_proxy("snip", needs_targets=True)
def snip(model: nn.Module, batch: ProxyBatch) -> float:
    """SNIP's connection sensitivity summed over all weights, ``sum |W * dL/dW|``: how much the loss
    would change if each connection were removed (Lee et al., "SNIP: Single-shot Network Pruning
    based on Connection Sensitivity", ICLR 2019; summed as a network score by Abdelfattah et al.
    2021)."""
    grads = loss_gradients(model, batch)
    return float(sum((p.detach().double() * g.double()).abs().sum() for p, g in zip(weight_parameters(model), grads)))


@register_proxy("zico", needs_targets=True)
def zico(model: nn.Module, batch: ProxyBatch) -> float:
    """ZiCo, the inverse coefficient of variation of gradients (Li et al., "ZiCo: Zero-shot NAS via
    Inverse Coefficient of Variation on Gradients", ICLR 2023): the batch is shuffled (by the seed)
    and split into ``ZICO_SPLITS`` mini-batches; for each weight tensor, per element, the mean of
    ``|dL/dW|`` over the mini-batches divided by its standard deviation, summed, and the log of
    that sum added up over weight tensors (one whose sum is zero adds nothing). Large, consistent
    gradients score high. Each mini-batch's gradient is its own (the authors' code accumulates
    them across mini-batches without clearing; the paper defines them per batch)."""
    batch.require_samples("zico", ZICO_SPLITS)
    order = torch.randperm(batch.size, device=batch.inputs.device)
    per_split = [loss_gradients(model, batch, index) for index in order.tensor_split(ZICO_SPLITS)]
    total = 0.0
    for layer in zip(*per_split):
        grads = torch.stack([g.double().flatten() for g in layer])
        std = grads.std(dim=0, correction=0)
        spread = std > 0
        ratio = float((grads.abs().mean(dim=0)[spread] / std[spread]).sum())
        if ratio > 0:
            total += math.log(ratio)
    return total
