"""Pareto-front queries over a job's really evaluated candidates.

Budgets are applied first and the front is taken among the candidates that meet them, so a
budget on a quantity that is not an objective (energy in an accuracy/latency job) still yields
the best trade-offs under it. Non-dominated sorting is pymoo's. Accuracy here is validation
accuracy (``val_accuracy``) throughout: the front, the ``--min-accuracy`` budget and the order
that puts the pick first never look at ``test_accuracy``, which the rows carry to be reported.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

from hwnas.errors import HwnasError, NoCandidateError
from hwnas.search.objectives import objective_matrix


def check_budget(name: str, value: float | None, upper: float | None = None) -> None:
    if value is None:
        return
    if not math.isfinite(value) or value <= 0 or (upper is not None and value > upper):
        limit = f" and at most {upper}" if upper is not None else ""
        raise HwnasError(f"{name} must be a number above 0{limit}, got {value}")


def pareto_front(frame: pd.DataFrame, objectives: Sequence[str]) -> pd.DataFrame:
    if frame.empty:
        return frame
    F = objective_matrix(frame.to_dict("records"), objectives)
    keep = NonDominatedSorting().do(F, only_non_dominated_front=True)
    return frame.iloc[np.sort(np.asarray(keep))]


def nearest_miss_message(frame: pd.DataFrame, misses: list[tuple[str, pd.Series]]) -> str:
    """Name the candidate closest to meeting every budget: the one whose worst relative miss is
    smallest (for an accuracy floor the most accurate, for a latency cap the fastest), with what it
    misses by, so the user knows how far to relax which budget."""
    worst = pd.concat([m.clip(lower=0) for _, m in misses], axis=1).max(axis=1)
    order = pd.DataFrame({"worst": worst, "acc": -frame["val_accuracy"]}).sort_values(["worst", "acc"])
    i = order.index[0]
    c = frame.loc[i]
    missed = ", ".join(f"{what} by {float(m[i]):.1%}" for what, m in misses if float(m[i]) > 0)
    return (f"no candidate meets {' and '.join(what for what, _ in misses)}; the nearest is #{int(c['id'])} "
            f"(misses {missed}): validation accuracy {c['val_accuracy']:.4f}, latency {c['latency_ms']:.4f} ms, "
            f"energy {c['energy_mj']:.6f} mJ")


def query_front(frame: pd.DataFrame, objectives: Sequence[str], max_latency_ms: float | None = None,
                max_energy_mj: float | None = None, min_accuracy: float | None = None) -> pd.DataFrame:
    """Pareto-optimal candidates meeting every budget, best validation accuracy first.

    Raises :class:`NoCandidateError` (exit code 1) naming the candidate nearest to meeting
    them when none does (see :func:`nearest_miss_message`).
    """
    check_budget("--max-latency-ms", max_latency_ms)
    check_budget("--max-energy-mj", max_energy_mj)
    check_budget("--min-accuracy", min_accuracy, upper=1.0)
    if frame.empty:
        raise NoCandidateError("the job has no evaluated candidates yet")
    # each budget: (what it asks, how far each candidate misses it, relative to the budget)
    misses: list[tuple[str, pd.Series]] = []
    if max_latency_ms is not None:
        misses.append((f"latency <= {max_latency_ms:g} ms", frame["latency_ms"] / max_latency_ms - 1))
    if max_energy_mj is not None:
        misses.append((f"energy <= {max_energy_mj:g} mJ", frame["energy_mj"] / max_energy_mj - 1))
    if min_accuracy is not None:
        misses.append((f"validation accuracy >= {min_accuracy:g}", 1 - frame["val_accuracy"] / min_accuracy))
    ok = pd.Series(True, index=frame.index)
    for _, miss in misses:
        ok &= miss <= 0
    feasible = frame[ok]
    if feasible.empty:
        raise NoCandidateError(nearest_miss_message(frame, misses))
    front = pareto_front(feasible, objectives)
    return front.sort_values(["val_accuracy", "latency_ms"], ascending=[False, True]).reset_index(drop=True)
