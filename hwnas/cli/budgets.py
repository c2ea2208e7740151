"""The budget options of ``hwnas front``, ``export`` and ``report``, declared once, and the one
:class:`~hwnas.search.budgets.Budgets` value a command makes of them before it opens a job (so a
NaN, infinite or out-of-range bound fails first, whether or not the command goes on to use it)."""
from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from hwnas.search.budgets import BUDGET_KEYS, Budgets

MaxLatency = Annotated[Optional[float], typer.Option("--max-latency-ms", metavar="MS", help="latency budget")]
MaxEnergy = Annotated[Optional[float], typer.Option("--max-energy-mj", metavar="MJ", help="energy budget")]
MaxMemory = Annotated[Optional[float], typer.Option("--max-memory-kb", metavar="KB", help="memory budget: weights "
                                                    "plus peak activations at the device's batch size, in KiB")]
MinAccuracy = Annotated[Optional[float], typer.Option("--min-accuracy", metavar="FRACTION",
                                                      help="accuracy floor, a fraction in (0, 1]")]


def budgets_of(params: dict[str, Any]) -> Budgets:
    """The budgets a command was given: its budget parameters by name (a command passes ``locals()``,
    so a new budget option is one parameter more and nothing else)."""
    return Budgets.of({key: params[key] for key in BUDGET_KEYS if key in params})
