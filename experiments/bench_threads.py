"""Why the shipped configs train on one thread: one epoch of the default job's supernet training,
timed on 2 threads, on 2 threads with OMP_WAIT_POLICY=PASSIVE and on 1 thread, each quiet and
beside one CPU-bound busy loop.

Each setting runs in its own process (OpenMP reads its wait policy once, at start-up); the six
settings are interleaved in ``--rounds`` rounds in a shuffled order, and each figure is the median
over rounds, with the spread (max - min) beside it. Prints ``epoch_s_<setting>`` and
``loaded_over_quiet_<threads>`` (the slowdown a busy loop beside the job causes), compared side
by side in this run.

Usage: python experiments/bench_threads.py [--rounds 3]
"""
from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing
import os
import random
import subprocess
import sys

import numpy as np

EPOCH = """
import sys, tempfile, time
from pathlib import Path
import torch
torch.set_num_threads(int(sys.argv[1]))
from hwnas.job.checks import load_job_config
from hwnas.train.components import Components, resolve_compute
from hwnas.train.trainer import SupernetTrainer
config = load_job_config("experiments/digits-cnn.yaml", ["train.epochs=1", "train.threads=null"])
parts = Components.build(config, resolve_compute("cpu"))
trainer = SupernetTrainer(parts.supernet, parts.data, config.train, config.seed, torch.device("cpu"),
                          config.data.batch_size, Path(tempfile.mkdtemp()) / "checkpoint.pt")
started = time.perf_counter()
trainer.train()
print(time.perf_counter() - started)
"""
SETTINGS = {"2_threads": (2, {}), "2_threads_passive": (2, {"OMP_WAIT_POLICY": "PASSIVE"}), "1_thread": (1, {})}


def busy_loop() -> None:
    while True:
        pass


def epoch_seconds(threads: int, env: dict[str, str]) -> float:
    run = subprocess.run([sys.executable, "-c", EPOCH, str(threads)], capture_output=True, text=True,
                         env={**os.environ, **env}, cwd=os.path.join(os.path.dirname(__file__), ".."), check=True)
    return float(run.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"date: {dt.datetime.now().isoformat(timespec='seconds')}")
    print(f"machine: {multiprocessing.cpu_count()} CPUs; one epoch of experiments/digits-cnn.yaml's training")
    times: dict[str, list[float]] = {}
    rng = random.Random(0)
    for _ in range(args.rounds):
        order = [(name, load) for name in SETTINGS for load in (False, True)]
        rng.shuffle(order)
        for name, load in order:
            burner = multiprocessing.Process(target=busy_loop, daemon=True) if load else None
            if burner is not None:
                burner.start()
            try:
                seconds = epoch_seconds(*SETTINGS[name])
            finally:
                if burner is not None:
                    burner.terminate()
                    burner.join()
            times.setdefault(f"{name}{'_loaded' if load else '_quiet'}", []).append(seconds)
    for key, values in times.items():
        print(f"epoch_s_{key}: {np.median(values):.2f} (spread {max(values) - min(values):.2f}, {len(values)} rounds)")
    for name in SETTINGS:
        print(f"loaded_over_quiet_{name}: "
              f"{np.median(times[f'{name}_loaded']) / np.median(times[f'{name}_quiet']):.2f}")


if __name__ == "__main__":
    main()
