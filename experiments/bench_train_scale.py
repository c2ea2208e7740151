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
  (fixed archs, chosen on nothing) after BN recalibration, their mean, from the first round (each
  mode is deterministic; later rounds are checked to agree); ``accuracy_delta`` = 2 workers minus 1
  (goal within 0.005).
- with ``--noise-seeds N``: ``accuracy_1_worker_seed_<s>`` for seeds 1..N, serial runs that differ
  from the first only in the seed, and ``accuracy_seed_spread`` (max - min over every serial seed):
  what "within noise" means for this config.

Usage: python experiments/bench_train_scale.py [--config PATH] [--set KEY=VALUE ...] [--rounds 2]
       [--noise-seeds 0]
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


def _median(values: list[float]) -> str:
    return f"{np.median(values):.3f} (spread {max(values) - min(values):.3f}, {len(values)} values)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="experiments/digits-cnn.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config overrides, as hwnas search --set takes them")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--noise-seeds", type=int, default=0)
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
    for _ in range(args.rounds):
        order = [1, 2]
        rng.shuffle(order)
        for workers in order:
            results[workers].append(run(config, workers))
    rates = {w: [r for res in results[w] for r in res["rates"]] for w in results}
    print(f"steps_per_second_1_worker: {_median(rates[1])}")
    print(f"steps_per_second_2_workers: {_median(rates[2])}")
    print(f"speedup_2_workers: {np.median(rates[2]) / np.median(rates[1]):.2f} (goal >= 1.7)")
    print(f"ray_start_s: {_median([r['ray_start_s'] for r in results[2]])}")
    print(f"ray_overhead_s: {_median([r['ray_overhead_s'] for r in results[2]])}")
    mean = {}
    for workers, name in ((1, "1_worker"), (2, "2_workers")):
        acc = results[workers][0]["accuracy"]
        mean[workers] = (acc["largest"] + acc["smallest"]) / 2
        same = all(r["accuracy"] == acc for r in results[workers])
        print(f"accuracy_{name}: {mean[workers]:.4f} (largest {acc['largest']:.4f}, smallest {acc['smallest']:.4f}; "
              f"{'the same' if same else 'NOT the same'} in every round)")
    print(f"accuracy_delta: {mean[2] - mean[1]:+.4f} (goal within 0.005)")
    seeds = [mean[1]]
    for seed in range(1, args.noise_seeds + 1):
        acc = run(load_job_config(args.config, ["train.threads=1", *args.set, f"seed={seed}"]), 1)["accuracy"]
        seeds.append((acc["largest"] + acc["smallest"]) / 2)
        print(f"accuracy_1_worker_seed_{seed}: {seeds[-1]:.4f} (largest {acc['largest']:.4f}, "
              f"smallest {acc['smallest']:.4f})")
    if args.noise_seeds:
        print(f"accuracy_seed_spread: {max(seeds) - min(seeds):.4f} (serial, seeds 0-{args.noise_seeds})")
    print(f"load_average_at_end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
