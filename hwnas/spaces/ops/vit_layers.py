"""Fixed transformer layers: what an exported ViT subnet is made of, and what the profiler times.

Each class executes one op of the ViT op graph (see :func:`hwnas.ir.vit_op_graph`),
so the profiler can time it in place: layer norm, a quantized linear layer, the attention core,
token selection, the residual add, the patch embedding and the class-token classifier.
"""
from __future__ import annotations

import torch
from torch import nn

from hwnas.spaces.ops.attention import attention
from hwnas.spaces.ops.quant import FLOAT_BITS, ActQuant
from hwnas.spaces.ops.tokens import class_attention_scores, select_tokens

LINEAR_ACTIVATIONS = {"none": nn.Identity, "gelu": nn.GELU}


class QLinear(nn.Module):
    """Input quantizer -> linear (weights stored quantized) -> activation.

    ``op="shift"`` marks a layer whose stored weights are exact signed powers of two (log2
    weights, :func:`hwnas.spaces.ops.shift.log2_quantize`); it runs as the same float linear, and
    the export writes its weights' signs and exponents for a shift kernel.
    """

    def __init__(self, cin: int, cout: int, wbits: int = FLOAT_BITS, abits: int = FLOAT_BITS,
                 act: str = "none", bias: bool = True, op: str = "mult"):
        super().__init__()
        self.wbits, self.abits, self.op = int(wbits), int(abits), op
        self.quant = ActQuant(abits, True) if abits < FLOAT_BITS else nn.Identity()
        self.linear = nn.Linear(cin, cout, bias=bias)
        self.act = LINEAR_ACTIVATIONS[act]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.linear(self.quant(x)))


class TokenLayerNorm(nn.LayerNorm):
    """Layer norm over the embedding of every token (a class of its own so the profiler finds it)."""


class AttentionCore(nn.Module):
    """The attention of q, k, v (B, H, N, D) by kind: softmax, linear, relu_linear or binary."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return attention(self.kind, q, k, v)


class TokenSelect(nn.Module):
    """Keep the class token and the ``keep`` patch tokens the class token attends to most; fuse
    the rest into one package token (HeatViT / SPViT)."""

    def __init__(self, keep: int):
        super().__init__()
        self.keep = keep

    def forward(self, x: torch.Tensor, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return select_tokens(x, class_attention_scores(q, k), self.keep)


class PatchEmbed(nn.Module):
    """Non-overlapping patches -> tokens, with the class token and position embedding."""

    def __init__(self, in_chans: int, dim: int, patch: int, tokens: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return x + self.pos_embed


class TokenClassifier(nn.Module):
    """The class token through a linear classifier (kept in float)."""

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x[:, 0])
