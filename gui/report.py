"""A comparison of runs written up as one HTML file or a PDF: the Compare tab's and `main.py compare`'s report.

Every number and sentence comes from engine.comparison's Comparison; this
module only lays them out. The plots are the Compare tab's own widgets
(OverlayPlot, IntervalBars, ConfusionMatrixView) rendered offscreen at a
fixed size and embedded as base64 PNG, and the CSS is inline, so the HTML is
one file that opens anywhere without a network. The PDF is the same HTML
laid out by Qt's QTextDocument and printed with QPdfWriter (no web engine):
that is why the tables also carry HTML attributes (border, cellpadding,
bgcolor) and the images a width, which Qt's rich text honours where it
ignores most CSS.
"""

from __future__ import annotations

import base64
import datetime
import html
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from engine.comparison import SIGNIFICANCE, TABLE_COLUMNS
from engine.errors import EngineError
from engine.inference import check_output_file
from engine.registry import DATASET_SOURCES
from engine.text import printable

REPORT_SUFFIXES = (".html", ".htm", ".pdf")
CURVE_SIZE = (900, 460)  # pixels a curve plot is rendered at
CONFUSION_SIZE = (640, 560)
BARS_SIZE = (900, 400)
PAGE_WIDTH = 678  # pixels (at 96 dpi) of an A4 page inside its margins: the widest an image is shown
CONFUSION_WIDTH = 520
PAGE_MARGIN_MM = 15
PDF_DPI = 96  # the PDF's device pixels are CSS pixels: A4 less the margins is PAGE_WIDTH wide
HIGHLIGHT = "#fff2b3"  # a setting that differs between the runs
HEADER_BACKGROUND = "#eef2f7"
NUMBER_CELL = ' class="number" align="right"'
DIFFERS_ROW = ' class="differs"'
SECTIONS = {
    "dataset": "Dataset and split",
    "runs": "Runs",
    "layers": "Models: layers and parameters",
    "settings": "Hyperparameters",
    "curves": "Curves",
    "conclusion": "Conclusion",
    "confusion": "Confusion matrices",
    "per_class": "Per-class metrics",
    "head_to_head": "Head to head",
    "observations": "Observations",
    "environment": "Environment",
}
CONCLUSION_COLUMNS = ["model", "name", "batch size", "epochs", "test accuracy", "test loss"]
STYLE = f"""
body {{ font-family: "DejaVu Sans", Arial, sans-serif; font-size: 10pt; color: #202020; margin: 24px; }}
h1 {{ font-size: 18pt; margin-bottom: 2px; }}
h2 {{ font-size: 14pt; border-bottom: 1px solid #c0c8d0; margin-top: 22px; }}
h3 {{ font-size: 11pt; margin-top: 14px; }}
table {{ border-collapse: collapse; margin: 6px 0 10px 0; }}
th, td {{ border: 1px solid #c0c8d0; padding: 3px 6px; text-align: left; vertical-align: top; }}
th {{ background: {HEADER_BACKGROUND}; }}
td.number {{ text-align: right; }}
tr.differs td {{ background: {HIGHLIGHT}; }}
img {{ max-width: 100%; height: auto; }}
.date, .note {{ color: #606060; }}
"""


class ReportError(EngineError):
    """The report cannot be written where asked."""


# -- paths ---------------------------------------------------------------------

def check_report_path(path: str | Path) -> Path:
    """Refuse a report path before any plot is rendered: it must end in
    .html, .htm or .pdf and be a file that can be written."""
    text = str(path).strip()
    if not text:
        raise ReportError("no report file given; give a file name ending in .html or .pdf")
    target = Path(text).expanduser()
    if target.suffix.lower() not in REPORT_SUFFIXES:
        raise ReportError(f"{printable(target.name)}: a report is written as .html or .pdf; "
                          f"give a file name ending in one of them")
    return check_output_file(target, "report")


# -- Qt -------------------------------------------------------------------------

def ensure_application():
    """The QApplication the widgets need; made here (offscreen when there is
    no display) when the caller, such as the CLI, has none."""
    from PySide6.QtGui import QGuiApplication
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance()
    if app is not None:
        return app
    if QGuiApplication.instance() is None and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    app = QApplication([])
    if QGuiApplication.platformName() == "offscreen":
        _hide_offscreen_notes()
    from gui.app import configure_plots

    configure_plots()
    return app


def _hide_offscreen_notes() -> None:
    """The offscreen platform says, for every widget shown, that it "does not
    support propagateSizeHints()": true and harmless, and not for a CLI user."""
    from PySide6.QtCore import qInstallMessageHandler

    def handler(mode, context, message):
        if "propagateSizeHints" not in message:
            sys.stderr.write(message + "\n")

    qInstallMessageHandler(handler)


def _rendered_png(widget, size: tuple[int, int]) -> bytes:
    """A widget drawn offscreen at a fixed size, through its own export_png."""
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QApplication

    widget.setAttribute(Qt.WA_DontShowOnScreen, True)
    widget.resize(max(size[0], widget.minimumWidth()), max(size[1], widget.minimumHeight()))
    widget.show()
    QApplication.processEvents()
    try:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "plot.png"
            widget.export_png(path)
            return path.read_bytes()
    finally:
        widget.close()
        widget.deleteLater()


def _white(plot) -> None:
    """Reports are on white whatever the window's theme."""
    plot.setBackground("w")


# -- formatting ---------------------------------------------------------------

def format_percent(share: float | None) -> str:
    """An accuracy as the report shows it: 71.91%."""
    if share is None or not math.isfinite(share):
        return ""
    return f"{100 * share:.2f}%"


def format_number(value: float | None, digits: int = 4) -> str:
    if value is None or not math.isfinite(value):
        return ""
    return f"{value:.{digits}f}"


def _points(value: float) -> str:
    """A difference of two shares in percentage points, signed."""
    return f"{100 * value:+.2f} points" if math.isfinite(value) else ""


def _conclusion_value(key: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if "accuracy" in key:
            return format_percent(value)
        return format_number(value)
    if isinstance(value, int):
        return f"{value:,}" if value >= 10000 else str(value)
    return str(value)


def _png_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


# -- HTML building blocks ---------------------------------------------------------

def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _table(headers: list[str], rows: list[list[str]], numeric: set[int] = frozenset(),
           highlighted: set[int] = frozenset()) -> str:
    """A table of already formatted cells (escaped here); `highlighted` rows get the difference colour."""
    head = "".join(f'<th bgcolor="{HEADER_BACKGROUND}">{_e(h)}</th>' for h in headers)
    body = []
    for index, cells in enumerate(rows):
        shade = f' bgcolor="{HIGHLIGHT}"' if index in highlighted else ""
        tds = "".join(f"<td{shade}{NUMBER_CELL if column in numeric else ''}>{_e(cell)}</td>"
                      for column, cell in enumerate(cells))
        body.append(f"<tr{DIFFERS_ROW if index in highlighted else ''}>{tds}</tr>")
    return (f'<table border="1" cellspacing="0" cellpadding="3"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>')


def _image(data: bytes, alt: str, width: int = PAGE_WIDTH) -> str:
    return f'<p><img src="{_png_url(data)}" alt="{_e(alt)}" width="{width}"></p>'


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


class _Report:
    """The sections of one report, in order."""

    def __init__(self, comparison):
        self.c = comparison
        self.results = {r.record.run_id: r for r in comparison.results if r is not None}
        self.names = {row.run_id: row.name for row in comparison.rows}

    def html(self) -> str:
        parts = [self.title()]
        for key, build in (("dataset", self.dataset), ("runs", self.runs), ("layers", self.layers),
                           ("settings", self.settings), ("curves", self.curves), ("conclusion", self.conclusion),
                           ("confusion", self.confusion), ("per_class", self.per_class),
                           ("head_to_head", self.head_to_head), ("observations", self.observations),
                           ("environment", self.environment)):
            parts.append(f'<h2 id="{key}">{_e(SECTIONS[key])}</h2>')
            parts.append(build())
        title = _e(self._title_text())
        return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
                f'<style>{STYLE}</style></head><body>\n' + "\n".join(parts) + "\n</body></html>\n")

    def _title_text(self) -> str:
        names = [row.name for row in self.c.rows]
        return "Comparison: " + ", ".join(names)

    def title(self) -> str:
        date = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
        return f'<h1>{_e(self._title_text())}</h1><p class="date">{_e(date)}</p>'

    def dataset(self) -> str:
        """One column per run, as the hyperparameters: a portrait page holds a few runs, not a dozen fields."""
        fields = ["Source", "Path", "Train images", "Validation share", "Test images", "Evaluated split",
                  "Images evaluated", "Image size"]
        columns = []
        for row in self.c.rows:
            result = self.results.get(row.run_id)
            if result is None:
                columns.append([row.dataset] + [""] * (len(fields) - 1))
                continue
            data = result.config.dataset
            metrics = result.metrics or {}
            columns.append([
                DATASET_SOURCES.get(data.source, data.source), data.path,
                "all" if not data.train_subset else f"{data.train_subset:,}",
                f"{data.validation_split:g}",
                "all" if not data.test_subset else f"{data.test_subset:,}",
                metrics.get("split", row.split), f"{metrics['images']:,}" if "images" in metrics else "",
                f"{data.image_size} x {data.image_size}" if data.image_size else "as the files are",
            ])
        return self._by_run(fields, columns)

    def runs(self) -> str:
        from gui.widgets.runs_table import SHOWN_HEADERS, format_cell  # as the Compare tab's table shows them

        columns = [(field, SHOWN_HEADERS.get(field, header)) for field, header in TABLE_COLUMNS if field != "name"]
        values = [[format_cell(field, row) for field, _h in columns] for row in self.c.rows]
        return self._by_run([header for _f, header in columns], values)

    def _by_run(self, fields: list[str], columns: list[list[str]], highlighted: set[int] = frozenset()) -> str:
        """A table with a row per field and a column per run."""
        rows = [[field, *(column[i] for column in columns)] for i, field in enumerate(fields)]
        return _table(["", *[row.name for row in self.c.rows]], rows, highlighted=highlighted)

    def layers(self) -> str:
        parts = []
        for row in self.c.rows:
            layers = self.c.layers.get(row.run_id, [])
            parts.append(f"<h3>{_e(row.name)} ({_e(row.model)}): {row.params_total:,} parameters, "
                         f"{row.params_trainable:,} trainable</h3>")
            if not layers:
                parts.append(_note("The model file's layer list could not be read."))
                continue
            rows = [[layer.name, layer.kind, f"{layer.params:,}", "yes" if layer.trainable else "no"]
                    for layer in layers]
            parts.append(_table(["Layer", "Type", "Parameters", "Trainable"], rows, numeric={2}))
        return "\n".join(parts)

    def settings(self) -> str:
        differing = {i for i, s in enumerate(self.c.settings) if s.differs}
        count = (f"{len(differing)} of {len(self.c.settings)} settings differ between the runs "
                 f"(highlighted); {len(self.c.settings) - len(differing)} are the same.")
        columns = [[s.values[i] for s in self.c.settings] for i in range(len(self.c.rows))]
        return _note(count) + self._by_run([s.label for s in self.c.settings], columns, highlighted=differing)

    def curves(self) -> str:
        from gui.widgets.overlay_plot import OverlayPlot

        runs = []
        for row in self.c.rows:
            result = self.results.get(row.run_id)
            if result is not None and result.history:
                runs.append((row.name, result.history, row.best_epoch))
        if not runs:
            return _note("No run has a training history.")
        parts = []
        for metric in ("loss", "accuracy"):
            plot = OverlayPlot(metric)
            _white(plot)
            plot.set_runs(runs)
            parts.append(_image(_rendered_png(plot, CURVE_SIZE), f"{metric} by epoch"))
        return "\n".join(parts)

    def conclusion(self) -> str:
        rows = self.c.conclusion
        present = {_key(k): k for row in rows for k in row if _key(k) != "run id"}
        keys = [k for k in CONCLUSION_COLUMNS if k in present] + [k for k in present if k not in CONCLUSION_COLUMNS]
        cells = [[_conclusion_value(k, _lookup(row, k)) for k in keys] for row in rows]
        numeric = {i for i, k in enumerate(keys) if k not in ("model", "name")}
        return _table([k[0].upper() + k[1:] for k in keys], cells, numeric=numeric)

    def confusion(self) -> str:
        from gui.widgets.confusion import ConfusionMatrixView

        parts = []
        for row in self.c.rows:
            result = self.results.get(row.run_id)
            parts.append(f"<h3>{_e(row.name)}</h3>")
            if result is None or result.needs_evaluation or not len(result.confusion):
                parts.append(_note("Not evaluated."))
                continue
            view = ConfusionMatrixView()
            _white(view.graphics)
            view.set_matrix(result.confusion, result.class_names)
            parts.append(_note(f"{result.split} split, {len(result)} images; rows: true class, "
                               f"columns: predicted class"))
            parts.append(_image(_rendered_png(view, CONFUSION_SIZE), f"confusion matrix of {row.name}",
                                CONFUSION_WIDTH))
        return "\n".join(parts)

    def per_class(self) -> str:
        parts = []
        for row in self.c.rows:
            result = self.results.get(row.run_id)
            metrics = result.metrics if result is not None else {}
            per_class = (metrics or {}).get("per_class", [])
            parts.append(f"<h3>{_e(row.name)}</h3>")
            if not per_class:
                parts.append(_note("Not evaluated."))
                continue
            rows = [[c["class"], format_number(c["precision"]), format_number(c["recall"]), format_number(c["f1"]),
                     f"{c['support']:,}"] for c in per_class]
            macro = metrics.get("macro")
            if macro:
                rows.append(["macro average", format_number(macro["precision"]), format_number(macro["recall"]),
                             format_number(macro["f1"]), f"{sum(c['support'] for c in per_class):,}"])
            parts.append(_table(["Class", "Precision", "Recall", "F1", "Support"], rows, numeric={1, 2, 3, 4}))
        return "\n".join(parts)

    def head_to_head(self) -> str:
        from gui.widgets.confusion import ConfusionMatrixView
        from gui.widgets.interval_bars import IntervalBars

        parts = []
        if not self.c.pairs and not self.c.not_paired:
            parts.append(_note("One run: nothing to compare it with."))
        for h in self.c.pairs:
            parts.append(f"<h3>{_e(h.b_name)} (B) against {_e(h.a_name)} (A)</h3>")
            boot = h.bootstrap or {}
            rows = [
                ["Images compared", f"{h.images:,}"],
                ["Both right", f"{h.both_right:,}"],
                [f"Only A ({h.a_name}) right", f"{len(h.only_a):,}"],
                [f"Only B ({h.b_name}) right", f"{len(h.only_b):,}"],
                ["Both wrong", f"{h.both_wrong:,}"],
                ["McNemar's exact test, p", f"{h.mcnemar_p:.4g}"],
                [f"Significant at {SIGNIFICANCE:g}", "yes" if h.significant else "no"],
                [f"Accuracy of A ({h.a_name})", format_percent(h.accuracy_a)],
                [f"Accuracy of B ({h.b_name})", format_percent(h.accuracy_b)],
            ]
            for key, label in (("accuracy", "Accuracy, B minus A"), ("macro_f1", "Macro F1, B minus A")):
                if f"{key}_diff" in boot:
                    rows.append([f"{label} (95% interval)",
                                 f"{_points(float(boot[key + '_diff']))} [{_points(float(boot[key + '_low']))}, "
                                 f"{_points(float(boot[key + '_high']))}]"])
            parts.append(_table(["", "Value"], rows, numeric={1}))
            view = ConfusionMatrixView()
            _white(view.graphics)
            view.set_difference(h.difference, h.class_names, shares=True)
            parts.append(_note("B's share of each true class minus A's, in percentage points; rows: true class, "
                               "columns: predicted class"))
            parts.append(_image(_rendered_png(view, CONFUSION_SIZE), "confusion difference, B minus A",
                                CONFUSION_WIDTH))
            if "f1_diff" in boot:
                bars = IntervalBars()
                _white(bars)
                bars.set_values(h.class_names, boot["f1_diff"], boot["f1_low"], boot["f1_high"],
                                title="F1 per class, B minus A, with paired bootstrap 95% intervals")
                parts.append(_image(_rendered_png(bars, (max(BARS_SIZE[0], bars.readable_width()), BARS_SIZE[1])),
                                    "F1 differences per class"))
        if self.c.not_paired:
            parts.append("<h3>Not compared image by image</h3><ul>" + "".join(
                f"<li>{_e(self.names.get(run_id, run_id))}: {_e(reason)}</li>"
                for run_id, reason in self.c.not_paired.items()) + "</ul>")
        return "\n".join(parts)

    def observations(self) -> str:
        return "<ul>" + "".join(f"<li>{_e(text)}</li>" for text in self.c.observations) + "</ul>"

    def environment(self) -> str:
        rows = [[key, value] for key, value in self.c.environment.items()]
        return _table(["", "Value"], rows)


def _key(key: str) -> str:
    return str(key).lower().replace("_", " ")


def _lookup(row: dict, key: str):
    for k, value in row.items():
        if _key(k) == key:
            return value
    return None


# -- the outputs -------------------------------------------------------------------

def render_html(comparison) -> str:
    """The whole report as one self-contained HTML page."""
    ensure_application()
    return _Report(comparison).html()


def report_document(text: str):
    """The HTML laid out as Qt lays it out for the PDF: A4's width inside the margins."""
    from PySide6.QtGui import QTextDocument

    document = QTextDocument()
    document.setDocumentMargin(0)
    document.setHtml(text)
    return document


def write_report(comparison, path: str | Path) -> Path:
    """Write the report as HTML or PDF by the file's suffix; the path is
    checked before anything is rendered, and the file replaced only whole."""
    target = check_report_path(path)
    ensure_application()
    text = render_html(comparison)
    partial = target.with_name(f".{target.name}.partial")
    try:
        if target.suffix.lower() == ".pdf":
            _write_pdf(text, partial)
        else:
            partial.write_text(text, encoding="utf-8")
        os.replace(partial, target)
    except OSError as exc:
        raise ReportError(f"cannot write the report {printable(target)}: {exc.strerror or exc}") from None
    finally:
        partial.unlink(missing_ok=True)
    return target


def _write_pdf(text: str, path: Path) -> None:
    """A4 at 96 dots per inch, so the report's pixel widths (PAGE_WIDTH) are the page's."""
    from PySide6.QtCore import QMarginsF, QSizeF
    from PySide6.QtGui import QPageLayout, QPageSize, QPdfWriter

    writer = QPdfWriter(str(path))
    writer.setPageSize(QPageSize(QPageSize.A4))
    writer.setPageMargins(QMarginsF(*[PAGE_MARGIN_MM] * 4), QPageLayout.Millimeter)
    writer.setResolution(PDF_DPI)
    writer.setTitle("CIFAR Studio comparison")
    writer.setCreator("CIFAR Studio")
    document = report_document(text)
    document.setPageSize(QSizeF(writer.width(), writer.height()))
    document.print_(writer)
    del writer  # the file is complete once the writer is gone
    if not path.exists() or path.stat().st_size == 0:
        raise ReportError(f"Qt wrote no PDF to {printable(path)}; check the folder can be written")
