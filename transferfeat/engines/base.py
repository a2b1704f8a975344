"""What every engine is: it prepares an attempt (the command line and environment that train a
net's folder, from scratch, from a base net's weights or resuming a snapshot), starts it, stops it
with a snapshot, and says what it is (name, version) for the net's records and job scripts."""
from __future__ import annotations

import signal
import subprocess
from dataclasses import dataclass, field
from typing import Optional

from ..folder import NetFolder

REGISTRY: dict[str, type] = {}        # engine name -> Engine subclass, in registration order


def register(cls):
    """Class decorator: add an engine to the registry under ``cls.name``."""
    REGISTRY[cls.name] = cls
    return cls


@dataclass
class Launch:
    """One prepared attempt: run ``argv`` in the net's folder with ``env`` added to the environment."""
    argv: list
    env: dict = field(default_factory=dict)


class Engine:
    """Base class; subclasses set ``name``, implement ``command`` and ``test_command`` (and may
    extend the rest), and are built from the CLI's engine options by ``configure``."""
    name = ""
    stop_signal = signal.SIGINT           # "snapshot, then stop"
    holds_stop = False                    # its program unblocks the stop signal once it can honour it

    @classmethod
    def configure(cls, caffe=None, precision: str = "fp32") -> "Engine":
        """The engine with the options that concern it (the rest are another engine's)."""
        return cls()

    def command(self, netdir: NetFolder, resume: Optional[str], weights: Optional[str], gpu: Optional[int]) -> list:
        """The command line that trains ``netdir`` (resume: a solverstate file name; weights: a path
        relative to the folder)."""
        raise NotImplementedError

    def test_command(self, model: str, weights: str, iterations: int, gpu=None) -> list:
        """The command line that scores ``weights`` on ``model`` (a TEST net) as `caffe test` does."""
        raise NotImplementedError

    def environment(self) -> dict:
        """Variables the engine's programs need besides tf's own environment."""
        return {}

    def prepare(self, netdir: NetFolder, resume=None, weights=None, gpu=None, threads=None) -> Launch:
        env = {"OPENBLAS_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)} if threads else {}
        return Launch(self.command(netdir, resume, weights, gpu), {**self.environment(), **env})

    def start(self, launch: Launch, netdir: NetFolder, log, keep_fds=(), env=None) -> subprocess.Popen:
        """Start the attempt in its own session, output to ``log``; it gets SIGINT if tf dies."""
        from .. import procs
        with open(log, "wb") as out:
            return subprocess.Popen(launch.argv, cwd=netdir.path, stdout=out, stderr=subprocess.STDOUT,
                                    env={**(env or procs.environ()), **launch.env}, start_new_session=True,
                                    pass_fds=tuple(keep_fds),
                                    preexec_fn=procs.child_setup(self.stop_signal, self.holds_stop))

    def stop(self, proc: subprocess.Popen) -> None:
        """Ask the attempt to snapshot and stop."""
        if proc.poll() is None:
            proc.send_signal(self.stop_signal)

    def describe(self) -> dict:
        """What trained an attempt, for the net's records: at least ``engine`` and ``version``."""
        return {"engine": self.name}

    def job_args(self) -> list:
        """Options that make ``tf train`` in a job script use this same engine."""
        return []

    def doctor(self) -> tuple[dict, list]:
        """(what this engine will use, [{"what", "why", "fix"} for each thing missing])."""
        return {}, []
