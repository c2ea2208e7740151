"""Llama-family layers: the functions the LM supernet computes with, and the fixed modules an
exported LM subnet is made of (each runs one op of :func:`hwnas.spaces.lm.graph.lm_op_graph`, so
the profiler can time it in place).

The conventions are Hugging Face transformers' ``LlamaForCausalLM`` (``modeling_llama.py``), so a
pretrained checkpoint loads without any permutation: RMSNorm computed in float32 as
``weight * x / sqrt(mean(x^2) + eps)``; rotary positions on the two halves of each head
(``rotate_half``), ``inv_freq = theta^(-2i / head_dim)``; query head ``i`` reads key-value head
``i // (heads / kv_heads)``; attention scaled by ``head_dim^-0.5``; the MLP is
``down(silu(gate(x)) * up(x))``; no biases.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hwnas.spaces.ops.group_quant import FLOAT, token_quantize


# -- the functions ---------------------------------------------------------------------------------
def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    dtype = x.dtype
    x = x.float()
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x.to(dtype)


def rope_cos_sin(start: int, length: int, head_dim: int, theta: float,
                 device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin ``[length, head_dim]`` of positions ``start .. start + length - 1``."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).to(device=device, dtype=torch.float)
                                / head_dim))
    positions = torch.arange(start, start + length, device=device).float()
    freqs = positions[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary positions on ``x`` ``[B, heads, T, head_dim]``."""
    return x * cos.to(x.dtype) + rotate_half(x) * sin.to(x.dtype)


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Grouped-query causal attention: q ``[B, H, Tq, D]`` over k, v ``[B, K, Tk, D]`` (K divides H),
    the queries being the last Tq positions of the Tk; returns ``[B, Tq, H * D]``."""
    heads, kv = q.shape[1], k.shape[1]
    if heads != kv:
        k = k.repeat_interleave(heads // kv, dim=1)
        v = v.repeat_interleave(heads // kv, dim=1)
    tq, tk = q.shape[2], k.shape[2]
    if tq == tk:
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    elif tq == 1:
        out = F.scaled_dot_product_attention(q, k, v)
    else:
        mask = torch.ones(tq, tk, dtype=torch.bool, device=q.device).tril(tk - tq)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out.transpose(1, 2).reshape(q.shape[0], tq, heads * q.shape[3])


# -- the fixed modules, one per op -------------------------------------------------------------------
class TokenEmbedding(nn.Embedding):
    """Token ids -> vectors (op ``embedding``)."""


class RMSNorm(nn.Module):
    """Op ``rmsnorm``."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = float(eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


class LMLinear(nn.Module):
    """Op ``linear`` without bias: input tokens quantized per token at ``abits`` (none at 16),
    weights stored as their dequantized values (on the per-group grid of ``wbits``)."""

    def __init__(self, cin: int, cout: int, wbits: int = FLOAT, abits: int = FLOAT):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(cout, cin))
        self.wbits, self.abits = int(wbits), int(abits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(token_quantize(x, self.abits), self.weight)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1]}, {self.weight.shape[0]}, wbits={self.wbits}, abits={self.abits}"


class Rotary(nn.Module):
    """Op ``rope``: rotary positions on q and k ``[B, heads, T, head_dim]`` starting at ``start``."""

    def __init__(self, head_dim: int, theta: float):
        super().__init__()
        self.head_dim, self.theta = int(head_dim), float(theta)

    def forward(self, q: torch.Tensor, k: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        cos, sin = rope_cos_sin(start, q.shape[2], self.head_dim, self.theta, q.device)
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin)


class KVAttention(nn.Module):
    """Op ``kv_attention``: causal grouped-query attention of the new tokens over the cached keys
    and values and their own; returns the output and the grown cache ``(k, v)``."""

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                past: tuple[torch.Tensor, torch.Tensor] | None = None):
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        return causal_attention(q, k, v), (k, v)


class SwiGLU(nn.Module):
    """Op ``swiglu``: ``silu(gate) * up``."""

    def forward(self, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        return F.silu(gate) * up


class LMHead(nn.Module):
    """Op ``linear`` (float) to the vocabulary; tied: the embedding's weight, passed in, no own weight."""

    def __init__(self, dim: int, vocab: int, tied: bool):
        super().__init__()
        self.tied = bool(tied)
        self.weight = None if tied else nn.Parameter(torch.zeros(vocab, dim))

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        return F.linear(x, embedding if self.weight is None else self.weight)


OP_MODULES = (TokenEmbedding, RMSNorm, LMLinear, Rotary, KVAttention, SwiGLU, LMHead)
