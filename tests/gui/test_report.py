"""The comparison report: one self-contained HTML file, or a PDF laid out by Qt, from two real tiny runs."""

from __future__ import annotations

import base64
import re
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PySide6.QtGui import QImage

from engine.comparison import compare_runs
from engine.errors import EngineError
from engine.runs import RunStore
from gui.report import SECTIONS, ReportError, check_report_path, format_percent, render_html, report_document, \
    write_report

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "engine"))
from toydata import toy_config, toy_dataset  # noqa: E402

NAMES = ("small <a&b>", "wide")


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    """Two runs of SimCNN on the toy quadrants that differ in batch size, compared."""
    from engine.training import Trainer

    store = RunStore(tmp_path_factory.mktemp("store"))
    data = toy_dataset(train=32, val=8, test=16)
    ids = []
    for name, batch_size in zip(NAMES, (16, 8)):
        config = toy_config(epochs=2, batch_size=batch_size)
        config.name = name
        ended = Trainer(config, store=store, dataset=data).run()
        assert ended.status == "finished", ended.reason
        ids.append(ended.run_id)
    return compare_runs(store, ids)


class _Page(HTMLParser):
    """What a browser would find in the page: headings, cells, text, images and links."""

    def __init__(self):
        super().__init__()
        self.headings: list[tuple[str, str]] = []
        self.cells: list[str] = []
        self.text: list[str] = []
        self.images: list[str] = []
        self.links: list[str] = []
        self._open: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs.get("src", ""))
            return
        if tag in ("link", "script", "a", "iframe"):
            self.links.append(attrs.get("href") or attrs.get("src") or tag)
        self._open.append(tag)
        if tag in ("h1", "h2", "h3", "td", "th", "li"):
            self._current = []

    def handle_endtag(self, tag):
        if self._open and self._open[-1] == tag:
            self._open.pop()
        if tag in ("h1", "h2", "h3"):
            self.headings.append((tag, "".join(self._current)))
        elif tag in ("td", "th"):
            self.cells.append("".join(self._current))

    def handle_data(self, data):
        self.text.append(data)
        if self._open and self._open[-1] in ("h1", "h2", "h3", "td", "th", "li"):
            self._current.append(data)


def _parsed(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    page.close()
    return page


def test_the_html_report_is_one_file_with_every_section_run_and_figure(comparison, tmp_path):
    path = write_report(comparison, tmp_path / "report.html")
    assert path == tmp_path / "report.html"
    text = path.read_text(encoding="utf-8")
    page = _parsed(text)

    assert [title for tag, title in page.headings if tag == "h2"] == list(SECTIONS.values())
    assert "<style>" in text and page.links == []  # CSS inline, nothing fetched from elsewhere
    everything = "".join(page.text)
    for row in comparison.rows:
        assert row.name in everything
        assert format_percent(row.test_accuracy) in page.cells
    assert "<a&b>" not in text  # the name is escaped, not markup
    assert any("Batch size" == cell for cell in page.cells)
    assert {"16", "8"} <= set(page.cells)
    for observation in comparison.observations:
        assert observation in everything

    # 2 curves, 2 confusion matrices, and for the one pair a difference heatmap and the F1 bars
    assert len(comparison.pairs) == 1
    assert len(page.images) == 6
    for source in page.images:
        assert source.startswith("data:image/png;base64,")
        image = QImage()
        assert image.loadFromData(base64.b64decode(source.split(",", 1)[1]), "PNG")
        assert image.width() >= 400 and image.height() >= 300


def test_the_pdf_report_is_a_pdf_with_pages_and_the_same_sections(comparison, tmp_path):
    path = write_report(comparison, tmp_path / "report.pdf")
    data = path.read_bytes()
    assert data.startswith(b"%PDF-")
    assert data.rstrip().endswith(b"%%EOF")
    pages = len(re.findall(rb"/Type\s*/Page(?!s)", data))
    assert pages >= 3
    assert len(re.findall(rb"/Subtype\s*/Image", data)) >= 6
    assert not list(tmp_path.glob(".*partial"))

    text = report_document(render_html(comparison)).toPlainText()
    for title in SECTIONS.values():
        assert title in text
    for row in comparison.rows:
        assert row.name in text
        assert format_percent(row.test_accuracy) in text


@pytest.mark.parametrize("name", ["report.txt", "report", "report.html.docx"])
def test_a_report_with_another_suffix_is_refused_before_anything_is_written(comparison, tmp_path, name):
    with pytest.raises(ReportError, match=r"\.html or \.pdf"):
        write_report(comparison, tmp_path / name)
    assert list(tmp_path.iterdir()) == []


def test_a_report_into_a_missing_folder_or_onto_a_folder_is_refused(tmp_path):
    with pytest.raises(EngineError, match="does not exist"):
        check_report_path(tmp_path / "missing" / "report.pdf")
    (tmp_path / "report.html").mkdir()
    with pytest.raises(EngineError, match="is a folder"):
        check_report_path(tmp_path / "report.html")
    assert check_report_path(str(tmp_path / "Report.PDF")) == tmp_path / "Report.PDF"
