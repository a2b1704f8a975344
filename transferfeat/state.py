"""A net's state, read from its folder once: the only code that knows what the files mean.

``state_of`` looks at a net's folder one time — its listing, its completion record, its lock, its
last attempt's record, and (only when it could resume) its snapshot pairs — and answers with a
``NetState``: not rendered, done, damaged, running (elsewhere), failed, unverified, blocked on its
base net, or pending (resuming at N). ``states`` does so for many nets, each base net before its
dependants, so a dependant's "blocked" comes from its base's state, not from another read.
Every consumer asks here: ``tf status``, the planner, the local pool, SLURM submission, the report.

Reading never writes. Recording a final snapshot that has no completion record yet (``adopt``) is
an action the callers take explicitly.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional

from . import atomic
from .folder import NetFolder, StudyFolder
from .health import divergence
from .locks import FileLock
from .snapshots import SnapshotError, check_record, read_record, record_done, resumable
from .study import Net

KINDS = ("not rendered", "done", "damaged", "running", "diverged", "failed", "unverified", "blocked", "pending",
         "logs only")                     # a folder of logs without tf's files (the authors', logs copied in)


@dataclass(frozen=True)
class NetState:
    """What a net's folder says. ``final``: the verified final caffemodel (done); ``record``: its
    completion record; ``problem``: why it is damaged or failed; ``resumes_at``: the newest whole
    snapshot pair a new attempt would resume from, and ``resume_file`` its solver state; ``attempt``:
    the last attempt's record."""
    name: str
    kind: str
    final: Optional[Path] = None
    record: dict = field(default_factory=dict)
    problem: Optional[str] = None
    blocked_on: Optional[str] = None
    resumes_at: Optional[int] = None
    attempt: dict = field(default_factory=dict)
    resume_file: Optional[Path] = None

    @property
    def done(self) -> bool:
        return self.kind == "done"

    def phrase(self) -> str:
        """One phrase: "done", "blocked on half0A", "pending (resumes at 20)", "diverged at 1200"."""
        if self.kind == "diverged" and self.attempt.get("diverged_at") is not None:
            return f"diverged at {self.attempt['diverged_at']}"
        if self.blocked_on:
            return f"{self.kind} on {self.blocked_on}"
        if self.resumes_at is not None and self.kind == "pending":
            return f"{self.kind} (resumes at {self.resumes_at})"
        return self.kind


class Lock(FileLock):
    """The lock on a net's folder, held while a trainer works on it (by the trainer too)."""

    def __init__(self, netdir: NetFolder):
        super().__init__(netdir.lock)


def read_attempt(netdir: NetFolder) -> dict:
    """The record of the net's last training attempt ({} when there was none)."""
    return atomic.read_json(netdir.attempt_record)


def write_attempt(netdir: NetFolder, **fields) -> dict:
    """Update the last attempt's record with ``fields``, atomically."""
    record = {**read_attempt(netdir), **fields, "updated": time.strftime("%Y-%m-%dT%H:%M:%S")}
    atomic.write_json(netdir.attempt_record, record)
    return record


def state_of(folder: StudyFolder, net: Net, base: Optional[NetState] = None, echo=None) -> NetState:
    """``net``'s state, its folder read once. ``base``: its base net's state (read here when not
    given); ``echo`` hears about each snapshot pair passed over on the way to the resume point."""
    d = folder.net(net.name)
    if not d.solver.is_file():
        return NetState(net.name, "not rendered")
    max_iter = folder.study.max_iter(net)
    record, attempt, damage = read_record(d), read_attempt(d), None
    if record:
        try:
            return NetState(net.name, "done", final=check_record(d, max_iter, record), record=record, attempt=attempt)
        except SnapshotError as e:
            damage = str(e)
    if Lock(d).held_elsewhere():
        return NetState(net.name, "running", attempt=attempt)
    listing = d.scan()
    resume = resumable(d, listing, exclude=attempt.get("bad_snapshots", ()), echo=echo)
    at = {"resumes_at": resume, "resume_file": listing.solverstates[resume] if resume is not None else None}
    if damage:
        return NetState(net.name, "damaged", record=record, problem=damage, attempt=attempt, **at)
    if attempt.get("status") in ("failed", "diverged"):
        return NetState(net.name, attempt["status"], problem="\n".join(attempt.get("last_lines", [])),
                        attempt=attempt, **at)
    if max_iter in listing.snapshots:
        return NetState(net.name, "unverified", attempt=attempt, **at)
    if resume is None and net.base:
        base = base or state_of(folder, folder.study.net(net.base))
        if not base.done:
            return NetState(net.name, "blocked", blocked_on=net.base, attempt=attempt)
    return NetState(net.name, "pending", attempt=attempt, **at)


def states(folder: StudyFolder, nets, echo=None) -> dict[str, NetState]:
    """The state of each of ``nets`` and of the base nets they need, each folder read once."""
    out: dict[str, NetState] = {}
    for net in folder.study.with_bases(nets):               # base nets before their dependants
        out[net.name] = state_of(folder, net, out.get(net.base) if net.base else None, echo)
    return out


def adopt(folder: StudyFolder, net: Net, state: NetState, echo=print) -> NetState:
    """Verify an unverified final snapshot (written before tf kept records, by hand, or by a trainer
    tf did not see finish) and write its completion record: the net's new state."""
    if state.kind != "unverified":
        return state
    d = folder.net(net.name)
    try:
        record_done(d, folder.study.max_iter(net), weights_only=True, adopted=True)
    except SnapshotError as e:
        echo(f"{net.name}: its final snapshot is not whole, so the net is not done: {e}")
        return replace(state, problem=f"the final snapshot is not whole: {e}")
    echo(f"{net.name}: its final snapshot was verified whole and recorded")
    return state_of(folder, net)


def adopt_all(folder: StudyFolder, found: dict, echo=print) -> dict:
    """``found`` (from ``states``) with every unverified final snapshot verified and recorded, and
    the dependants of a net that became done read again."""
    changed = {n for n, s in found.items() if s.kind == "unverified"}
    if not changed:
        return found
    out = dict(found)
    for name in changed:
        out[name] = adopt(folder, folder.study.net(name), found[name], echo)
    for net in folder.study.with_bases([folder.study.net(n) for n in found]):
        if net.base in changed and out[net.base].done and out[net.name].kind == "blocked":
            out[net.name] = state_of(folder, net, out[net.base])
    return out


# --------------------------------------------------------------------------- `tf status`

def status_rows(folder: StudyFolder, nets: list[Net], logs: dict, found: dict = None) -> list[dict]:
    """Every selected net's state with its progress from ``logs`` (net -> NetLog)."""
    found = found or states(folder, nets)
    rows = []
    for net in nets:
        s, log = found[net.name], logs.get(net.name)
        d = divergence(log, folder.study.config.datasets.classes) if log else None
        if d and s.kind not in ("running", "diverged"):        # a log tf did not watch being written
            s = replace(s, kind="diverged", problem=str(d), attempt={**s.attempt, "diverged_at": d.iteration})
        max_iter = folder.study.max_iter(net)
        phrase = s.phrase()
        if log and s.kind in ("not rendered", "pending", "blocked") and s.resumes_at is None:
            # logs without a snapshot here (the authors' folder, logs copied in): say what the logs say
            s = replace(s, kind="logs only")
            phrase = "trained (logs only)" if log.iterations >= max_iter else f"logged to {log.iterations} (logs only)"
        elif not log and s.kind == "not rendered":
            phrase = "no log (not rendered)"
        acc = log.accuracy if log else {}
        rows.append({"name": net.name, "state": s.kind, "status": phrase, "iteration": log.iterations if log else 0,
                     "max_iter": max_iter, "top1_latest": list(acc.values())[-1] if acc else None,
                     "top1_best": max(acc.values()) if acc else None, "exit_code": s.attempt.get("exit_code"),
                     "engine": s.attempt.get("engine") or s.record.get("engine"), "blocked_on": s.blocked_on,
                     "resumes_at": s.resumes_at, **({"problem": s.problem} if s.problem else {})})
    return rows


def status_text(rows: list[dict]) -> str:
    """``status_rows`` as a table, then the count of each state."""
    from .formats import cell, table
    jobs = any(r.get("slurm") for r in rows)
    text = table([[r["name"], r["status"], f"{r['iteration']}/{r['max_iter']}", cell(r["top1_latest"]),
                   cell(r["top1_best"]), r.get("engine") or "-"] + ([r.get("slurm") or "-"] if jobs else []) for r in rows],
                 ["net", "status", "iteration", "val top-1", "best", "engine"] + (["slurm"] if jobs else []))
    counts = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    return text + "\n" + ", ".join(f"{v} {k}" for k, v in counts.items())
