"""Which architecture choices buy accuracy and which buy speed, read along the front.

A heatmap: one column per Pareto-optimal candidate, fastest on the left; one row per searched
dimension; the colour is the choice's rank among that dimension's choices (dark = smallest, light
= largest) with the value written in the cell. A row that brightens from left to right is a knob
the front turns up as it spends latency; grey cells are dimensions that do nothing in that
subnet (blocks beyond its stage depth), so they are not mistaken for a choice.
"""
from __future__ import annotations

import json

import numpy as np

from hwnas.report.data import ReportData
from hwnas.report.figures import Figure, new_figure, to_png

MAX_ANNOTATED_CELLS = 600  # beyond this the numbers are too small to read and only clutter


def _label(value) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def choice_matrix(data: ReportData) -> tuple[np.ndarray, list[list[str]]]:
    """(rank in [0, 1] or NaN when inactive, text) per dimension x front member."""
    members = [json.loads(text) for text in data.front["arch"]]
    ranks = np.full((len(data.dims), len(members)), np.nan)
    text = [["" for _ in members] for _ in data.dims]
    for j, values in enumerate(members):
        inactive = data.inactive(values)
        for i, (name, choices) in enumerate(data.dims):
            if name not in values or name in inactive:
                text[i][j] = "–"
                continue
            value = values[name]
            index = choices.index(value) if value in choices else 0
            ranks[i, j] = index / (len(choices) - 1) if len(choices) > 1 else 0.5
            text[i][j] = _label(value)
    return ranks, text


def varying_rows(text: list[list[str]]) -> list[int]:
    """Rows whose active choice differs somewhere along the front. A dimension every front member
    leaves inactive (a block beyond every stage depth) or sets alike tells nothing; shown, it buried
    the few rows that do (36 rows, mostly grey, on the default space)."""
    return [i for i, row in enumerate(text) if len({t for t in row if t != "–"}) > 1]


def choices_figure(data: ReportData) -> Figure | str:
    front = data.front
    if front.empty or "arch" not in front:
        return "The job has no Pareto-optimal candidates yet, so there are no choices to show."
    if not data.dims:
        return "The job's search dimensions are unknown, so its choices cannot be laid out."
    ranks, text = choice_matrix(data)
    keep = varying_rows(text)
    if not keep:
        return "Every Pareto-optimal candidate makes the same choices, so there is nothing to compare."
    hidden = len(text) - len(keep)
    names = [data.dims[i][0] for i in keep]
    ranks, text = ranks[keep], [text[i] for i in keep]
    rows, cols = ranks.shape
    width = min(16.0, 2.6 + 0.62 * cols)
    height = min(24.0, 1.5 + 0.24 * rows)
    with new_figure(width, height) as fig:
        import matplotlib

        ax = fig.subplots()
        cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#e6e7e9")
        image = ax.imshow(np.ma.masked_invalid(ranks), cmap=cmap, vmin=0, vmax=1, aspect="auto",
                          interpolation="nearest")
        if rows * cols <= MAX_ANNOTATED_CELLS:
            for i in range(rows):
                for j in range(cols):
                    light = np.isfinite(ranks[i, j]) and ranks[i, j] > 0.6
                    ax.text(j, i, text[i][j], ha="center", va="center", fontsize=7,
                            color="#222" if light or not np.isfinite(ranks[i, j]) else "white")
        ax.set_yticks(range(rows), names, fontsize=7)
        q = data.metric
        labels = [f"#{int(r['id'])}\n{r['latency_ms']:.3g} ms\n{format(r[q.column], q.shown())}"
                  for r in front.to_dict("records")]
        ax.set_xticks(range(cols), labels, fontsize=7)
        ax.tick_params(axis="x", top=True, labeltop=True, bottom=False, labelbottom=False)
        ax.grid(False)
        ax.spines[:].set_visible(False)
        ax.set_xticks(np.arange(cols + 1) - 0.5, minor=True)
        ax.set_yticks(np.arange(rows + 1) - 0.5, minor=True)
        ax.grid(which="minor", color="white", linewidth=1.2)
        ax.tick_params(which="minor", length=0)
        bar = fig.colorbar(image, ax=ax, shrink=min(1.0, 6 / max(rows, 1)), aspect=20, pad=0.02)
        bar.set_ticks([0, 1], labels=["smallest\nchoice", "largest\nchoice"])
        bar.outline.set_visible(False)
        png = to_png(fig)
    alt = (f"Heatmap of the chosen value of each of {rows} varying searched dimensions (rows) for the {cols} "
           f"Pareto-optimal candidates (columns, fastest first); colour is the value's rank among the "
           "dimension's choices, from dark (smallest) to light (largest), grey where the dimension is inactive.")
    caption = ("Columns are the Pareto-optimal candidates sorted by latency, fastest on the left (id, latency, "
               f"validation {data.metric.name} on top); rows are the searched dimensions whose choice varies along "
               "the front"
               + (f" ({hidden} that never vary, or are inactive in every front member, are left out)" if hidden else "")
               + ". Dark cells hold a dimension's smallest choice, light ones its largest; grey cells (–) are "
               "inactive in that subnet. A row that brightens to the right is a knob the front turns up as it "
               f"spends latency on {data.metric.name}.")
    return Figure("choices", "Choices along the front", alt, caption, png)
