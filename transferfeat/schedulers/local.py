"""The local pool (``tf run``): one net per device, each net as soon as its own base net is done.

The pool's state is written atomically to the results folder after every change.
"""
from __future__ import annotations

import json
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
from ..study import Net
from ..training import Attempt, Lock, prepare, settle


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
        self.stop_requested = False

    def _save(self, summary: Summary, pending: list) -> None:
        state = {"updated": time.strftime("%Y-%m-%dT%H:%M:%S"), "devices": [str(d) for d in self.devices],
                 "running": {n: a.device for n, a in self.running.items()}, "pending": sorted(n.name for n in pending),
                 "done": summary.done, "skipped": summary.skipped, "failed": summary.failed,
                 "blocked": summary.blocked, "interrupted": summary.interrupted}
        atomic.write_text(self.folder.run_state, json.dumps(state, indent=1))

    def _launch(self, net: Net, device) -> None:
        att = prepare(self.folder, net, self.engine, gpu=device, threads=self.threads, echo=self.echo)
        att.start()
        self.running[net.name] = att
        how = f"resumes at {att.resumed_from}" if att.resumed_from else (f"from {net.base}" if net.base else "new")
        self.echo(f"start  {net.name} on {att.device} ({how})")
        threading.Thread(target=lambda: self.events.put((att, att.proc.wait(), device)), daemon=True).start()

    def stop(self, *_) -> None:
        if not self.stop_requested:
            self.echo("stopping: asking every running trainer to snapshot and stop")
        self.stop_requested = True
        for att in self.running.values():
            att.stop()

    def run(self) -> Summary:
        summary = Summary()
        for net in self.study.with_bases(self.nets):
            settle(self.folder, net, self.echo)
        elsewhere = {n.name for n in self.study.nets.values() if Lock(self.folder.net(n.name)).held_elsewhere()}
        plan = schedule(self.folder, self.nets, elsewhere=elsewhere)
        summary.skipped = list(plan.done)
        for name, (base, why) in plan.blocked.items():
            summary.blocked[name] = base
            self.echo(f"block  {name}: its base net {base} is {why}")
        pending = list(plan.order)
        after = dict(plan.after)
        free = list(self.devices)
        waiting = set()                       # nets (or bases) another process is training
        previous = {s: signal.signal(s, self.stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while True:
                if not self.stop_requested:
                    self._settle_elsewhere(pending, waiting, summary)
                    for net in [n for n in pending if n.name not in self.running and self._ready(after[n.name])]:
                        if not free:
                            break
                        if Lock(self.folder.net(net.name)).held_elsewhere():
                            if net.name not in waiting:
                                waiting.add(net.name)
                                self.echo(f"wait   {net.name}: running elsewhere (another tf run or job); waiting for it")
                            continue
                        device = free.pop(0)
                        try:
                            self._launch(net, device)
                        except Error as e:
                            free.insert(0, device)
                            pending.remove(net)
                            summary.failed[net.name] = {"exit_code": None, "last_lines": [str(e)]}
                            self.echo(f"FAIL   {net.name}: {e}")
                            self._block(net.name, pending, summary)
                self._save(summary, pending)
                if not self.running and (self.stop_requested or not self._anything_elsewhere(pending, after)):
                    break
                try:
                    att, rc, device = self.events.get(timeout=self.interval)
                except queue.Empty:
                    self._report()
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

    def _anything_elsewhere(self, pending: list, after: dict) -> bool:
        """Is a pending net, or the base one waits for, being trained by another process?"""
        return any(Lock(self.folder.net(n)).held_elsewhere() for net in pending
                   for n in (net.name, after.get(net.name)) if n)

    def _settle_elsewhere(self, pending: list, waiting: set, summary: Summary) -> None:
        """Nets another process was training and has finished: done, or pending here again."""
        for name in sorted(waiting):
            if not Lock(self.folder.net(name)).held_elsewhere():
                waiting.discard(name)
                net = self.study.net(name)
                if settle(self.folder, net, self.echo):
                    pending.remove(net)
                    summary.skipped.append(name)
                    self.echo(f"done   {name} (elsewhere)")

    def _finished(self, att: Attempt, rc: int, pending: list, summary: Summary) -> None:
        name = att.net.name
        del self.running[name]
        status = att.finish(rc)
        summary.attempts[name] = summary.attempts.get(name, 0) + 1
        if status == "done":
            pending.remove(att.net)
            summary.done.append(name)
            self.echo(f"done   {name} ({time.time() - att.started:.0f}s)")
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
            summary.failed[name] = {"exit_code": rc, "last_lines": att.dir.read_state().get("last_lines", [])}
            self.echo(f"FAIL   {name}: exit code {rc} after {summary.attempts[name]} attempt(s)")
            self._block(name, pending, summary)

    def _ready(self, base: Optional[str]) -> bool:
        """The base net is done (verified and recorded) and no trainer holds it any more."""
        return base is None or (base not in self.running and not Lock(self.folder.net(base)).held_elsewhere()
                                and self.folder.is_done(base))

    def _block(self, failed: str, pending: list, summary: Summary) -> None:
        """The pending nets that wait, directly or not, for ``failed``."""
        blockers = {failed}
        for net in list(pending):                 # bases come before their dependants
            if net.base in blockers:
                blockers.add(net.name)
                pending.remove(net)
                summary.blocked[net.name] = net.base
                self.echo(f"block  {net.name}: its base net {net.base} "
                          f"{'failed' if net.base == failed else 'is blocked'}")

    def _report(self) -> None:
        for name, att in sorted(self.running.items()):
            why = att.watch_disk()
            if why:
                self.echo(f"stop   {name}: {why}")
            p = att.progress()
            acc = f"{p['accuracy']:.3f}" if p["accuracy"] is not None else "-"
            eta = f"{p['eta']:.0f}s" if p["eta"] is not None else "-"
            self.echo(f"  {name:<24} {att.device:<5} iter {p['iteration']:>7}/{p['max_iter']:<7} "
                      f"val acc {acc:<6} ETA {eta}")
