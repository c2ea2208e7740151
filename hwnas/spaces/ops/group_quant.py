"""Quantizers for language-model layers: per-group weight scales, per-token activation scales.

**Weights: symmetric round-to-nearest with one scale per output channel and group of ``group_size``
consecutive inputs**, ``s = max|w_group| / (2^(b-1) - 1)``, ``q = clamp(round(w / s), -2^(b-1),
2^(b-1) - 1)``, forward value ``q * s``; the gradient passes straight through (STE), so the shared
float weight keeps learning under every bit-width. Why per group: LLM weight matrices hold a few
outlier input channels whose magnitude is tens of times the rest; one scale per tensor (or per
output row) is set by them and rounds every ordinary weight of the row to zero at <= 4 bits. A
scale per group of 64-128 inputs confines an outlier to its group: the layout GPTQ, AWQ and
llama.cpp's ``Q4_0`` / ``Q4_1`` blocks use. Why absmax and not learned (LSQ) steps: the scales
follow the weights as they are fine-tuned and need no state, so a pretrained checkpoint loads
with nothing left untrained and the exported weights are a pure function of the float ones.
At 2 bits the levels are {-1, 0, 1} x s (ternary, as TWN / BitNet b1.58). A row whose width is
not a multiple of ``group_size`` ends with a shorter group; a row narrower than it is one group.

**Activations: dynamic symmetric absmax per token at 8 bits** (the LLM.int8() / SmoothQuant
per-token scheme): each token's scale is computed on the fly, so nothing is calibrated.

One function each computes the forward value in training, in the supernet's evaluation and in
the exported model, so they agree to the last bit.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

FLOAT = 16  # an LM bit-width of 16 means "not quantized" (a float16 / bfloat16 deployment's storage)


def _ste(x: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``value`` forward, identity gradient to ``x``."""
    return x + (value - x).detach()


@torch.no_grad()
def group_quantize_value(w: torch.Tensor, bits: int, group_size: int) -> torch.Tensor:
    """The fake-quantized value of a 2-D weight ``[out, in]`` (see the module docstring)."""
    if bits >= FLOAT:
        return w
    out_dim, in_dim = w.shape
    g = min(group_size, in_dim)
    pad = (-in_dim) % g
    groups = F.pad(w, (0, pad)).reshape(out_dim, -1, g)
    qp = 2 ** (bits - 1) - 1
    scale = (groups.abs().amax(dim=-1, keepdim=True) / qp).clamp_min(1e-12)
    q = torch.clamp(torch.round(groups / scale), -qp - 1, qp) * scale
    return q.reshape(out_dim, -1)[:, :in_dim]


def group_quantize(w: torch.Tensor, bits: int, group_size: int) -> torch.Tensor:
    """:func:`group_quantize_value` forward, straight-through backward."""
    if bits >= FLOAT:
        return w
    return _ste(w, group_quantize_value(w, bits, group_size))


def token_quantize(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Per-token (last dimension) dynamic absmax fake quantization, straight-through backward."""
    if bits >= FLOAT:
        return x
    qp = 2 ** (bits - 1) - 1
    with torch.no_grad():
        scale = (x.abs().amax(dim=-1, keepdim=True) / qp).clamp_min(1e-12)
        value = torch.clamp(torch.round(x / scale), -qp - 1, qp) * scale
    return _ste(x, value) if x.requires_grad else value
