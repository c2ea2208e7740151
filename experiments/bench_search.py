"""Benchmark of the search engine: predictor throughput, and sample efficiency against baselines.

Part 1, throughput on the default CNN space (``experiments/digits-cnn.yaml``, lookup table
profiled on this machine's CPU): candidate evaluations per second of the predictor-only search's
objective function (accuracy ensemble + table latency + energy model, vectorized over a
population of 100,000 random encodings) and the wall time of one full predictor-only NSGA-II
front search (population 64, 40 generations). The ensemble is fitted on 400 sampled subnets with
synthetic accuracies: its speed does not depend on the values.

Part 2, sample efficiency on a space small enough to enumerate: 4 blocks of the default CNN
space (depths fixed at 1, 1, 2), each with expand {2, 4, 6}, kernel {3, 5, 7} and weight bits
{4, 8} (104,976 subnets). Its objective table is built here: latency from the lookup table
above (cheap, known for every subnet), and a synthetic test error standing in for training
(expensive: only a method's real evaluations see it): error falls from 0.12 to 0.025 with
capacity (log MACs, scaled to the space's range), rises by up to 0.016 per block at 4-bit weights
(more in early blocks) and by 0.002 for 3x3 kernels in the first two blocks, plus a fixed
pseudo-random term per subnet (sd 0.002). On this CPU latency follows MACs only loosely
(correlation about 0.3 at 8x8 inputs, where dispatch dominates), which is what makes the front
worth searching for. The true front is computed from all 104,976 rows.
Each method gets 300 real evaluations (calls of the error); ``hv_ratio_at_300`` is the
hypervolume of its evaluated front over the true front's (same bounds), median of 5 seeds:

- ``hwnas``: the default engine (predictor in the loop: ensemble surrogate with uncertainty,
  NSGA-II on the predictors, batches of 20 after 60 random evaluations);
- ``random``: 300 random subnets;
- ``nsga2``: NSGA-II on the true objectives without predictors (population 30, 10 generations);
- ``optuna_tpe``: optuna's multi-objective TPE, 300 trials.

Usage: python experiments/bench_search.py [--seeds 5] [--budget 300] [--skip-throughput]
"""
from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path

import numpy as np

from hwnas.job.checks import load_job_config as load_config
from hwnas.hwmodels.cost import CostModel
from hwnas.hwmodels.devices import LocalCPU
from hwnas.hwmodels.energy import energy_model
from hwnas.hwmodels.profiler import build_lookup_table
from hwnas.search.custom import search
from hwnas.search.loop import hypervolume
from hwnas.spaces.cnn import StandaloneCNN
from hwnas.spaces.dims import Dim, SearchSpace
from hwnas.spaces.registry import build_space

CONFIG = Path(__file__).with_name("digits-cnn.yaml")
BLOCKS = [(0, 0), (1, 0), (2, 0), (2, 1)]
CHOICES = {"expand": (2, 4, 6), "kernel": (3, 5, 7), "wbits": (4, 8)}


def small_space() -> SearchSpace:
    return SearchSpace([Dim(f"b{k}.{name}", values) for k in range(len(BLOCKS)) for name, values in CHOICES.items()])


def cnn_encodings(cnn_space, small: SearchSpace, rows: np.ndarray) -> np.ndarray:
    """Encodings in the default CNN space of the small space's rows: depths 1, 1, 2, 8-bit
    activations, the four blocks' choices from the rows, other blocks inactive."""
    names = list(cnn_space.names)
    X = np.zeros((len(rows), len(names)), dtype=int)
    fixed = {"s0.depth": 1, "s1.depth": 1, "s2.depth": 2}
    for name, value in fixed.items():
        X[:, names.index(name)] = cnn_space.dim(name).index(value)
    for k, (i, j) in enumerate(BLOCKS):
        X[:, names.index(f"s{i}.b{j}.abits")] = cnn_space.dim(f"s{i}.b{j}.abits").index(8)
        for name, values in CHOICES.items():
            dim = cnn_space.dim(f"s{i}.b{j}.{name}")
            lookup = np.array([dim.index(v) for v in values])
            X[:, names.index(dim.name)] = lookup[rows[:, small.names.index(f"b{k}.{name}")]]
    return X


def objective_table(cnn_space, cost: CostModel):
    """Every subnet of the small space: its encoding, latency and synthetic error."""
    from hwnas.search.vectorized import VectorizedCosts

    small = small_space()
    rows = np.array(list(itertools.product(*(range(len(d.choices)) for d in small.dims))), dtype=int)
    costs = VectorizedCosts(cnn_space, cost).costs(cnn_encodings(cnn_space, small, rows))
    latency, macs = costs["latency_ms"], costs["macs"]
    rng = np.random.default_rng(12345)
    capacity = (np.log(macs) - np.log(macs).min()) / np.ptp(np.log(macs))  # 0 (smallest) .. 1 (largest)
    error = 0.02 + 0.10 * np.exp(-3.0 * capacity)
    for k in range(len(BLOCKS)):
        wbits = np.array(CHOICES["wbits"])[rows[:, 3 * k + 2]]
        kernel = np.array(CHOICES["kernel"])[rows[:, 3 * k + 1]]
        error += np.where(wbits == 4, 0.004 * (len(BLOCKS) - k), 0.0)
        error += 0.002 * (kernel == 3) * (k < 2)
    return small, rows, latency, error + rng.normal(0, 0.002, len(rows))


def front_2d(F: np.ndarray) -> np.ndarray:
    """Rows of the non-dominated set of 2-objective minimization points (sort and sweep)."""
    order = np.lexsort((F[:, 1], F[:, 0]))
    best, keep = np.inf, []
    for i in order:
        if F[i, 1] < best:
            keep.append(i)
            best = F[i, 1]
    return F[keep]


def run_method(method: str, small, index, latency, error, budget: int, seed: int) -> np.ndarray:
    """The (error, latency) rows of the subnets ``method`` evaluated, up to ``budget`` of them."""
    key = lambda arch: index[tuple(small.encode(arch))]  # noqa: E731
    seen: dict[int, None] = {}

    def err(arch):
        i = key(arch)
        seen.setdefault(i, None)
        return float(error[i])

    def lat(arch):
        return float(latency[key(arch)])

    if method == "hwnas":
        search(small, {"error": err, "latency": lat}, cheap={"latency"}, budget=budget, batch=20, initial=60,
               seed=seed, generations=30, patience=budget)
    elif method == "random":
        rng = np.random.default_rng(seed)
        while len(seen) < budget:
            err(small.sample(rng))
    elif method == "nsga2":
        _nsga2_true(small, err, lat, budget, seed)
    elif method == "optuna_tpe":
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(directions=["minimize", "minimize"],
                                    sampler=optuna.samplers.TPESampler(seed=seed, multivariate=True))
        while len(seen) < budget:
            trial = study.ask()
            arch = small.decode([trial.suggest_int(d.name, 0, len(d.choices) - 1) for d in small.dims])
            study.tell(trial, [err(arch), lat(arch)])
    idx = list(seen)[:budget]
    return np.column_stack([error[idx], latency[idx]])


def _nsga2_true(small, err, lat, budget, seed):
    from pymoo.core.problem import Problem
    from pymoo.optimize import minimize

    from hwnas.search.engine import _nsga2

    class TrueProblem(Problem):
        def __init__(self):
            self.space = small
            super().__init__(n_var=len(small), n_obj=2, xl=np.zeros(len(small)), xu=small.upper_bounds.astype(float),
                             vtype=int)

        def _evaluate(self, X, out, *args, **kwargs):
            archs = [small.decode(x) for x in X]
            out["F"] = np.array([[err(a), lat(a)] for a in archs])

    minimize(TrueProblem(), _nsga2(TrueProblem(), 30), ("n_gen", budget // 30), seed=seed, verbose=False)


def throughput(cnn_space, cost: CostModel) -> None:
    from hwnas.predictors.accuracy import ArchFeatures, AccuracyPredictor
    from hwnas.search.engine import evaluate_population, run_search
    from hwnas.search.problem import SubnetProblem

    rng = np.random.default_rng(0)
    archs = list(dict.fromkeys(cnn_space.sample(rng) for _ in range(400)))
    features = ArchFeatures(cnn_space)
    y = np.array([0.9 + 0.001 * np.log1p(cost.costs(a)["macs"]) for a in archs]) + rng.normal(0, 0.003, len(archs))
    predictor = AccuracyPredictor("ensemble", 0).fit(features.transform(archs), y)
    problem = SubnetProblem(cnn_space, ["accuracy", "latency", "energy"], predictor, features, cost, {})
    X = np.column_stack([rng.integers(0, u + 1, 100_000) for u in cnn_space.upper_bounds])
    evaluate_population(problem, X[:1000])  # warm caches that a search would warm too
    started = time.perf_counter()
    evaluate_population(problem, X)
    seconds = time.perf_counter() - started
    print(f"predictor_evals_per_s: {len(X) / seconds:.0f}")
    started = time.perf_counter()
    run_search(problem, "nsga2", 64, 40, 0)
    print(f"front_search_s: {time.perf_counter() - started:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budget", type=int, default=300)
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args()
    config = load_config(CONFIG)
    cnn_space = build_space(config.space, (1, 8, 8), 10)
    workdir = Path(tempfile.mkdtemp(prefix="hwnas-bench-search-"))
    table = build_lookup_table(LocalCPU(config.device), cnn_space, StandaloneCNN, workdir / "luts").table
    cost = CostModel(cnn_space, table, energy_model(config.device.energy_model))
    if not args.skip_throughput:
        throughput(cnn_space, cost)

    started = time.perf_counter()
    small, rows, latency, error = objective_table(cnn_space, cost)
    index = {tuple(r): i for i, r in enumerate(rows)}
    print(f"enumerated_subnets: {len(rows)}")
    print(f"objective_table_s: {time.perf_counter() - started:.1f}")
    F_all = np.column_stack([error, latency])
    lower, upper = F_all.min(axis=0), F_all.max(axis=0)
    true_front = front_2d(F_all)
    true_hv = hypervolume(true_front, lower, upper)
    print(f"true_front_size: {len(true_front)}")
    for method in ("hwnas", "random", "nsga2", "optuna_tpe"):
        ratios, seconds = [], []
        for seed in range(args.seeds):
            started = time.perf_counter()
            F = run_method(method, small, index, latency, error, args.budget, seed)
            seconds.append(time.perf_counter() - started)
            ratios.append(hypervolume(F, lower, upper) / true_hv)
        print(f"{method}_hv_ratio_at_{args.budget}: {np.median(ratios):.4f}")
        print(f"{method}_hv_ratio_range: {min(ratios):.4f}-{max(ratios):.4f}")
        print(f"{method}_seconds_per_run: {np.median(seconds):.1f}")


if __name__ == "__main__":
    main()
