"""The one planning function (which nets to train, in which order, each after which net), and
schedule estimates for the study's dependency DAG on N GPUs.

``schedule`` serves every scheduler (the local pool, SLURM), from the nets' states (state.py). The estimates compare two policies:
per-net dependencies (a transfer net starts as soon as its own base net is done) and the original
README's block barriers (all of block one, then all of block two).
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

from .errors import Error
from .study import Net, Study


@dataclass
class Plan:
    order: list = field(default_factory=list)       # nets to train: bases first, most-needed first
    after: dict = field(default_factory=dict)       # net name -> the net it waits for (None: none)
    done: list = field(default_factory=list)        # already done
    blocked: dict = field(default_factory=dict)     # net name -> (its base net, why)


def schedule(study: Study, nets: list[Net], found: dict, queued=frozenset()) -> Plan:
    """Plan ``nets`` from their states ``found`` (state.states: the nets and their base nets). A net
    waits for its base net when that is selected, being trained by something else (a running state,
    or ``queued`` as a job) and not done; it is blocked when its base is none of these, or blocked
    itself. A net that resumes from its own snapshot needs no base."""
    elsewhere = {n for n, s in found.items() if s.kind == "running"} | set(queued)
    selected = {n.name for n in nets}
    plan = Plan()
    for net in study.with_bases(nets):                  # catalog order: bases before dependants
        if net.name not in selected:
            continue
        if found[net.name].done:
            plan.done.append(net.name)
            continue
        base = net.base
        if base is None or found[base].done or found[net.name].resumes_at is not None:
            plan.after[net.name] = None
        elif base in plan.blocked:
            plan.blocked[net.name] = (base, "blocked")
            continue
        elif base in plan.after or base in elsewhere:
            plan.after[net.name] = base
        else:
            trouble = found[base].kind in ("diverged", "failed", "damaged")
            plan.blocked[net.name] = (base, found[base].phrase() if trouble else "neither done, selected nor running elsewhere")
            continue
        plan.order.append(net)
    need = {n.name: 0 for n in plan.order}
    for n in plan.order:
        if plan.after[n.name] in need:
            need[plan.after[n.name]] += 1
    rank = {n: i for i, n in enumerate(study.nets)}
    plan.order.sort(key=lambda n: (-need[n.name], rank[n.name]))
    plan.order = _bases_first(plan.order, plan.after)
    return plan


def _bases_first(nets: list[Net], after: dict) -> list[Net]:
    """``nets`` in their order, except that a net never comes before the net it waits for."""
    out, placed = [], set()
    names = {n.name for n in nets}
    waiting = list(nets)
    while waiting:
        rest = [n for n in waiting if after.get(n.name) in names and after[n.name] not in placed]
        for n in waiting:
            if n not in rest:
                out.append(n)
                placed.add(n.name)
        waiting = rest
    return out


@dataclass(frozen=True)
class Schedule:
    gpus: int
    makespan: float            # days
    busy: float                # GPU-days of work

    @property
    def utilisation(self) -> float:
        return self.busy / (self.gpus * self.makespan) if self.makespan else 0.0


def durations(study: Study, nets: list[Net], days_per_net: float = None, images_per_second: float = None) -> dict[str, float]:
    """Days per net: its training images at ``images_per_second``, or ``days_per_net`` for the longest
    schedule, scaled by each net's iterations."""
    for what, v in (("images per second", images_per_second), ("days per net", days_per_net)):
        if v is not None and not (math.isfinite(v) and v > 0):
            raise Error(f"{what}: {v!r} is not a positive finite number")
    if images_per_second:
        batch = study.config.input.train_batch
        return {n.name: study.max_iter(n) * batch / images_per_second / 86400 for n in nets}
    longest = max(study.max_iter(n) for n in nets)
    return {n.name: days_per_net * study.max_iter(n) / longest for n in nets}


def training_images(study: Study, nets: list[Net]) -> int:
    """Images the nets' training passes take (iterations × training batch)."""
    return sum(study.max_iter(n) for n in nets) * study.config.input.train_batch


def _critical(nets: list[Net], days: dict[str, float]) -> dict[str, float]:
    """Length of the longest chain from each net to the end (priority: longest first)."""
    tail: dict[str, float] = {}
    for net in reversed(nets):                      # the catalog lists base nets before dependants
        after = [tail[m.name] for m in nets if net.name in m.requires and m.name in tail]
        tail[net.name] = days[net.name] + max(after, default=0.0)
    return tail


def simulate(nets: list[Net], days: dict[str, float], gpus: int, barrier: bool) -> Schedule:
    """List scheduling: whenever a GPU is free, start the ready net with the longest remaining chain."""
    if not nets:
        return Schedule(gpus, 0.0, 0.0)
    names = {n.name for n in nets}
    reqs = {n.name: [r for r in n.requires if r in names] for n in nets}
    block_one = {n.name for n in nets if not reqs[n.name]}
    prio = _critical(nets, days)
    order = {n.name: i for i, n in enumerate(nets)}
    done: set[str] = set()
    waiting = [n.name for n in nets]
    running: list[tuple[float, str]] = []
    now, free = 0.0, gpus
    while waiting or running:
        ready = [n for n in waiting if all(r in done for r in reqs[n])
                 and not (barrier and n not in block_one and not block_one <= done)]
        ready.sort(key=lambda n: (-prio[n], order[n]))
        for n in ready[:free]:
            waiting.remove(n)
            heapq.heappush(running, (now + days[n], n))
            free -= 1
        now, n = heapq.heappop(running)
        done.add(n)
        free += 1
        while running and running[0][0] == now:
            done.add(heapq.heappop(running)[1])
            free += 1
    return Schedule(gpus, now, sum(days.values()))


def estimate(study: Study, nets: list[Net], gpus: list[int], days_per_net: float = None,
             images_per_second: float = None) -> list[tuple[Schedule, Schedule]]:
    """(per-net dependencies, block barriers) for each GPU count."""
    days = durations(study, nets, days_per_net, images_per_second)
    return [(simulate(nets, days, g, False), simulate(nets, days, g, True)) for g in gpus]


def describe(study: Study, nets: list[Net], result, speed: str) -> tuple[dict, list[str]]:
    """``estimate``'s answer as a JSON document and as text lines (the DAG, the cost, then a table);
    ``speed`` says what the estimate assumed."""
    from .formats import table
    dag = {n.name: list(n.requires) for n in nets}
    images = training_images(study, nets)
    gpu_hours = result[0][0].busy * 24 if result else 0.0
    data = {"requires": dag, "speed": speed, "training_images": images, "gpu_hours": gpu_hours, "schedules": [
        {"gpus": a.gpus, "per_net": {"makespan_days": a.makespan, "utilisation": a.utilisation},
         "blocks": {"makespan_days": b.makespan, "utilisation": b.utilisation}} for a, b in result]}
    roots = [n for n in nets if not n.requires]
    lines = [f"{len(nets)} nets: {len(roots)} with no prerequisite (block one), {len(nets) - len(roots)} after a base net"]
    for base in roots:
        deps = [n.name for n in study.dependants(base.name) if n.name in dag]
        if deps:
            lines.append(f"  {base.name} <- {len(deps)}: {' '.join(deps)}")
    lines += ["", f"{images / 1e9:.2f} G training images ({speed}): {gpu_hours:,.0f} GPU-hours; wall days on N GPUs:"]
    rows = [[a.gpus, f"{a.makespan:.1f}", f"{a.utilisation:.0%}", f"{b.makespan:.1f}", f"{b.utilisation:.0%}",
             f"{b.makespan / a.makespan:.2f}x" if a.makespan else "-"] for a, b in result]
    lines += [table(rows, ["gpus", "per-net days", "util", "blocks days", "util", "blocks/per-net"])]
    return data, lines
