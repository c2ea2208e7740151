"""The CLI's one style, shared by every command of :mod:`hwnas.cli.app`: its shared options (declared
once as ``Annotated`` types), :class:`Ui` (what goes to stdout, stderr, or the ``--json``
document) and the table style. Kept apart from the commands so that each command module reads as
what it does."""
from __future__ import annotations

import json
import math
import sys
from typing import Annotated, Any, Optional

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from hwnas.utils.progress import Reporter, RichReporter

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Hardware-aware neural architecture and quantization-policy search.\n\n"
                       "\b\nExample:\n  hwnas search experiments/digits-cnn.yaml --set train.epochs=5\n"
                       "  hwnas front digits-cnn --max-latency-ms 0.5")

# -- shared options: one declaration each, used by every command that takes them ---------------
DEFAULT_WORKDIR = "runs"
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars or informational lines; results and "
                                     "errors still print")]
Json = Annotated[bool, typer.Option("--json", help="print one JSON document on stdout instead of tables")]
Store = Annotated[Optional[str], typer.Option("--store", metavar="URL", help="SQLAlchemy URL of the job store "
                                              "[default: sqlite:///WORKDIR/hwnas.db]")]
Workdir = Annotated[str, typer.Option("--workdir", metavar="DIR", help="directory of job artifacts and the "
                                      "default store")]
ConfigWorkdir = Annotated[Optional[str], typer.Option("--workdir", metavar="DIR", help="directory of job artifacts, "
                                                      "tables and the default store [default: the config's]")]
Overrides = Annotated[list[str], typer.Option("--set", metavar="KEY=VALUE", help="override a config key, e.g. "
                                              "--set train.epochs=5 (repeatable)")]
JobName = Annotated[str, typer.Argument(metavar="JOB", help="the job's name (see hwnas jobs)")]
# the budget options: hwnas.cli.budgets

MAX_WIDTH = 140  # wider terminals still get tables and prose of at most this many columns


def _console(stderr: bool = False) -> Console:
    """A console as wide as the terminal (``COLUMNS`` where set; 80 when not a terminal), capped."""
    console = Console(stderr=stderr)
    if console.width > MAX_WIDTH:
        console.width = MAX_WIDTH
    return console


def _plain(value: Any) -> Any:
    """``value`` with numpy scalars made Python numbers and NaN / infinity made null: strict JSON."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalar
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)  # paths, dates


class Ui:
    """Where a command's output goes. Results (tables, result lines) go to stdout, or only the
    JSON document with ``--json``; informational lines to stdout unless ``--quiet`` or ``--json``;
    warnings and progress bars to stderr (bars not with ``--quiet``)."""

    def __init__(self, quiet: bool = False, as_json: bool = False):
        self.quiet, self.json = quiet, as_json
        self.out, self.err = _console(), _console(stderr=True)

    def reporter(self):
        return Reporter() if self.quiet else RichReporter(self.err)

    def table(self, table: Table) -> None:
        if not self.json:
            self.out.print(table)

    def result(self, text: str, wrap: bool = True) -> None:
        """A line of the result; ``wrap=False`` for lines holding a path or a command to copy."""
        if not self.json:
            self.out.print(text, soft_wrap=not wrap, highlight=False, markup=False)

    def info(self, text: str, wrap: bool = True) -> None:
        if not (self.json or self.quiet):
            self.out.print(text, soft_wrap=not wrap, highlight=False, markup=False)

    def warn(self, text: str) -> None:
        self.err.print(f"warning: {text}", soft_wrap=True, highlight=False, markup=False)

    def emit(self, document: Any) -> None:
        """The ``--json`` document: strict JSON, one document, on stdout."""
        sys.stdout.write(json.dumps(_plain(document), indent=2, allow_nan=False) + "\n")


def make_table(*columns: str | tuple[str, dict], title: str | None = None) -> Table:
    """The one table style: a ruled header, no outer edge, columns two spaces apart. A column is a
    header, or (header, keyword arguments of :meth:`Table.add_column`)."""
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                  collapse_padding=True)
    for column in columns:
        header, kwargs = (column, {}) if isinstance(column, str) else column
        table.add_column(header, **kwargs)
    return table


RIGHT = {"justify": "right", "no_wrap": True}
FOLD = {"overflow": "fold"}


def _fits(ui: Ui, rows: list[dict], fixed: list[str], flexible_min: int) -> bool:
    """Whether columns ``fixed`` (unwrapped) and one wrapping column of at least ``flexible_min``
    fit the terminal."""
    widths = [max([len(k), *(len(str(r[k])) for r in rows)]) for k in fixed]
    return sum(widths) + 2 * len(fixed) + flexible_min <= ui.out.width
