"""Training one net (``tf train``) through an engine, and every net's status (``tf status``).

A net is done only when its final snapshot exists. Each attempt logs to its own file in the net's
folder; an interrupted or crashed net resumes from its latest whole snapshot pair. Per-net state
lives in the net folder's state file, written atomically. The schedulers (schedulers/) start
attempts made here.
"""
from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .engines import Engine
from .errors import Error
from .folder import NetFolder, StudyFolder
from .logs import merge, parse_segment
from .study import Net


class NotReady(Error):
    """A net that cannot start yet (its base net is not finished)."""


def tail(path, n: int = 10) -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            return f.read().decode(errors="replace").splitlines()[-n:]
    except OSError:
        return []


class Lock:
    """An exclusive lock on a net's folder, held while a trainer works on it."""

    def __init__(self, d: NetFolder):
        self.path = d.lock
        self.fd = None

    def acquire(self) -> bool:
        self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            os.close(self.fd)
            self.fd = None
            return False

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def held_elsewhere(self) -> bool:
        """Is some process training this net? (Opens the lock read-only: works on a read-only folder.)"""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)


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

    def start(self) -> None:
        self.lock = Lock(self.dir)
        if not self.lock.acquire():
            raise Error(f"net {self.net.name} is being trained by another process (lock {self.lock.path})")
        self.dir.write_state(status="running", pid=os.getpid(), host=socket.gethostname(), log=self.log.name,
                             device=self.device, resumed_from=self.resumed_from, **self._describe())
        try:
            # The trainer holds the folder's lock too (so an orphan still counts as running).
            self.proc = self.engine.start(self.launch, self.dir, self.log, keep_fds=(self.lock.fd,))
        except OSError as e:
            self.lock.release()
            self.dir.write_state(status="failed", exit_code=None, last_lines=[f"cannot start: {e}"])
            raise Error(f"net {self.net.name}: cannot start {self.launch.argv[0]}: {e.strerror}") from None
        self.started = time.time()

    def _describe(self) -> dict:
        try:
            return self.engine.describe()
        except Error:
            return {"engine": self.engine.name}

    def stop(self) -> None:
        """Ask the trainer to snapshot and stop."""
        if self.proc and not self.stopping:
            self.stopping = True
            self.engine.stop(self.proc)

    def finish(self, rc: int) -> str:
        """Record the outcome: 'done', 'interrupted' (stopped cleanly) or 'failed'."""
        done = self.dir.final_snapshot(self.max_iter) is not None
        if done:
            status = "done"
        elif self.stopping or rc == 0:
            status = "interrupted"
        else:
            status = "failed"
        self.dir.write_state(status=status, exit_code=rc, last_lines=[] if done else tail(self.log),
                             seconds=round(time.time() - self.started, 1))
        if self.lock:
            self.lock.release()
        return status

    def progress(self) -> dict:
        """Iteration, latest val accuracy and ETA from this attempt's log."""
        seg = parse_segment(self.log, lr=False)
        it = seg.last_iter or (self.resumed_from or 0)
        acc = list(merge([seg]).accuracy.values())
        start = seg.first_iter if seg.first_iter is not None else it
        rate = (it - start) / seg.seconds if seg.seconds and it > start else None
        eta = (self.max_iter - it) / rate if rate else None
        return {"iteration": it, "max_iter": self.max_iter, "accuracy": acc[-1] if acc else None, "eta": eta}


def prepare(folder: StudyFolder, net: Net, engine: Engine, gpu=None, threads=None) -> Attempt:
    """The next attempt for ``net``: resume from its latest snapshot pair, or start (from the base's weights)."""
    d = folder.net(net.name)
    if not folder.is_rendered(net.name):
        raise Error(f"net {net.name} is not rendered under {folder.root}: "
                    f"run `tf render {net.name} --root {folder.root}` first")
    max_iter = folder.study.max_iter(net)
    if folder.is_done(net.name):
        raise Error(f"net {net.name} is already done ({folder.final_snapshot(net.name).name})")
    resume = folder.resume_point(net.name)
    weights = None
    if resume is None and net.base:
        final = folder.final_snapshot(net.base)
        if final is None:
            raise NotReady(f"net {net.name} needs its base net {net.base} to finish first (no final snapshot "
                           f"for iteration {folder.study.max_iter(folder.study.net(net.base))} in "
                           f"{folder.net(net.base).path})")
        weights = d.base_file(final)
    state = d.solverstates()[resume].name if resume is not None else None
    launch = engine.prepare(d, resume=state, weights=weights, gpu=gpu, threads=threads)
    return Attempt(net, d, engine, launch, d.new_log(), max_iter, resume,
                   device=f"gpu{gpu}" if gpu is not None else "cpu")


def train(folder: StudyFolder, net: Net, engine: Engine, gpu=None, echo=print) -> str:
    """Train one net to completion (``tf train``). SIGINT/SIGTERM make the trainer snapshot and stop."""
    if folder.is_done(net.name):
        echo(f"{net.name}: already done ({folder.final_snapshot(net.name).name})")
        return "done"
    att = prepare(folder, net, engine, gpu)
    how = f"resuming from iteration {att.resumed_from}" if att.resumed_from else (
        f"from {net.base}'s weights" if net.base else "from scratch")
    echo(f"{net.name}: training with {engine.name} on {att.device}, {how}; log {att.log}")
    previous = {s: signal.signal(s, lambda *_: att.stop()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        att.start()
        rc = att.proc.wait()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    status = att.finish(rc)
    if status == "done":
        echo(f"{net.name}: done ({att.dir.final_snapshot(att.max_iter).name})")
    elif status == "interrupted":
        states = att.dir.solverstates()
        echo(f"{net.name}: stopped; snapshot at iteration {max(states) if states else '-'}, `tf train` resumes it")
    else:
        raise Error(f"net {net.name}: {engine.name} failed with exit code {rc}; last lines of {att.log}:\n"
                    + "\n".join(tail(att.log)))
    return status


def status(folder: StudyFolder, nets: list[Net], logs: dict) -> list[dict]:
    """Every selected net's state (not rendered, done, running, failed, blocked, pending) with progress."""
    rows = []
    for net in nets:
        d = folder.net(net.name)
        state = d.read_state()
        log = logs.get(net.name)
        acc = log.accuracy if log else {}
        row = {"name": net.name, "iteration": log.iterations if log else 0,
               "max_iter": folder.study.max_iter(net), "top1_latest": list(acc.values())[-1] if acc else None,
               "top1_best": max(acc.values()) if acc else None, "exit_code": state.get("exit_code"),
               "engine": state.get("engine"), "blocked_on": None, "resumes_at": None}
        if not folder.is_rendered(net.name):
            row["state"] = "not rendered"
        elif folder.is_done(net.name):
            row["state"] = "done"
        elif Lock(d).held_elsewhere():
            row["state"] = "running"
        elif state.get("status") == "failed":
            row["state"] = "failed"
        elif net.base and not folder.is_done(net.base):
            row["state"], row["blocked_on"] = "blocked", net.base
        else:
            row["state"], row["resumes_at"] = "pending", folder.resume_point(net.name)
        row["status"] = describe_state(row)
        rows.append(row)
    return rows


def status_text(rows: list[dict]) -> str:
    """``status`` rows as a table, then the count of each state."""
    from .formats import cell, table
    jobs = any(r.get("slurm") for r in rows)
    text = table([[r["name"], r["status"], f"{r['iteration']}/{r['max_iter']}", cell(r["top1_latest"]),
                   cell(r["top1_best"])] + ([r.get("slurm") or "-"] if jobs else []) for r in rows],
                 ["net", "status", "iteration", "val top-1", "best"] + (["slurm"] if jobs else []))
    counts = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    return text + "\n" + ", ".join(f"{v} {k}" for k, v in counts.items())


def describe_state(row: dict) -> str:
    """A status row as one phrase: "blocked on half0A", "pending (resumes at 20)"."""
    if row.get("blocked_on"):
        return f"{row['state']} on {row['blocked_on']}"
    if row.get("resumes_at") is not None:
        return f"{row['state']} (resumes at {row['resumes_at']})"
    return row["state"]
