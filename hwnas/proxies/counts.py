"""params and flops: the size and the compute of a model, the baselines every proxy must beat."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from hwnas.proxies.batch import ProxyBatch
from hwnas.proxies.registry import register_proxy


@register_proxy("params", train=False, samples="none")
def params(model: nn.Module, batch: ProxyBatch) -> float:
    """The number of parameters (every ``nn.Parameter``, a shared one counted once; buffers such as
    BatchNorm statistics are not parameters)."""
    return float(sum(p.numel() for p in model.parameters()))


@register_proxy("flops", train=False)
def flops(model: nn.Module, batch: ProxyBatch) -> float:
    """Floating-point operations of one forward pass per sample: ``FlopCounterMode``'s count for
    the batch, divided by the batch size. It counts matrix multiplications, convolutions and
    attention at 2 FLOPs per multiply-accumulate (a ``Linear(i, o)`` is ``2 * i * o`` per sample,
    its bias not counted); element-wise ops, normalizations and activations are not counted. For a
    language model a sample is a sequence of the batch's length. Evaluation mode."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(batch.inputs)
    return counter.get_total_flops() / batch.size
