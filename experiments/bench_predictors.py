"""Benchmark of latency predictors against end-to-end measurement on this machine.

Profiles the default CNN space's lookup table on local-cpu, then measures random subnets of it end
to end (each exported as a standalone model, eager PyTorch, batch 1, one thread, median of
repeats): ``--fit`` of them to fit the predictors that learn, and ``--held-out`` others, none used
in fitting, to score every predictor. Latency does not depend on weight values, so the subnets
are exported from an untrained supernet. Prints ``name: value`` lines for each predictor:
FLOPs-proportional, lookup-table sum, and the sum with a learned correction.

``--device local-cpu-torchscript`` runs the same comparison on the TorchScript runtime, where the
frozen whole-model graph differs from the per-op table more. The learned predictor is also fitted
on the first 15 and 30 of the fitting subnets, to show how many end-to-end measurements it needs.

Usage: python experiments/bench_predictors.py [--fit 60] [--held-out 200] [--device NAME] [--workdir DIR]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from hwnas.job.checks import load_job_config as load_config
from hwnas.hwmodels.devices import build_device
from hwnas.spaces.registry import op_graph
from hwnas.hwmodels.profiler import build_lookup_table
from hwnas.predictors.latency import FlopsLatencyPredictor, LearnedLatencyPredictor, TableSumPredictor
from hwnas.predictors.quality import regression_quality
from hwnas.spaces.cnn import StandaloneCNN
from hwnas.spaces.registry import build_space, space_entry

CONFIG = Path(__file__).with_name("digits-cnn.yaml")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit", type=int, default=60)
    parser.add_argument("--held-out", type=int, default=200)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--device", default="local-cpu", help="a measured device (see hwnas devices)")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="hwnas-bench-pred-"))
    config = load_config(CONFIG, [f"device.name={args.device}"])
    space = build_space(config.space, (1, 8, 8), 10)
    device = build_device(config.device)
    print(f"device: {device.name} ({device.describe()['runtime']}, {device.describe()['processor']})")

    started = time.perf_counter()
    table = build_lookup_table(device, space, StandaloneCNN, workdir / "luts").table
    print(f"profile_seconds: {time.perf_counter() - started:.1f}")

    rng = np.random.default_rng(1)
    archs = list(dict.fromkeys(space.sample(rng) for _ in range(3 * (args.fit + args.held_out))))
    archs = archs[: args.fit + args.held_out]
    torch.manual_seed(0)
    supernet = space_entry("cnn").build_supernet(space).eval()
    graphs, measured = [], []
    started = time.perf_counter()
    for arch in archs:
        supernet.set_active(arch)
        with torch.no_grad():
            supernet(torch.zeros(2, 1, 8, 8))  # give every quantizer its step, as training would
        graphs.append(op_graph(space.subnet_spec(arch)))
        measured.append(device.time_model(supernet.extract(), (1, 8, 8))[0])
    measured = np.array(measured)
    print(f"measure_seconds: {time.perf_counter() - started:.1f}")
    print(f"subnets_fit: {args.fit}")
    print(f"subnets_held_out: {len(archs) - args.fit}")
    print(f"held_out_latency_ms_range: {measured[args.fit:].min():.3f}-{measured[args.fit:].max():.3f}")

    fit_graphs, fit_y = graphs[: args.fit], measured[: args.fit]
    test_graphs, test_y = graphs[args.fit:], measured[args.fit:]
    predictors = {
        "flops": FlopsLatencyPredictor().fit(fit_graphs, fit_y),
        "table_sum": TableSumPredictor(table).fit(fit_graphs, fit_y),
        "learned": LearnedLatencyPredictor(table, seed=0).fit(fit_graphs, fit_y),
    }
    for name, predictor in predictors.items():
        q = regression_quality(test_y, predictor.predict(test_graphs))
        print(f"{name}_within_10pct: {q['within_10pct']:.3f}")
        print(f"{name}_kendall_tau: {q['kendall_tau']:.3f}")
        print(f"{name}_mape: {q['mape']:.4f}")
    for n in (15, 30):
        if n < args.fit:
            q = regression_quality(test_y, LearnedLatencyPredictor(table, seed=0).fit(
                fit_graphs[:n], fit_y[:n]).predict(test_graphs))
            print(f"learned_fit{n}_within_10pct: {q['within_10pct']:.3f}")
            print(f"learned_fit{n}_mape: {q['mape']:.4f}")


if __name__ == "__main__":
    main()
