"""The local pool (``tf run``): one net per device, each net as soon as its own base net is done.

The pool's state is written atomically to the results folder after every change.
"""
from __future__ import annotations

import queue
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from .. import atomic
from ..engines import Engine
from ..errors import Error
from ..folder import StudyFolder
from ..plan import schedule
from ..state import Lock, adopt, adopt_all, state_of, states
from ..study import Net
from ..training import DISK_POLL, Attempt, Busy, prepare, read_for_attempt


@dataclass
class Summary:
    done: list = field(default_factory=list)          # finished in this run
    skipped: list = field(default_factory=list)       # already done before
    failed: dict = field(default_factory=dict)        # name -> {"exit_code", "last_lines"}
    blocked: dict = field(default_factory=dict)       # name -> the net it waits for
    interrupted: list = field(default_factory=list)
    attempts: dict = field(default_factory=dict)

    def lines(self) -> list[str]:
        out = [f"\n{len(self.done)} done, {len(self.skipped)} already done, {len(self.failed)} failed, "
               f"{len(self.blocked)} blocked, {len(self.interrupted)} interrupted"]
        out += [f"failed {name} (exit code {f['exit_code']}):\n    " + "\n    ".join(f["last_lines"])
                for name, f in self.failed.items()]
        return out + [f"blocked {name}: waits for {base}" for name, base in self.blocked.items()]


class Pool:
    """Run nets on devices (GPU indices, or None for a CPU slot), one net per device."""

    def __init__(self, folder: StudyFolder, nets: list[Net], devices: list, engine: Engine, retries: int = 1,
                 threads: Optional[int] = None, echo: Callable = print, interval: float = 5.0):
        self.folder, self.study, self.nets = folder, folder.study, nets
        self.devices, self.engine, self.retries = list(devices), engine, retries
        self.threads, self.echo, self.interval = threads, echo, interval
        self.events: queue.Queue = queue.Queue()
        self.running: dict[str, Attempt] = {}
        self.done: set = set()                # nets known done: before this run, here, or elsewhere
        self.waiting: set = set()             # nets another process is training, waited for
        self.stop_requested = False

    def _save(self, summary: Summary, pending: list) -> None:
        state = {"updated": time.strftime("%Y-%m-%dT%H:%M:%S"), "devices": [str(d) for d in self.devices],
                 "running": {n: a.device for n, a in self.running.items()}, "pending": sorted(n.name for n in pending),
                 "done": summary.done, "skipped": summary.skipped, "failed": summary.failed,
                 "blocked": summary.blocked, "interrupted": summary.interrupted}
        atomic.write_json(self.folder.run_state, state)

    def _launch(self, net: Net, device) -> bool:
        """Start ``net`` on ``device`` from its state, read now; False when it runs elsewhere after all."""
        state, base = read_for_attempt(self.folder, net, self.echo)
        if state.kind == "running":
            if net.name not in self.waiting:
                self.waiting.add(net.name)
                self.echo(f"wait   {net.name}: running elsewhere (another tf run or job); waiting for it")
            return False
        att = prepare(self.folder, net, self.engine, state, base, gpu=device, threads=self.threads)
        try:
            att.start()
        except Busy:                                # another run took it between the read and the lock
            self.waiting.add(net.name)
            self.echo(f"wait   {net.name}: taken by another tf run or job; waiting for it")
            return False
        self.running[net.name] = att
        how = f"resumes at {att.resumed_from}" if att.resumed_from else (f"from {net.base}" if net.base else "new")
        self.echo(f"start  {net.name} on {att.device} ({how})")
        threading.Thread(target=lambda: self.events.put((att, att.proc.wait(), device)), daemon=True).start()
        return True

    def stop(self, *_) -> None:
        if not self.stop_requested:
            self.echo("stopping: asking every running trainer to snapshot and stop")
        self.stop_requested = True
        for att in self.running.values():
            att.stop()

    def run(self) -> Summary:
        summary = Summary()
        found = adopt_all(self.folder, states(self.folder, self.nets), self.echo)
        plan = schedule(self.study, self.nets, found)
        self.done = {n for n, s in found.items() if s.done}
        needed = {n.name for n in plan.order} | {b for b in plan.after.values() if b}
        self.waiting = {n for n, s in found.items() if s.kind == "running" and n in needed}
        for name in sorted(self.waiting):
            self.echo(f"wait   {name}: running elsewhere (another tf run or job); waiting for it")
        summary.skipped = list(plan.done)
        for name, (base, why) in plan.blocked.items():
            summary.blocked[name] = base
            self.echo(f"block  {name}: its base net {base} is {why}")
        pending = list(plan.order)
        after = dict(plan.after)
        free = list(self.devices)
        reported = time.time()
        previous = {s: signal.signal(s, self.stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while True:
                if not self.stop_requested:
                    self._settle_elsewhere(pending, summary)
                    for net in [n for n in pending if n.name not in self.running and n.name not in self.waiting
                                and self._ready(after[n.name])]:
                        if not free:
                            break
                        device = free.pop(0)
                        try:
                            started = self._launch(net, device)
                        except Error as e:
                            started = False
                            pending.remove(net)
                            summary.failed[net.name] = {"exit_code": None, "last_lines": [str(e)]}
                            self.echo(f"FAIL   {net.name}: {e}")
                            self._block(net.name, pending, summary)
                        if not started:
                            free.insert(0, device)
                self._save(summary, pending)
                if not self.running and (self.stop_requested or not self.waiting):
                    break
                try:
                    att, rc, device = self.events.get(timeout=min(DISK_POLL, self.interval))
                except queue.Empty:
                    for name, running in sorted(self.running.items()):
                        why = running.watch_disk()
                        if why:
                            self.echo(f"stop   {name}: {why}")
                    if time.time() - reported >= self.interval:
                        self._report()
                        reported = time.time()
                    continue
                free.append(device)
                self._finished(att, rc, pending, summary)
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
            self._save(summary, pending)
        for net in pending:
            if net.name not in summary.blocked and net.name not in summary.interrupted:
                summary.interrupted.append(net.name)
        return summary

    def _settle_elsewhere(self, pending: list, summary: Summary) -> None:
        """Nets another process was training and has let go of: done, or pending here again (their
        dependants blocked when such a net is no longer one of ours to train)."""
        for name in sorted(self.waiting):
            if Lock(self.folder.net(name)).held_elsewhere():
                continue
            self.waiting.discard(name)
            net = self.study.net(name)
            state = adopt(self.folder, net, state_of(self.folder, net), self.echo)
            if state.done:
                self.done.add(name)
                if net in pending:
                    pending.remove(net)
                summary.skipped.append(name)
                self.echo(f"done   {name} (elsewhere)")
            elif net not in pending:
                self.echo(f"block  dependants of {name}: it stopped elsewhere without finishing ({state.phrase()})")
                self._block(name, pending, summary)

    def _finished(self, att: Attempt, rc: int, pending: list, summary: Summary) -> None:
        name = att.net.name
        del self.running[name]
        status = att.finish(rc)
        summary.attempts[name] = summary.attempts.get(name, 0) + 1
        if status == "done":
            pending.remove(att.net)
            self.done.add(name)
            summary.done.append(name)
            self.echo(f"done   {name} ({time.time() - att.started:.0f}s)")
        elif status == "diverged":
            pending.remove(att.net)
            summary.failed[name] = {"exit_code": rc, "last_lines": att.finish_lines}
            self.echo(f"FAIL   {name}: {att.diverged} (not retried: a rerun resumes from before it)")
            self._block(name, pending, summary, "diverged")
        elif status == "interrupted" or self.stop_requested:
            pending.remove(att.net)
            summary.interrupted.append(name)
            self.echo(f"stop   {name} (snapshot kept; a new run resumes it)"
                      + (f": {att.stop_reason}" if att.stop_reason else ""))
        elif summary.attempts[name] <= self.retries:
            self.echo(f"crash  {name}: exit code {rc}; retry {summary.attempts[name]} of {self.retries} "
                      "from its latest whole snapshot")
        else:
            pending.remove(att.net)
            summary.failed[name] = {"exit_code": rc, "last_lines": att.finish_lines}
            self.echo(f"FAIL   {name}: exit code {rc} after {summary.attempts[name]} attempt(s)")
            self._block(name, pending, summary)

    def _ready(self, base: Optional[str]) -> bool:
        """The base net is done (verified and recorded)."""
        return base is None or base in self.done

    def _block(self, failed: str, pending: list, summary: Summary, how: str = "failed") -> None:
        """The pending nets that wait, directly or not, for ``failed``."""
        blockers = {failed}
        for net in list(pending):                 # bases come before their dependants
            if net.base in blockers:
                blockers.add(net.name)
                pending.remove(net)
                summary.blocked[net.name] = net.base
                self.echo(f"block  {net.name}: its base net {net.base} "
                          f"{how if net.base == failed else 'is blocked'}")

    def _report(self) -> None:
        """Each running net's progress (a net whose log shows it diverging is stopped)."""
        for name, att in sorted(self.running.items()):
            p = att.progress()
            acc = f"{p['accuracy']:.3f}" if p["accuracy"] is not None else "-"
            eta = f"{p['eta']:.0f}s" if p["eta"] is not None else "-"
            self.echo(f"  {name:<24} {att.device:<5} iter {p['iteration']:>7}/{p['max_iter']:<7} "
                      f"val acc {acc:<6} ETA {eta}")
