"""Zero-cost proxies against real accuracy on the default digits spaces, and what each one costs.

For each space (``cnn``: experiments/digits-cnn.yaml, ``vit``: experiments/digits-vit.yaml) this
run, all measured here:

1. trains the space's supernet once as its job does (:class:`~hwnas.train.trainer.SupernetTrainer`
   with the config's ``train`` section), then measures the validation accuracy of
   ``--subnets + --holdout`` distinct random subnets in it (BN recalibrated: ``parts.evaluate``);
2. scores every subnet with every built-in proxy at initialization: the standalone subnet
   extracted from a freshly initialised supernet (seeded as the job's,
   :meth:`~hwnas.train.components.Components.initial_subnet`), on one fixed seeded batch of 64
   training images, each proxy timed on each subnet (proxies in a shuffled order per subnet);
3. trains ``--alone`` of those subnets alone from initialization for ``--alone-steps`` optimizer
   steps (:func:`~hwnas.train.alone.train_alone`) and measures their validation accuracy;
4. fits the job's accuracy predictor (the config's ``predictor.model``) on 50 and 100 of the
   supernet-evaluated subnets, with and without the proxies as extra features
   (``predictor.proxies``), and measures its Kendall tau on the ``--holdout`` other subnets
   (median over ``--repeats`` draws of the training subnets).

Printed as ``name: value`` lines: ``PROXY_SPACE_kendall_tau`` / ``PROXY_SPACE_spearman`` against
the supernet's validation accuracy (3 above against 1), ``PROXY_SPACE_alone_kendall_tau`` /
``_alone_spearman`` against accuracy trained alone (3), ``PROXY_SPACE_ms_per_subnet`` (median),
``PROXY_SPACE_undefined`` (the share of subnets whose score is not a finite number, e.g. jacob_cov
when a sample's input Jacobian is constant; they rank lowest), ``supernet_SPACE_alone_kendall_tau`` (the supernet's own ranking of the alone-trained subnets: what
a proxy would replace), and ``predictor_SPACE_tau_at_N_without_proxies`` / ``_with_proxies``.
The per-call timing table of the proxies on a small CNN (interleaved rounds against a forward and
backward reference) is kept (``--rounds``; 0 skips it).

Everything expensive (the supernet, accuracies, scores, alone-trained accuracies) is cached in
``--cache`` (a folder per space under a hash of its config; a file per count of subnets; the
alone-trained accuracies one subnet at a time), so a rerun prints again in seconds.
``--quick``: tiny spaces and counts, the smoke test (tests/test_bench_proxies.py).

Usage: python experiments/bench_proxies.py [--quick] [--spaces cnn vit] [--subnets 100] [--holdout 100]
       [--alone 30] [--alone-steps 300] [--repeats 5] [--rounds 15] [--cache runs/bench_proxies]
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import random
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy.stats import kendalltau, spearmanr
from torch import nn

from hwnas.hwmodels.local_cpu import processor_name
from hwnas.job.checks import load_job_config
from hwnas.job.stages import sample_archs
from hwnas.predictors.accuracy import AccuracyPredictor, ArchFeatures
from hwnas.predictors.proxy_features import ProxyFeatures
from hwnas.proxies import DEFAULT_PROXIES, score
from hwnas.spaces.dims import Arch
from hwnas.train.alone import train_alone
from hwnas.train.components import Components, save_weights
from hwnas.train.trainer import SupernetTrainer
from hwnas.utils.io import atomic_path, stable_hash
from hwnas.utils.timing import pinned_threads

HERE = Path(__file__).parent
CONFIGS = {"cnn": HERE / "digits-cnn.yaml", "vit": HERE / "digits-vit.yaml"}
BATCH = 64  # the fixed training batch every subnet is scored on
FEATURE_PROXIES = tuple(p for p in DEFAULT_PROXIES if p not in ("params", "flops"))  # counts are features already
QUICK = {"cnn": ["space.stem_channels=8", "space.head_channels=16",
                 "space.stages=[{channels: 8, stride: 1, depth: [1, 2]}, {channels: 16, stride: 2, depth: [1, 2]}]",
                 "space.expand_ratios=[2, 3]", "space.kernel_sizes=[3, 5]", "train.epochs=1", "train.max_steps=3",
                 "train.recalibration_samples=64"],
         "vit": ["space.embed_dims=[16]", "space.depths=[1, 2]", "space.heads=[1, 2]", "space.head_dim=8",
                 "train.epochs=1", "train.max_steps=3", "train.recalibration_samples=64"]}


# -- the timing table (per call, small CNN) ---------------------------------------------------------
def small_cnn() -> nn.Module:
    def block(cin: int, cout: int, stride: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(*block(3, 16, 1), *block(16, 32, 2), *block(32, 64, 2), *block(64, 64, 1),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))


def timing_table(rounds: int, batch: int) -> None:
    """Each proxy's cost on a small CNN, copy of the model included, in interleaved rounds."""
    torch.manual_seed(0)
    model = small_cnn()
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))

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
    for _ in range(rounds):
        rng.shuffle(order)
        for name in order:
            start = time.perf_counter()
            subjects[name]()
            times[name].append(1e3 * (time.perf_counter() - start))
    ref = statistics.median(times["reference (forward + backward)"])
    params = sum(p.numel() for p in model.parameters())
    print(f"# small CNN ({params} parameters), batch {batch} x 3 x 32 x 32, {rounds} interleaved rounds")
    print(f"# {'proxy':32s} {'median ms':>10s} {'min-max ms':>16s} {'x reference':>12s}")
    for name in subjects:
        t, median = times[name], statistics.median(times[name])
        print(f"# {name:32s} {median:10.1f} {min(t):7.1f}-{max(t):<8.1f} {median / ref:12.2f}")


# -- cached measurements ----------------------------------------------------------------------------
def cached_frame(path: Path, make) -> pd.DataFrame:
    """``make()`` once, its frame kept in ``path`` (CSV, written atomically)."""
    if path.exists():
        return pd.read_csv(path)
    frame = make()
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return frame


def trained_supernet(config, folder: Path) -> Components:
    """The space's supernet trained as its job trains it (weights cached in ``folder``)."""
    parts = Components.build(config, torch.device("cpu"))
    weights = folder / "supernet.safetensors"
    if weights.exists():
        parts.load_weights(weights)
        return parts
    started = time.perf_counter()
    SupernetTrainer(parts.supernet, parts.data, config.train, config.seed, parts.compute,
                    config.data.batch_size, folder / "checkpoint.pt").train()
    parts.settle_quantizers()
    save_weights(weights, parts.supernet.state_dict())
    (folder / "train_seconds.txt").write_text(f"{time.perf_counter() - started:.1f}\n")
    return parts


def supernet_accuracies(parts: Components, archs: list[Arch]) -> pd.DataFrame:
    rows = []
    for arch in archs:
        started = time.perf_counter()
        with pinned_threads(1):
            acc = parts.evaluate(arch, "val")
        rows.append({"arch": arch.to_json(), "val_accuracy": acc, "seconds": time.perf_counter() - started})
    return pd.DataFrame(rows)


def proxy_scores(parts: Components, archs: list[Arch], seed: int) -> pd.DataFrame:
    """Every proxy on every subnet at initialization, each call timed (order shuffled per subnet)."""
    inputs, targets = parts.proxy_batch(BATCH, seed)
    rng = random.Random(seed)
    rows = []
    with pinned_threads(1):
        score(parts.initial_subnet(archs[0]), inputs, targets, DEFAULT_PROXIES, seed)  # warm-up
        for arch in archs:
            model = parts.initial_subnet(arch)
            row = {"arch": arch.to_json()}
            order = list(DEFAULT_PROXIES)
            rng.shuffle(order)
            for name in order:
                started = time.perf_counter()
                row[name] = score(model, inputs, targets, name, seed)[name].value
                row[f"{name}_ms"] = 1e3 * (time.perf_counter() - started)
            rows.append(row)
    return pd.DataFrame(rows)


def alone_accuracies(parts: Components, archs: list[Arch], steps: int, path: Path) -> pd.DataFrame:
    """Validation accuracy of each arch trained alone for ``steps`` steps, cached in ``path`` one
    subnet at a time (the longest part of the run: a kill loses one subnet)."""
    per_epoch = max(1, len(parts.data.train) // parts.config.data.batch_size)
    epochs = max(1, math.ceil(steps / per_epoch))
    rows = pd.read_csv(path).to_dict("records") if path.exists() else []
    done = {row["arch"] for row in rows}
    for arch in archs:
        if arch.to_json() in done:
            continue
        started = time.perf_counter()
        alone = train_alone(parts, arch, epochs, steps=min(per_epoch, steps))
        with pinned_threads(1):
            acc = alone.evaluate(arch, "val")
        rows.append({"arch": arch.to_json(), "val_accuracy": acc, "steps": epochs * min(per_epoch, steps),
                     "seconds": time.perf_counter() - started})
        with atomic_path(path) as tmp:
            pd.DataFrame(rows).to_csv(tmp, index=False)
    frame = pd.DataFrame(rows).set_index("arch")
    return frame.loc[[a.to_json() for a in archs]].reset_index()


# -- figures ------------------------------------------------------------------------------------------
def rank_figures(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Kendall tau and Spearman of scores ``x`` against accuracies ``y``; a score that is not a
    finite number (an overflowed proxy) ranks lowest, as it does in a training-free job."""
    x = np.asarray(x, float)
    finite = np.isfinite(x)
    x = np.where(finite, x, (x[finite].min() - 1.0) if finite.any() else 0.0)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan"), float("nan")
    return float(kendalltau(x, y).statistic), float(spearmanr(x, y).statistic)


def predictor_taus(parts: Components, config, archs: list[Arch], y: np.ndarray, scores: pd.DataFrame,
                   sizes: list[int], holdout: int, repeats: int) -> dict[str, float]:
    """Holdout Kendall tau of the job's predictor fitted on ``n`` subnets, without and with proxies."""
    inputs, targets = parts.proxy_batch(BATCH, config.seed)
    proxies = ProxyFeatures(FEATURE_PROXIES, parts.initial_subnet, inputs, targets, config.seed)
    for arch, (_, row) in zip(archs, scores.iterrows()):  # the scores measured above: nothing recomputed
        proxies.cache[arch.to_json()] = np.array([row[p] for p in FEATURE_PROXIES], dtype=float)
    variants = {"without_proxies": ArchFeatures(parts.space), "with_proxies": ArchFeatures(parts.space, proxies)}
    test = np.arange(len(archs) - holdout, len(archs))
    pool = np.arange(len(archs) - holdout)
    out = {}
    for name, features in variants.items():
        X = features.transform(archs)
        for n in sizes:
            taus = []
            for r in range(repeats):
                train = np.random.default_rng([config.seed, n, r]).choice(pool, size=min(n, len(pool)), replace=False)
                model = AccuracyPredictor(config.predictor.model, config.seed).fit(X[train], y[train])
                taus.append(kendalltau(model.predict(X[test]), y[test]).statistic)
            out[f"at_{n}_{name}"] = float(np.nanmedian(taus))
    return out


def run_space(space: str, args, figures: dict[str, float]) -> None:
    overrides = QUICK[space] if args.quick else []
    config = load_job_config(CONFIGS[space], overrides)
    key = stable_hash({"config": config.to_dict(), "batch": BATCH, "version": 1})  # the supernet's folder
    folder = Path(args.cache) / f"{space}-{key}"
    n = args.subnets + args.holdout
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    parts = trained_supernet(config, folder)
    archs = sample_archs(parts.space, args.subnets + args.holdout + 2, config.seed)[2:]  # random ones, no extremes
    archs = archs[:args.subnets + args.holdout]
    supernet = cached_frame(folder / f"supernet_val_{n}.csv", lambda: supernet_accuracies(parts, archs))
    scores = cached_frame(folder / f"proxy_scores_{n}.csv", lambda: proxy_scores(parts, archs, config.seed))
    alone_archs = archs[:args.alone]
    alone = alone_accuracies(parts, alone_archs, args.alone_steps, folder / f"alone_val_{args.alone_steps}_steps.csv")
    y = supernet["val_accuracy"].to_numpy()
    y_alone = alone["val_accuracy"].to_numpy()
    k = len(alone_archs)
    print(f"# {space}: {config.name}, {len(archs)} random subnets in the supernet trained {config.train.epochs} epochs "
          f"(val accuracy {y.min():.3f}-{y.max():.3f}), {k} trained alone {int(alone['steps'].iloc[0])} steps "
          f"({y_alone.min():.3f}-{y_alone.max():.3f}), proxies on a batch of {BATCH}, cache {folder}")
    for proxy in DEFAULT_PROXIES:
        values = scores[proxy].to_numpy()
        tau, rho = rank_figures(values, y)
        tau_a, rho_a = rank_figures(values[:k], y_alone)
        figures[f"{proxy}_{space}_kendall_tau"], figures[f"{proxy}_{space}_spearman"] = tau, rho
        figures[f"{proxy}_{space}_alone_kendall_tau"], figures[f"{proxy}_{space}_alone_spearman"] = tau_a, rho_a
        figures[f"{proxy}_{space}_ms_per_subnet"] = float(scores[f"{proxy}_ms"].median())
        figures[f"{proxy}_{space}_undefined"] = float(np.mean(~np.isfinite(values)))  # ranked lowest above
    tau_s, rho_s = rank_figures(y[:k], y_alone)
    figures[f"supernet_{space}_alone_kendall_tau"], figures[f"supernet_{space}_alone_spearman"] = tau_s, rho_s
    figures[f"supernet_{space}_eval_ms_per_subnet"] = 1e3 * float(supernet["seconds"].median())
    figures[f"alone_{space}_train_s_per_subnet"] = float(alone["seconds"].median())
    sizes = [s for s in args.sizes if s <= args.subnets]
    for key, value in predictor_taus(parts, config, archs, y, scores, sizes, args.holdout, args.repeats).items():
        figures[f"predictor_{space}_tau_{key}"] = value
    figures[f"{space}_bench_s"] = time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--spaces", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--subnets", type=int, default=None, help="supernet-evaluated subnets the predictor may train on")
    parser.add_argument("--holdout", type=int, default=None, help="further subnets the predictor is judged on")
    parser.add_argument("--alone", type=int, default=None, help="subnets trained alone")
    parser.add_argument("--alone-steps", type=int, default=None)
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="predictor training sizes")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=None, help="timing-table rounds (0: skip it)")
    parser.add_argument("--cache", default="runs/bench_proxies")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    defaults = ({"subnets": 8, "holdout": 6, "alone": 4, "alone_steps": 4, "sizes": [4, 8], "rounds": 2}
                if args.quick else {"subnets": 100, "holdout": 100, "alone": 30, "alone_steps": 300,
                                    "sizes": [50, 100], "rounds": 15})
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.quick:
        args.repeats = min(args.repeats, 2)
    torch.set_num_threads(args.threads)
    print(f"date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"machine: {platform.node()}, {processor_name()}, torch {torch.__version__}, {args.threads} thread(s)")
    if args.rounds:
        timing_table(args.rounds, BATCH)
    figures: dict[str, float] = {}
    for space in args.spaces:
        run_space(space, args, figures)
    print("compared against: PROXY_SPACE_*: validation accuracy of the same random subnets in the trained "
          "supernet (BN recalibrated); PROXY_SPACE_alone_*: validation accuracy of the first of them trained "
          "alone from initialization; supernet_SPACE_alone_*: the supernet's accuracy against the same; "
          "predictor_*: holdout Kendall tau on supernet accuracy, the same predictor without the proxy features")
    for name, value in figures.items():
        print(f"{name}: {value:.4f}" if isinstance(value, float) else f"{name}: {value}")
    print(json.dumps({"figures": len(figures)}))


if __name__ == "__main__":
    main()
