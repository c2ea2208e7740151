"""Latency predictors against repeatable end-to-end measurement, on both measured devices.

For each device (``local-cpu``: eager PyTorch; ``local-cpu-torchscript``: traced and frozen), on
the default CNN space (experiments/digits-cnn.yaml, batch 1, one thread):

1. profiles the space's lookup table (ops timed in place, interleaved in rounds with the space's
   reference subnet; see :mod:`hwnas.hwmodels.profiler`);
2. measures ``--fit + --held-out`` random subnets end to end (exported standalone from an untrained
   supernet: latency does not depend on weight values), in batches interleaved in rounds and
   corrected to the table's reference baseline, as a job's evaluation does;
3. measures the held-out subnets a second time: how well two measurements agree
   (``repeat_within_10pct``, ``repeat_kendall_tau``) is the ceiling any predictor is scored under;
4. scores on the held-out subnets (first measurement), none used in fitting: ``flops`` (latency
   proportional to FLOPs, fitted), ``table_sum`` (the sum of the ops' table entries),
   ``learned`` (the table sum times a correction learned from the fitting subnets) and
   ``search_predictor``: what a job's search uses with ``device.correction_samples = --fit``
   (the better of the last two on a holdout of the fitting subnets; see
   :func:`hwnas.predictors.latency.fit_search_latency_predictor`).

Figures for TorchScript carry a ``_torchscript`` suffix. Goals (issue 14): the search predictor
within +-10 % for >= 95 % of held-out subnets with Kendall tau >= 0.9, better than ``flops`` and
``table_sum``.

Usage: python experiments/bench_predictors.py [--fit 60] [--held-out 200] [--devices local-cpu local-cpu-torchscript]
"""
from __future__ import annotations

import argparse
import datetime as dt
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from hwnas.hwmodels.devices import build_device
from hwnas.hwmodels.local_cpu import processor_name
from hwnas.hwmodels.profiler import build_lookup_table
from hwnas.job.checks import load_job_config
from hwnas.predictors.latency import (FlopsLatencyPredictor, LearnedLatencyPredictor, TableSumPredictor,
                                      fit_search_latency_predictor)
from hwnas.predictors.quality import regression_quality
from hwnas.spaces.registry import build_space, op_graph, space_entry
from untrained_subnets import untrained_subnet_models

CONFIG = Path(__file__).with_name("digits-cnn.yaml")
SUFFIX = {"local-cpu": "", "local-cpu-torchscript": "_torchscript"}
BATCH = 20  # subnets timed together, interleaved in rounds


def measure(device, models, input_shape) -> np.ndarray:
    out = []
    for start in range(0, len(models), BATCH):
        timing = device.time_models(models[start:start + BATCH], input_shape)
        out.extend(timing.summary(i)[0] for i in range(len(timing.samples_ns)))
    return np.array(out)


def bench_device(name: str, config, space, archs, models, graphs, n_fit: int, workdir: Path) -> None:
    suffix = SUFFIX.get(name, "_" + name)
    device = build_device(config.device.model_copy(update={"name": name}))
    print(f"timing{suffix}: {config.device.rounds} rounds, {device.repeats} timed calls per subnet, "
          f"{config.device.warmup} warm-up calls")
    started = time.perf_counter()
    table = build_lookup_table(device, space, space_entry("cnn").build_standalone, workdir / "luts").table
    print(f"profile_seconds{suffix}: {time.perf_counter() - started:.1f}")

    started = time.perf_counter()
    measured = measure(device, models, space.input_shape)
    print(f"measure_seconds_per_subnet{suffix}: {(time.perf_counter() - started) / len(models):.3f}")
    again = measure(device, models[n_fit:], space.input_shape)
    test_y = measured[n_fit:]
    print(f"held_out_latency_ms_range{suffix}: {test_y.min():.3f}-{test_y.max():.3f}")
    repeat = regression_quality(test_y, again)
    print(f"repeat_within_10pct{suffix}: {repeat['within_10pct']:.3f}")
    print(f"repeat_kendall_tau{suffix}: {repeat['kendall_tau']:.3f}")

    fit_graphs, fit_y, test_graphs = graphs[:n_fit], measured[:n_fit], graphs[n_fit:]
    search, choice, _ = fit_search_latency_predictor(table, fit_graphs, fit_y, None, config.predictor.holdout,
                                                     config.seed)
    predictors = {
        "flops": FlopsLatencyPredictor().fit(fit_graphs, fit_y),
        "table_sum": TableSumPredictor(table).fit(fit_graphs, fit_y),
        "learned": LearnedLatencyPredictor(table, seed=0).fit(fit_graphs, fit_y),
        "search_predictor": search,
    }
    print(f"search_predictor_is{suffix}: {choice}")
    for label, predictor in predictors.items():
        q = regression_quality(test_y, predictor.predict(test_graphs))
        print(f"{label}_within_10pct{suffix}: {q['within_10pct']:.3f}")
        print(f"{label}_kendall_tau{suffix}: {q['kendall_tau']:.3f}")
        print(f"{label}_mape{suffix}: {q['mape']:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit", type=int, default=60)
    parser.add_argument("--held-out", type=int, default=200)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--devices", nargs="+", default=list(SUFFIX), help="measured devices (see hwnas devices)")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="hwnas-bench-pred-"))
    print(f"date: {dt.datetime.now().isoformat(timespec='seconds')}")
    print(f"machine: {processor_name()}, {platform.machine()}, torch {torch.__version__}")
    config = load_job_config(CONFIG, [])
    space = build_space(config.space, (1, 8, 8), 10)

    rng = np.random.default_rng(1)
    archs = list(dict.fromkeys(space.sample(rng) for _ in range(3 * (args.fit + args.held_out))))
    archs = archs[: args.fit + args.held_out]
    models = untrained_subnet_models(space, archs)
    graphs = [op_graph(space.subnet_spec(a)) for a in archs]
    print(f"subnets_fit: {args.fit}")
    print(f"subnets_held_out: {len(archs) - args.fit}")
    for name in args.devices:
        bench_device(name, config, space, archs, models, graphs, args.fit, workdir)


if __name__ == "__main__":
    main()
