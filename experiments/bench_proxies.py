"""What each zero-cost proxy costs on a small CNN (CIFAR-sized inputs), copy of the model included.

Interleaved rounds: every round times each proxy once, in a shuffled order, and a reference (one
forward and backward pass of the model on the batch) to show the machine's drift; the table gives
each proxy's median over the rounds, its spread (min to max) and its ratio to the reference's
median. Run: ``python experiments/bench_proxies.py [--rounds 15] [--batch 64] [--threads 1]``.
"""
from __future__ import annotations

import argparse
import datetime
import platform
import random
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from hwnas.proxies import DEFAULT_PROXIES, score


def small_cnn() -> nn.Module:
    def block(cin: int, cout: int, stride: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(*block(3, 16, 1), *block(16, 32, 2), *block(32, 64, 2), *block(64, 64, 1),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = small_cnn()
    x, y = torch.randn(args.batch, 3, 32, 32), torch.randint(0, 10, (args.batch,))

    def reference() -> None:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        model.zero_grad(set_to_none=True)

    subjects = {name: (lambda name=name: score(model, x, y, proxies=name)) for name in DEFAULT_PROXIES}
    subjects["reference (forward + backward)"] = reference
    for call in subjects.values():  # warm-up: first-use imports (FlopCounterMode) and allocator
        call()
    times: dict[str, list[float]] = {name: [] for name in subjects}
    order = list(subjects)
    rng = random.Random(0)
    for _ in range(args.rounds):
        rng.shuffle(order)
        for name in order:
            start = time.perf_counter()
            subjects[name]()
            times[name].append(1e3 * (time.perf_counter() - start))
    ref = statistics.median(times["reference (forward + backward)"])
    params = sum(p.numel() for p in model.parameters())
    print(f"# {datetime.date.today()} {platform.node()} {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, {args.threads} thread(s)")
    print(f"# small CNN ({params} parameters), batch {args.batch} x 3 x 32 x 32, {args.rounds} interleaved rounds")
    print(f"{'proxy':32s} {'median ms':>10s} {'min-max ms':>16s} {'x reference':>12s}")
    for name in subjects:
        t, median = times[name], statistics.median(times[name])
        print(f"{name:32s} {median:10.1f} {min(t):7.1f}-{max(t):<8.1f} {median / ref:12.2f}")


if __name__ == "__main__":
    main()
