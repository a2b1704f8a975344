"""Training one net (``tf train``) through an engine, and scoring a snapshot (``tf test``).

A net is done only when its final snapshot pair was verified whole and its completion record
written (snapshots.py). Each attempt logs to its own file in the net's folder; an interrupted or
crashed net resumes from its newest whole snapshot pair (a pair a crashed retry started from is
passed over). Training stops cleanly, with a snapshot, when the disk has no room for two more
snapshot pairs. What a net's folder says (done, where it resumes) comes from state.py, read once
per attempt; the schedulers (schedulers/) start attempts made here.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .engines import Engine
from .errors import Error
from .folder import Listing, NetFolder, StudyFolder
from .logs import merge, parse_segment
from .health import Divergence, divergence
from .snapshots import SnapshotError, check_record, expected, pair_identity, read_record, record_done
from .state import Lock, NetState, adopt, read_attempt, state_of, write_attempt
from .study import Net


# Signals a trainer dies of by its own error (glog's fatal aborts, crashes); any other is from outside.
OWN_SIGNALS = (signal.SIGABRT, signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL)


class NotReady(Error):
    """A net that cannot start yet (its base net is not finished)."""


class Busy(Error):
    """A net another process holds (its lock) or has just finished: not a failure of this one."""


def tail(path, n: int = 10) -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            return f.read().decode(errors="replace").splitlines()[-n:]
    except OSError:
        return []


_STACK = re.compile(r"\s*(\*\*\* |@ +0x)")
_CAUSE = re.compile(r"^F\d{4} |Check failed|\berror\b|Error|Aborted|Killed|cannot ", re.M)


def failure_lines(path, before: int = 2, after: int = 3) -> list[str]:
    """The cause of a failure in a trainer's log: its first fatal (glog ``F…``), ``Check failed`` or
    error line with the lines around it, not the stack frames glog prints after it; else the tail."""
    try:
        text = Path(path).read_bytes().decode(errors="replace")
    except OSError:
        return []
    m = _CAUSE.search(text)
    if not m:
        return tail(path)
    lines = text.splitlines()
    at = text.count("\n", 0, m.start())
    out = lines[max(0, at - before): at + 1]
    for line in lines[at + 1: at + after + 1]:
        if _STACK.match(line):                 # glog's "*** Check failure stack trace: ***" and "@ 0x…" frames
            break
        out.append(line)
    return out


def check_data(netdir: NetFolder) -> None:
    """The net's data links (LMDBs, or indexes and their store) whole: a cut database is named here,
    before a trainer maps it and dies of SIGBUS."""
    from .databases import check_db
    from .store import is_index, read_index
    links = NetFolder.link_names()
    for link in (netdir.path / links.train, netdir.path / links.valid):
        if not link.exists():
            continue
        try:
            read_index(link) if is_index(link) else check_db(link)
        except Error as e:
            raise Error(f"net {netdir.name}: data {link.name}: {e}") from None


def bus_error(netdir: NetFolder) -> str:
    """What a trainer's SIGBUS means, with what its data links look like now."""
    try:
        check_data(netdir)
        now = "its databases look whole now"
    except Error as e:
        now = str(e)
    return (f"the trainer died of a bus error (SIGBUS): a memory-mapped file it read, a database or the image store, "
            f"was cut or changed while it ran; {now}")


def pair_bytes(netdir: NetFolder) -> int:
    """Disk one snapshot pair (weights and solver history) of the net takes."""
    import math
    return 2 * 4 * sum(math.prod(s) for blobs in expected(netdir).values() for s in blobs) + 65536


DISK_POLL = 0.5          # seconds between looks at a training net's free disk (statvfs: cheap)


def disk_room(netdir: NetFolder, need: int):
    """None when the net's disk has room for ``need`` bytes, else a message saying so."""
    free = shutil.disk_usage(netdir.path).free
    if free >= need:
        return None
    return (f"the disk holding {netdir.path} has {free / 2**20:.1f} MiB free; training needs room for two snapshot "
            f"pairs ({need / 2**20:.1f} MiB): free space, then run again to resume")


@dataclass
class Attempt:
    """One engine run of one net."""
    net: Net
    dir: NetFolder
    engine: Engine
    launch: object
    log: Path
    max_iter: int
    resumed_from: Optional[int] = None
    device: Optional[str] = None
    proc: Optional[subprocess.Popen] = None
    lock: Optional[Lock] = None
    started: float = 0.0
    stopping: bool = False
    pair_bytes: int = 0
    stop_reason: Optional[str] = None
    finish_lines: list = field(default_factory=list)      # what finish() recorded as the outcome's cause
    listing: Optional[Listing] = None                      # the folder as finish() found it
    outputs: int = 1000                 # the width of the net's last layer: its divergence bound
    diverged: Optional[Divergence] = None

    def start(self) -> None:
        self.lock = Lock(self.dir)
        if not self.lock.acquire():
            raise Busy(f"net {self.net.name} is being trained by another process (lock {self.lock.path})")
        if read_record(self.dir):                   # finished by another process since its state was read
            self.lock.release()
            raise Busy(f"net {self.net.name} was finished by another process")
        write_attempt(self.dir, status="running", pid=os.getpid(), host=socket.gethostname(), log=self.log.name,
                      device=self.device, resumed_from=self.resumed_from, **self._describe())
        try:
            # The trainer holds the folder's lock too (so an orphan still counts as running).
            self.proc = self.engine.start(self.launch, self.dir, self.log, keep_fds=(self.lock.fd,))
        except OSError as e:
            self.lock.release()
            write_attempt(self.dir, status="failed", exit_code=None, last_lines=[f"cannot start: {e}"])
            raise Error(f"net {self.net.name}: cannot start {self.launch.argv[0]}: {e.strerror}") from None
        self.started = time.time()
        if self.stopping:                               # a stop asked for while the trainer was being started
            self.engine.stop(self.proc)

    def _describe(self) -> dict:
        try:
            return self.engine.describe()
        except Error:
            return {"engine": self.engine.name}

    def stop(self, reason: str = None) -> None:
        """Ask the trainer to snapshot and stop (as soon as it exists, when it does not yet)."""
        if not self.stopping:
            self.stopping, self.stop_reason = True, reason
            if self.proc:
                self.engine.stop(self.proc)

    def watch_disk(self) -> Optional[str]:
        """Stop (with a snapshot) when the disk has no room for two more snapshot pairs; the reason."""
        why = disk_room(self.dir, 2 * self.pair_bytes) if self.proc and self.proc.poll() is None else None
        if why and not self.stopping:
            self.stop(f"stopped: {why}")
        return why

    def finish(self, rc: int) -> str:
        """Verify and record the outcome: 'done', 'diverged', 'interrupted' (stopped cleanly) or 'failed'.
        A pair is marked bad (by its identity, not its iteration) only when the trainer failed by its
        own error straight after resuming from it, or was written after the net diverged; a trainer
        killed from outside (a signal: OOM killer, scheduler, SIGKILL) costs no pair."""
        listing = self.listing = self.dir.scan()
        extra, lines, bad = {}, [], []
        self.diverged = self.diverged or divergence(parse_segment(self.log, lr=False), self.outputs)
        if self.diverged:
            status, lines = "diverged", [str(self.diverged)]
            extra["diverged_at"] = self.diverged.iteration
            bad = [pair_identity(self.dir, listing, it, f"written after the net diverged at {self.diverged.iteration}")
                   for it in listing.solverstates if it >= self.diverged.iteration]
        elif self.max_iter in listing.snapshots:
            try:
                record_done(self.dir, self.max_iter, listing=listing, **self._describe())
                status = "done"
            except SnapshotError as e:
                status, lines = "failed", [f"the final snapshot is not whole: {e}"]
        elif self.stopping or rc == 0:
            status, lines = "interrupted", [self.stop_reason] if self.stop_reason else tail(self.log)
        elif rc == -signal.SIGBUS:
            status, lines = "failed", [bus_error(self.dir)]
        elif rc < 0 and -rc not in OWN_SIGNALS:
            status, lines = "failed", [f"the trainer was killed by {signal.Signals(-rc).name} (from outside: the "
                                       f"out-of-memory killer, a scheduler, a lost node?); no snapshot is lost"]
        else:
            status, lines = "failed", failure_lines(self.log)
            if self.resumed_from is not None and max(listing.solverstates, default=-1) <= self.resumed_from:
                bad = [pair_identity(self.dir, listing, self.resumed_from, "a retry from it crashed")]
        if bad:                                  # the next attempt resumes from an older pair
            extra["bad_snapshots"] = read_attempt(self.dir).get("bad_snapshots", []) + bad
        write_attempt(self.dir, status=status, exit_code=rc, last_lines=lines,
                      seconds=round(time.time() - self.started, 1), **extra)
        self.finish_lines = lines
        if self.lock:
            self.lock.release()
        return status

    def progress(self) -> dict:
        """Iteration, latest val accuracy and ETA from this attempt's log; a trainer whose log shows
        it diverging is stopped."""
        seg = parse_segment(self.log, lr=False)
        found = divergence(seg, self.outputs)
        if found and not self.diverged:
            self.diverged = found
            self.stop(f"stopped: {found}")
        it = seg.last_iter or (self.resumed_from or 0)
        acc = list(merge([seg]).accuracy.values())
        start = seg.first_iter if seg.first_iter is not None else it
        rate = (it - start) / seg.seconds if seg.seconds and it > start else None
        eta = (self.max_iter - it) / rate if rate else None
        return {"iteration": it, "max_iter": self.max_iter, "accuracy": acc[-1] if acc else None, "eta": eta}


def prepare(folder: StudyFolder, net: Net, engine: Engine, state: NetState, base: Optional[NetState] = None,
            gpu=None, threads=None) -> Attempt:
    """The next attempt for ``net`` in ``state``: resume from its newest whole snapshot pair, or
    start (a transfer net from its base net's verified final weights, ``base`` being its state)."""
    d = folder.net(net.name)
    if state.kind == "not rendered":
        raise Error(f"net {net.name} is not rendered under {folder.root}: "
                    f"run `tf render {net.name} --root {folder.root}` first")
    if state.done:
        raise Error(f"net {net.name} is already done ({state.final.name})")
    if state.kind == "running":
        raise Busy(f"net {net.name} is being trained by another process (lock {d.lock})")
    weights = None
    if state.resumes_at is None and net.base:
        if base is None or not base.done:
            raise NotReady(f"net {net.name} needs its base net {net.base} to finish first (no verified final "
                           f"snapshot for iteration {folder.study.max_iter(folder.study.net(net.base))} in "
                           f"{folder.net(net.base).path})")
        try:
            weights = d.base_file(check_record(folder.net(net.base), folder.study.max_iter(folder.study.net(net.base)),
                                               base.record, full=True))
        except SnapshotError as e:
            raise NotReady(f"net {net.name}: its base net's final snapshot is not the one verified: {e}") from None
    pairs = pair_bytes(d)
    why = disk_room(d, 2 * pairs)
    if why:
        raise Error(f"net {net.name}: not started: {why}")
    resume = state.resumes_at
    solverstate = state.resume_file.name if state.resume_file is not None else None
    try:
        check_data(d)
        launch = engine.prepare(d, resume=solverstate, weights=weights, gpu=gpu, threads=threads)
    except Error as e:                       # refused (its data, or what the engine cannot run): failed, not pending
        write_attempt(d, status="failed", exit_code=None, engine=engine.name, last_lines=[f"refused: {e}"])
        raise
    return Attempt(net, d, engine, launch, d.new_log(), folder.study.max_iter(net), resume,
                   device=f"gpu{gpu}" if gpu is not None else "cpu", pair_bytes=pairs,
                   outputs=folder.study.config.datasets.classes)


def read_for_attempt(folder: StudyFolder, net: Net, echo=print) -> tuple[NetState, Optional[NetState]]:
    """(``net``'s state, its base net's) for a new attempt: each folder read once, an unverified final
    snapshot verified and recorded, a damaged record reported."""
    base = adopt(folder, folder.study.net(net.base), state_of(folder, folder.study.net(net.base)), echo) \
        if net.base else None
    state = adopt(folder, net, state_of(folder, net, base, echo), echo)
    if state.kind == "damaged":
        echo(f"{net.name}: the recorded final snapshot cannot be trusted: {state.problem}")
    return state, base


def train(folder: StudyFolder, net: Net, engine: Engine, gpu=None, echo=print, interval: float = 5.0) -> str:
    """Train one net to completion (``tf train``). SIGINT/SIGTERM make the trainer snapshot and stop."""
    state, base = read_for_attempt(folder, net, echo)
    if state.done:
        echo(f"{net.name}: already done ({state.final.name})")
        return "done"
    att = prepare(folder, net, engine, state, base, gpu)
    how = f"resuming from iteration {att.resumed_from}" if att.resumed_from else (
        f"from {net.base}'s weights" if net.base else "from scratch")
    echo(f"{net.name}: training with {engine.name} on {att.device}, {how}; log {att.log}")
    previous = {s: signal.signal(s, lambda *_: att.stop()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        att.start()
        last = time.time()
        while True:
            try:
                rc = att.proc.wait(timeout=DISK_POLL)
                break
            except subprocess.TimeoutExpired:
                att.watch_disk()
                if time.time() - last >= interval:
                    att.progress()
                    last = time.time()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    status = att.finish(rc)
    if status == "diverged":
        raise Error(f"net {net.name} {att.diverged}; it is not done, and its dependants wait. Lower the learning "
                    f"rate in {att.dir.solver} (or find the cause in {att.log}); `tf train` then resumes it from "
                    f"before the divergence")
    if status == "done":
        echo(f"{net.name}: done ({att.listing.snapshots[att.max_iter].name})")
    elif status == "interrupted":
        states = att.listing.solverstates
        echo((f"{net.name}: {att.stop_reason}\n" if att.stop_reason else "")
             + f"{net.name}: stopped; snapshot at iteration {max(states) if states else '-'}, `tf train` resumes it")
        if att.stop_reason:
            raise Error(f"net {net.name} is not done: {att.stop_reason}")
    else:
        raise Error(f"net {net.name}: {engine.name} failed with exit code {rc}; from {att.log}:\n"
                    + "\n".join(att.finish_lines))
    return status


def score(folder: StudyFolder, net: Net, engine: Engine, weights=None, iterations=None, gpu=None, echo=print) -> int:
    """``tf test``: score a snapshot (default: the verified final one) on the net's val net with
    ``engine``, echoing what it prints; its exit code."""
    from . import procs
    from .netspec import read_solver
    d = folder.net(net.name)
    if not folder.is_rendered(net.name):
        raise Error(f"net {net.name} is not rendered under {folder.root}")
    if weights is None:
        state = state_of(folder, net)
        if not state.done:
            raise Error(f"net {net.name} has no verified final snapshot: give --weights FILE")
        weights = check_record(d, folder.study.max_iter(net), state.record, full=True)
    check_data(d)
    solver = read_solver(d.solver)
    n = iterations or (solver["test_iter"] or [50])[0]
    cmd = engine.test_command(d.val_prototxt.name, str(Path(weights).resolve()), n, gpu)
    proc = subprocess.Popen(cmd, cwd=d.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**procs.environ(), **engine.environment()}, errors="replace")
    for line in proc.stdout:
        echo(line.rstrip("\n"))
    rc = proc.wait()
    if rc == -signal.SIGBUS:
        raise Error(f"net {net.name}: {engine.name} test: {bus_error(d)}")
    return rc
