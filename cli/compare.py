"""`main.py compare RUN RUN ...`: the runs table, their settings side by side, head to head.

The numbers and sentences come from engine.comparison, the same as the
Compare tab and the report show. Output files are checked before any run is
read, so a mistyped --csv or --report costs nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

from cli.commands import UsageError, open_store
from engine.errors import EngineError
from engine.text import format_seconds, printable

REPORT_SUFFIXES = (".html", ".htm", ".pdf")
NAME_WIDTH = 24  # the table's name column
VALUE_WIDTH = 18  # a run's column in the settings that differ


def cmd_compare(args) -> int:
    from engine.comparison import compare_runs, write_table_csv

    csv_path, report_path = _output_paths(args)
    write_report = _report_writer() if report_path else None
    store = open_store()
    comparison = compare_runs(store, args.runs)
    print(format_table(comparison.rows))
    print()
    print(format_differences(comparison))
    for line in format_pairs(comparison):
        print(line)
    print()
    print("observations:")
    for sentence in comparison.observations:
        print(f"- {printable(sentence)}")
    if csv_path:
        write_table_csv(comparison.rows, csv_path)
        print(f"wrote {printable(csv_path)}")
    if report_path:
        write_report(comparison, report_path)
        print(f"wrote {printable(report_path)}")
    return 0


def _output_paths(args) -> tuple[Path | None, Path | None]:
    """--csv and --report as paths, refused before any work when they cannot be written."""
    from engine.inference import check_csv_path, check_output_file

    csv_path = report_path = None
    if args.report:
        report_path = Path(args.report).expanduser()
        if report_path.suffix.lower() not in REPORT_SUFFIXES or report_path.is_dir():
            raise UsageError(f"--report {printable(args.report)}: the report is written as HTML or PDF; give a "
                             "file name ending in .html or .pdf")
        try:
            check_output_file(report_path, "report")
        except EngineError as exc:
            raise UsageError(f"--report {printable(args.report)}: {exc}") from None
    if args.csv:
        try:
            csv_path = check_csv_path(args.csv)
        except EngineError as exc:
            raise UsageError(f"--csv {printable(args.csv)}: {exc}") from None
    if csv_path and report_path and csv_path.resolve() == report_path.resolve():
        raise UsageError(f"--csv and --report both name {printable(args.csv)}; give two files")
    return csv_path, report_path


def _report_writer():
    """gui.report.write_report, loaded before the work (it needs Qt, run offscreen here)."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    try:
        from gui.report import write_report
    except ImportError as exc:
        raise UsageError(f"--report needs the window's report writer (gui/report.py, PySide6): {exc}") from None
    return write_report


def _number(value, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_table(rows) -> str:
    header = (f"{'name':<{NAME_WIDTH}} {'model':<17} {'preset':<20} {'status':<11} {'epochs':>7} "
              f"{'test acc':>9} {'test loss':>9} {'macro F1':>9} {'params':>12} {'time':>8}")
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(f"{printable(row.name)[:NAME_WIDTH]:<{NAME_WIDTH}} {printable(row.model)[:17]:<17} "
                     f"{printable(row.preset)[:20]:<20} {row.status:<11} "
                     f"{f'{row.epochs_done}/{row.epochs}':>7} {_number(row.test_accuracy):>9} "
                     f"{_number(row.test_loss):>9} {_number(row.macro_f1):>9} {row.params_total:>12,} "
                     f"{format_seconds(row.train_seconds):>8}")
    if any(row.split == "validation" for row in rows):
        lines.append("(test acc and loss are on the validation split where a dataset has no test split)")
    return "\n".join(lines)


def format_differences(comparison) -> str:
    """The settings whose values differ between the runs, a column per run."""
    if len(comparison.rows) < 2:
        return "settings: one run, nothing to set side by side"
    differing = [row for row in comparison.settings if row.differs and row.key != "name"]  # names head the columns
    if not differing:
        return "settings: the same in every run"
    keys = [f"{row.label} ({row.key})" for row in differing]
    width = max(len(key) for key in keys) + 2
    names = "".join(f"{printable(row.name)[:VALUE_WIDTH - 1]:<{VALUE_WIDTH}}" for row in comparison.rows)
    lines = ["settings that differ:", f"{'':<{width}}{names}".rstrip()]
    for key, row in zip(keys, differing):
        values = "".join(f"{printable(value)[:VALUE_WIDTH - 1]:<{VALUE_WIDTH}}" for value in row.values)
        lines.append(f"{key:<{width}}{values}".rstrip())
    return "\n".join(lines)


def format_pairs(comparison) -> list[str]:
    """Each run against the first: accuracy difference and interval, the paired counts, McNemar's p."""
    from engine.comparison import SIGNIFICANCE

    lines = []
    names = {row.run_id: printable(row.name) for row in comparison.rows}
    if len(comparison.rows) > 1:
        lines += ["", f"head to head, against the first run ({names[comparison.rows[0].run_id]}):"]
    for pair in comparison.pairs:
        a, b = names[pair.a_id], names[pair.b_id]
        boot = pair.bootstrap
        points = 100 * (pair.accuracy_b - pair.accuracy_a)
        interval = ""
        if boot:
            interval = (f" (95% interval {100 * float(boot['accuracy_low']):+.1f} to "
                        f"{100 * float(boot['accuracy_high']):+.1f})")
        verdict = "more than chance" if pair.significant else "may be chance"
        lines += [f"{b} vs {a}, {pair.images:,} images: accuracy {pair.accuracy_b:.1%} vs {pair.accuracy_a:.1%}, "
                  f"{points:+.1f} points{interval}",
                  f"  only {a} right: {len(pair.only_a):,}; only {b} right: {len(pair.only_b):,}; both right: "
                  f"{pair.both_right:,}; both wrong: {pair.both_wrong:,}; McNemar's exact p = {pair.mcnemar_p:.4g} "
                  f"({verdict} at {SIGNIFICANCE:g})"]
    for run_id, reason in comparison.not_paired.items():
        lines.append(f"{names[run_id]}: not compared image by image: {printable(reason)}")
    return lines
