"""A job's report as pictures: one self-contained HTML page plus the PNG plots it embeds.

``hwnas report JOB`` prints numbers; this draws what they mean: the front with every candidate's
prediction error, the predictors' parity plots and holdout quality, the architecture choices along
the front and the supernet's training curves. The page embeds its images as data URIs and loads
nothing from outside, so it can be mailed or archived as one file; the PNGs are written next to it
for slides and tickets. Sections whose data a job lacks say so instead of showing a broken image.

    from hwnas.report import write_report
    write_report(job, Path("report"), budgets={"max_latency_ms": 0.8})
"""
from __future__ import annotations

from pathlib import Path

from hwnas.report.choices import choices_figure
from hwnas.report.data import gather
from hwnas.report.figures import Figure
from hwnas.report.page import render_page
from hwnas.report.plots import front_figure, parity_figure
from hwnas.report.training import training_figure
from hwnas.search.budgets import Budgets
from hwnas.utils.io import atomic_path, write_text_atomic

__all__ = ["write_report", "PLOTS"]

PLOTS = ("front", "parity", "choices", "training")  # file stems of the PNGs a report may write


def write_report(job, out_dir: Path, budgets: Budgets | dict[str, float | None] | None = None) -> Path:
    """Write ``index.html`` and the plots' PNGs into ``out_dir``; return the path of ``index.html``.

    ``job`` is a :class:`hwnas.job.handle.Job` (or anything with its ``name``, ``attrs``, ``candidates()``,
    ``front()``, ``space()`` and ``predictor_quality()``). ``budgets`` is a :class:`Budgets` or a
    dict that may hold ``max_latency_ms``, ``max_energy_mj``, ``max_memory_kb`` and ``min_accuracy``
    (None values are ignored); each is drawn as a line on the front, and the most accurate candidate meeting them all is starred. Every file is written
    atomically; a PNG an earlier report left behind for a plot this job cannot draw is removed, so
    the folder never shows a picture that contradicts its page.
    """

    data = gather(job, Budgets.of(budgets))
    figures = {"front": front_figure(data), "parity": parity_figure(data), "choices": choices_figure(data),
               "training": training_figure(data.attrs)}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in PLOTS:
        path = out_dir / f"{name}.png"
        if isinstance(figures[name], Figure):
            with atomic_path(path) as tmp:
                tmp.write_bytes(figures[name].png)
        elif path.exists():
            path.unlink()
    index = out_dir / "index.html"
    write_text_atomic(index, render_page(data, figures))
    return index
