"""index.html: the tables of results.md, every plot, the run's facts; offline; in a real browser.

The browser tests drive headless Chromium over its DevTools pipe
(tests/report/chromium.py) and skip only where no Chromium is installed.
"""

from __future__ import annotations

import base64
import io
import re
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from mmal import __version__
from mmal.loop.layout import RunLayout, write_json_atomic
from mmal.report import collect, make_report
from mmal.report.page import render_page
from mmal.report.tables import Table
from mmal.stamp import RUN_PLAN, RUN_STATUS, stamped
from tests.report.chromium import Chromium, file_url, find_chromium
from tests.report.test_report import STRATEGIES, _write_run

CHROMIUM = find_chromium()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium on PATH (chromium, chromium-browser, google-chrome); "
    ".ci/run installs Debian's chromium")
CONFIG = '[al]\nseed = 0  # <script>alert("config")</script> & more\n'
FAILURE = '<img src="x" onerror="alert(1)"> & <b>bold</b>'


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A fake run with a stamped plan, a status with one failure, a gap, and HTML in its values."""
    ws = tmp_path_factory.mktemp("page")
    _write_run(ws, skip={("random", 1, 3)})
    layout = RunLayout(ws)
    write_json_atomic(layout.plan, stamped(RUN_PLAN, {
        "strategies": STRATEGIES, "seeds": [0, 1, 2], "rounds": 3, "budget": 10,
        "initial_budget": 20, "mc_dropout": 0}))
    write_json_atomic(layout.status, stamped(RUN_STATUS, {
        "completed": [{"strategy": s, "seed": k} for s in STRATEGIES for k in (0, 1, 2)][:8],
        "failures": [{"strategy": "random", "seed": 1, "round": 3, "step": "train",
                      "message": FAILURE}], "rounds": 3}))
    (ws / "mmal.toml").write_text(CONFIG)
    return make_report(ws, ws / "out")


class _Page(HTMLParser):
    """Tags with their attributes, the text of every table by id, and the style text."""

    def __init__(self, text: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.tables: dict[str, list[list[str]]] = {}
        self.style, self._table, self._cell, self._in_style = "", None, None, False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "table":
            self._table = self.tables.setdefault(attrs.get("id", f"#{len(self.tables)}"), [])
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag in ("td", "th"):
            self._cell = []
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None
        elif tag in ("td", "th") and self._table is not None:
            self._table[-1].append("".join(self._cell))
            self._cell = None
        self._in_style = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._in_style:
            self.style += data

    def all(self, tag: str) -> list[dict]:
        return [attrs for t, attrs in self.tags if t == tag]


def _page(report) -> tuple[str, _Page]:
    text = (report.out / "index.html").read_text(encoding="utf-8")
    return text, _Page(text)


def _markdown_tables(text: str) -> list[list[list[str]]]:
    """Every Markdown table in ``text``: rows of cell texts, the --- line left out."""
    tables, current = [], None
    for line in text.splitlines():
        if not line.startswith("|"):
            current = None
            continue
        if current is None:
            current = []
            tables.append(current)
        if not line.startswith("|---"):
            current.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return tables


def _plots(report):
    return [p for p in report.files if p.suffix == ".png"]


def test_page_is_written_and_listed(report):
    assert report.files[-1] == report.out / "index.html"


def test_tables_equal_those_of_results_md(report):
    _, page = _page(report)
    results, matrix, _ = _markdown_tables((report.out / "results.md").read_text(encoding="utf-8"))
    assert page.tables["results-table"] == results
    assert page.tables["ttest-table"] == matrix
    assert len(results) == 1 + 3 * 4 and matrix[0] == ["beats →", *STRATEGIES]
    labels = _markdown_tables((report.out / "results.md").read_text(encoding="utf-8"))[2]
    assert page.tables["labels-needed-table"] == labels and labels[0][0] == "strategy"


def test_every_plot_is_embedded_as_its_png(report):
    _, page = _page(report)
    images = page.all("img")
    plots = _plots(report)
    assert len(images) == len(plots) == 5
    for attrs, path in zip(images, plots, strict=True):
        kind, data = attrs["src"].split(",", 1)
        assert kind == "data:image/png;base64"
        assert base64.b64decode(data) == path.read_bytes()
        assert attrs["alt"]


def test_run_facts_config_and_missing_are_shown(report):
    _, page = _page(report)
    facts = dict(page.tables["run-table"])
    assert facts["strategies"] == "bmmal, badge, random" and facts["seeds"] == "0, 1, 2"
    assert facts["rounds"] == "0-3 (3 selection rounds)"
    assert facts["initial labeled set"] == "20" and facts["budget per round"] == "10"
    assert facts["mmal version of the run"] == __version__
    assert facts["report written by"] == f"mmal {__version__}"
    assert facts["last run"] == "8 trajectories completed, 1 failed"
    text, _ = _page(report)
    assert '<pre>[al]\nseed = 0  # &lt;script&gt;alert(&quot;config&quot;)&lt;/script&gt; &amp; ' \
           'more\n</pre>' in text
    assert "missing metrics: random seed 1 round 3" in text


def test_every_value_is_escaped(report):
    text, page = _page(report)
    assert not page.all("script") and not page.all("b")
    assert len(page.all("img")) == len(_plots(report))  # the failure's <img> stayed text
    assert "&lt;img src=&quot;x&quot; onerror=&quot;alert(1)&quot;&gt; &amp; " \
           "&lt;b&gt;bold&lt;/b&gt;" in text


def test_page_needs_no_network(report):
    text, page = _page(report)
    external = re.compile(r"^\s*(https?:|//|ftp:)", re.IGNORECASE)
    refs = [(tag, key, value) for tag, attrs in page.tags for key, value in attrs.items()
            if key in ("src", "href", "srcset", "poster", "action", "data") and value]
    assert refs and not [r for r in refs if external.match(r[2])]
    assert not page.all("link") and not page.all("script") and not page.all("iframe")
    assert "url(" not in page.style and "@import" not in page.style
    assert {"name": "viewport", "content": "width=device-width, initial-scale=1"} \
        in page.all("meta")


def test_labels_needed_hook_adds_a_section_only_when_given(report):
    data = collect(report.out.parent)
    parts = dict(workspace="ws", results=Table(["x"], [["1"]]), ttests=Table(["y"], [["2"]]),
                 ttest_heading="t", plots=[], warnings=[], config=None)
    without = _Page(render_page(data, **parts))
    table = Table(["strategy", "labels for 70%"], [["bmmal", "40"], ["random", "<60"]])
    with_it = _Page(render_page(data, **parts, labels_needed=table))
    assert "labels-needed" not in {a.get("id") for a in without.all("section")}
    assert "labels-needed" in {a.get("id") for a in with_it.all("section")}
    assert with_it.tables["labels-needed-table"] == [table.head, *table.body]


def _assert_not_blank(png: bytes, where):
    with Image.open(io.BytesIO(png)) as image:
        pixels = np.asarray(image.convert("RGB"))
    colours = len(np.unique(pixels.reshape(-1, 3), axis=0))
    inked = float((pixels < 240).any(axis=2).mean())
    assert colours > 1 and inked > 0.01, f"{where}: blank screenshot ({colours} colours, " \
                                         f"{inked:.2%} of pixels not white)"


_IMAGES = ("[...document.images].map(i => ({complete: i.complete, width: i.naturalWidth, "
           "shown: i.getBoundingClientRect().width}))")


@needs_chromium
def test_page_renders_in_chromium(report, tmp_path):
    with Chromium(CHROMIUM) as browser:
        browser.open(file_url(report.out / "index.html"), width=1280, height=900)
        tables = browser.evaluate("[...document.querySelectorAll('table')].map(t => t.id)")
        images = browser.evaluate(_IMAGES)
        screenshot = browser.screenshot(full_page=True)
        requests = browser.requests
    assert tables == ["run-table", "results-table", "ttest-table", "labels-needed-table"]
    assert len(images) == len(_plots(report))
    broken = [i for i, image in enumerate(images) if not (image["complete"] and image["width"] > 0
                                                          and image["shown"] > 0)]
    assert not broken, f"images {broken} did not load: {images}"
    assert requests[0].startswith("file:")
    assert all(url.startswith("data:image/png;base64,") for url in requests[1:]), requests
    (tmp_path / "desktop.png").write_bytes(screenshot)
    _assert_not_blank(screenshot, tmp_path / "desktop.png")


@needs_chromium
def test_page_fits_a_phone_width_screen(report, tmp_path):
    """At 390 px (a phone, viewport meta honoured) the page never scrolls sideways; tables do."""
    with Chromium(CHROMIUM) as browser:
        browser.open(file_url(report.out / "index.html"), width=390, height=844, mobile=True)
        width = browser.evaluate("window.innerWidth")
        page_width = browser.evaluate("document.documentElement.scrollWidth")
        images = browser.evaluate(_IMAGES)
        box = browser.evaluate("(b => [b.clientWidth, b.scrollWidth])"
                               "(document.getElementById('results-table').parentElement)")
        screenshot = browser.screenshot()
    assert width == 390 and page_width <= 390
    assert all(image["width"] > 0 and 0 < image["shown"] <= 390 for image in images), images
    assert box[0] <= 390 < box[1]  # the wide results table scrolls inside its box
    (tmp_path / "phone.png").write_bytes(screenshot)
    _assert_not_blank(screenshot, tmp_path / "phone.png")
