"""Attention cores for the ViT search space: softmax, linear and multiplication-reduced attention.

Every function takes q, k, v already projected and split into heads, shape (B, H, N, D), and
returns (B, H, N, D); the q/k/v and output projections belong to the caller. Four kinds:

* ``"softmax"``: softmax(q k^T / sqrt(D)) v (Vaswani et al., NeurIPS 2017), O(N^2).
* ``"linear"``: kernelized attention phi(q) (phi(k)^T v) / (phi(q) phi(k)^T 1) (Katharopoulos et
  al., ICML 2020, "Transformers are RNNs"), O(N): the N x N matrix is never formed.
* ``"relu_linear"``: the same with phi = ReLU, EfficientViT's attention (Cai et al., ICCV 2023):
  no exp anywhere, so it maps onto plain multiply-add hardware.
* ``"binary"``: linear attention whose feature map is a {0, 1} code of the sign of q and k, so
  both MatMuls contain only products with 0 or 1, i.e. additions, after ShiftAddViT (You et al.,
  NeurIPS 2023).

:func:`count_attention_ops` gives each kind's multiply and add counts per sample, the figures a
cost model uses before any device has been profiled.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from hwnas.ir import attention_op_counts

FEATURE_MAPS = ("elu", "relu")


def _check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    if q.dim() != 4 or k.shape != q.shape or v.shape[:-1] != q.shape[:-1]:
        raise ValueError(f"expected q, k, v of shape (B, H, N, D), got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")


# -- softmax ------------------------------------------------------------------------------------
def softmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(D)) v, through PyTorch's fused kernel (same value, less memory)."""
    _check_qkv(q, k, v)
    return F.scaled_dot_product_attention(q, k, v, scale=1.0 / math.sqrt(q.shape[-1]))


# -- linear (Katharopoulos et al. 2020) ---------------------------------------------------------
def phi(x: torch.Tensor, kind: str) -> torch.Tensor:
    """The positive feature map phi of linear attention.

    ``"elu"`` is elu(x) + 1, the paper's choice: strictly positive, so the normalizer is never 0.
    ``"relu"`` is relu(x): non-negative but can be all zero for a token, which is why the
    normalizer carries an eps.
    """
    if kind == "elu":
        return F.elu(x) + 1.0
    if kind == "relu":
        return F.relu(x)
    raise ValueError(f"unknown feature map {kind!r}; known: {list(FEATURE_MAPS)}")


def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     feature_map: str = "elu", eps: float = 1e-6) -> torch.Tensor:
    """phi(q) (phi(k)^T v) / (phi(q) . sum_n phi(k_n) + eps), in O(N D^2) time, O(N D + D^2) memory.

    Associativity is the whole trick (Katharopoulos et al. 2020, eq. 5): summing phi(k_n) v_n^T
    over the tokens first gives a (D, D) matrix per head, so no (N, N) tensor exists. The value
    equals :func:`linear_attention_quadratic`.
    """
    _check_qkv(q, k, v)
    phi_q, phi_k = phi(q, feature_map), phi(k, feature_map)
    kv = torch.einsum("bhnd,bhne->bhde", phi_k, v)  # (B, H, D, Dv)
    k_sum = phi_k.sum(dim=2)  # (B, H, D)
    num = torch.einsum("bhnd,bhde->bhne", phi_q, kv)
    den = torch.einsum("bhnd,bhd->bhn", phi_q, k_sum)
    return num / (den.unsqueeze(-1) + eps)


def linear_attention_quadratic(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                               feature_map: str = "elu", eps: float = 1e-6) -> torch.Tensor:
    """The same value as :func:`linear_attention` in its O(N^2) form, A = phi(q) phi(k)^T
    row-normalized, then A v. A reference for tests, not for models."""
    _check_qkv(q, k, v)
    a = phi(q, feature_map) @ phi(k, feature_map).transpose(-2, -1)  # (B, H, N, N)
    a = a / (a.sum(dim=-1, keepdim=True) + eps)
    return a @ v


def relu_linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                          eps: float = 1e-6) -> torch.Tensor:
    """ReLU linear attention (EfficientViT, Cai et al., "EfficientViT: Multi-Scale Linear Attention
    for High-Resolution Dense Prediction", ICCV 2023):

        out_n = relu(q_n) (sum_m relu(k_m)^T v_m) / (relu(q_n) . sum_m relu(k_m) + eps)

    :func:`linear_attention` with ``feature_map="relu"``: EfficientViT replaces softmax by ReLU
    to drop the exp (and the N x N matrix) from the attention core; its scale-free form has no
    1 / sqrt(D). EfficientViT's multi-scale token aggregation (depthwise convolutions of q, k, v)
    belongs to its block, not to the attention core, and is not part of this kind. A token whose
    relu(q) is all zero gets 0 (its numerator is 0 as well), as in EfficientViT's code, whose eps
    serves the same purpose.
    """
    return linear_attention(q, k, v, feature_map="relu", eps=eps)


# -- binary (ShiftAddViT-style) -----------------------------------------------------------------
class _SignSTE(torch.autograd.Function):
    """sign(x) in {-1, +1} forward (sign(0) = +1, so a code is never 1/2); backward is the
    hardtanh straight-through estimator: the gradient passes where |x| <= 1, is 0 elsewhere
    (Courbariaux et al. 2016, "Binarized Neural Networks")."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        ctx.save_for_backward(x)
        return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad_out * (x.abs() <= 1).to(grad_out.dtype)


def binary_codes(x: torch.Tensor) -> torch.Tensor:
    """{0, 1} codes (sign(x) + 1) / 2: 1 where x >= 0; gradient through the hardtanh STE.

    Without a gradient to compute (inference, export) the same value comes from a comparison:
    a traced model then holds no Python autograd function, which ``torch.jit.save`` cannot write.
    """
    if torch.is_grad_enabled() and x.requires_grad:
        return (_SignSTE.apply(x) + 1.0) / 2.0
    return (x >= 0).to(x.dtype)


def binary_linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Linear attention with phi = {0, 1} sign codes: both MatMuls become additions.

    ShiftAddViT (You et al., "ShiftAddViT: Mixture of Multiplication Primitives Towards Efficient
    Vision Transformer", NeurIPS 2023) maps q and k to binary codes in Hamming space and uses them
    in linear attention, so the MatMuls among q, k and v need only additions. Here, with
    b_q = phi(q), b_k = phi(k) in {0, 1}^D per token:

    * ``kv = b_k^T v`` (D x Dv per head): entry (d, e) is the sum of v[n, e] over the tokens n
      whose bit d is set -- a masked accumulation of v rows, no multiplications;
    * ``num = b_q kv``: row n is the sum of the kv rows selected by q_n's set bits -- additions;
    * ``den = b_q . sum_n b_k``: sum_n b_k is a per-bit popcount, the dot product with b_q sums
      the counts of q's set bits -- additions, and an integer;
    * ``out = num / den``: the one remaining multiplication-class op, N * Dv divisions per head.

    This is an adaptation: ShiftAddViT obtains the codes with learned hashing (KSH) of q and k,
    and reparameterizes the remaining weight MatMuls with shifts; here the codes are the signs of
    the already projected q and k, and the projections are the caller's.

    The normalizer is a non-negative integer, and when it is 0 the numerator is 0 as well (no bit
    of q_n meets a set bit of any key). It is clamped at 1 rather than offset by a small eps: the
    value is unchanged wherever it is >= 1, an all-zero token yields 0, and the backward stays
    bounded (a 1 / eps factor would send STE gradients of 1e6 into q for such tokens).
    """
    _check_qkv(q, k, v)
    b_q, b_k = binary_codes(q), binary_codes(k)
    kv = torch.einsum("bhnd,bhne->bhde", b_k, v)
    num = torch.einsum("bhnd,bhde->bhne", b_q, kv)
    den = torch.einsum("bhnd,bhd->bhn", b_q, b_k.sum(dim=2))
    return num / den.clamp_min(1.0).unsqueeze(-1)


# -- registry -----------------------------------------------------------------------------------
ATTENTIONS: dict[str, Callable[..., torch.Tensor]] = {
    "softmax": softmax_attention,
    "linear": linear_attention,
    "relu_linear": relu_linear_attention,
    "binary": binary_linear_attention,
}


def attention(kind: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              **kwargs) -> torch.Tensor:
    """The attention core ``kind`` (a key of :data:`ATTENTIONS`); kwargs go to that function."""
    return _lookup(kind)(q, k, v, **kwargs)


def _lookup(kind: str) -> Callable[..., torch.Tensor]:
    try:
        return ATTENTIONS[kind]
    except KeyError:
        raise ValueError(f"unknown attention {kind!r}; known: {sorted(ATTENTIONS)}") from None


def count_attention_ops(kind: str, n_tokens: int, dim_per_head: int, heads: int) -> dict[str, int]:
    """Multiplies and adds of a registered attention kind's core (the formulas live with the op
    graph they price: :func:`hwnas.ir.attention_op_counts`)."""
    _lookup(kind)
    return attention_op_counts(kind, n_tokens, dim_per_head, heads)
