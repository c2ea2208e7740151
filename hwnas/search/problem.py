"""The pymoo problem: integer encodings in, predicted objectives and budget constraints out.

Objectives are minimized, so accuracy enters as ``-accuracy``. Budgets are pymoo inequality
constraints (``g <= 0`` is feasible), so an impossible budget ends the search with no feasible
candidate instead of a rejection loop that never ends. :class:`CanonicalRepair` rounds every
offspring and rewrites its inactive dimensions to their canonical value, so encodings of the same
subnet are one individual and pymoo's duplicate elimination removes them.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from pymoo.core.problem import Problem
from pymoo.core.repair import Repair

from hwnas.spaces.dims import Arch

OBJECTIVE_COLUMNS = {"accuracy": "accuracy", "latency": "latency_ms", "energy": "energy_mj"}


def budgets_of(config) -> dict[str, float]:
    """The active budgets of a SearchConfig: column -> bound."""
    out = {}
    if config.max_latency_ms is not None:
        out["latency_ms"] = config.max_latency_ms
    if config.max_energy_mj is not None:
        out["energy_mj"] = config.max_energy_mj
    if config.min_accuracy is not None:
        out["accuracy"] = config.min_accuracy
    return out


def objective_matrix(rows: Sequence[dict], objectives: Sequence[str]) -> np.ndarray:
    """Minimization matrix of the objectives for a sequence of metric rows."""
    cols = []
    for name in objectives:
        values = np.array([float(r[OBJECTIVE_COLUMNS[name]]) for r in rows])
        cols.append(-values if name == "accuracy" else values)
    return np.column_stack(cols) if cols else np.zeros((len(rows), 0))


def constraint_matrix(rows: Sequence[dict], budgets: dict[str, float]) -> np.ndarray:
    cols = []
    for column, bound in budgets.items():
        values = np.array([float(r[column]) for r in rows])
        cols.append(bound - values if column == "accuracy" else values - bound)
    return np.column_stack(cols) if cols else np.zeros((len(rows), 0))


class CanonicalRepair(Repair):
    def __init__(self, space):
        super().__init__()
        self.space = space

    def _do(self, problem, X, **kwargs):
        X = np.clip(np.rint(np.asarray(X, dtype=float)), 0, self.space.upper_bounds)
        return np.array([self.space.encode(self.space.decode(x)) for x in X], dtype=float)


class SubnetProblem(Problem):
    """Evaluates a whole population per call with the predictors and the cost model."""

    def __init__(self, space, objectives: Sequence[str], predict_accuracy: Callable[[list[Arch]], np.ndarray],
                 cost_model, budgets: dict[str, float]):
        self.space, self.objectives = space, list(objectives)
        self.predict_accuracy, self.cost_model, self.budgets = predict_accuracy, cost_model, budgets
        super().__init__(n_var=len(space), n_obj=len(self.objectives), n_ieq_constr=len(budgets),
                         xl=np.zeros(len(space)), xu=space.upper_bounds.astype(float), vtype=int)

    def rows(self, archs: list[Arch]) -> list[dict]:
        accuracy = self.predict_accuracy(archs)
        return [{**self.cost_model.costs(a), "accuracy": float(acc)} for a, acc in zip(archs, accuracy)]

    def feasible(self, arch: Arch) -> bool:
        return bool((constraint_matrix(self.rows([arch]), self.budgets) <= 0).all())

    def _evaluate(self, X, out, *args, **kwargs):
        rows = self.rows([self.space.decode(x) for x in X])
        out["F"] = objective_matrix(rows, self.objectives)
        if self.budgets:
            out["G"] = constraint_matrix(rows, self.budgets)
