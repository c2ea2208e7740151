"""Data-parallel supernet training: steps per second on 1 and on 2 workers, and the accuracy reached.

Trains the supernet of a shipped config (default ``experiments/digits-cnn.yaml``) serially
(:class:`~hwnas.train.trainer.SupernetTrainer` in this process, one torch thread) and on 2 Ray
Train workers of one thread each (:class:`~hwnas.train.distributed.RaySupernetTrainer`, a local
Ray of 2 CPUs), with the same config, seed and global batch. The two are interleaved over
``--rounds`` rounds in a shuffled order. Prints ``name: value`` lines:

- ``steps_per_second_1_worker`` / ``_2_workers``: optimizer steps (global batches) per second of
  training, the median over every epoch of every round (each epoch's own time, as the trainer
  records it; Ray's start-up, the workers' start and the checkpoint transfers are outside it), with
  the spread (max - min); ``speedup_2_workers`` is their ratio (goal >= 1.7).
- ``ray_start_s`` (starting the local Ray) and ``ray_overhead_s`` (the rest of the 2-worker run's
  wall time beyond its epochs: workers, process group, data, checkpoints), medians over rounds.
- ``accuracy_1_worker`` / ``_2_workers``: test accuracy of the largest and of the smallest subnet
  (fixed archs, chosen on nothing) after BN recalibration, averaged over the two and over the
  rounds; round r trains both modes with seed r, so a round is a paired comparison.
  ``accuracy_delta`` = 2 workers minus 1 (goal within 0.005), with the paired per-round deltas;
  ``accuracy_seed_spread_1_worker`` (max - min over rounds of the serial run) says what noise is
  for this config. With batch norm the modes differ by shard statistics; without it (the ViT) by
  float rounding.
- ``step_ceiling_2_workers``: serial milliseconds per step on the full batch over those on half
  of it (both in this process, one thread): the speedup two workers would reach with free
  communication, since a step's fixed cost (Python, per-layer dispatch, weight quantizers,
  the optimizer) does not shrink with the shard.

Usage: python experiments/bench_train_scale.py [--config PATH] [--set KEY=VALUE ...] [--rounds 3]
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import random
import time

import numpy as np
import torch

from hwnas.data import iterate_batches
from hwnas.job.checks import load_job_config
from hwnas.train.components import Components
from hwnas.train.distributed import RaySupernetTrainer
from hwnas.train.trainer import SupernetTrainer
from hwnas.utils.timing import pinned_threads

CPU = torch.device("cpu")


def _accuracies(parts: Components) -> dict[str, float]:
    with pinned_threads(1):
        parts.settle_quantizers()
        return {"largest": parts.evaluate(parts.space.largest(), "test"),
                "smallest": parts.evaluate(parts.space.smallest(), "test")}


def run(config, workers: int) -> dict:
    """Train from scratch on ``workers`` (1: serially in this process); the epoch rates, the
    accuracies and, with Ray, where the rest of the time went."""
    parts = Components.build(config, CPU)
    steps = len(parts.data.train) // config.data.batch_size
    began = time.perf_counter()
    if workers == 1:
        trainer = SupernetTrainer(parts.supernet, parts.data, config.train, config.seed, CPU,
                                  config.data.batch_size)
    else:
        trainer = RaySupernetTrainer(config, parts.supernet, parts.data, workers=workers, threads=1)
    history = trainer.train()
    wall = time.perf_counter() - began
    epochs = [record["seconds"] for record in history]
    result = {"rates": [steps / s for s in epochs], "accuracy": _accuracies(parts)}
    if workers > 1:
        result["ray_start_s"] = trainer.ray_start_seconds
        result["ray_overhead_s"] = wall - trainer.ray_start_seconds - sum(epochs)
    return result


def step_ceiling(config, steps: int = 12) -> float:
    """Serial seconds per step on the full batch over those on half of it (see the docstring)."""
    parts = Components.build(config, CPU)
    trainer = SupernetTrainer(parts.supernet, parts.data, config.train, config.seed, CPU, config.data.batch_size)
    net = parts.supernet.train()
    x, y = next(iter(iterate_batches(parts.data.train, config.data.batch_size, shuffle=False)))
    draw = np.random.default_rng(0)
    seconds = {}
    with pinned_threads(1):
        for _ in range(2):  # interleaved rounds; the first also sets every quantizer step
            for size in (len(y), len(y) // 2):
                began = time.perf_counter()
                for _ in range(steps // 2):
                    trainer.optimizer.zero_grad(set_to_none=True)
                    trainer._accumulate_gradients(net, x[:size], y[:size], trainer._subnets(draw, None))
                    trainer.optimizer.step()
                seconds.setdefault(size, []).append(time.perf_counter() - began)
    return min(seconds[len(y)]) / min(seconds[len(y) // 2])


def _median(values: list[float]) -> str:
    return f"{np.median(values):.3f} (spread {max(values) - min(values):.3f}, {len(values)} values)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="experiments/digits-cnn.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config overrides, as hwnas search --set takes them")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, one seed each (0, 1, ...)")
    args = parser.parse_args()
    config = load_job_config(args.config, ["train.threads=1", *args.set])
    print(f"date: {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, "
          f"torch {torch.__version__}")
    print(f"load_average_at_start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"config: {args.config} {' '.join(args.set)} (epochs {config.train.epochs}, batch "
          f"{config.data.batch_size}, image size {config.data.image_size or 'own'})")
    print("compared: SupernetTrainer on 1 thread in this process against RaySupernetTrainer on 2 Ray Train "
          "workers of 1 thread (data parallel, a local Ray of 2 CPUs); same config, seed and global batch")
    results: dict[int, list[dict]] = {1: [], 2: []}
    rng = random.Random(0)
    for seed in range(args.rounds):
        seeded = load_job_config(args.config, ["train.threads=1", *args.set, f"seed={seed}"])
        order = [1, 2]
        rng.shuffle(order)
        for workers in order:
            results[workers].append(run(seeded, workers))
    rates = {w: [r for res in results[w] for r in res["rates"]] for w in results}
    print(f"steps_per_second_1_worker: {_median(rates[1])}")
    print(f"steps_per_second_2_workers: {_median(rates[2])}")
    print(f"speedup_2_workers: {np.median(rates[2]) / np.median(rates[1]):.2f} (goal >= 1.7)")
    print(f"step_ceiling_2_workers: {step_ceiling(config):.2f}")
    print(f"ray_start_s: {_median([r['ray_start_s'] for r in results[2]])}")
    print(f"ray_overhead_s: {_median([r['ray_overhead_s'] for r in results[2]])}")
    means = {w: [(r["accuracy"]["largest"] + r["accuracy"]["smallest"]) / 2 for r in results[w]] for w in results}
    for workers, name in ((1, "1_worker"), (2, "2_workers")):
        largest = np.mean([r["accuracy"]["largest"] for r in results[workers]])
        smallest = np.mean([r["accuracy"]["smallest"] for r in results[workers]])
        print(f"accuracy_{name}: {np.mean(means[workers]):.4f} (largest {largest:.4f}, smallest {smallest:.4f}; "
              f"mean of {args.rounds} seeds)")
    paired = [b - a for a, b in zip(means[1], means[2])]
    print(f"accuracy_delta: {np.mean(paired):+.4f} (goal within 0.005; per seed "
          f"{' '.join(f'{d:+.4f}' for d in paired)})")
    print(f"accuracy_seed_spread_1_worker: {max(means[1]) - min(means[1]):.4f} (seeds 0-{args.rounds - 1})")
    print(f"load_average_at_end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
