"""The quality metric of a job: what its task measures a subnet by, and which way is better.

A dataset states its task's metric (:class:`hwnas.data.DataSplits` ``quality``): classification is
judged by ``accuracy`` (maximized), language modelling by ``perplexity`` (minimized: the exp of the
mean per-token cross-entropy). A job's objectives name exactly one of them, and everything that
means "the quality objective" (its columns, the predictor's target, the front's order, budgets,
tables) asks the :class:`QualityMetric` here instead of naming ``val_accuracy``, so the core never
asks which space or task it has. Choosing is on validation (``val_NAME``); ``test_NAME`` is reported.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class QualityMetric:
    name: str                  # the objective's name and the evaluation figure (accuracy, perplexity)
    maximize: bool
    task: str                  # the kind of dataset it judges, for messages
    reported: tuple[str, ...]  # evaluation figures stored per split for a candidate, the metric first
    log_target: bool           # predictors fit log(value): for perplexity that is the mean loss
    lower: float               # the range of the metric: predictions are clipped to it
    upper: float
    fmt: str                   # how tables print it
    short: str                 # table headers ("val acc")

    @property
    def column(self) -> str:
        """The validation column: what the search, the front and budgets choose on."""
        return f"val_{self.name}"

    @property
    def test_column(self) -> str:
        return f"test_{self.name}"

    @property
    def predicted_column(self) -> str:
        return f"predicted_{self.name}"

    def format(self, value: float) -> str:
        return format(value, self.fmt)

    def shown(self, decimals: int = 1) -> str:
        """A format for pages and plot labels: a fraction as a percentage (``63.2 %``), else plain."""
        return f".{decimals}%" if self.upper == 1.0 else f".{decimals + 2}f"


# Next-token accuracy is kept beside perplexity for a language model: it costs nothing (the same
# forward pass) and keeps the val_accuracy / test_accuracy columns of every job filled; nothing
# chooses on it there.
QUALITY_METRICS: dict[str, QualityMetric] = {
    "accuracy": QualityMetric("accuracy", True, "classification", ("accuracy",), False, 0.0, 1.0, ".4f", "acc"),
    "perplexity": QualityMetric("perplexity", False, "language modelling", ("perplexity", "accuracy"), True,
                                1.0, math.inf, ".3f", "ppl"),
}
ACCURACY = QUALITY_METRICS["accuracy"]


def quality_of(objectives: Sequence[str]) -> QualityMetric:
    """The quality metric among a job's objectives (accuracy for a job that names none: older
    stored jobs and hand-made rows)."""
    named = [QUALITY_METRICS[o] for o in objectives if o in QUALITY_METRICS]
    return named[0] if named else ACCURACY


def quality_columns(objectives: Sequence[str]) -> list[str]:
    """Every stored column of the job's quality metric (validation, test, predicted and its std)."""
    q = quality_of(objectives)
    return [q.column, q.test_column, q.predicted_column, f"{q.predicted_column}_std",
            *(f"{split}_{name}" for name in q.reported[1:] for split in ("val", "test"))]
