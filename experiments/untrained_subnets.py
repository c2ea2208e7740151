"""Standalone subnets of a space exported from an untrained supernet, for timing benchmarks:
latency does not depend on weight values, so no training is needed to measure it."""
from __future__ import annotations

import torch

from hwnas.spaces.registry import space_entry


def untrained_subnet_models(space, archs, space_type: str = "cnn") -> list[torch.nn.Module]:
    """One eval-mode standalone model per arch, every quantizer given its step by a forward pass
    (as training would), from one supernet seeded 0."""
    torch.manual_seed(0)
    supernet = space_entry(space_type).build_supernet(space).eval()
    models = []
    for arch in archs:
        supernet.set_active(arch)
        with torch.no_grad():
            supernet(torch.zeros(2, *space.input_shape))
        models.append(supernet.extract().eval())
    return models
