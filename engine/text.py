"""Text the window and the CLI both show, so the two say the same thing the same way."""

from __future__ import annotations

import re


def format_seconds(seconds: float | None) -> str:
    """A duration as m:ss, or h:mm:ss from an hour on; rounded to the second,
    and 0:00 for nothing or a negative time (an ETA not known yet)."""
    total = max(0, int(round(seconds or 0)))
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


class StageClock:
    """How long a stage with a known fraction done has left: the time so far
    scaled by the fraction still to do (the evaluation, the frozen base's
    feature pass). A new stage text starts the clock again."""

    MIN_FRACTION = 0.02  # before this much is done, an estimate is noise

    def __init__(self):
        self.text = ""
        self.started = 0.0

    def remaining(self, text: str, fraction: float | None, now: float) -> str:
        """"ETA 1:05" for this report, or "" when it cannot be told yet."""
        if text != self.text:
            self.text, self.started = text, now
        if fraction is None or not self.MIN_FRACTION <= fraction < 1 or now <= self.started:
            return ""
        return f"ETA {format_seconds((now - self.started) * (1 - fraction) / fraction)}"


def valid_text(text: str) -> str:
    """`text` as valid Unicode: a byte that was not UTF-8 (which Python keeps
    as a lone surrogate U+DC80..U+DCFF in file names and command-line
    arguments) becomes a visible \\xNN, any other lone surrogate \\uXXXX.
    SQLite, UTF-8 files and terminals all refuse lone surrogates, so a name
    goes through here before it is stored or shown."""
    text = str(text)
    if not _SURROGATE.search(text):
        return text
    return _SURROGATE.sub(lambda m: _escaped(m.group()), text)


def printable(text) -> str:
    """A name (of a run, a file or a class) as it is safe to show in a terminal
    or a message: what `valid_text` does, and control characters (escape
    sequences, newlines, tabs, DEL, C1, line separators) escaped as \\n, \\t,
    \\xNN or \\uXXXX, so a name can neither recolour nor garble the screen nor
    pass for two lines."""
    text = valid_text(text)
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else _escaped(char) for char in text)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _escaped(char: str) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # surrogateescape's stand-in for the byte code - 0xDC00
        return f"\\x{code - 0xDC00:02x}"
    return char.encode("unicode_escape").decode("ascii")
