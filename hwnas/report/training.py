"""The supernet's training curves, one small panel per quantity the trainer recorded.

The per-epoch records are plotted by key rather than by a fixed list, so a trainer that records
more (or other) numbers shows up here without a change; loss and accuracy come first because
they answer the question a reader has ("did it converge?").
"""
from __future__ import annotations

import math

from hwnas.metrics import QUALITY_METRICS
from hwnas.report.figures import FRONT_COLOR, Figure, new_figure, percent_axis, to_png

FIRST = ("loss", "train_accuracy", "val_accuracy", "accuracy", "lr")
LABELS = {"loss": "training loss (largest subnet)", "train_accuracy": "training accuracy (largest subnet)",
          "lr": "learning rate (end of epoch)", "seconds": "seconds per epoch"}


def _numeric(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def history_series(history: list[dict]) -> tuple[list[int], dict[str, list[float]]]:
    """Epoch numbers (1-based) and each numeric key's values; keys missing in an epoch are NaN."""
    epochs = [int(r.get("epoch", i)) + 1 for i, r in enumerate(history)]
    keys = [k for k in dict.fromkeys(k for r in history for k in r) if k != "epoch"
            and any(_numeric(r.get(k)) for r in history)]
    keys.sort(key=lambda k: (FIRST.index(k) if k in FIRST else len(FIRST), k))
    return epochs, {k: [float(r[k]) if _numeric(r.get(k)) else math.nan for r in history] for k in keys}


def training_figure(attrs: dict) -> Figure | str:
    history = attrs.get("train_history")
    if not isinstance(history, list) or not history or not all(isinstance(r, dict) for r in history):
        return ("This job stored no training history (its supernet weights came from an earlier run, or "
                "training has not finished), so there are no training curves.")
    from matplotlib.ticker import FuncFormatter

    epochs, series = history_series(history)
    if not series:
        return "The training history holds no numbers to plot."
    cols = min(len(series), 4)
    rows = math.ceil(len(series) / cols)
    with new_figure(2.9 * cols + 0.4, 2.5 * rows + 0.2) as fig:
        axes = fig.subplots(rows, cols, squeeze=False).ravel()
        for ax, (key, values) in zip(axes, series.items()):
            ax.plot(epochs, values, marker="o", markersize=3.5, color=FRONT_COLOR, linewidth=1.4)
            ax.set_title(LABELS.get(key, key.replace("_", " ")))
            ax.set_xlabel("epoch")
            ax.xaxis.get_major_locator().set_params(integer=True)
            if "accuracy" in key:
                percent_axis(ax.yaxis)
            elif max(abs(v) for v in values if math.isfinite(v)) < 1e-2:  # a learning rate: no offset text
                ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.2g}"))
        for ax in axes[len(series):]:
            ax.set_visible(False)
        png = to_png(fig)
    names = ", ".join(LABELS.get(k, k.replace("_", " ")) for k in series)
    last = {k: v[-1] for k, v in series.items()}
    tail = "; ".join(f"{k.replace('_', ' ')} {v:.4g}" for k, v in last.items() if k in ("loss", "train_accuracy"))
    alt = f"Line charts over {len(epochs)} training epochs of: {names}." + (f" Final {tail}." if tail else "")
    caption = ("The supernet's training, epoch by epoch, as the trainer recorded it. Training accuracy is the "
               "largest subnet's on the training batches; the search's accuracies come from the held-out splits.")
    for q in QUALITY_METRICS.values():  # the job's metric: one of them is stored
        if f"supernet_test_{q.name}" in attrs:
            s = attrs[f"supernet_test_{q.name}"]
            caption += (f" After training, the largest subnet scored {format(s.get('largest', math.nan), q.shown())} "
                        f"test {q.name} and the smallest {format(s.get('smallest', math.nan), q.shown())}.")
    untrained = attrs.get("untrained_quantizer_steps")
    if untrained:
        caption += (f" {untrained} quantizer step(s) were never reached in training and were set from fixed "
                    "training images afterwards; more epochs would train them.")
    return Figure("training", "Training curves", alt, caption, png)
