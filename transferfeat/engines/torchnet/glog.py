"""glog's line format, which tf's log parser (and a reader used to Caffe) expects."""
from __future__ import annotations

import os
import sys
import time


class Log:
    """glog lines on stderr: ``I1127 10:00:00.000000  1234 file.cpp:1] message``."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.pid = os.getpid()

    def __call__(self, msg: str, where: str = "solver.cpp:0", level: str = "I") -> None:
        t = time.time()
        stamp = time.strftime("%m%d %H:%M:%S", time.localtime(t)) + f".{int((t % 1) * 1e6):06d}"
        self.stream.write(f"{level}{stamp} {self.pid:>5} {where}] {msg}\n")
        self.stream.flush()


class Quiet(Log):
    """A Log that keeps nothing (callers that want the numbers, not the lines: benchmarks, tests)."""

    def __call__(self, *a, **k) -> None:
        pass


def g(v) -> str:
    """A number as C++'s ostream prints it (6 significant digits)."""
    return f"{float(v):.6g}"
