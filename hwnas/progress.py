"""Progress reporting for long steps, kept out of the core's logic.

The pipeline calls ``reporter.task(description, total)`` and advances it; the CLI passes a
:class:`RichReporter` (bars with ETA on stderr), the Python API defaults to :class:`Reporter`,
which stays silent.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

Advance = Callable[..., None]


class Reporter:
    """Silent: every method is a no-op."""

    @contextmanager
    def task(self, description: str, total: int | None) -> Iterator[Advance]:
        yield lambda completed=None, **fields: None

    def info(self, message: str) -> None:
        pass


class RichReporter(Reporter):
    def __init__(self, console=None):
        from rich.console import Console

        self.console = console or Console(stderr=True)

    @contextmanager
    def task(self, description: str, total: int | None) -> Iterator[Advance]:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        columns = [TextColumn("{task.description:<22}"), BarColumn(bar_width=24), MofNCompleteColumn(),
                   TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[note]}")]
        with Progress(*columns, console=self.console, transient=False) as progress:
            task_id = progress.add_task(description, total=total, note="")

            def advance(completed: int | None = None, note: str | None = None, total: int | None = None) -> None:
                kwargs = {} if note is None else {"note": note}
                if total is not None:
                    kwargs["total"] = total
                if completed is None:
                    progress.advance(task_id)
                    progress.update(task_id, **kwargs)
                else:
                    progress.update(task_id, completed=completed, **kwargs)

            yield advance
            final = progress.tasks[0].total
            if final is not None:
                progress.update(task_id, completed=final)

    def info(self, message: str) -> None:
        self.console.print(message, highlight=False)
