"""Everything a report shows, read from a job once, so the plots and the page never touch the store.

Reading is kept apart from drawing so that a job with missing pieces (no training history, no
energy figures, a space that cannot be rebuilt) is found out here, in one place, and every section
downstream only has to ask "is it there?" instead of catching errors of its own.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from hwnas.errors import NoCandidateError
from hwnas.metrics import ACCURACY, QUALITY_METRICS, QualityMetric, quality_columns, quality_of
from hwnas.search.budgets import Budgets

# Stored per candidate but not among Job.candidates()' columns: the energy panel needs the
# predicted energy, the rounds plot the round.
EXTRA_COLUMNS = ("predicted_energy_mj", "round")
NUMERIC = ("val_accuracy", "test_accuracy", "latency_ms", "energy_mj", "memory_kb", "params", "predicted_accuracy",
           "predicted_accuracy_std", "predicted_latency_ms", "predicted_energy_mj",
           *(c for name in QUALITY_METRICS for c in quality_columns([name])))


@dataclass
class ReportData:
    name: str
    status: str
    attrs: dict[str, Any]
    objectives: list[str]
    candidates: pd.DataFrame
    front: pd.DataFrame  # Pareto-optimal under the job's objectives, sorted by latency
    budgets: Budgets
    metric: QualityMetric = ACCURACY  # the job's quality metric (perplexity for a language model)
    pick: dict[str, Any] | None = None  # the front member of best validation quality meeting the budgets
    pick_note: str = ""
    dims: list[tuple[str, tuple]] = field(default_factory=list)
    inactive: Callable[[dict], set] = lambda values: set()
    quality: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def has(self, column: str) -> bool:
        """Whether ``column`` holds at least one finite value (a column of Nones does not count)."""
        return column in self.candidates and bool(np.isfinite(self.candidates[column].to_numpy(float)).any())

    @property
    def has_energy(self) -> bool:
        """Energy is worth a panel only when some candidate has a positive figure."""
        return self.has("energy_mj") and bool((self.candidates["energy_mj"].fillna(0) > 0).any())

    @property
    def latency_measured(self) -> bool:
        return self.latency_source == "measured"

    @property
    def latency_source(self) -> str:
        """Where the candidates' latency came from: ``measured`` (on the device, in this job),
        ``table`` or ``analytical`` (a model of a device that does not measure)."""
        if "latency_source" not in self.candidates or self.candidates.empty:
            return "measured"
        return "/".join(sorted(set(self.candidates["latency_source"].astype(str))))

    def front_ids(self) -> set[int]:
        return set(self.front["id"].astype(int)) if not self.front.empty else set()


def _candidates(job) -> pd.DataFrame:
    frame = job.candidates().copy()
    store, study = getattr(job, "store", None), getattr(job, "study", None)
    missing = [c for c in EXTRA_COLUMNS if c not in frame]
    if missing and not frame.empty and hasattr(store, "candidates") and study is not None:
        extra = store.candidates(study, extra=tuple(missing))
        frame = frame.merge(extra[["id", *missing]], on="id", how="left")
    for column in NUMERIC:
        if column in frame:
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    return frame


def _space(job, frame: pd.DataFrame, notes: list[str]) -> tuple[list[tuple[str, tuple]], Callable]:
    """The searched dimensions and their choices; from the arches seen when the space is gone."""
    try:
        space = job.space()
        return [(d.name, tuple(d.choices)) for d in space.dims], space.inactive_dims
    except Exception as exc:  # an old or foreign job: show what was chosen rather than nothing
        notes.append(f"the search space could not be rebuilt ({type(exc).__name__}: {exc}); "
                     "the choices plot shows only the values seen on the front")

    seen: dict[str, list] = {}
    for text in frame.get("arch", []):
        for key, value in json.loads(text).items():
            if value not in seen.setdefault(key, []):
                seen[key].append(value)
    return [(k, tuple(sorted(v, key=str))) for k, v in seen.items()], lambda values: set()


def gather(job, budgets: Budgets | dict) -> ReportData:
    budgets = Budgets.of(budgets)
    attrs = dict(job.attrs)
    frame = _candidates(job)
    notes: list[str] = []
    objectives = list(attrs.get("objectives") or ["accuracy", "latency"])
    data = ReportData(name=str(job.name), status=str(attrs.get("status", "?")), attrs=attrs,
                      objectives=objectives, candidates=frame, front=frame.iloc[0:0], budgets=budgets, notes=notes,
                      metric=quality_of(objectives))
    if not frame.empty:
        try:
            ids = set(job.front()["id"].astype(int))
        except NoCandidateError as exc:
            ids = set()
            notes.append(str(exc))
        q = data.metric
        data.front = frame[frame["id"].isin(ids)].sort_values(["latency_ms", q.column], ascending=[True, not q.maximize])
        data.front = data.front.reset_index(drop=True)
        if budgets:
            try:
                data.pick = job.front(budgets).iloc[0].to_dict()
                data.pick_note = (f"the candidate of best validation {q.name} meeting {budgets.describe()} "
                                  f"is #{int(data.pick['id'])}")
            except NoCandidateError as exc:
                data.pick_note = str(exc)
        data.dims, data.inactive = _space(job, data.front, notes)
    quality = getattr(job, "predictor_quality", None)
    data.quality = list(quality()) if callable(quality) else []
    return data


def pareto_2d(x: Sequence[float], acc: Sequence[float]) -> np.ndarray:
    """Indices of the points no other point beats on both lower ``x`` and higher ``acc``, by ``x``.

    A front under three objectives, seen in one two-objective panel, zig-zags; joining only the
    points that are optimal in that panel draws the trade-off a reader can actually buy there.
    """
    x, acc = np.asarray(x, float), np.asarray(acc, float)
    order = np.lexsort((-acc, x))
    keep, best = [], -math.inf
    for i in order:
        if np.isfinite(x[i]) and np.isfinite(acc[i]) and acc[i] > best:
            keep.append(i)
            best = acc[i]
    return np.array(keep, dtype=int)
