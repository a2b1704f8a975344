"""Child processes that train: their environment and their signal set-up before exec."""
from __future__ import annotations

import os
import signal

try:                                   # looked up once here: the child may not allocate after fork
    import ctypes
    _libc = ctypes.CDLL(None, use_errno=True)
    _prctl, _signal, _sigmask = _libc.prctl, _libc.signal, _libc.pthread_sigmask
except (OSError, AttributeError):
    _prctl = _signal = _sigmask = None

PR_SET_PDEATHSIG = 1
SIG_DFL, SIG_IGN = 0, 1
SIG_BLOCK = 0


def environ() -> dict:
    """tf's environment for a trainer: glog writes to the attempt's log, not to files in /tmp."""
    return {**os.environ, "GLOG_logtostderr": os.environ.get("GLOG_logtostderr", "1")}


def child_setup(stop_signal: int, hold_stop: bool = False):
    """A preexec function: ``stop_signal`` when tf dies (prctl PR_SET_PDEATHSIG); SIGINT back to its
    default whatever tf inherited (nohup, a runner that ignores it); SIGTERM ignored, so that a SLURM
    job's SIGTERM reaches the trainer only as tf's ``stop_signal``: snapshot, then stop.
    ``hold_stop``: the stop signal starts blocked, so one sent while the trainer is still starting
    waits (pending) until the trainer unblocks it with its handler in place (the torch trainer
    does); none is lost and none kills a half-started interpreter."""
    stop = int(stop_signal)
    mask = (ctypes.c_ulong * 16)() if _sigmask is not None else None      # a sigset_t, made before the fork
    if mask is not None:
        mask[(stop - 1) // 64] = 1 << ((stop - 1) % 64)

    def setup() -> None:
        if _prctl is not None:
            _signal(int(signal.SIGINT), SIG_DFL)
            _signal(int(signal.SIGTERM), SIG_IGN)
            if hold_stop and mask is not None:
                _sigmask(SIG_BLOCK, ctypes.byref(mask), None)
            _prctl(PR_SET_PDEATHSIG, stop)
    return setup
