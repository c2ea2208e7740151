"""Objectives and budgets by name, and their matrices over metric rows: what the search, the store
and front queries share, kept apart from the pymoo problem so that reading a job needs only numpy.

Objectives are minimized, so accuracy enters as ``-accuracy``. The ``accuracy`` objective is
*validation* accuracy (column ``val_accuracy``, predicted or evaluated): the search, the front and
every budget choose on it, and test accuracy (``test_accuracy``) is only reported. A language model's
quality objective is ``perplexity`` instead (``val_perplexity``, minimized; see :mod:`hwnas.metrics`).
An objective is ``accuracy`` or ``perplexity`` (one of them, the job's task decides), ``latency``, ``energy``, ``memory`` (``memory_kb``: weights plus peak activations at the device's
batch size, see :mod:`hwnas.footprint`), ``params``, ``flops`` or ``bitops``; ``latency@NAME`` and
``energy@NAME`` take the figure from another device (a table or analytical one), so one search can
trade latency on this CPU against energy on an accelerator. ``prefill`` (``prefill_ms``) is a *latency
phase*: the latency of another call of the same subnet, on the job's device, which a space states
(:attr:`~hwnas.spaces.registry.SpaceEntry.latency_phases`; the lm space's prefill of a prompt of
``space.prompt_length`` tokens), beside ``latency`` (one run of its op graph: an lm decode step). A
budget is a bound on a metric column
(:class:`~hwnas.search.budgets.Budgets` gives them by column); its constraint is feasible at ``g <= 0``.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np

from hwnas.metrics import QUALITY_METRICS

# Latency phases: objectives a space prices only when it states them, each a column NAME_ms.
PHASES = ("prefill",)
BASE_COLUMNS = {**{name: q.column for name, q in QUALITY_METRICS.items()}, "latency": "latency_ms",
                **{phase: f"{phase}_ms" for phase in PHASES}, "energy": "energy_mj", "memory": "memory_kb",
                "params": "params", "flops": "flops", "bitops": "bitops"}
PER_DEVICE = ("latency", "energy")
MAXIMIZED = frozenset(name for name, q in QUALITY_METRICS.items() if q.maximize)
FLOOR_COLUMNS = frozenset(QUALITY_METRICS[name].column for name in MAXIMIZED)  # budgets on them are floors


def objective_column(name: str) -> str:
    """The metric column of an objective: ``latency`` -> ``latency_ms``, ``energy@acc`` -> ``energy_mj@acc``."""
    base, _, device = name.partition("@")
    column = BASE_COLUMNS[base]
    return f"{column}@{device}" if device else column


def parse_objective(name: str) -> tuple[str, str | None]:
    """(base, device or None); raises ValueError naming what is wrong."""
    base, at, device = name.partition("@")
    if base not in BASE_COLUMNS:
        raise ValueError(f"unknown objective {name!r}; known: {list(BASE_COLUMNS)}, or latency@DEVICE / energy@DEVICE")
    if at and (base not in PER_DEVICE or not device):
        raise ValueError(f"objective {name!r}: only latency and energy take @DEVICE")
    return base, device or None


def extra_devices(objectives: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(d for d in (parse_objective(o)[1] for o in objectives) if d))


def asked_phases(objectives: Sequence[str], bounded: Iterable[str] = ()) -> list[str]:
    """The latency phases a job prices: those named as an objective, or whose column a budget
    bounds (``bounded``: metric columns). Only those: a phase costs a measured device its own
    profile, correction samples and timings."""
    return [p for p in PHASES if p in objectives or BASE_COLUMNS[p] in bounded]


def phase_columns(phase: str) -> tuple[str, ...]:
    """What a candidate stores of a latency phase: its figure, its spread (0 where not measured)
    and the search's prediction of it, as ``latency_ms`` has ``latency_spread_ms`` and
    ``predicted_latency_ms``."""
    return (f"{phase}_ms", f"{phase}_spread_ms", f"predicted_{phase}_ms")


def objective_matrix(rows: Sequence[dict] | Mapping[str, np.ndarray], objectives: Sequence[str]) -> np.ndarray:
    """Minimization matrix of the objectives for metric rows (or a dict of column arrays)."""
    cols = []
    for name in objectives:
        column = objective_column(name)
        values = (np.asarray(rows[column], dtype=float) if isinstance(rows, Mapping)
                  else np.array([float(r[column]) for r in rows]))
        cols.append(-values if name in MAXIMIZED else values)
    n = len(next(iter(rows.values()))) if isinstance(rows, Mapping) else len(rows)
    return np.column_stack(cols) if cols else np.zeros((n, 0))


def constraint_matrix(rows: Sequence[dict] | Mapping[str, np.ndarray], budgets: dict[str, float]) -> np.ndarray:
    cols = []
    for column, bound in budgets.items():
        values = (np.asarray(rows[column], dtype=float) if isinstance(rows, Mapping)
                  else np.array([float(r[column]) for r in rows]))
        cols.append(bound - values if column in FLOOR_COLUMNS else values - bound)
    n = len(next(iter(rows.values()))) if isinstance(rows, Mapping) else len(rows)
    return np.column_stack(cols) if cols else np.zeros((n, 0))
