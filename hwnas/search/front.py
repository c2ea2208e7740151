"""Pareto-front queries over a job's really evaluated candidates.

Budgets are applied first and the front is taken among the candidates that meet them, so a
budget on a quantity that is not an objective (energy in an accuracy/latency job) still yields
the best trade-offs under it. Non-dominated sorting is pymoo's. Quality here is the validation
figure of the job's quality objective (``val_accuracy``, or ``val_perplexity`` for a language model)
throughout: the front, the ``--min-accuracy`` / ``--max-perplexity`` budgets and the order that
puts the pick first never look at ``test_*``, which the rows carry to be reported.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

from hwnas.errors import HwnasError, NoCandidateError
from hwnas.metrics import ACCURACY, QUALITY_METRICS, QualityMetric, quality_of
from hwnas.search.budgets import Budgets
from hwnas.search.objectives import BASE_COLUMNS, PHASES, objective_matrix


def pareto_front(frame: pd.DataFrame, objectives: Sequence[str]) -> pd.DataFrame:
    if frame.empty:
        return frame
    F = objective_matrix(frame.to_dict("records"), objectives)
    keep = NonDominatedSorting().do(F, only_non_dominated_front=True)
    return frame.iloc[np.sort(np.asarray(keep))]


def nearest_miss_message(frame: pd.DataFrame, misses: list[tuple[str, pd.Series]],
                         quality: QualityMetric = ACCURACY) -> str:
    """Name the candidate closest to meeting every budget: the one whose worst relative miss is
    smallest (for an accuracy floor the most accurate, for a latency cap the fastest; ties go to
    the better ``quality``), with what it misses by, so the user knows how far to relax which budget."""
    worst = pd.concat([m.clip(lower=0) for _, m in misses], axis=1).max(axis=1)
    value = frame[quality.column].astype(float)
    order = pd.DataFrame({"worst": worst, "q": -value if quality.maximize else value}).sort_values(["worst", "q"])
    i = order.index[0]
    c = frame.loc[i]
    missed = ", ".join(f"{what} by {float(m[i]):.1%}" for what, m in misses if float(m[i]) > 0)
    memory = f", memory {c['memory_kb']:.1f} kB" if pd.notna(c.get("memory_kb")) else ""
    return (f"no candidate meets {' and '.join(what for what, _ in misses)}; the nearest is #{int(c['id'])} "
            f"(misses {missed}): validation {quality.name} {quality.format(c[quality.column])}, latency "
            f"{c['latency_ms']:.4f} ms, energy {c['energy_mj']:.6f} mJ{memory}")


def query_front(frame: pd.DataFrame, objectives: Sequence[str], budgets: Budgets | None = None) -> pd.DataFrame:
    """Pareto-optimal candidates meeting every budget, best validation quality first (the job's
    quality objective among ``objectives``: accuracy, or perplexity for a language model).

    Raises :class:`NoCandidateError` (exit code 1) naming the candidate nearest to meeting
    them when none does (see :func:`nearest_miss_message`).
    """
    budgets = budgets or Budgets()
    quality = quality_of(objectives)
    if frame.empty:
        raise NoCandidateError("the job has no evaluated candidates yet")
    for kind, _ in budgets.items():
        other = next((m for m in QUALITY_METRICS.values() if m.column == kind.column and m != quality), None)
        if other is not None:
            raise HwnasError(f"{kind.option}: this job is judged by {quality.name}, not {other.name}; "
                             f"budget its validation {quality.name} instead")
        if kind.column not in frame:
            phase = next((p for p in PHASES if BASE_COLUMNS[p] == kind.column), None)
            why = (f" (the job priced no {phase} latency: its config named no {phase} objective nor "
                   f"search.{kind.key})" if phase else "")
            raise HwnasError(f"{kind.option}: the candidates have no {kind.column} column{why}")
    # each budget: (what it asks, how far each candidate misses it, relative to the budget)
    misses: list[tuple[str, pd.Series]] = budgets.misses(frame.astype({c: float for c in budgets.columns()}))
    ok = pd.Series(True, index=frame.index)
    for _, miss in misses:
        ok &= miss <= 0
    feasible = frame[ok]
    if feasible.empty:
        raise NoCandidateError(nearest_miss_message(frame, misses, quality))
    front = pareto_front(feasible, objectives)
    order = front.sort_values([quality.column, "latency_ms"], ascending=[not quality.maximize, True])
    return order.reset_index(drop=True)
