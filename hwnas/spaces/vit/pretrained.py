"""Starting a ViT supernet from a local timm checkpoint (InstaTune-style: pretrained, then elastic)."""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file
from timm.layers import resample_abs_pos_embed

from hwnas.errors import HwnasError


def load_timm_checkpoint(supernet: torch.nn.Module, path: Path) -> None:
    """Load a timm ViT's weights into the supernet (its largest subnet), checking every tensor.

    Reads safetensors, or a PyTorch file with ``weights_only=True`` (a dict of tensors, possibly
    under ``model`` or ``state_dict``). The position embedding is resampled when the number of
    patches differs; a classifier for another number of classes is left at its initial value.
    """
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            for key in ("model", "state_dict"):
                if isinstance(state, dict) and isinstance(state.get(key), dict):
                    state = state[key]
    except FileNotFoundError:
        raise HwnasError(f"space.pretrained: {path} does not exist") from None
    except Exception as exc:
        raise HwnasError(f"space.pretrained: {path} is not a readable checkpoint "
                         f"({str(exc).splitlines()[0]})") from None
    own = supernet.state_dict()
    loaded = {}
    for key, value in state.items():
        if key not in own:
            continue
        if key == "pos_embed" and value.shape != own[key].shape and value.shape[-1] == own[key].shape[-1]:
            grid = int(round((own[key].shape[1] - 1) ** 0.5))
            value = resample_abs_pos_embed(value, (grid, grid), num_prefix_tokens=1)
        if key.startswith("head.") and value.shape != own[key].shape:
            continue  # another number of classes: the classifier is trained from scratch
        if value.shape != own[key].shape:
            raise HwnasError(f"space.pretrained: {path} has {key} of shape {tuple(value.shape)}, the supernet's "
                             f"largest subnet needs {tuple(own[key].shape)}")
        loaded[key] = value
    missing = [k for k in own if k not in loaded and ".quant." not in k and not k.startswith("head.")]
    if missing:
        raise HwnasError(f"space.pretrained: {path} lacks {missing[0]} (is it a timm ViT of the largest size?)")
    supernet.load_state_dict(loaded, strict=False)
