"""The front and the predictor parity plots: where the job landed, and how far to trust the map.

Each function takes :class:`~hwnas.report.data.ReportData` and returns a
:class:`~hwnas.report.figures.Figure`, or a sentence saying why there is nothing to draw, which the
page shows in the plot's place.
"""
from __future__ import annotations

import math

import numpy as np

from hwnas.predictors.quality import regression_quality
from hwnas.report.data import ReportData, pareto_2d
from hwnas.report.figures import (
    BUDGET_COLOR,
    FRONT_COLOR,
    OTHER_COLOR,
    PICK_COLOR,
    Figure,
    new_figure,
    percent_axis,
    to_png,
)

LOG_SPAN = 10.0        # an axis whose values span more than this factor is drawn on a log scale
LABEL_HEIGHT_PX = 11.0  # a 7-point candidate label's height at the report's DPI, with a gap

# (measured column, predicted column, axis label, budget key)
LATENCY = ("latency_ms", "predicted_latency_ms", "latency (ms)", "max_latency_ms")
ENERGY = ("energy_mj", "predicted_energy_mj", "energy (mJ)", "max_energy_mj")
MEMORY = ("memory_kb", "memory_kb", "memory (kB)", "max_memory_kb")  # counted from the op graph: no prediction error


def _values(data: ReportData, column: str, fallback: str | None = None) -> np.ndarray:
    """A column as floats; ``fallback`` stands in where it is absent (energy is predicted by the
    same analytical model that prices it, so older jobs without the predicted column lose nothing)."""
    frame = data.candidates
    if data.has(column):
        return frame[column].to_numpy(float)
    if fallback is not None and fallback in frame:
        return frame[fallback].to_numpy(float)
    return np.full(len(frame), np.nan)


def _front_panel(ax, data: ReportData, column: str, predicted: str, label: str, budget: str) -> None:
    from matplotlib.collections import LineCollection

    frame, q = data.candidates, data.metric
    x, acc = frame[column].to_numpy(float), frame[q.column].to_numpy(float)
    px, pacc = _values(data, predicted, fallback=column), _values(data, q.predicted_column)
    on_front = frame["id"].astype(int).isin(data.front_ids()).to_numpy()
    colors = np.where(on_front, FRONT_COLOR, OTHER_COLOR)
    ok = np.isfinite(x) & np.isfinite(acc) & np.isfinite(px) & np.isfinite(pacc)
    segments = [[(x[i], acc[i]), (px[i], pacc[i])] for i in np.flatnonzero(ok)]
    ax.add_collection(LineCollection(segments, colors=colors[ok], linewidths=0.7, alpha=0.7, zorder=1))
    ax.scatter(px[ok], pacc[ok], s=22, facecolors="none", edgecolors=colors[ok], linewidths=0.9, zorder=2)
    ax.scatter(x[~on_front], acc[~on_front], s=26, color=OTHER_COLOR, zorder=3)
    ax.scatter(x[on_front], acc[on_front], s=48, color=FRONT_COLOR, edgecolors="white", linewidths=0.8, zorder=4)
    members = np.flatnonzero(on_front)
    stairs = members[pareto_2d(x[members], acc[members] if q.maximize else -acc[members])]
    ax.plot(x[stairs], acc[stairs], drawstyle="steps-post", color=FRONT_COLOR, linewidth=1.4, zorder=3.5)
    if data.pick is not None and math.isfinite(float(data.pick[column])):
        ax.scatter([data.pick[column]], [data.pick[q.column]], s=190, marker="*", color=PICK_COLOR,
                   edgecolors="black", linewidths=0.6, zorder=5)
    finite = x[np.isfinite(x) & (x > 0)]
    if len(finite) and finite.max() / finite.min() > LOG_SPAN:  # one outlier must not squash the rest
        ax.set_xscale("log")
        label += ", log scale"
    ax.autoscale_view()
    if budget in data.budgets.active():
        value = data.budgets.active()[budget]
        ax.axvline(value, color=BUDGET_COLOR, linestyle="--", linewidth=1.2, zorder=2)
        lo, hi = ax.get_xlim()
        hi = max(hi, value * 1.05)
        ax.axvspan(value, hi, color=BUDGET_COLOR, alpha=0.07, linewidth=0, zorder=0)
        ax.set_xlim(lo, hi)
    _label_members(ax, frame, x, acc, members)
    ax.set_xlabel(label)
    ax.set_title(f"{q.name} vs {label.split(' ')[0]}")


def _label_members(ax, frame, x: np.ndarray, acc: np.ndarray, members: np.ndarray) -> None:
    """``#id`` beside each front member, nudged upwards until it clears the labels already placed
    (in pixels, after the axes' limits and scale are fixed), so neighbours never print as ``#19#11``."""
    placed: list[tuple[float, float, float]] = []  # (left, bottom, width) of each placed label, in pixels
    to_pixels = ax.transData.transform
    for i in sorted(members, key=lambda k: (x[k], acc[k])):
        if not (np.isfinite(x[i]) and np.isfinite(acc[i])):
            continue
        px, py = to_pixels((x[i], acc[i]))
        dy = 4.0
        text = f"#{int(frame['id'].iloc[i])}"
        width = 5.0 * len(text)  # about 5 px per character at 7 pt
        # two labels collide when their spans overlap: the left one's width decides, not the new one's
        while any(qx - width < px < qx + qwidth and abs(py + dy - qy) < LABEL_HEIGHT_PX for qx, qy, qwidth in placed):
            dy += LABEL_HEIGHT_PX
        placed.append((px, py + dy, width))
        ax.annotate(text, (x[i], acc[i]), xytext=(4, dy * 72 / ax.figure.dpi), textcoords="offset points",
                    fontsize=7, color=FRONT_COLOR)


def _front_legend(fig, data: ReportData, panels: int) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", linestyle="", color=OTHER_COLOR, label="evaluated candidate"),
               Line2D([], [], marker="o", color=FRONT_COLOR, drawstyle="steps-post", label="Pareto-optimal"),
               Line2D([], [], marker="o", linestyle="-", linewidth=0.7, markerfacecolor="none", color=OTHER_COLOR,
                      label="predicted point (line: prediction error)")]
    if data.budgets:
        handles.append(Line2D([], [], linestyle="--", color=BUDGET_COLOR, label="budget"))
    if data.pick is not None:
        handles.append(Line2D([], [], marker="*", markersize=11, linestyle="", color=PICK_COLOR,
                              markeredgecolor="black", label=f"pick #{int(data.pick['id'])}"))
    ncols = len(handles) if panels > 1 else min(len(handles), 2)  # one panel is too narrow for one row
    fig.legend(handles=handles, loc="outside lower center", ncols=ncols, frameon=False)


def _quality_budget(axes, data: ReportData) -> None:
    """A budget on the quality metric as a dashed line with the side that misses it shaded: below an
    accuracy floor, above a perplexity cap."""
    bounds = [(kind, value) for kind, value in data.budgets.items() if kind.column == data.metric.column]
    if not bounds:
        return
    kind, value = bounds[0]
    pad = 0.02 if kind.floor else 0.02 * value
    lo, hi = axes[0].get_ylim()
    lo, hi = min(lo, value - pad), max(hi, value + pad)
    for ax in axes:
        ax.axhline(value, color=BUDGET_COLOR, linestyle="--", linewidth=1.2, zorder=2)
        ax.axhspan(*((lo, value) if kind.floor else (value, hi)), color=BUDGET_COLOR, alpha=0.07, linewidth=0,
                   zorder=0)
    axes[0].set_ylim(lo, hi)


def front_figure(data: ReportData) -> Figure | str:
    frame = data.candidates
    q = data.metric
    if frame.empty or not data.has(q.column) or not data.has("latency_ms"):
        return "The job has no evaluated candidates yet, so there is no front to draw."
    panels = [LATENCY, ENERGY] if data.has_energy else [LATENCY]
    if data.has("memory_kb") and ("memory" in data.objectives or data.budgets.max_memory_kb is not None):
        panels.append(MEMORY)
    with new_figure(5.0 * len(panels) + 0.8, 4.6) as fig:
        axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
        for ax, panel in zip(axes, panels):
            _front_panel(ax, data, *panel)
        _quality_budget(axes, data)
        axes[0].set_ylabel(f"validation {q.name}")
        if q.upper == 1.0:  # a fraction (accuracy)
            percent_axis(axes[0].yaxis)
        _front_legend(fig, data, len(panels))
        png = to_png(fig)
    shown = " and ".join(p[2].split(" ")[0] for p in panels)
    budgets = f" Dashed red lines mark the budgets ({data.budgets.describe()})." if data.budgets else ""
    alt = (f"Scatter plot of validation {q.name} against {shown} for {len(frame)} evaluated candidates, "
           f"with the {len(data.front)} Pareto-optimal ones in blue joined by a staircase, and each candidate's "
           f"predicted point as a hollow circle joined to its measured point.{budgets}")
    source = data.latency_source
    latency_words = ("latency measured on the device in this job" if source == "measured"
                     else f"latency from the device's {source} model, not measured")
    if data.attrs.get("latency_unit"):  # what one latency figure times, as the space states it
        latency_words += f", {data.attrs['latency_unit']}"
    caption = (f"Filled dots are evaluated candidates (validation {q.name}, which chose the front; {latency_words}), "
               "hollow circles what the predictors expected before evaluating; the thin line between them is the "
               f"prediction error. Test {q.name} is in the table below, never used to choose. Blue points are Pareto-optimal "
               "under the job's objectives "
               f"({', '.join(data.objectives)}); the staircase joins those optimal in the panel's two axes."
               + ("" if data.has_energy else " No candidate has an energy figure, so there is no energy panel.")
               + (" Memory (weights plus peak activations, see hwnas.footprint) is counted from each subnet's op "
                  "graph, so its predicted and evaluated figures are one." if MEMORY in panels else "")
               + budgets + (f" The star: {data.pick_note}." if data.pick is not None else ""))
    return Figure("front", "Pareto front", alt, caption, png)


def _parity_panel(ax, data: ReportData, measured: np.ndarray, predicted: np.ndarray, std: np.ndarray | None,
                  label: str) -> dict:

    ok = np.isfinite(measured) & np.isfinite(predicted)
    on_front = data.candidates["id"].astype(int).isin(data.front_ids()).to_numpy()
    for mask, color, size in ((ok & ~on_front, OTHER_COLOR, 26), (ok & on_front, FRONT_COLOR, 40)):
        yerr = std[mask] if std is not None else None
        ax.errorbar(measured[mask], predicted[mask], yerr=yerr, fmt="o", markersize=math.sqrt(size), color=color,
                    ecolor=color, elinewidth=0.8, capsize=2, alpha=0.9, zorder=3)
    spread = std[ok] if std is not None else np.zeros(ok.sum())
    spread = np.where(np.isfinite(spread), spread, 0.0)
    both = np.concatenate([measured[ok], predicted[ok] - spread, predicted[ok] + spread])
    lo, hi = float(both.min()), float(both.max())
    pad = 0.06 * (hi - lo or abs(hi) or 1.0)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], linestyle="--", color="#555", linewidth=0.9, zorder=1)
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_aspect("equal", adjustable="box")
    quality = regression_quality(measured[ok], predicted[ok])
    tau = "n/a" if not math.isfinite(quality["kendall_tau"]) else f"{quality['kendall_tau']:.2f}"
    ax.set_title(f"{label.split(' (')[0]}: MAPE {quality['mape']:.1%}, Kendall τ {tau} (n={quality['n']})")
    ax.set_xlabel(f"measured {label}")
    ax.set_ylabel(f"predicted {label}")
    return quality


def parity_figure(data: ReportData) -> Figure | str:
    frame = data.candidates
    if frame.empty:
        return "The job has no evaluated candidates yet, so there are no predictions to check."
    panels, notes = [], []
    if data.latency_measured and data.has("predicted_latency_ms"):
        panels.append(("latency (ms)", frame["latency_ms"].to_numpy(float),
                       frame["predicted_latency_ms"].to_numpy(float), None))
    else:
        notes.append("Latency is not measured on this device (it comes from its table or model, which is also "
                     "the prediction), so there is no latency panel.")
    q = data.metric
    if data.has(q.predicted_column) and data.has(q.column):
        std_column = f"{q.predicted_column}_std"
        std = frame[std_column].to_numpy(float) if data.has(std_column) else None
        panels.append((f"validation {q.name}", frame[q.column].to_numpy(float),
                       frame[q.predicted_column].to_numpy(float), std))
    if not panels:
        return "No candidate carries a prediction to compare with. " + " ".join(notes)
    with new_figure(4.6 * len(panels) + 0.4, 4.6) as fig:
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        scores = [_parity_panel(ax, data, *panel[1:], label=panel[0]) for ax, panel in zip(axes, panels)]
        for ax, panel in zip(axes, panels):
            if panel[0] == "validation accuracy":
                percent_axis(ax.xaxis)
                percent_axis(ax.yaxis)
        png = to_png(fig)
    summary = "; ".join(f"{p[0].split(' (')[0]} MAPE {s['mape']:.1%}" for p, s in zip(panels, scores))
    alt = (f"Parity plot{'s' if len(panels) > 1 else ''} of predicted against measured "
           f"{' and '.join(p[0] for p in panels)} for {len(frame)} evaluated candidates, with the y = x line; "
           f"{summary}.")
    caption = ("Each dot is one evaluated candidate (blue: Pareto-optimal); on the dashed line the prediction was "
               "exact. These are the candidates the search chose, so this is the predictors' error where it "
               "mattered; the table below scores them on random holdout subnets instead."
               + (f" Error bars: the {q.name} ensemble's standard deviation." if data.has(f"{q.predicted_column}_std")
                  else "")
               + f" The {q.name} predictor estimates validation {q.name}, so that is what it is checked against."
               + (" " + " ".join(notes) if notes else ""))
    return Figure("parity", "Predicted vs measured", alt, caption, png)
