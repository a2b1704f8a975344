"""The one exception type the CLI turns into a clear message, and how a message shows a value."""
from __future__ import annotations

import os
import re
import reprlib

_SHOW = reprlib.Repr()
_SHOW.maxstring, _SHOW.maxother, _SHOW.maxlevel = 60, 60, 2
_SHOW.maxlist = _SHOW.maxtuple = _SHOW.maxdict = _SHOW.maxset = 4

NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")


class Error(Exception):
    """A domain error: bad input, a missing file or tool, a refused action."""


def show(value) -> str:
    """``value`` for an error message: its repr, cut to a bounded length (in bounded time, too:
    nested values are shown two levels deep, four items a level)."""
    return _SHOW.repr(value)


def shown_path(path) -> str:
    """A file name for a one-line message: bytes that are not UTF-8 as \\xNN, control characters
    (a newline, a tab) escaped."""
    text = os.fsencode(str(path)).decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


def listable(name: str) -> bool:
    """Whether ``name`` can stand in a list file's line: valid UTF-8, no white space or control characters."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return not any(c.isspace() or not c.isprintable() for c in name)


def check_name(value, what: str) -> str:
    """``value`` if it is a name tf writes into files and folder names: letters, digits, ``_``, ``-``
    and ``.``, not starting with ``-`` or ``.``, at most 100 characters; else an error naming ``what``."""
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise Error(f"{what}: {show(value)} is not a name tf accepts (letters, digits, '_', '-' and '.', "
                    f"starting with a letter, digit or '_', at most 100 characters)")
    return value
