"""Why the ViT supernet lost to training alone, and what closed the gap: an ablation, measured here.

Trains the supernet of ``experiments/digits-vit.yaml`` under several training settings and space
restrictions, and prints for each the test accuracy of its largest and smallest subnets, beside
the same architectures trained alone with the same epochs and optimizer (as
``experiments/bench_ops.py`` does; the alone runs of the full space are shared by every setting
on it). Settings (``train.*`` of the config):

* ``old``: in-place distillation on, one AdamW step on the summed gradients of the sandwich's four
  subnets (what hwnas did before issue 16, as the CNN configs still do);
* ``old_softmax_only`` / ``old_keep_1`` / ``old_float`` / ``old_arch_only``: the same training on
  the space with one compression axis removed (attention kind; token keep-ratio; bits) or all three:
  does one axis cause the gap?
* ``no_distill``: distillation off, summed step;
* ``step_per_subnet_distill``: one step per subnet, distillation on;
* ``new``: distillation off, one step per subnet (the shipped config).

Prints ``<setting>_<largest|smallest>_supernet``, ``_alone`` and ``_gap`` (alone minus supernet).

Usage: python experiments/vit_supernet_ablation.py [--settings old new ...] [--seed S]
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import time
from pathlib import Path

import torch

from bench_ops import train_alone
from hwnas.job.checks import load_job_config
from hwnas.train.components import Components
from hwnas.train.trainer import SupernetTrainer

CONFIG = Path(__file__).with_name("digits-vit.yaml")
OLD = ["train.distill=true", "train.step_per_subnet=false"]
SETTINGS = {
    "old": OLD,
    "old_softmax_only": OLD + ["space.attentions=[softmax]"],
    "old_keep_1": OLD + ["space.keep_ratios=[1.0]"],
    "old_float": OLD + ["space.weight_bits=[32]", "space.act_bits=[32]"],
    "old_arch_only": OLD + ["space.attentions=[softmax]", "space.keep_ratios=[1.0]", "space.weight_bits=[32]",
                            "space.act_bits=[32]"],
    "no_distill": ["train.distill=false", "train.step_per_subnet=false"],
    "step_per_subnet_distill": ["train.distill=true", "train.step_per_subnet=true"],
    "new": ["train.distill=false", "train.step_per_subnet=true"],
}
SPACE_KEYS = ("space.",)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"date: {dt.datetime.now().isoformat(timespec='seconds')}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}")
    torch.set_num_threads(1)
    alone_cache: dict[tuple, float] = {}
    for name in args.settings:
        started = time.perf_counter()
        sets = SETTINGS[name] + [f"seed={args.seed}"]
        config = load_job_config(CONFIG, sets)
        parts = Components.build(config, torch.device("cpu"))
        SupernetTrainer(parts.supernet, parts.data, config.train, config.seed, parts.compute,
                        config.data.batch_size).train()
        # the alone baseline depends on the space and the optimizer, not on how the supernet trains
        baseline = load_job_config(CONFIG, [s for s in sets if s.startswith(SPACE_KEYS)] + [f"seed={args.seed}"])
        for which in ("largest", "smallest"):
            arch = getattr(parts.space, which)()
            key = (arch, tuple(s for s in sets if s.startswith(SPACE_KEYS)))
            if key not in alone_cache:
                alone_cache[key] = train_alone(baseline, arch)
            supernet = parts.evaluate(arch, "test")
            print(f"{name}_{which}_supernet: {supernet:.4f}")
            print(f"{name}_{which}_alone: {alone_cache[key]:.4f}")
            print(f"{name}_{which}_gap: {alone_cache[key] - supernet:.4f}")
        print(f"{name}_seconds: {time.perf_counter() - started:.0f}", flush=True)


if __name__ == "__main__":
    main()
