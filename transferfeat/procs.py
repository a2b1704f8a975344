"""Child processes that train: their environment and their signal set-up before exec."""
from __future__ import annotations

import os
import signal

try:                                   # looked up once here: the child may not allocate after fork
    import ctypes
    _libc = ctypes.CDLL(None, use_errno=True)
    _prctl, _signal = _libc.prctl, _libc.signal
except (OSError, AttributeError):
    _prctl = _signal = None

PR_SET_PDEATHSIG = 1
SIG_DFL, SIG_IGN = 0, 1


def environ() -> dict:
    """tf's environment for a trainer: glog writes to the attempt's log, not to files in /tmp."""
    return {**os.environ, "GLOG_logtostderr": os.environ.get("GLOG_logtostderr", "1")}


def child_setup(stop_signal: int):
    """A preexec function: ``stop_signal`` when tf dies (prctl PR_SET_PDEATHSIG); SIGINT back to its
    default whatever tf inherited (nohup, a runner that ignores it); SIGTERM ignored, so that a SLURM
    job's SIGTERM reaches the trainer only as tf's ``stop_signal``: snapshot, then stop."""
    stop = int(stop_signal)

    def setup() -> None:
        if _prctl is not None:
            _signal(int(signal.SIGINT), SIG_DFL)
            _signal(int(signal.SIGTERM), SIG_IGN)
            _prctl(PR_SET_PDEATHSIG, stop)
    return setup
