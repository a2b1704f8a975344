"""The one exception type the CLI turns into a clear message."""


class Error(Exception):
    """A domain error: bad input, a missing file or tool, a refused action."""
