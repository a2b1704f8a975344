"""Training one net (``tf train``) through an engine, and every net's status (``tf status``).

A net is done only when its final snapshot pair was verified whole and its completion record
written (snapshots.py). Each attempt logs to its own file in the net's folder; an interrupted or
crashed net resumes from its newest whole snapshot pair (a pair a crashed retry started from is
passed over). Training stops cleanly, with a snapshot, when the disk has no room for two more
snapshot pairs. Per-net state lives in the net folder's state file, written atomically. The
schedulers (schedulers/) start attempts made here.
"""
from __future__ import annotations

import os
import re
import shutil
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
from .locks import FileLock
from .logs import merge, parse_segment
from .snapshots import SnapshotError, expected, record_done
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


def pair_bytes(d: NetFolder) -> int:
    """Disk one snapshot pair (weights and solver history) of the net takes."""
    import math
    return 2 * 4 * sum(math.prod(s) for blobs in expected(d).values() for s in blobs) + 65536


def disk_room(d: NetFolder, need: int):
    """None when the net's disk has room for ``need`` bytes, else a message saying so."""
    free = shutil.disk_usage(d.path).free
    if free >= need:
        return None
    return (f"the disk holding {d.path} has {free / 2**20:.1f} MiB free; training needs room for two snapshot "
            f"pairs ({need / 2**20:.1f} MiB): free space, then run again to resume")


class Lock(FileLock):
    """The lock on a net's folder, held while a trainer works on it (by the trainer too)."""

    def __init__(self, d: NetFolder):
        super().__init__(d.lock)


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

    def stop(self, reason: str = None) -> None:
        """Ask the trainer to snapshot and stop."""
        if self.proc and not self.stopping:
            self.stopping, self.stop_reason = True, reason
            self.engine.stop(self.proc)

    def watch_disk(self) -> Optional[str]:
        """Stop (with a snapshot) when the disk has no room for two more snapshot pairs; the reason."""
        why = disk_room(self.dir, 2 * self.pair_bytes) if self.proc and self.proc.poll() is None else None
        if why and not self.stopping:
            self.stop(f"stopped: {why}")
        return why

    def finish(self, rc: int) -> str:
        """Verify and record the outcome: 'done', 'interrupted' (stopped cleanly) or 'failed'."""
        state, lines = {}, []
        if self.dir.snapshot_at(self.max_iter) is not None:
            try:
                record_done(self.dir, self.max_iter, **self._describe())
                status = "done"
            except SnapshotError as e:
                status, lines = "failed", [f"the final snapshot is not whole: {e}"]
        elif self.stopping or rc == 0:
            status, lines = "interrupted", [self.stop_reason] if self.stop_reason else tail(self.log)
        else:
            status, lines = "failed", failure_lines(self.log)
            if self.resumed_from is not None and self._no_newer_snapshot():
                bad = sorted(set(self.dir.read_state().get("bad_snapshots", [])) | {self.resumed_from})
                state["bad_snapshots"] = bad         # the next attempt resumes from an older pair
        self.dir.write_state(status=status, exit_code=rc, last_lines=lines,
                             seconds=round(time.time() - self.started, 1), **state)
        if self.lock:
            self.lock.release()
        return status

    def _no_newer_snapshot(self) -> bool:
        return max(self.dir.solverstates(), default=-1) <= self.resumed_from

    def progress(self) -> dict:
        """Iteration, latest val accuracy and ETA from this attempt's log."""
        seg = parse_segment(self.log, lr=False)
        it = seg.last_iter or (self.resumed_from or 0)
        acc = list(merge([seg]).accuracy.values())
        start = seg.first_iter if seg.first_iter is not None else it
        rate = (it - start) / seg.seconds if seg.seconds and it > start else None
        eta = (self.max_iter - it) / rate if rate else None
        return {"iteration": it, "max_iter": self.max_iter, "accuracy": acc[-1] if acc else None, "eta": eta}


def settle(folder: StudyFolder, net: Net, echo=print) -> bool:
    """Is ``net`` done? A final snapshot without a completion record (written before tf kept records,
    or by hand) is verified and recorded now; one whose record no longer matches is reported."""
    if folder.is_done(net.name):
        return True
    damage = folder.damage(net.name)
    if damage:
        echo(f"{net.name}: the recorded final snapshot cannot be trusted: {damage}")
        return False
    d = folder.net(net.name)
    if d.snapshot_at(folder.max_iter(net.name)) is None or not folder.is_rendered(net.name):
        return False
    try:
        record_done(d, folder.max_iter(net.name), weights_only=True, adopted=True)
        echo(f"{net.name}: its final snapshot was verified whole and recorded")
        return True
    except SnapshotError as e:
        echo(f"{net.name}: its final snapshot is not whole, so the net is not done: {e}")
        return False


def prepare(folder: StudyFolder, net: Net, engine: Engine, gpu=None, threads=None, echo=print) -> Attempt:
    """The next attempt for ``net``: resume from its newest whole snapshot pair, or start (from the base's weights)."""
    d = folder.net(net.name)
    if not folder.is_rendered(net.name):
        raise Error(f"net {net.name} is not rendered under {folder.root}: "
                    f"run `tf render {net.name} --root {folder.root}` first")
    max_iter = folder.study.max_iter(net)
    if folder.is_done(net.name):
        raise Error(f"net {net.name} is already done ({folder.final_snapshot(net.name).name})")
    resume = folder.resume_point(net.name, echo=echo)
    weights = None
    if resume is None and net.base:
        if not settle(folder, folder.study.net(net.base), echo):
            raise NotReady(f"net {net.name} needs its base net {net.base} to finish first (no verified final "
                           f"snapshot for iteration {folder.max_iter(net.base)} in {folder.net(net.base).path})")
        try:
            weights = d.base_file(folder.final_weights(net.base))
        except SnapshotError as e:
            raise NotReady(f"net {net.name}: its base net's final snapshot is not the one verified: {e}") from None
    pairs = pair_bytes(d)
    why = disk_room(d, 2 * pairs)
    if why:
        raise Error(f"net {net.name}: not started: {why}")
    state = d.solverstates()[resume].name if resume is not None else None
    launch = engine.prepare(d, resume=state, weights=weights, gpu=gpu, threads=threads)
    return Attempt(net, d, engine, launch, d.new_log(), max_iter, resume,
                   device=f"gpu{gpu}" if gpu is not None else "cpu", pair_bytes=pairs)


def train(folder: StudyFolder, net: Net, engine: Engine, gpu=None, echo=print, interval: float = 5.0) -> str:
    """Train one net to completion (``tf train``). SIGINT/SIGTERM make the trainer snapshot and stop."""
    if settle(folder, net, echo):
        echo(f"{net.name}: already done ({folder.final_snapshot(net.name).name})")
        return "done"
    att = prepare(folder, net, engine, gpu, echo=echo)
    how = f"resuming from iteration {att.resumed_from}" if att.resumed_from else (
        f"from {net.base}'s weights" if net.base else "from scratch")
    echo(f"{net.name}: training with {engine.name} on {att.device}, {how}; log {att.log}")
    previous = {s: signal.signal(s, lambda *_: att.stop()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        att.start()
        while True:
            try:
                rc = att.proc.wait(timeout=interval)
                break
            except subprocess.TimeoutExpired:
                att.watch_disk()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    status = att.finish(rc)
    if status == "done":
        echo(f"{net.name}: done ({att.dir.snapshot_at(att.max_iter).name})")
    elif status == "interrupted":
        states = att.dir.solverstates()
        echo((f"{net.name}: {att.stop_reason}\n" if att.stop_reason else "")
             + f"{net.name}: stopped; snapshot at iteration {max(states) if states else '-'}, `tf train` resumes it")
        if att.stop_reason:
            raise Error(f"net {net.name} is not done: {att.stop_reason}")
    else:
        raise Error(f"net {net.name}: {engine.name} failed with exit code {rc}; from {att.log}:\n"
                    + "\n".join(att.dir.read_state().get("last_lines", [])))
    return status


def score(folder: StudyFolder, net: Net, engine: Engine, weights=None, iterations=None, gpu=None, echo=print) -> int:
    """``tf test``: score a snapshot (default: the verified final one) on the net's val net with
    ``engine``, echoing what it prints; its exit code."""
    from .netspec import read_solver
    d = folder.net(net.name)
    if not folder.is_rendered(net.name):
        raise Error(f"net {net.name} is not rendered under {folder.root}")
    if weights is None:
        if not folder.is_done(net.name):
            raise Error(f"net {net.name} has no verified final snapshot: give --weights FILE")
        weights = folder.final_weights(net.name)
    solver = read_solver(d.solver)
    n = iterations or (solver["test_iter"] or [50])[0]
    cmd = engine.test_command(d.val_prototxt.name, str(Path(weights).resolve()), n, gpu)
    from . import procs
    proc = subprocess.Popen(cmd, cwd=d.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=procs.environ(), errors="replace")
    for line in proc.stdout:
        echo(line.rstrip("\n"))
    return proc.wait()


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
        final = d.snapshot_at(row["max_iter"])
        if not folder.is_rendered(net.name):
            row["state"] = "not rendered"
        elif folder.is_done(net.name):
            row["state"] = "done"
        elif folder.damage(net.name):
            row["state"], row["problem"] = "damaged", folder.damage(net.name)
        elif Lock(d).held_elsewhere():
            row["state"] = "running"
        elif state.get("status") == "failed":
            row["state"] = "failed"
        elif final is not None:
            row["state"] = "unverified"           # a final snapshot without a record: tf train checks it
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
                   cell(r["top1_best"]), r.get("engine") or "-"] + ([r.get("slurm") or "-"] if jobs else []) for r in rows],
                 ["net", "status", "iteration", "val top-1", "best", "engine"] + (["slurm"] if jobs else []))
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
