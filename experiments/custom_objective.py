"""Search a space of your own with objectives of your own: no supernet, no hwnas config.

The space is a small MLP family for scikit-learn's digits (hidden width and depth, activation,
L2 strength and the bit-width its weights are rounded to); the objectives are plain Python
callables: ``error`` trains and tests one network (expensive: called only for the candidates the
engine chooses to evaluate for real), ``weight_kb`` counts its weight storage (cheap: called for
every candidate the search looks at). hwnas fits an ensemble predictor to the expensive objective
and runs its predictor-in-the-loop engine.

Usage: python experiments/custom_objective.py [--budget 30]
"""
from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

from hwnas.search.custom import search
from hwnas.spaces.dims import Arch, Dim, SearchSpace

SPACE = SearchSpace([
    Dim("width", (8, 16, 32, 64, 128)),
    Dim("depth", (1, 2, 3)),
    Dim("activation", ("relu", "tanh")),
    Dim("alpha", (1e-4, 1e-2)),
    Dim("bits", (2, 4, 8, 32)),
])
X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X / 16.0, y, test_size=0.3, random_state=0)


def quantize(weights: np.ndarray, bits: int) -> np.ndarray:
    """Symmetric uniform rounding of a weight matrix to ``bits`` bits (32: left as is)."""
    if bits >= 32:
        return weights
    scale = np.abs(weights).max() / (2 ** (bits - 1) - 1)
    return np.round(weights / scale) * scale


def error(arch: Arch) -> float:
    """Test error of the MLP after its weights are rounded to the arch's bit-width."""
    model = MLPClassifier(hidden_layer_sizes=(arch["width"],) * arch["depth"], activation=arch["activation"],
                          alpha=arch["alpha"], max_iter=60, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X_train, y_train)
    model.coefs_ = [quantize(w, arch["bits"]) for w in model.coefs_]
    return 1.0 - model.score(X_test, y_test)


def weight_kb(arch: Arch) -> float:
    sizes = [X.shape[1]] + [arch["width"]] * arch["depth"] + [10]
    return sum(a * b for a, b in zip(sizes, sizes[1:])) * arch["bits"] / 8 / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=30)
    args = parser.parse_args()
    started = time.perf_counter()
    result = search(SPACE, {"error": error, "weight_kb": weight_kb}, cheap={"weight_kb"}, budget=args.budget,
                    batch=6, initial=12, generations=20)
    front = result.front.sort_values("weight_kb")
    print(front[["width", "depth", "activation", "alpha", "bits", "error", "weight_kb", "round"]].to_string(index=False))
    print(f"evaluated: {len(result.evaluated)} of {SPACE.size()} subnets, front: {len(front)}, "
          f"stopped: {result.state.stopped}, seconds: {time.perf_counter() - started:.1f}")


if __name__ == "__main__":
    main()
