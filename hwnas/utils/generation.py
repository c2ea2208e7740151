"""Greedy decoding by any next-token model, the slow way: the reference a cached decoder is checked
against.

It lives low (``hwnas.utils``) because a space's standalone model (its ``generate(..., use_cache=False)``)
and the export's check (the exported model's cached generation against the supernet's) both use it,
and the export layer may not import a space.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


@torch.no_grad()
def greedy_generate(model: nn.Module, input_ids: torch.Tensor | Sequence[int], max_new_tokens: int) -> torch.Tensor:
    """The prompt's token ids followed by ``max_new_tokens`` greedy ones (``[1, P + n]``), by any
    ``model(ids [1, T]) -> logits [1, T, V]`` (a supernet's active subnet, a standalone model), the
    whole prefix run again for every token."""
    device = next(model.parameters()).device
    ids = torch.as_tensor(input_ids, dtype=torch.long, device=device).reshape(1, -1)
    for _ in range(int(max_new_tokens)):
        ids = torch.cat([ids, model(ids)[:, -1:].argmax(-1)], dim=1)
    return ids
