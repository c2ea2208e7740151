"""Benchmark of the compression operators and of weight sharing, all measured in this run.

Prints ``name: value`` lines:
- ``supernet_step_overhead`` (and ``_vit``): a training step (forward, backward, batch 64, one
  thread) of the supernet with its largest subnet active, over the same step of that subnet
  exported as a static model with trainable weights; medians of interleaved repeats. Goal <= 1.15.
- ``adder_peak_memory_ratio``: peak memory of one adder convolution forward + backward over
  ``F.conv2d`` forward + backward on the same shapes (PyTorch CPU allocations). Goal <= 4.
  ``adder_time_ratio`` is the same comparison in wall time.
- for each shipped config: the test accuracy of its largest, smallest and a middle subnet (the
  median-MACs one of 25 seeded samples) taken from the supernet (after BN recalibration), next to
  the same architectures trained alone from scratch for the same epochs with the same optimizer
  (``<config>_<which>_supernet`` and ``_alone``), and the gap ``<config>_<which>_gap`` = alone
  minus supernet, as a fraction. For the ViT space also the largest subnet moved along one
  compression axis at a time (``attn_<kind>``: every block on that attention; ``keep_<r>``: every
  block keeping that token ratio; ``bits_<w>``: every block at that weight and activation width),
  and ``vit_largest_gap`` / ``vit_smallest_gap`` (issue 16's goal: <= 0.01 each). A config that
  steps the optimizer once per subnet (``train.step_per_subnet``) makes ``subnets_per_step``
  updates a batch; its largest and smallest are also trained alone for that many times the epochs
  (``_alone_same_steps``, the same number of optimizer updates), the strongest baseline.

Usage: python experiments/bench_ops.py [--configs digits-cnn digits-vit ...] [--epochs N] [--seed S] [--skip-ratios]
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from hwnas.ir import count
from hwnas.job.checks import load_job_config as load_config
from hwnas.spaces.registry import op_graph
from hwnas.train.components import Components
from hwnas.spaces.ops.adder import adder_conv2d
from hwnas.train.trainer import SupernetTrainer
from hwnas.utils.memory import peak_memory_bytes

HERE = Path(__file__).parent
CONFIGS = ["digits-cnn", "digits-cnn-shiftadd", "digits-cnn-mixed", "digits-vit", "digits-vit-variants"]


def _median_step_times(steps: dict, repeats: int = 15) -> dict[str, float]:
    """Interleaved repeats of each step function, so machine noise hits all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(3):
        for fn in steps.values():
            fn()
    for _ in range(repeats):
        for name, fn in steps.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


def step_overhead(config_name: str) -> float:
    config = load_config(HERE / f"{config_name}.yaml")
    parts = Components.build(config, torch.device("cpu"))
    net = parts.supernet.train()
    net.set_active(parts.space.largest())
    static = net.extract().train()
    if any(p.ndim == 4 for p in net.parameters()):
        static.to(memory_format=torch.channels_last)
    for p in static.parameters():
        p.requires_grad_(True)
    x = torch.stack([parts.data.train[i][0] for i in range(64)])
    y = torch.stack([parts.data.train[i][1] for i in range(64)])

    def step(model):
        def run():
            model.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
        return run

    times = _median_step_times({"supernet": step(net), "static": step(static)})
    return times["supernet"] / times["static"]


def adder_ratios() -> tuple[float, float]:
    torch.manual_seed(0)
    x = torch.randn(8, 32, 16, 16, requires_grad=True)
    w = torch.randn(64, 32, 3, 3, requires_grad=True)

    def conv():
        F.conv2d(x, w, padding=1).sum().backward()

    def adder():
        adder_conv2d(x, w, padding=1).sum().backward()

    conv(), adder()  # first-call allocations out of the way
    memory = peak_memory_bytes(adder) / peak_memory_bytes(conv)
    times = _median_step_times({"conv": conv, "adder": adder}, repeats=7)
    return memory, times["adder"] / times["conv"]


def middle_arch(space, seed: int = 0, samples: int = 25):
    """The median-MACs subnet of a few seeded samples: a typical point of the space, every axis mixed."""
    rng = np.random.default_rng(seed)
    archs = [space.sample(rng) for _ in range(samples)]
    macs = [count(op_graph(space.subnet_spec(a)))["macs"] for a in archs]
    return archs[int(np.argsort(macs)[len(macs) // 2])]


def axis_archs(space) -> dict[str, object]:
    """The ViT's largest subnet moved along one compression axis at a time (every block alike)."""
    cfg, largest = space.config, space.largest().to_dict()
    variants = {f"attn_{k}": {"attn": k} for k in cfg.attentions[1:]}
    variants.update({f"keep_{r:g}": {"keep": r} for r in cfg.keep_ratios if r < 1})
    variants.update({f"bits_{b}": {"wbits": b, "abits": b} for b in cfg.weight_bits
                     if b < max(cfg.weight_bits) and b in cfg.act_bits})
    out = {}
    for name, change in variants.items():
        values = dict(largest)
        for key in values:
            block_key = key.partition(".")[2]
            if block_key in change:
                values[key] = change[block_key]
        out[name] = space.canonical(values)
    return out


def train_alone(config, arch, epochs: int | None = None) -> float:
    if epochs is not None:
        config = load_config(config.to_dict() | {"train": config.train.model_dump() | {"epochs": epochs}})
    alone = Components.build(config, torch.device("cpu"))
    SupernetTrainer(alone.supernet, alone.data, config.train, config.seed, alone.compute, config.data.batch_size,
                    fixed_arch=arch).train()
    return alone.evaluate(arch, "test")


def accuracy_vs_alone(config_name: str, epochs: int | None, seed: int | None = None) -> dict[str, float]:
    config = load_config(HERE / f"{config_name}.yaml", [] if seed is None else [f"seed={seed}"])
    if epochs is not None:
        config = load_config(config.to_dict() | {"train": config.train.model_dump() | {"epochs": epochs}})
    parts = Components.build(config, torch.device("cpu"))
    batch = config.data.batch_size
    SupernetTrainer(parts.supernet, parts.data, config.train, config.seed, parts.compute, batch).train()
    space = parts.space
    archs = {"largest": space.largest(), "smallest": space.smallest(), "middle": middle_arch(space)}
    if space.name == "vit":
        archs.update(axis_archs(space))
    out = {}
    for which, arch in archs.items():
        supernet, alone = parts.evaluate(arch, "test"), train_alone(config, arch)
        out[f"{config_name}_{which}_supernet"] = supernet
        out[f"{config_name}_{which}_alone"] = alone
        out[f"{config_name}_{which}_gap"] = alone - supernet
        if config.train.step_per_subnet and which in ("largest", "smallest"):
            same = train_alone(config, arch, config.train.epochs * config.train.subnets_per_step)
            out[f"{config_name}_{which}_alone_same_steps"] = same
            out[f"{config_name}_{which}_gap_same_steps"] = same - supernet
        if space.name == "vit" and which in ("largest", "smallest"):
            out[f"vit_{which}_gap"] = alone - supernet
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=CONFIGS, choices=CONFIGS)
    parser.add_argument("--epochs", type=int, default=None, help="override every config's epochs")
    parser.add_argument("--seed", type=int, default=None, help="override every config's seed (weights, data order)")
    parser.add_argument("--skip-ratios", action="store_true", help="only the accuracy comparisons")
    args = parser.parse_args()
    print(f"date: {dt.datetime.now().isoformat(timespec='seconds')}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}")
    torch.set_num_threads(1)
    if not args.skip_ratios:
        print("threads: 1 (each ratio is measured side by side in this run)")
        print(f"supernet_step_overhead: {step_overhead('digits-cnn'):.3f}")
        print(f"supernet_step_overhead_vit: {step_overhead('digits-vit'):.3f}")
        memory, speed = adder_ratios()
        print(f"adder_peak_memory_ratio: {memory:.2f}")
        print(f"adder_time_ratio: {speed:.1f}")
    for name in args.configs:
        started = time.perf_counter()
        for key, value in accuracy_vs_alone(name, args.epochs, args.seed).items():
            print(f"{key}: {value:.4f}")
        print(f"{name}_bench_seconds: {time.perf_counter() - started:.0f}")


if __name__ == "__main__":
    main()
