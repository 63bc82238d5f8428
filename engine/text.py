"""Text the window and the CLI both show, so the two say the same thing the same way."""

from __future__ import annotations


def format_seconds(seconds: float | None) -> str:
    """A duration as m:ss, or h:mm:ss from an hour on; rounded to the second,
    and 0:00 for nothing or a negative time (an ETA not known yet)."""
    total = max(0, int(round(seconds or 0)))
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"
