"""Progress reporting for long steps, kept out of the core's logic.

The pipeline calls ``reporter.task(description, total)`` and advances it; the CLI passes a
:class:`RichReporter` (bars with ETA on stderr), the Python API defaults to :class:`Reporter`,
which stays silent.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn
from rich.text import Text

Advance = Callable[..., None]


class Reporter:
    """Silent: every method is a no-op."""

    @contextmanager
    def task(self, description: str, total: int | None) -> Iterator[Advance]:
        yield lambda completed=None, **fields: None

    def info(self, message: str) -> None:
        pass


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:d}:{minutes:02d}:{secs:02d}"


def _eta_column():
    """``eta 0:01:23`` while a step runs, ``took 0:00:45`` once it is done: one column, so a bar
    fits an 80-column terminal with its note."""

    class EtaColumn(ProgressColumn):
        def render(self, task) -> Text:
            if task.finished and task.finished_time is not None:
                return Text(f"took {_clock(task.finished_time)}", style="progress.elapsed")
            remaining = task.time_remaining if task.total is not None else None
            return Text(f"eta {'-:--:--' if remaining is None else _clock(remaining)}", style="progress.remaining")

    return EtaColumn()


class RichReporter(Reporter):
    """Bars with the count, the estimated time left and a note (such as the loss), on ``console``
    (stderr by default), one per step; informational lines on the same console."""

    def __init__(self, console=None):
        self.console = console or Console(stderr=True)

    @contextmanager
    def task(self, description: str, total: int | None) -> Iterator[Advance]:
        columns = [TextColumn("{task.description:<18}"), BarColumn(bar_width=20), MofNCompleteColumn(),
                   _eta_column(), TextColumn("{task.fields[note]}")]
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
        self.console.print(message, highlight=False, markup=False)
