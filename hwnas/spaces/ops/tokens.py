"""Token pruning for the ViT search space: keep the most attended patch tokens, fuse the rest.

A ViT block's cost grows with its token count, so dropping uninformative patch tokens is a
searchable dimension (a keep ratio per block). As in EViT (Liang et al., ICLR 2022), a patch
token's importance is the attention the class token pays it; as in SPViT (Kong et al., ECCV 2022)
and HeatViT (Dong et al., HPCA 2023), the pruned tokens are not discarded but fused into one
*package token*, their score-weighted average, so their information still reaches later blocks.

Selection is a hard top-k in training and in evaluation alike: a subnet's token count, and
therefore its cost, is exact and the same in the supernet, the cost model and the exported model.
Token 0 is the class token throughout.
"""
from __future__ import annotations

import math

import torch


def class_attention_scores(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """The class token's attention to each patch token, averaged over heads: (B, N - 1).

    Only the class token's row of softmax(q k^T / sqrt(D)) is computed, O(N D) per head rather
    than O(N^2 D). The softmax runs over all N keys (the class token included), then column 0 is
    dropped, so the scores equal ``attn[:, :, 0, 1:].mean(1)`` of the full attention matrix (as
    in EViT) and sum to less than 1.
    """
    if q.dim() != 4 or k.shape != q.shape or q.shape[2] < 2:
        raise ValueError(f"expected q, k of shape (B, H, N >= 2, D), got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}")
    logits = torch.einsum("bhd,bhnd->bhn", q[:, :, 0], k) / math.sqrt(q.shape[-1])
    return logits.softmax(dim=-1)[:, :, 1:].mean(dim=1)


def kept_count(n_patches: int, keep_ratio: float) -> int:
    """ceil(keep_ratio * n_patches), clamped to [1, n_patches].

    A tolerance of 1e-9 absorbs float error in the product, so 0.7 * 10 = 7.000000000000001
    keeps 7 tokens, not 8.
    """
    if n_patches < 1:
        raise ValueError(f"n_patches must be >= 1, got {n_patches}")
    return min(max(math.ceil(keep_ratio * n_patches - 1e-9), 1), n_patches)


def _top_tokens_in_order(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """Indices of the ``keep`` best scores per row, ties to the lower index, in ascending order.

    The same selection as a stable descending sort cut at ``keep``, written with comparisons and
    one ``topk`` on distinct keys: ONNX has no stable sort, and ``topk`` alone breaks ties in no
    specified order. Each token's rank is the number of tokens that precede it in the stable
    order (a higher score, or an equal score at a lower index); O(N^2) per row, which is small
    next to attention's own N^2.
    """
    n = scores.shape[1]
    index = torch.arange(n, device=scores.device)
    a, b = scores.unsqueeze(2), scores.unsqueeze(1)  # a: token i, b: token j
    before = (b > a) | ((b == a) & (index.view(1, 1, n) < index.view(1, n, 1)))
    rank = before.sum(dim=2)  # (B, N): position of each token in the stable descending order
    key = (rank < keep).to(torch.long) * (n - index)  # kept tokens keyed by reversed index, others 0
    return key.topk(keep, dim=1).indices  # distinct positive keys: exactly the kept, ascending


def select_tokens(x: torch.Tensor, scores: torch.Tensor, keep: int) -> torch.Tensor:
    """Class token + the ``keep`` best-scored patch tokens (original order) + one package token.

    x is (B, N, C) with x[:, 0] the class token; scores is (B, N - 1), one non-negative score per
    patch token (e.g. :func:`class_attention_scores`). The output is (B, 1 + keep + 1, C); the
    package token is the average of the dropped tokens weighted by their scores renormalized to
    sum 1 (uniform if the dropped scores sum to 0). With keep == N - 1 nothing is dropped and x
    itself is returned, with no package token.

    Ties are broken toward the lower token index (a stable sort), so the selection is
    deterministic. Gradients reach x through the class, kept and package tokens, and reach the
    scores through the package weights (the selection itself is not differentiable).
    """
    if x.dim() != 3 or scores.shape != (x.shape[0], x.shape[1] - 1):
        raise ValueError(f"expected x (B, N, C) and scores (B, N - 1), got {tuple(x.shape)} "
                         f"and {tuple(scores.shape)}")
    n_patches = x.shape[1] - 1
    if not 0 <= keep <= n_patches:
        raise ValueError(f"keep must be in [0, {n_patches}], got {keep}")
    if keep == n_patches:
        return x
    cls, patches = x[:, :1], x[:, 1:]
    kept_idx = _top_tokens_in_order(scores.detach(), keep)  # (B, keep), ascending: original order
    kept = torch.gather(patches, 1, kept_idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))

    dropped = torch.ones_like(scores).scatter(1, kept_idx, 0.0)  # 1 where dropped
    w = scores * dropped
    total = w.sum(dim=1, keepdim=True)
    uniform = dropped / dropped.sum(dim=1, keepdim=True)
    w = torch.where(total > 0, w / torch.where(total > 0, total, torch.ones_like(total)), uniform)
    package = torch.einsum("bn,bnc->bc", w.to(x.dtype), patches).unsqueeze(1)
    return torch.cat([cls, kept, package], dim=1)
