"""Run a model once with forward pre-hooks on some of its modules, removing them afterwards."""
from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import nn


def run_with_pre_hooks(model: nn.Module, x: torch.Tensor, hook: Callable, modules: Iterable[nn.Module]) -> None:
    """``model(x)`` under inference mode with ``hook`` as a forward pre-hook on each of
    ``modules``; the hooks are removed even when the forward raises."""
    handles = [m.register_forward_pre_hook(hook) for m in modules]
    try:
        with torch.inference_mode():
            model(x)
    finally:
        for h in handles:
            h.remove()
