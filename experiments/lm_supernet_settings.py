"""How the LM supernet's training settings move its subnets' test perplexity (issue 17's gap).

Trains the supernet of ``experiments/text-lm.yaml`` (one thread, the config's seed and epochs) with
the training settings given as ``--set`` overrides and prints the test perplexity of its largest
and smallest subnets, to set beside ``experiments/bench_lm.py``'s figures for the same
architectures trained alone (``lm_largest_gap`` / ``lm_smallest_gap``). The digits ViT showed
in-place distillation from a weak teacher and one AdamW step on the sandwich's summed gradients
to be what held its subnets back (``experiments/vit_supernet_ablation.py``); this asks the same of
the language model, and of its depth choice (``--set space.depth=any``: every skip pattern, against
the shipped ``prefix``). ``--alone`` also trains the largest and smallest subnets alone (the
trainer's ``fixed_arch``, the same epochs, data and optimizer) and prints the gaps, as
``experiments/bench_lm.py`` does.

Usage: python experiments/lm_supernet_settings.py [--set space.depth=any] [--set train.distill=true] [--alone]
"""
from __future__ import annotations

import argparse
import datetime as dt
import platform
import time

import torch

from hwnas.job.checks import load_job_config
from hwnas.train.components import Components
from hwnas.train.trainer import SupernetTrainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--alone", action="store_true", help="train the largest and smallest alone too: the gaps")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = load_job_config("experiments/text-lm.yaml", ["train.threads=1", *args.set])
    print(f"date: {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}")
    print(f"machine: {platform.machine()}, torch {torch.__version__}")
    print(f"settings: depth {config.space.depth}, distill {config.train.distill}, step_per_subnet "
          f"{config.train.step_per_subnet}, epochs {config.train.epochs}, seed {config.seed}")
    parts = Components.build(config, torch.device("cpu"))
    began = time.perf_counter()
    SupernetTrainer(parts.supernet, parts.data, config.train, config.seed, torch.device("cpu"),
                    config.data.batch_size).train()
    print(f"train_s: {time.perf_counter() - began:.0f}")
    for which, arch in (("largest", parts.space.largest()), ("smallest", parts.space.smallest())):
        supernet = parts.evaluate(arch, "test")
        print(f"{which}_test_perplexity: {supernet:.3f}", flush=True)
        if args.alone:
            alone = Components.build(config, torch.device("cpu"))  # fresh weights, seeded as the supernet's
            SupernetTrainer(alone.supernet, alone.data, config.train, config.seed, torch.device("cpu"),
                            config.data.batch_size, fixed_arch=arch).train()
            alone_ppl = alone.evaluate(arch, "test")
            print(f"{which}_test_perplexity_alone: {alone_ppl:.3f}")
            print(f"{which}_gap: {supernet / alone_ppl:.3f}", flush=True)
    print("compared against: the same architecture trained alone (fixed_arch, same epochs, data, optimizer)")


if __name__ == "__main__":
    main()
