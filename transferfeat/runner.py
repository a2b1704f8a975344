"""Training with real Caffe: one net (``tf train``), a local pool that follows each net's own
dependencies (``tf run``), and every net's status (``tf status``).

A net is done only when its final snapshot exists. Each attempt logs to its own file in the net's
folder; an interrupted or crashed net resumes from its latest ``.solverstate``. Per-net state lives
in ``<net>/tf-state.json`` and the pool's in ``<root>/tf-run.json``, both written atomically.
"""
from __future__ import annotations

import fcntl
import json
import os
import queue
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from . import atomic
from .caffe import find_tool, train_args
from .errors import Error
from .logs import merge, parse_segment
from .netdir import SOLVER, NetDir
from .study import Net, Study

LOCK = ".tf-train.lock"
RUN_STATE = "tf-run.json"


class NotReady(Error):
    """A net that cannot start yet (its base net is not finished)."""


def read_state(d: NetDir) -> dict:
    try:
        return json.loads(d.state.read_text())
    except (OSError, ValueError):
        return {}


def write_state(d: NetDir, **fields) -> dict:
    state = {**read_state(d), **fields, "updated": time.strftime("%Y-%m-%dT%H:%M:%S")}
    atomic.write_text(d.state, json.dumps(state, indent=1))
    return state


def tail(path, n: int = 10) -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            return f.read().decode(errors="replace").splitlines()[-n:]
    except OSError:
        return []


def is_done(study: Study, root, name: str) -> bool:
    return NetDir(root, name).final_snapshot(study.max_iter(study.net(name))) is not None


class Lock:
    """An exclusive lock on a net's folder, held while Caffe trains it."""

    def __init__(self, d: NetDir):
        self.path = d.path / LOCK
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
    """One ``caffe train`` run of one net."""
    net: Net
    dir: NetDir
    args: list
    log: Path
    max_iter: int
    resumed_from: Optional[int] = None
    device: Optional[str] = None
    proc: Optional[subprocess.Popen] = None
    lock: Optional[Lock] = None
    started: float = 0.0
    stopping: bool = False

    def start(self, env=None) -> None:
        self.lock = Lock(self.dir)
        if not self.lock.acquire():
            raise Error(f"net {self.net.name} is being trained by another process (lock {self.lock.path})")
        write_state(self.dir, status="running", pid=os.getpid(), host=socket.gethostname(), log=self.log.name,
                    device=self.device, resumed_from=self.resumed_from)
        try:
            with open(self.log, "wb") as out:
                # Caffe holds the folder's lock too (so an orphan still counts as running), and gets
                # SIGINT (snapshot and stop) if tf dies.
                self.proc = subprocess.Popen(self.args, cwd=self.dir.path, stdout=out, stderr=subprocess.STDOUT,
                                             env=env, start_new_session=True, pass_fds=(self.lock.fd,),
                                             preexec_fn=_die_with_parent)
        except OSError as e:
            self.lock.release()
            write_state(self.dir, status="failed", exit_code=None, last_lines=[f"cannot start caffe: {e}"])
            raise Error(f"net {self.net.name}: cannot start {self.args[0]}: {e.strerror}") from None
        self.started = time.time()

    def stop(self) -> None:
        """Ask Caffe to snapshot and stop (SIGINT with -sigint_effect stop)."""
        if self.proc and self.proc.poll() is None and not self.stopping:
            self.stopping = True
            self.proc.send_signal(signal.SIGINT)

    def finish(self, rc: int) -> str:
        """Record the outcome: 'done', 'interrupted' (stopped cleanly) or 'failed'."""
        done = self.dir.final_snapshot(self.max_iter) is not None
        if done:
            status = "done"
        elif self.stopping or rc == 0:
            status = "interrupted"
        else:
            status = "failed"
        write_state(self.dir, status=status, exit_code=rc, last_lines=[] if done else tail(self.log),
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


try:                                   # looked up once here: the child may not allocate after fork
    import ctypes
    _libc = ctypes.CDLL(None, use_errno=True)
    _prctl, _signal = _libc.prctl, _libc.signal
except (OSError, AttributeError):
    _prctl = _signal = None


def _die_with_parent() -> None:
    """In the child, before exec: SIGINT when the parent dies (prctl PR_SET_PDEATHSIG), and SIGTERM
    ignored, so that a SLURM job's SIGTERM reaches Caffe only as tf's SIGINT: snapshot, then stop."""
    if _prctl is not None:
        _prctl(1, int(signal.SIGINT))
        _signal(int(signal.SIGTERM), 1)           # SIG_IGN


def prepare(study: Study, root, net: Net, caffe=None, gpu=None) -> Attempt:
    """The next attempt for ``net``: resume from its latest solverstate, or start (from the base's weights)."""
    d = NetDir(root, net.name)
    if not d.solver.is_file():
        raise Error(f"net {net.name} is not rendered under {root}: run `tf render {net.name} --out {root}` first")
    max_iter = study.max_iter(net)
    if d.final_snapshot(max_iter):
        raise Error(f"net {net.name} is already done ({d.final_snapshot(max_iter).name})")
    states = d.solverstates()
    resume = d.latest_resumable()
    weights = None
    if resume is None and net.base:
        base = study.net(net.base)
        final = NetDir(root, base.name).final_snapshot(study.max_iter(base))
        if final is None:
            raise NotReady(f"net {net.name} needs its base net {base.name} to finish first "
                           f"(no final snapshot for iteration {study.max_iter(base)} in {NetDir(root, base.name).path})")
        weights = f"basenet/{final.name}"
    tool = find_tool("caffe", caffe)
    args = train_args(tool, SOLVER, gpu, snapshot=states[resume].name if resume else None, weights=weights)
    return Attempt(net, d, args, d.new_log(), max_iter, resume, device=f"gpu{gpu}" if gpu is not None else "cpu")


def job_env(threads: Optional[int]) -> dict:
    env = dict(os.environ)
    if threads:
        env["OPENBLAS_NUM_THREADS"] = env["OMP_NUM_THREADS"] = str(threads)
    return env


def train(study: Study, root, net: Net, caffe=None, gpu=None, echo=print) -> str:
    """Train one net to completion (``tf train``). SIGINT/SIGTERM make Caffe snapshot and stop."""
    final = NetDir(root, net.name).final_snapshot(study.max_iter(net))
    if final:
        echo(f"{net.name}: already done ({final.name})")
        return "done"
    att = prepare(study, root, net, caffe, gpu)
    how = f"resuming from iteration {att.resumed_from}" if att.resumed_from else (
        f"from {net.base}'s weights" if net.base else "from scratch")
    echo(f"{net.name}: training on {att.device}, {how}; log {att.log}")
    att.start(job_env(None))
    previous = {s: signal.signal(s, lambda *_: att.stop()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
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
        raise Error(f"net {net.name}: caffe failed with exit code {rc}; last lines of {att.log}:\n"
                    + "\n".join(tail(att.log)))
    return status


# --------------------------------------------------------------------------- the local pool

@dataclass
class Summary:
    done: list = field(default_factory=list)          # finished in this run
    skipped: list = field(default_factory=list)       # already done before
    failed: dict = field(default_factory=dict)        # name -> {"exit_code", "last_lines"}
    blocked: dict = field(default_factory=dict)       # name -> the net it waits for
    interrupted: list = field(default_factory=list)
    attempts: dict = field(default_factory=dict)


class Pool:
    """Run nets on devices, one net per device, each net as soon as its own base net is done."""

    def __init__(self, study: Study, root, nets: list[Net], devices: list, caffe=None, retries: int = 1,
                 threads: Optional[int] = None, echo: Callable = print, interval: float = 5.0):
        self.study, self.root, self.nets = study, Path(root), nets
        self.devices, self.caffe, self.retries = list(devices), caffe, retries
        self.threads, self.echo, self.interval = threads, echo, interval
        self.events: queue.Queue = queue.Queue()
        self.running: dict[str, Attempt] = {}
        self.stop_requested = False

    def _priority(self, net: Net, pending: set) -> tuple:
        waiting = sum(1 for n in self.study.dependants(net.name) if n.name in pending)
        return (-waiting, list(self.study.nets).index(net.name))

    def _save(self, summary: Summary, pending: set) -> None:
        state = {"updated": time.strftime("%Y-%m-%dT%H:%M:%S"), "devices": [str(d) for d in self.devices],
                 "running": {n: a.device for n, a in self.running.items()}, "pending": sorted(pending),
                 "done": summary.done, "skipped": summary.skipped, "failed": summary.failed,
                 "blocked": summary.blocked, "interrupted": summary.interrupted}
        atomic.write_text(self.root / RUN_STATE, json.dumps(state, indent=1))

    def _launch(self, net: Net, device) -> None:
        att = prepare(self.study, self.root, net, self.caffe, gpu=device)
        att.start(job_env(self.threads))
        self.running[net.name] = att
        how = f"resumes at {att.resumed_from}" if att.resumed_from else (f"from {net.base}" if net.base else "new")
        self.echo(f"start  {net.name} on {att.device} ({how})")
        threading.Thread(target=lambda: self.events.put((att, att.proc.wait(), device)), daemon=True).start()

    def stop(self, *_):
        self.stop_requested = True
        for att in self.running.values():
            att.stop()

    def run(self) -> Summary:
        summary = Summary()
        selected = {n.name for n in self.nets}
        pending = set()
        for net in self.nets:
            if is_done(self.study, self.root, net.name):
                summary.skipped.append(net.name)
            else:
                pending.add(net.name)
        free = list(self.devices)
        previous = signal.signal(signal.SIGTERM, self.stop)
        try:
            while True:
                if not self.stop_requested:
                    self._block(pending, selected, summary)
                    ready = [self.study.net(n) for n in pending if n not in self.running and self._ready(n)]
                    ready.sort(key=lambda n: self._priority(n, pending))
                    while free and ready:
                        net = ready.pop(0)
                        device = free.pop(0)
                        try:
                            self._launch(net, device)
                        except Error as e:
                            free.insert(0, device)
                            pending.discard(net.name)
                            summary.failed[net.name] = {"exit_code": None, "last_lines": [str(e)]}
                            self.echo(f"FAIL   {net.name}: {e}")
                self._save(summary, pending)
                if not self.running:
                    break
                try:
                    att, rc, device = self.events.get(timeout=self.interval)
                except queue.Empty:
                    self._report()
                    continue
                except KeyboardInterrupt:
                    self.echo("interrupted: asking every running caffe to snapshot and stop")
                    self.stop()
                    continue
                free.append(device)
                name = att.net.name
                del self.running[name]
                status = att.finish(rc)
                summary.attempts[name] = summary.attempts.get(name, 0) + 1
                if status == "done":
                    pending.discard(name)
                    summary.done.append(name)
                    self.echo(f"done   {name} ({time.time() - att.started:.0f}s)")
                elif status == "interrupted" or self.stop_requested:
                    pending.discard(name)
                    summary.interrupted.append(name)
                    self.echo(f"stop   {name} (snapshot kept; a new run resumes it)")
                elif summary.attempts[name] <= self.retries:
                    self.echo(f"crash  {name}: exit code {rc}; retry {summary.attempts[name]} of {self.retries} "
                              "from its latest snapshot")
                else:
                    pending.discard(name)
                    summary.failed[name] = {"exit_code": rc, "last_lines": tail(att.log)}
                    self.echo(f"FAIL   {name}: exit code {rc} after {summary.attempts[name]} attempt(s)")
        except KeyboardInterrupt:
            self.stop()
            for att in list(self.running.values()):
                att.finish(att.proc.wait())
                summary.interrupted.append(att.net.name)
            self.running.clear()
        finally:
            signal.signal(signal.SIGTERM, previous)
            self._save(summary, pending)
        for name in sorted(pending - set(summary.blocked) - set(summary.interrupted)):
            summary.interrupted.append(name)
        return summary

    def _ready(self, name: str) -> bool:
        """The base net is done: its final snapshot exists and its Caffe has exited (so the file is whole)."""
        net = self.study.net(name)
        return not net.base or (net.base not in self.running and is_done(self.study, self.root, net.base))

    def _block(self, pending: set, selected: set, summary: Summary) -> None:
        """Nets that can never start in this run: their base failed, or is neither selected nor done."""
        changed = True
        while changed:
            changed = False
            for name in sorted(pending):
                base = self.study.net(name).base
                if not base or is_done(self.study, self.root, base):
                    continue
                if base in summary.failed or base in summary.blocked or (base not in selected and base not in pending):
                    why = "failed" if base in summary.failed else ("blocked" if base in summary.blocked
                                                                    else "not selected and not done")
                    summary.blocked[name] = base
                    pending.discard(name)
                    self.echo(f"block  {name}: its base net {base} is {why}")
                    changed = True

    def _report(self) -> None:
        for name, att in sorted(self.running.items()):
            p = att.progress()
            acc = f"{p['accuracy']:.3f}" if p["accuracy"] is not None else "-"
            eta = f"{p['eta']:.0f}s" if p["eta"] is not None else "-"
            self.echo(f"  {name:<24} {att.device:<5} iter {p['iteration']:>7}/{p['max_iter']:<7} "
                      f"val acc {acc:<6} ETA {eta}")


# --------------------------------------------------------------------------- status

def status(study: Study, root, nets: list[Net], logs: dict) -> list[dict]:
    """Every selected net: pending, blocked on X, running, done, failed or interrupted, with progress."""
    rows = []
    for net in nets:
        d = NetDir(root, net.name)
        state = read_state(d)
        log = logs.get(net.name)
        acc = log.accuracy if log else {}
        row = {"name": net.name, "iteration": log.iterations if log else 0, "max_iter": study.max_iter(net),
               "top1_latest": list(acc.values())[-1] if acc else None,
               "top1_best": max(acc.values()) if acc else None, "exit_code": state.get("exit_code")}
        if not d.solver.is_file():
            row["status"] = "not rendered"
        elif d.final_snapshot(row["max_iter"]):
            row["status"] = "done"
        elif Lock(d).held_elsewhere():
            row["status"] = "running"
        elif state.get("status") == "failed":
            row["status"] = "failed"
        elif net.base and not is_done(study, root, net.base):
            row["status"] = f"blocked on {net.base}"
        elif d.solverstates():
            row["status"] = f"pending (resumes at {max(d.solverstates())})"
        else:
            row["status"] = "pending"
        rows.append(row)
    return rows
