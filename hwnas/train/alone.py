"""One subnet trained alone from initialization: the measured figure of a training-free search.

A search that ranks subnets by a zero-cost proxy has no trained supernet to evaluate them with,
so each subnet it chooses is trained on its own, from the weights the job's supernet starts from
(a supernet rebuilt under the job's seed, with only this arch active: the trainer's
``fixed_arch``), for a few epochs of the job's schedule, on the labels. Training inside a supernet
keeps the quantizers (LSQ steps, shift and adder operators) exactly those the search costed, and
the subnet is then extracted and evaluated as any other. Deterministic for a seed.
"""
from __future__ import annotations

import torch

from hwnas.spaces.dims import Arch
from hwnas.spaces.registry import space_entry
from hwnas.train.components import Components
from hwnas.train.trainer import SupernetTrainer


def fresh_components(parts: Components) -> Components:
    """``parts`` with a newly initialised supernet (under the job's seed), sharing data and space."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(parts.config.seed)
        supernet = space_entry(parts.config.space.type).build_supernet(parts.space).to(parts.compute)
    if parts.compute.type == "cpu":
        supernet.to(memory_format=torch.channels_last)  # as Components.build: the same layout everywhere
    return Components(parts.config, parts.data, parts.space, supernet, parts.compute)


def train_alone(parts: Components, arch: Arch, epochs: int, steps: int | None = None) -> Components:
    """A copy of ``parts`` whose supernet has trained ``arch`` alone for ``epochs`` epochs (at most
    ``steps`` optimizer steps each, when given) with the job's optimizer and learning-rate
    schedule; its quantizer steps settled, ready for :meth:`Components.evaluate`."""
    alone = fresh_components(parts)
    train = parts.config.train
    # a warm-up of at most a third of the epochs: a run of one or two epochs must not end in its warm-up
    schedule = train.model_copy(
        update={"epochs": int(epochs), "distill": False, "warmup_epochs": min(train.warmup_epochs, int(epochs) // 3),
                **({"max_steps": int(steps)} if steps is not None else {})})
    with torch.random.fork_rng(devices=[]):  # dropout draws from torch's own generator: seed it, so a rerun
        torch.manual_seed(parts.config.seed)  # (an export) trains the very weights the job evaluated
        SupernetTrainer(alone.supernet, alone.data, schedule, parts.config.seed, alone.compute,
                        parts.config.data.batch_size, fixed_arch=arch).train()
    alone.settle_quantizers()
    return alone
