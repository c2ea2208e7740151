"""Budgets: bounds on a candidate's metrics, as one typed value every layer passes along.

A budget caps a cost (latency, a latency phase such as an LM's prefill, energy, memory) or
validation perplexity (a language model), or sets a floor under validation accuracy. The search
turns the config's budgets into constraints, the front query filters by them, ``hwnas front`` /
``export`` / ``report`` take them as options and the report draws them. Each is one row
of :data:`BUDGETS` (its keyword, metric column, option and words) and one field of
:class:`Budgets`, so adding a budget edits this module, the config and the CLI's option list,
not every signature that passes budgets on.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from hwnas.errors import HwnasError


@dataclass(frozen=True)
class BudgetKind:
    key: str                     # keyword, config key (search.KEY) and report key
    column: str                  # the metric column it bounds
    words: str                   # how messages name it, formatted with the bound
    floor: bool = False          # a lower bound (accuracy), not a cap
    upper: float | None = None   # the largest bound allowed

    @property
    def option(self) -> str:
        return "--" + self.key.replace("_", "-")


BUDGETS = (
    BudgetKind("max_latency_ms", "latency_ms", "latency <= {:g} ms"),
    BudgetKind("max_prefill_ms", "prefill_ms", "prefill <= {:g} ms"),
    BudgetKind("max_energy_mj", "energy_mj", "energy <= {:g} mJ"),
    BudgetKind("max_memory_kb", "memory_kb", "memory <= {:g} kB"),
    BudgetKind("min_accuracy", "val_accuracy", "validation accuracy >= {:g}", floor=True, upper=1.0),
    BudgetKind("max_perplexity", "val_perplexity", "validation perplexity <= {:g}"),
)
BUDGET_KEYS = tuple(kind.key for kind in BUDGETS)


def check_budget(name: str, value: float | None, upper: float | None = None) -> None:
    """A bound must be a finite number above 0 (and at most ``upper``); ``name`` is the option."""
    if value is None:
        return
    if not math.isfinite(value) or value <= 0 or (upper is not None and value > upper):
        limit = f" and at most {upper}" if upper is not None else ""
        raise HwnasError(f"{name} must be a number above 0{limit}, got {value}")


@dataclass(frozen=True)
class Budgets:
    """The budgets in force; None: no such budget. Checked when made (one line naming the option).
    Its fields are :data:`BUDGET_KEYS`, in order (tests/test_memory.py checks)."""

    max_latency_ms: float | None = None
    max_prefill_ms: float | None = None
    max_energy_mj: float | None = None
    max_memory_kb: float | None = None
    min_accuracy: float | None = None
    max_perplexity: float | None = None

    def __post_init__(self) -> None:
        for kind in BUDGETS:
            value = getattr(self, kind.key)
            if value is not None:
                check_budget(kind.option, float(value), kind.upper)
                object.__setattr__(self, kind.key, float(value))

    @classmethod
    def of(cls, budgets: "Budgets | Mapping[str, Any] | None" = None, **limits: float | None) -> "Budgets":
        """Budgets from a :class:`Budgets`, a mapping by key and / or keywords (None values ignored);
        an unknown key is an error naming the known ones."""
        given = budgets.active() if isinstance(budgets, Budgets) else dict(budgets or {})
        given.update(limits)
        unknown = [k for k in given if k not in BUDGET_KEYS]
        if unknown:
            raise HwnasError(f"unknown budget {unknown[0]!r}; known: {', '.join(BUDGET_KEYS)}")
        return cls(**{k: v for k, v in given.items() if v is not None})

    @classmethod
    def from_config(cls, search_config) -> "Budgets":
        """The budgets of a :class:`~hwnas.config.SearchConfig` (``search.max_latency_ms``, ...)."""
        return cls(**{key: getattr(search_config, key) for key in BUDGET_KEYS})

    def items(self) -> list[tuple[BudgetKind, float]]:
        return [(kind, getattr(self, kind.key)) for kind in BUDGETS if getattr(self, kind.key) is not None]

    def __bool__(self) -> bool:
        return bool(self.items())

    def active(self) -> dict[str, float]:
        """Key -> bound of the budgets in force (``{"max_latency_ms": 0.5}``)."""
        return {kind.key: value for kind, value in self.items()}

    def columns(self) -> dict[str, float]:
        """Metric column -> bound: what :func:`hwnas.search.objectives.constraint_matrix` takes."""
        return {kind.column: value for kind, value in self.items()}

    def describe(self) -> str:
        return " and ".join(kind.words.format(value) for kind, value in self.items()) or "no budget"

    def misses(self, rows) -> list[tuple[str, Any]]:
        """Per budget in force: (its words, how far ``rows[column]`` misses it relative to the bound,
        <= 0 where met). ``rows`` is a DataFrame (a Series per budget) or one row (a number)."""
        out = []
        for kind, bound in self.items():
            value = rows[kind.column]
            out.append((kind.words.format(bound), 1 - value / bound if kind.floor else value / bound - 1))
        return out

    def met_by(self, row: Mapping[str, Any]) -> bool:
        return all(float(miss) <= 0 for _, miss in self.misses(row))
