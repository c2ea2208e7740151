"""The HTML report: files, self-containment, rendering in a real browser, budgets, missing pieces."""
from __future__ import annotations

import base64
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from hwnas.errors import HwnasError
from hwnas.job.handle import Job
from hwnas.report import PLOTS, write_report


class Tags(HTMLParser):
    """Every tag's attributes, to check images and links without regular expressions over HTML."""

    def __init__(self, text: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def of(self, name: str) -> list[dict]:
        return [a for t, a in self.tags if t == name]


class EditedJob(Job):
    """The tiny job as an older or partial job would read: some study attributes gone, or its
    candidates edited. Everything else (front, space, predictor quality) is Job's own code."""

    def __init__(self, job: Job, drop: tuple[str, ...] = (), edit=None, attrs: dict | None = None):
        super().__init__(job.name, job.store, job.study)
        self._drop, self._edit, self._extra = drop, edit, attrs or {}

    @property
    def attrs(self):
        return {**{k: v for k, v in super().attrs.items() if k not in self._drop}, **self._extra}

    def candidates(self):
        frame = super().candidates()
        return self._edit(frame) if self._edit else frame


def chromium_render_check(page: Path, tmp_path: Path) -> tuple[int, int]:
    """(images, broken images) as the page's own script counted them in headless Chromium."""
    chromium = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if chromium is None:
        pytest.skip("Debian's chromium is not installed: apt-get install chromium")
    done = subprocess.run([chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           f"--user-data-dir={tmp_path / 'chromium-profile'}", "--virtual-time-budget=5000",
                           "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="render-check"[^>]*>images=(\d+) broken=(\d+)</pre>', done.stdout)
    assert found, f"the render check did not run (rc {done.returncode}): {done.stderr[-2000:]}"
    return int(found[1]), int(found[2])


@pytest.fixture(scope="module")
def report(tiny_job, tmp_path_factory) -> Path:
    job, _ = tiny_job
    return write_report(job, tmp_path_factory.mktemp("report") / "out")


def test_report_writes_valid_pngs_embedded_in_a_self_contained_page(report):
    assert report.name == "index.html" and report.is_file()
    text = report.read_text(encoding="utf-8")
    images = Tags(text).of("img")
    assert len(images) == len(PLOTS)
    for name in PLOTS:
        png = report.parent / f"{name}.png"
        assert png.stat().st_size > 0
        with Image.open(png) as im:
            im.verify()
        with Image.open(png) as im:
            im.load()
            size = im.size
        assert im.format == "PNG" and size[0] > 100 and size[1] > 100
        uri = "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()
        [img] = [a for a in images if a["src"] == uri]  # the page embeds exactly this file
        assert img["alt"].strip() and (int(img["width"]), int(img["height"])) == size
    assert not re.search(r"https?://", text, re.IGNORECASE)
    links = [a.get(k) for t, a in Tags(text).tags for k in ("src", "href") if a.get(k) is not None]
    assert all(link.startswith(("data:", "#")) for link in links), links
    assert not Tags(text).of("link") and all("src" not in a for a in Tags(text).of("script"))
    for words in ("tiny", "Kendall", "accuracy (ensemble)", "Pareto-optimal", "train", "local-cpu"):
        assert words in text


def test_report_renders_in_headless_chromium_and_the_check_can_fail(report, tmp_path):
    assert chromium_render_check(report, tmp_path) == (len(PLOTS), 0)
    text = report.read_text(encoding="utf-8")
    start = text.index("data:image/png;base64,") + len("data:image/png;base64,")
    broken = tmp_path / "broken.html"  # the same page with its first image's bytes cut short
    broken.write_text(text[:start] + "iVBORw0KGgo" + text[text.index('"', start):], encoding="utf-8")
    assert chromium_render_check(broken, tmp_path) == (len(PLOTS), 1)


def test_budgets_are_drawn_on_the_front(tiny_job, report, tmp_path):
    job, _ = tiny_job
    again = write_report(job, tmp_path / "again")
    plain = (report.parent / "front.png").read_bytes()
    assert (again.parent / "front.png").read_bytes() == plain  # deterministic: any difference below is the budget
    latency = float(job.candidates()["latency_ms"].median())
    budgeted = write_report(job, tmp_path / "budget", budgets={"max_latency_ms": latency, "min_accuracy": None})
    assert (budgeted.parent / "front.png").read_bytes() != plain
    text = budgeted.read_text(encoding="utf-8")
    assert f"latency &lt;= {latency:g} ms" in text and "pick under budgets" in text
    with pytest.raises(HwnasError, match="unknown budget"):
        write_report(job, tmp_path / "bad", budgets={"max_latency": 1.0})
    with pytest.raises(HwnasError, match="min-accuracy"):
        write_report(job, tmp_path / "bad", budgets={"min_accuracy": 2.0})


def test_job_without_training_history_still_renders(tiny_job, report, tmp_path):
    job, _ = tiny_job
    out = tmp_path / "out"
    shutil.copytree(report.parent, out)  # an earlier full report in the same folder
    page = write_report(EditedJob(job, drop=("train_history",)), out)
    text = page.read_text(encoding="utf-8")
    assert "stored no training history" in text
    assert len(Tags(text).of("img")) == len(PLOTS) - 1
    assert not (out / "training.png").exists()  # the stale plot went with it
    assert {p.name for p in out.glob("*.png")} == {f"{p}.png" for p in PLOTS if p != "training"}


def test_zero_energy_hostile_text_and_an_empty_job(tiny_job, tmp_path):
    job, _ = tiny_job
    hostile = {"device_description": {"name": "<script>alert(1)</script>", "kind": "measured"}}
    zero = EditedJob(job, edit=lambda f: f.assign(energy_mj=0.0), attrs=hostile)
    text = write_report(zero, tmp_path / "zero").read_text(encoding="utf-8")
    front = next(a for a in Tags(text).of("img") if a["alt"].startswith("Scatter"))
    assert "energy" not in front["alt"] and "no energy panel" in text
    assert "<script>alert" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    empty = EditedJob(job, edit=lambda f: f.iloc[0:0])
    text = write_report(empty, tmp_path / "empty").read_text(encoding="utf-8")
    assert "no evaluated candidates yet" in text and "no Pareto-optimal candidates yet" in text
    assert len(Tags(text).of("img")) == 1  # the training curves do not need candidates
    assert sorted(p.name for p in (tmp_path / "empty").glob("*.png")) == ["training.png"]


def test_importing_the_report_does_not_import_matplotlib():
    code = "import sys, hwnas.report; assert 'matplotlib' not in sys.modules, 'matplotlib imported eagerly'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_percent_ticks_keep_the_decimals_their_spacing_needs():
    """Ticks half a point apart must not print as whole percents (98 %, 97 %, 97 %, ...)."""
    from hwnas.report.figures import new_figure, percent_axis

    with new_figure(3, 3) as fig:
        ax = fig.subplots()
        ax.plot([0, 1], [0.96, 0.98])
        percent_axis(ax.yaxis)
        fig.canvas.draw()
        labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert len(labels) == len(set(labels)) >= 3, labels
    assert any("." in t for t in labels), labels


def test_front_labels_never_overlap_and_a_wide_span_goes_log(tiny_job, tmp_path):
    """Candidates close together get labels that clear each other; one outlier an order of
    magnitude off does not squash the rest of the panel into its corner."""
    import numpy as np

    from hwnas.report.data import gather
    from hwnas.report.figures import new_figure
    from hwnas.report.plots import ENERGY, LATENCY, _front_panel

    job, _ = tiny_job

    def crowd(frame):
        frame = frame.copy()
        frame["latency_ms"] = 1.0 + 1e-4 * np.arange(len(frame))  # every point in one spot
        frame["energy_mj"] = np.where(np.arange(len(frame)) == 0, 0.09, 0.002 + 1e-4 * np.arange(len(frame)))
        return frame

    data = gather(EditedJob(job, edit=crowd), {})
    with new_figure(10, 4) as fig:
        left, right = fig.subplots(1, 2)
        _front_panel(left, data, *LATENCY)
        _front_panel(right, data, *ENERGY)
        fig.canvas.draw()
        boxes = [t.get_window_extent() for t in left.texts if t.get_text().startswith("#")]
        assert right.get_xscale() == "log" and left.get_xscale() == "linear"
    assert len(boxes) >= 2
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not a.overlaps(b), (a, b)


def test_choices_heatmap_shows_only_dimensions_that_vary():
    from hwnas.report.choices import varying_rows

    text = [["3", "5", "–"], ["–", "–", "–"], ["8", "8", "–"], ["4", "–", "8"]]
    assert varying_rows(text) == [0, 3]
