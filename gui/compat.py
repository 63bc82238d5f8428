"""A work-around for a bug in the Qt binding, applied only where it is found.

PySide6 6.12.0 returns None from C++ methods that return void without
taking a new reference to it. On Python 3.11 None is reference-counted like
any object, so each such call steals a reference; pyqtgraph's painting makes
thousands of them a second, and after a minute or two of live plotting
Python aborts with "Fatal Python error: none_dealloc: deallocating None".
Python 3.12 made None, True and False immortal, and PySide6 6.11 does not
have the bug; the dependency should exclude 6.12.0. Until then, where a
quick probe shows the leak, the singletons get a reference count that no
leak can use up.
"""

from __future__ import annotations

import ctypes
import sys

RESERVE = 1 << 40  # at 10,000 stolen references a second, enough for 3,000 years
PROBE_CALLS = 64

_protected = False


def binding_steals_none() -> bool:
    """True if a void PySide6 method returns None without a new reference."""
    from PySide6.QtCore import QObject

    probe = QObject()
    before = sys.getrefcount(None)
    for _ in range(PROBE_CALLS):
        probe.setObjectName("probe")
    return sys.getrefcount(None) <= before - PROBE_CALLS // 2


def protect_singletons() -> bool:
    """Give None, True and False a huge reference count if the binding leaks
    them and this Python counts their references; True if it did so."""
    global _protected
    if _protected:
        return True
    if sys.version_info >= (3, 12) or hasattr(sys, "gettotalrefcount") or not binding_steals_none():
        return False
    for singleton in (None, True, False):
        # ob_refcnt is the first field of every object in a release build of CPython 3.11.
        ctypes.c_ssize_t.from_address(id(singleton)).value += RESERVE
    _protected = True
    return True
