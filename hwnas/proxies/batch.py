"""What every proxy is given: the batch, its loss, the model's logits and the weights a proxy scores.

Proxies work on classifiers (``[B, C]`` logits, ``[B]`` class targets) and language models
(``[B, T, V]`` logits, ``[B, T]`` token targets) alike: the default loss flattens the leading
dimensions of logits and targets into one, so a token is a sample of the cross entropy. Inputs are
images or features (floating point) or token ids (integers); :attr:`ProxyBatch.tokens` says which,
for the proxies that need a gradient with respect to the input.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from hwnas.errors import ProxyError

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def default_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross entropy of ``[..., C]`` logits against ``[...]`` class (or token) ids, every leading
    position one sample: ``[B, C]`` with ``[B]``, or ``[B, T, V]`` with ``[B, T]``."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def logits_of(output: Any) -> torch.Tensor:
    """The logits tensor of a model's output: the tensor itself, a ``.logits`` attribute or key
    (Hugging Face models), or the first element of a tuple or list."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict) and "logits" in output:
        return output["logits"]
    if isinstance(getattr(output, "logits", None), torch.Tensor):
        return output.logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise ProxyError(f"proxies: cannot find the logits in the model's output ({type(output).__name__}); "
                     "return a tensor, a tuple starting with one, or an object with .logits")


def weight_parameters(model: nn.Module) -> list[torch.nn.Parameter]:
    """The weights a proxy scores: every parameter with two or more dimensions (the kernels of
    Conv and Linear layers, embeddings, attention projections). Biases and normalization scales
    are left out, as the reference implementations score only Conv and Linear weights; a shared
    (tied) weight is counted once."""
    return [p for p in model.parameters() if p.dim() >= 2]


@dataclass(frozen=True)
class ProxyBatch:
    """One batch a model is scored on: inputs (first dimension the batch), optional targets, the
    loss of logits against targets, and the seed the scoring runs under."""

    inputs: torch.Tensor
    targets: torch.Tensor | None
    loss: LossFn
    seed: int

    @property
    def size(self) -> int:
        return int(self.inputs.shape[0])

    @property
    def tokens(self) -> bool:
        """True when the inputs are ids (integers), which have no gradient."""
        return not (self.inputs.is_floating_point() or self.inputs.is_complex())

    def loss_of(self, model: nn.Module, index: torch.Tensor | None = None) -> torch.Tensor:
        """The loss of ``model`` on the batch, or on the samples ``index`` of it."""
        if self.targets is None:
            raise ProxyError("proxies: this proxy needs targets (pass targets=...)")
        inputs, targets = self.inputs, self.targets
        if index is not None:
            inputs, targets = inputs[index], targets[index]
        return self.loss(logits_of(model(inputs)), targets)

    def require_samples(self, proxy: str, at_least: int = 2) -> None:
        """Statistics over samples (a kernel, a correlation, a standard deviation) need several."""
        if self.size < at_least:
            raise ProxyError(f"proxy {proxy!r} needs a batch of at least {at_least} samples (got {self.size})")
