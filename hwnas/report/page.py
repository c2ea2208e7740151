"""The report as one self-contained HTML page: inline CSS, images as data URIs, no outside requests.

A report is mailed, attached to tickets and opened years later from a laptop without network, so
nothing on it may load from elsewhere; every string that came from the job (names, device
descriptions, notes, error messages) goes through :func:`html.escape`, because a device YAML or a
job's attributes are data, not markup. A few lines of inline script write how many images
rendered into ``#render-check``, which a headless browser can read to prove the page works.
"""
from __future__ import annotations

import html
import math
from typing import Any, Iterable

import hwnas
from hwnas.report.data import ReportData
from hwnas.report.figures import Figure
from hwnas.report.page_style import CSS, RENDER_CHECK

STAGES = ("load", "train", "profile", "predictor", "search", "evaluate", "proxy_scores")
STAGE_COLORS = ("#8e9aaf", "#1f5fa8", "#2a9d8f", "#e9c46a", "#f4a261", "#c0392b", "#9b5de5")


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def num(value: Any, fmt: str = ".4g") -> str:
    """A number for a table cell; missing or non-finite values show as a dash, not as 'nan'."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "–"
    return format(value, fmt) if math.isfinite(value) else "–"


def table(headers: Iterable[str], rows: Iterable[Iterable[str]], classes: Iterable[str] = ()) -> str:
    """An HTML table of already escaped cells; ``classes`` are per-row CSS classes."""
    head = "".join(f"<th>{h}</th>" for h in headers)
    classes = list(classes)
    body = "".join(f'<tr class="{classes[i] if i < len(classes) else ""}">' + "".join(f"<td>{c}</td>" for c in row)
                   + "</tr>" for i, row in enumerate(rows))
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def figure_html(result: Figure | str) -> str:
    if isinstance(result, str):
        return f'<p class="missing">{esc(result)}</p>'
    width, height = result.size
    return (f'<figure><img src="{result.data_uri()}" alt="{esc(result.alt)}" width="{width}" height="{height}">'
            f"<figcaption>{esc(result.caption)}</figcaption></figure>")


def _device(attrs: dict) -> str:
    d = attrs.get("device_description") or {}
    if not isinstance(d, dict):
        return esc(attrs.get("device", "?"))
    details = [d.get("kind"), d.get("processor"), d.get("runtime")]
    if d.get("threads"):
        details.append(f"{d['threads']} thread{'s' if d['threads'] != 1 else ''}")
    extra = ", ".join(str(x) for x in details if x not in (None, "", "?"))
    return esc(d.get("name", attrs.get("device", "?"))) + (f" <span class=dim>({esc(extra)})</span>" if extra else "")


def _cards(data: ReportData) -> str:
    frame, attrs = data.candidates, data.attrs
    progress = attrs.get("progress") or {}
    evaluated = f"{len(frame)}" + (f" <small>of {esc(progress['budget'])}</small>" if progress.get("budget") else "")
    cards = [("evaluated candidates", evaluated), ("Pareto-optimal", str(len(data.front)))]
    q = data.metric
    if not frame.empty and data.has(q.column):
        best = frame.loc[frame[q.column].idxmax() if q.maximize else frame[q.column].idxmin()]
        cards.append((f"best validation {q.name}", f"{num(best[q.column], q.shown())} <small>#{int(best['id'])}, "
                                                   f"test {num(best[q.test_column], q.shown())}</small>"))
        fastest = frame.loc[frame["latency_ms"].idxmin()]
        cards.append(("fastest", f"{num(fastest['latency_ms'], '.3g')} ms <small>#{int(fastest['id'])}</small>"))
    rounds = attrs.get("search_rounds") or {}
    if rounds.get("rounds"):
        last = rounds["rounds"][-1]
        cards.append(("search rounds", f"{len(rounds['rounds'])} <small>{esc(rounds.get('stopped', ''))}</small>"))
        cards.append(("hypervolume", num(last.get("hypervolume"), ".3f")))
    if data.pick is not None:
        cards.append(("pick under budgets", f"#{int(data.pick['id'])} <small>val {num(data.pick[q.column], q.shown())}"
                                            f", {num(data.pick['latency_ms'], '.3g')} ms</small>"))
    return '<div class="cards">' + "".join(
        f'<div class="card"><div class="value">{v}</div><div class="label">{esc(k)}</div></div>' for k, v in cards
    ) + "</div>"


def _stages(attrs: dict) -> str:
    seconds = attrs.get("stage_seconds") or {}
    if not isinstance(seconds, dict) or not seconds:
        return '<p class="missing">No stage times were recorded.</p>'
    order = [s for s in STAGES if s in seconds] + [s for s in seconds if s not in STAGES]
    total = sum(max(float(seconds[s]), 0.0) for s in order) or 1.0
    bar, legend = [], []
    for i, stage in enumerate(order):
        value = max(float(seconds[stage]), 0.0)
        color = STAGE_COLORS[STAGES.index(stage)] if stage in STAGES else "#bbb"
        bar.append(f'<span style="width:{100 * value / total:.2f}%;background:{color}" title="{esc(stage)} '
                   f'{value:.1f} s"></span>')
        legend.append(f'<li><i style="background:{color}"></i>{esc(stage)} {value:.1f} s</li>')
    return (f'<div class="stages" role="img" aria-label="time per stage, {total:.0f} s in all">{"".join(bar)}</div>'
            f'<ul class="legend">{"".join(legend)}<li>total {total:.1f} s</li></ul>')


def header(data: ReportData) -> str:
    attrs = data.attrs
    status = esc(data.status)
    lines = [f"space <b>{esc(attrs.get('space', '?'))}</b>", f"device <b>{_device(attrs)}</b>",
             f"objectives <b>{esc(', '.join(data.objectives))}</b>"]
    if data.budgets:
        lines.append(f"budgets <b>{esc(data.budgets.describe())}</b>")
    notes = "".join(f"<li>{esc(n)}</li>" for n in data.notes)
    if data.budgets and data.pick is None and data.pick_note:
        notes += f"<li>{esc(data.pick_note)}</li>"
    return (f'<header><h1>{esc(data.name)} <span class="status status-{status}">{status}</span></h1>'
            f'<p class="sub">{" · ".join(lines)}</p>{_cards(data)}<h3>Where the time went</h3>{_stages(attrs)}'
            + (f'<ul class="notes">{notes}</ul>' if notes else "") + "</header>")


def front_table(data: ReportData) -> str:
    front = data.front
    if front.empty:
        return ""
    source = data.latency_source
    q = data.metric
    headers = ["id", f"validation {q.name}", f"test {q.name}", f"predicted {q.name}", f"latency ms ({source})",
               "predicted latency ms"]
    energy = data.has_energy
    headers += ["energy mJ (analytical)"] if energy else []
    headers += ["params", "weight kB", "memory kB"] + (["meets budgets"] if data.budgets else [])
    rows, classes = [], []
    for r in front.to_dict("records"):
        row = [f"#{int(r['id'])}", num(r[q.column], q.shown(2)), num(r[q.test_column], q.shown(2))]
        row += [num(r[q.predicted_column], q.shown(2)), num(r["latency_ms"]), num(r["predicted_latency_ms"])]
        row += [num(r["energy_mj"])] if energy else []
        row += [num(r.get("params"), ".0f"), num(r.get("weight_kb"), ".1f"), num(r.get("memory_kb"), ".1f")]
        if data.budgets:
            row.append("yes" if data.budgets.met_by(r) else "no")
        rows.append(row)
        classes.append("pick" if data.pick is not None and int(data.pick["id"]) == int(r["id"]) else "")
    return "<h3>Pareto-optimal candidates</h3>" + table(headers, rows, classes)


def quality_table(data: ReportData) -> str:
    rows = data.quality
    if not rows:
        return '<p class="missing">No predictor quality was recorded for this job.</p>'
    uncertainty = any("uncertainty_spearman" in r for r in rows)
    headers = ["predictor", "holdout n", "Kendall τ", "RMSE", "MAPE", "within ±10 %"]
    headers += ["mean std", "Spearman(std, |error|)"] if uncertainty else []
    body = []
    for r in rows:
        tau = num(r.get("kendall_tau"), ".3f")
        grade = "good" if r.get("kendall_tau", 0) >= 0.7 else "poor" if r.get("kendall_tau", 0) < 0.3 else "fair"
        cells = [esc(r.get("predictor", "?")), num(r.get("n"), ".0f"), f'<span class="{grade}">{tau}</span>',
                 num(r.get("rmse"), ".4f"), num(r.get("mape"), ".1%"), num(r.get("within_10pct"), ".0%")]
        if uncertainty:
            cells += [num(r.get("mean_std"), ".4f"), num(r.get("uncertainty_spearman"), ".2f")]
        body.append(cells)
    return ("<h3>Predictor quality on holdout subnets</h3>" + table(headers, body)
            + '<p class="note">Kendall τ is what a search needs: how well the predictor orders subnets (1 is '
              "perfect, 0 no better than chance). A * marks the latency predictor the job chose.</p>")


def section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{esc(title)}</h2>{body}</section>'


def render_page(data: ReportData, figures: dict[str, Figure | str]) -> str:
    sections = [
        ("front", "The front", figure_html(figures["front"]) + front_table(data)),
        ("predictors", "How good are the predictors?", figure_html(figures["parity"]) + quality_table(data)),
        ("choices", "Choices along the front", figure_html(figures["choices"])),
        ("training", "Supernet training", figure_html(figures["training"])),
    ]
    nav = "".join(f'<a href="#{a}">{esc(t)}</a>' for a, t, _ in sections)
    attrs = data.attrs
    stamp = " · ".join(f"{k} {esc(attrs[k])}" for k in ("created", "finished") if attrs.get(k))
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>hwnas report: {esc(data.name)}</title><style>{CSS}</style></head><body><main>"
            f"{header(data)}<nav>{nav}</nav>{''.join(section(*s) for s in sections)}"
            f'<footer>hwnas {esc(attrs.get("hwnas_version", hwnas.__version__))} · {stamp}'
            f'<pre id="render-check" hidden>not loaded</pre></footer></main>'
            f"<script>{RENDER_CHECK}</script></body></html>\n")
