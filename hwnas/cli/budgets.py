"""The budget options of ``hwnas front``, ``export`` and ``report``, declared once, and the one
:class:`~hwnas.search.budgets.Budgets` value a command makes of them before it opens a job (so a
NaN, infinite or out-of-range bound fails first, whether or not the command goes on to use it)."""
from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from hwnas.errors import HwnasError
from hwnas.search.budgets import BUDGET_KEYS, Budgets, check_budget

MaxLatency = Annotated[Optional[float], typer.Option("--max-latency-ms", metavar="MS", help="latency budget: "
                                                     "one inference; for a language-model job one generated "
                                                     "token (the decode step its space times)")]
MaxPrefill = Annotated[Optional[float], typer.Option("--max-prefill-ms", metavar="MS", help="prefill latency "
                                                     "budget of a job that priced it (a language model: a prompt "
                                                     "of space.prompt_length tokens)")]
MaxEnergy = Annotated[Optional[float], typer.Option("--max-energy-mj", metavar="MJ", help="energy budget")]
MaxMemory = Annotated[Optional[float], typer.Option("--max-memory-kb", metavar="KB", help="memory budget: weights "
                                                    "plus peak activations at the device's batch size, in KiB")]
MaxMemoryMb = Annotated[Optional[float], typer.Option("--max-memory-mb", metavar="MB", help="the memory budget "
                                                      "in MiB (--max-memory-kb / 1024)")]
MinAccuracy = Annotated[Optional[float], typer.Option("--min-accuracy", metavar="FRACTION",
                                                      help="accuracy floor, a fraction in (0, 1]")]
MaxPerplexity = Annotated[Optional[float], typer.Option("--max-perplexity", metavar="PPL",
                                                        help="validation perplexity budget (a language-model job)")]


def budgets_of(params: dict[str, Any]) -> Budgets:
    """The budgets a command was given: its budget parameters by name (a command passes ``locals()``,
    so a new budget option is one parameter more and nothing else). ``max_memory_mb`` is the memory
    budget in MiB, the same budget as ``max_memory_kb``: giving both is an error."""
    given = {key: params[key] for key in BUDGET_KEYS if key in params}
    megabytes = params.get("max_memory_mb")
    if megabytes is not None:
        check_budget("--max-memory-mb", float(megabytes))
        if given.get("max_memory_kb") is not None:
            raise HwnasError("--max-memory-mb and --max-memory-kb are the same budget: give one")
        given["max_memory_kb"] = float(megabytes) * 1024.0
    return Budgets.of(given)
