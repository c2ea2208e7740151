"""Does a measured latency repeat? The same subnets timed twice, minutes apart, on this machine.

Takes ``--subnets`` random subnets of the default CNN space (experiments/digits-cnn.yaml), exported
as standalone models from an untrained supernet (latency does not depend on weight values), and
times them on both measured devices, ``local-cpu`` (eager PyTorch) and ``local-cpu-torchscript``,
two ways, each twice:

* ``interleaved`` (what hwnas does): every device's method, the batch timed in interleaved rounds
  with a reference subnet spread through every round, each round's calls corrected for the
  machine's speed relative to the reference's baseline (fixed by the first pass, as a job's is
  fixed by its lookup table); see :func:`hwnas.utils.timing.time_in_rounds`.
* ``back_to_back`` (what hwnas did before, and what a user timing models one after another
  with ``timeit`` does): each model warmed up, then all its timed calls in a row, median; the
  same number of timed calls and warm-up calls per model as the device's plan, in shuffled order.

The two passes of each are separated by the other method's passes and ``--gap`` seconds of
sleep. For each device and method it prints the share of subnets whose two figures agree within
+-5 % and +-10 %, the Kendall tau between the passes, and the timing's wall seconds per subnet
(scripting a TorchScript model is reported apart: it is paid once per candidate whatever the
method). Goals (issue 14): ``repeat_within_5pct >= 0.95``, ``repeat_kendall_tau >= 0.9``,
``seconds_per_subnet <= 0.3``.

Usage: python experiments/bench_timing.py [--subnets 100] [--gap 120] [--rounds 5] [--repeats 30]
"""
from __future__ import annotations

import argparse
import datetime as dt
import platform
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import kendalltau

from hwnas.hwmodels.devices import build_device
from hwnas.hwmodels.local_cpu import processor_name
from hwnas.hwmodels.profiler import reference_arch
from hwnas.job.checks import load_job_config
from hwnas.spaces.registry import build_space
from hwnas.utils.timing import pinned_threads, time_call
from untrained_subnets import untrained_subnet_models

CONFIG = Path(__file__).with_name("digits-cnn.yaml")



def repeat_quality(first: np.ndarray, second: np.ndarray) -> dict[str, float]:
    rel = np.abs(second - first) / first
    return {"within_5pct": float(np.mean(rel <= 0.05)), "within_10pct": float(np.mean(rel <= 0.10)),
            "kendall_tau": float(kendalltau(first, second).statistic)}


def subnet_models(subnets: int, seed: int):
    config = load_job_config(CONFIG, [])
    space = build_space(config.space, (1, 8, 8), 10)
    rng = np.random.default_rng(seed)
    archs = list(dict.fromkeys(space.sample(rng) for _ in range(3 * subnets)))[:subnets]
    *models, reference_model = untrained_subnet_models(space, [*archs, reference_arch(space)])
    return config, models, reference_model


def back_to_back(device, runnables, rng) -> tuple[np.ndarray, float]:
    plan = device.plan()
    out = np.empty(len(runnables))
    started = time.perf_counter()
    with pinned_threads(device.config.threads):
        for i in rng.permutation(len(runnables)):
            out[i] = time_call(runnables[i], plan.warmup + plan.rounds, plan.rounds * plan.calls)[0]
    return out, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subnets", type=int, default=100)
    parser.add_argument("--gap", type=float, default=120.0, help="seconds of sleep between the two passes")
    parser.add_argument("--rounds", type=int, default=None, help="override the device's rounds")
    parser.add_argument("--repeats", type=int, default=None, help="override the device's timed calls per model")
    args = parser.parse_args()
    print(f"date: {dt.datetime.now().isoformat(timespec='seconds')}")
    print(f"machine: {processor_name()}, {platform.machine()}, torch {torch.__version__}")
    config, models, reference_model = subnet_models(args.subnets, seed=3)
    overrides = {k: v for k, v in (("rounds", args.rounds), ("repeats", args.repeats)) if v is not None}
    suffixes = {"local-cpu": "", "local-cpu-torchscript": "_torchscript"}
    devices, runnables = {}, {}
    x = torch.randn(1, 1, 8, 8)
    for name, suffix in suffixes.items():
        device = build_device(config.device.model_copy(update={"name": name, **overrides}))
        device.use_reference(reference_model, (1, 8, 8))
        started = time.perf_counter()
        with torch.inference_mode(), pinned_threads(device.config.threads):
            runnables[name] = [device.runnable(m, x) for m in models]
        devices[name] = device
        print(f"prepare_seconds_per_subnet{suffix}: {(time.perf_counter() - started) / len(models):.4f}")
    print(f"subnets: {len(models)}")
    for name, device in devices.items():
        plan = device.plan()
        print(f"plan{suffixes[name]}: {plan.rounds} rounds x {plan.calls} timed calls (+1 untimed per round), "
              f"{plan.warmup} warm-up calls")

    figures: dict[tuple[str, str], list[np.ndarray]] = {}
    seconds: dict[tuple[str, str], list[float]] = {}
    rng = np.random.default_rng(7)
    for run in range(2):
        if run:
            time.sleep(args.gap)
        for name, device in devices.items():
            with torch.inference_mode():
                timing = device.time_prepared(runnables[name])
            figures.setdefault((name, "interleaved"), []).append(
                np.array([timing.summary(i)[0] for i in range(len(models))]))
            seconds.setdefault((name, "interleaved"), []).append(timing.seconds)
            print(f"pass{run + 1}_speed{suffixes[name]}: {timing.speed:.3f} (reference {np.median(timing.reference_ms):.4f} ms, "
                  f"largest round drift {timing.drift:.3f}, rounds repeated {timing.repeated_rounds})")
            with torch.inference_mode():
                values, spent = back_to_back(device, runnables[name], rng)
            figures.setdefault((name, "back_to_back"), []).append(values)
            seconds.setdefault((name, "back_to_back"), []).append(spent)
    for (name, method), (first, second) in figures.items():
        suffix = suffixes[name]
        prefix = "" if method == "interleaved" else "back_to_back_"
        q = repeat_quality(first, second)
        print(f"{prefix}repeat_within_5pct{suffix}: {q['within_5pct']:.3f}")
        print(f"{prefix}repeat_within_10pct{suffix}: {q['within_10pct']:.3f}")
        print(f"{prefix}repeat_kendall_tau{suffix}: {q['kendall_tau']:.3f}")
        print(f"{prefix}seconds_per_subnet{suffix}: {np.mean(seconds[name, method]) / len(models):.4f}")
    lat = figures["local-cpu", "interleaved"][0]
    print(f"latency_ms_range: {lat.min():.3f}-{lat.max():.3f}")


if __name__ == "__main__":
    main()
