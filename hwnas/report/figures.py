"""Matplotlib without pyplot: figures rendered straight to PNG bytes on the Agg canvas.

pyplot keeps a global backend and a registry of open figures; a library that calls
``matplotlib.use("Agg")`` from inside a notebook or a GUI program would switch that program's
backend under it, and figures left in pyplot's registry leak. Building each
:class:`matplotlib.figure.Figure` on its own :class:`FigureCanvasAgg` needs no backend at all, so
the report works headless and leaves the caller's matplotlib state as it found it. Matplotlib is
imported inside the functions: importing :mod:`hwnas.report` costs nothing until a report is drawn.
"""
from __future__ import annotations

import base64
import io
import struct
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

DPI = 110
FRONT_COLOR = "#1f5fa8"
OTHER_COLOR = "#9aa0a6"
BUDGET_COLOR = "#c0392b"
PICK_COLOR = "#f2a900"
STYLE = {
    "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8,
    "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True,
    "grid.color": "#e3e5e8", "grid.linewidth": 0.6, "axes.axisbelow": True,
    "figure.facecolor": "white", "axes.facecolor": "white", "savefig.facecolor": "white",
}


@dataclass(frozen=True)
class Figure:
    """One rendered plot: its file stem, the words around it, and its PNG bytes."""

    name: str
    title: str
    alt: str
    caption: str
    png: bytes

    @property
    def size(self) -> tuple[int, int]:
        """Pixel width and height, read from the PNG's IHDR chunk (bytes 16-24)."""
        return struct.unpack(">II", self.png[16:24])

    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


@contextmanager
def new_figure(width_in: float, height_in: float) -> Iterator:
    """A constrained-layout figure on an Agg canvas, drawn under the report's style."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    with matplotlib.rc_context(STYLE):
        fig = MplFigure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")
        FigureCanvasAgg(fig)
        yield fig


def to_png(fig) -> bytes:
    """The figure as PNG bytes at exactly figsize x DPI pixels (no tight bbox, so the size the page
    states is the size of the image), without a Software stamp, so equal inputs give equal bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def percent_axis(axis) -> None:
    """Accuracy reads better as 63 % than as 0.63. The decimals follow the axis's span (matplotlib
    picks them from the view limits), so half-point ticks read 97.5 %, never 98 % twice."""
    from matplotlib.ticker import PercentFormatter

    axis.set_major_formatter(PercentFormatter(1.0, decimals=None))
