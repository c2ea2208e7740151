import itertools

import numpy as np
import pandas as pd
import pytest

from hwnas.errors import HwnasError, NoCandidateError
from hwnas.search.engine import select_for_evaluation
from hwnas.search.budgets import Budgets
from hwnas.search.front import query_front


def _frame(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"id": range(n), "arch": ["{}"] * n, "val_accuracy": rng.uniform(0.8, 1.0, n),
                         "latency_ms": rng.uniform(0.5, 3.0, n), "energy_mj": rng.uniform(1e-3, 1e-2, n)})


def _brute_front(frame, cols):
    keep = []
    for i, a in frame.iterrows():
        dominated = False
        for j, b in frame.iterrows():
            better_eq = all((b[c] >= a[c]) if c == "val_accuracy" else (b[c] <= a[c]) for c in cols)
            strictly = any((b[c] > a[c]) if c == "val_accuracy" else (b[c] < a[c]) for c in cols)
            if i != j and better_eq and strictly:
                dominated = True
                break
        if not dominated:
            keep.append(a["id"])
    return set(keep)


@pytest.mark.parametrize("objectives", [["accuracy", "latency"], ["accuracy", "latency", "energy"]])
def test_front_equals_brute_force_pareto_set(objectives):
    frame = _frame()
    cols = ["val_accuracy", "latency_ms", "energy_mj"][: len(objectives)]
    got = query_front(frame, objectives)
    assert set(got["id"]) == _brute_front(frame, cols)
    assert list(got["val_accuracy"]) == sorted(got["val_accuracy"], reverse=True)


def test_budgets_filter_before_the_front():
    frame = _frame()
    got = query_front(frame, ["accuracy", "latency"], Budgets(max_latency_ms=1.5, max_energy_mj=0.006))
    feasible = frame[(frame.latency_ms <= 1.5) & (frame.energy_mj <= 0.006)]
    assert set(got["id"]) == _brute_front(feasible, ["val_accuracy", "latency_ms"])
    assert (got.latency_ms <= 1.5).all() and (got.energy_mj <= 0.006).all()


def test_nothing_meets_the_budget_names_the_nearest_candidate():
    """For a latency cap the fastest candidate is nearest; for an accuracy floor the most accurate;
    for both, the one whose worse miss (relative to its budget) is smallest."""
    frame = _frame()
    cheapest = frame.sort_values("latency_ms").iloc[0]
    with pytest.raises(NoCandidateError, match=rf"no candidate meets latency <= 0.01 ms; the nearest is "
                                               rf"#{int(cheapest.id)} \(misses latency <= 0.01 ms by ") as info:
        query_front(frame, ["accuracy", "latency"], Budgets(max_latency_ms=0.01))
    assert info.value.exit_code == 1
    best = frame.sort_values("val_accuracy").iloc[-1]
    with pytest.raises(NoCandidateError, match=rf"the nearest is #{int(best.id)} \(misses validation accuracy"):
        query_front(frame, ["accuracy", "latency"], Budgets(min_accuracy=0.9999))
    cap, floor = float(frame.latency_ms.median()), 1.0
    worst = np.maximum(np.clip(frame.latency_ms / cap - 1, 0, None), np.clip(1 - frame.val_accuracy / floor, 0, None))
    nearest = frame.iloc[int(np.argmin(worst.to_numpy()))]
    with pytest.raises(NoCandidateError, match=rf"the nearest is #{int(nearest.id)} "):
        query_front(frame, ["accuracy", "latency"], Budgets(max_latency_ms=cap, min_accuracy=floor))


def test_a_prefill_budget_filters_and_is_refused_where_no_prefill_was_priced():
    """``prefill_ms`` is a latency phase's column: a budget on it filters like any cost's, and a job
    that priced no prefill (no such column) is told why in one line."""
    frame = _frame()
    frame["prefill_ms"] = np.random.default_rng(1).uniform(2.0, 9.0, len(frame))
    got = query_front(frame, ["accuracy", "latency", "prefill"], Budgets(max_prefill_ms=5.0))
    feasible = frame[frame.prefill_ms <= 5.0]
    assert set(got["id"]) == _brute_front(feasible, ["val_accuracy", "latency_ms", "prefill_ms"])
    with pytest.raises(HwnasError, match=r"--max-prefill-ms: the candidates have no prefill_ms column \(the job "
                                         r"priced no prefill latency"):
        query_front(_frame(), ["accuracy", "latency"], Budgets(max_prefill_ms=5.0))


@pytest.mark.parametrize("kwargs", [{"max_latency_ms": -1}, {"max_energy_mj": 0}, {"min_accuracy": 1.5},
                                    {"max_latency_ms": float("nan")}, {"max_memory_kb": float("inf")}])
def test_bad_budgets_are_errors(kwargs):
    with pytest.raises(HwnasError, match="must be a number above 0"):
        query_front(_frame(), ["accuracy", "latency"], Budgets(**kwargs))


def test_selection_spreads_along_the_front_then_fills_from_next_fronts():
    F = np.array([[-0.9, 1.0], [-0.95, 2.0], [-0.99, 3.0], [-0.8, 1.5], [-0.85, 2.5]])
    assert sorted(select_for_evaluation(F, 3)) == [0, 1, 2]
    picked = select_for_evaluation(F, 5)
    assert sorted(picked) == [0, 1, 2, 3, 4] and picked[:3] == [0, 1, 2]
    many = np.column_stack([-np.linspace(0.8, 0.99, 50), np.linspace(1, 3, 50)])
    picks = select_for_evaluation(many, 5)
    assert picks == [0, 12, 24, 37, 49]
    assert len(set(itertools.chain(picks))) == 5
