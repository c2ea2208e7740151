"""Short fine-tuning of one subnet before export, as the field does after extraction.

A subnet taken from a weight-sharing supernet shares its weights with every other subnet; a few
epochs on its own recover some accuracy (Once-for-All fine-tunes its specialized subnets; APQ and
SimQ-NAS fine-tune the chosen quantized network). The subnet is trained *inside the supernet*
with its arch fixed, so training runs the same quantizers (LSQ steps, shift weights' straight-
through rounding, AdderNet's gradients) as the search did, and the weights stay on their grids;
it is then extracted as usual. The supernet copy in memory is changed, never the job's file.

The learning rate is the configured one times :data:`LR_SCALE` with a cosine decay and no
warm-up; the result is deterministic for a seed.
"""
from __future__ import annotations

from typing import Any

import torch

from hwnas.train.trainer import SupernetTrainer

LR_SCALE = 0.1


def finetune_subnet(parts, arch, epochs: int, seed: int, on_epoch=None) -> list[dict[str, Any]]:
    """Train ``arch`` alone in ``parts.supernet`` for ``epochs`` epochs; returns the per-epoch history."""

    train = parts.config.train
    schedule = train.model_copy(update={"epochs": int(epochs), "warmup_epochs": 0, "lr": train.lr * LR_SCALE,
                                        "distill": False})
    torch.manual_seed(seed)
    trainer = SupernetTrainer(parts.supernet, parts.data, schedule, seed, parts.compute,
                              parts.config.data.batch_size, on_epoch=on_epoch, fixed_arch=arch)
    history = trainer.train()
    parts.supernet.eval()
    return history
