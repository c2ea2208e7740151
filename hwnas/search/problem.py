"""The pymoo problem: integer encodings in, predicted objectives and budget constraints out.

Objectives and budgets are named as :mod:`hwnas.search.objectives` says. Budgets are pymoo inequality constraints
(``g <= 0`` is feasible), so an impossible budget ends the search with no feasible candidate
instead of a rejection loop that never ends. :class:`CanonicalRepair` rounds every offspring and
rewrites its inactive dimensions to their canonical value, so encodings of the same subnet are one
individual and pymoo's duplicate elimination removes them.

Whole populations are scored at once: for spaces whose costs decompose by block (the CNN space)
:class:`~hwnas.search.vectorized.VectorizedCosts` computes costs and predictor features with
numpy; otherwise each distinct subnet is costed once and memoized.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from pymoo.core.problem import Problem
from pymoo.core.repair import Repair

from hwnas.metrics import quality_of
from hwnas.search.objectives import constraint_matrix, objective_matrix
from hwnas.search.vectorized import VectorizedCosts
from hwnas.spaces.dims import Arch

class CanonicalRepair(Repair):
    def __init__(self, space):
        super().__init__()
        self.space = space

    def _do(self, problem, X, **kwargs):
        X = np.clip(np.rint(np.asarray(X, dtype=float)), 0, self.space.upper_bounds)
        return np.array([self.space.encode(self.space.decode(x)) for x in X], dtype=float)


class SubnetProblem(Problem):
    """Predicted quality (accuracy or perplexity: mean and std), costs on the job's device and any
    extra devices."""

    def __init__(self, space, objectives: Sequence[str], predictor, features, cost_model,
                 budgets: dict[str, float], extra_costs: dict[str, object] | None = None):
        self.space, self.objectives = space, list(objectives)
        self.predictor, self.features, self.cost_model, self.budgets = predictor, features, cost_model, budgets
        self.extra_costs = dict(extra_costs or {})
        self.quality = quality_of(self.objectives)  # what the predictor predicts: accuracy, perplexity
        models = [cost_model, *self.extra_costs.values()]
        self.fast = ([VectorizedCosts(space, m) for m in models]
                     if all(VectorizedCosts.supported(space, m) for m in models) else None)
        super().__init__(n_var=len(space), n_obj=len(self.objectives), n_ieq_constr=len(budgets),
                         xl=np.zeros(len(space)), xu=space.upper_bounds.astype(float), vtype=int)

    def metrics(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """Every metric column for encodings ``X`` (n x dims): costs, and the predicted validation
        quality (``val_accuracy``, or ``val_perplexity`` for a language model) with its ``..._std``."""
        X = np.asarray(X, dtype=int)
        if self.fast is not None:
            out = self.fast[0].costs(X)
            for (device, _), fast in zip(self.extra_costs.items(), self.fast[1:]):
                extra = fast.costs(X)
                out[f"latency_ms@{device}"], out[f"energy_mj@{device}"] = extra["latency_ms"], extra["energy_mj"]
            feats = self.fast[0].features(X)
            if getattr(self.features, "has_extra", False):  # proxy scores: per subnet, cached by the features
                feats = np.hstack([feats, self.features.extra([self.space.decode(x) for x in X])])
        else:
            archs = [self.space.decode(x) for x in X]
            out = self._cost_columns(archs)
            feats = self.features.transform(archs)
        q = self.quality.column
        out[q], out[f"{q}_std"] = self.predictor.predict_with_std(feats)
        return out

    def _cost_columns(self, archs: list[Arch]) -> dict[str, np.ndarray]:
        rows = [self.cost_model.costs(a) for a in archs]
        out = {k: np.array([r[k] for r in rows], dtype=float) for k in rows[0]} if rows else {}
        for device, model in self.extra_costs.items():
            extra = [model.costs(a) for a in archs]
            out[f"latency_ms@{device}"] = np.array([r["latency_ms"] for r in extra])
            out[f"energy_mj@{device}"] = np.array([r["energy_mj"] for r in extra])
        return out

    def rows(self, archs: list[Arch]) -> list[dict]:
        """Predicted metrics of ``archs``, one dict each."""
        if not archs:
            return []
        columns = self.metrics(np.array([self.space.encode(a) for a in archs]))
        return [{k: float(v[i]) for k, v in columns.items()} for i in range(len(archs))]

    def feasible(self, arch: Arch) -> bool:
        return bool((constraint_matrix(self.rows([arch]), self.budgets) <= 0).all())

    def uncertainty(self, X) -> np.ndarray:
        """Per-objective standard deviation: the quality predictor's; costs are taken as exact."""
        std = np.zeros((len(X), len(self.objectives)))
        if self.quality.name in self.objectives:
            std[:, self.objectives.index(self.quality.name)] = self.metrics(X)[f"{self.quality.column}_std"]
        return std

    def _evaluate(self, X, out, *args, **kwargs):
        columns = self.metrics(X)
        out["F"] = objective_matrix(columns, self.objectives)
        if self.budgets:
            out["G"] = constraint_matrix(columns, self.budgets)
