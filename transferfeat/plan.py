"""Schedule estimates for the study's dependency DAG on N GPUs.

Two policies are compared: per-net dependencies (a transfer net starts as soon as its own base net
is done) and the original README's block barriers (all of block one, then all of block two).
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass

from .study import Net, Study


@dataclass(frozen=True)
class Schedule:
    gpus: int
    makespan: float            # days
    busy: float                # GPU-days of work

    @property
    def utilisation(self) -> float:
        return self.busy / (self.gpus * self.makespan) if self.makespan else 0.0


def durations(study: Study, nets: list[Net], days_per_net: float) -> dict[str, float]:
    """Days per net: ``days_per_net`` for the longest schedule, scaled by each net's iterations."""
    longest = max(study.max_iter(n) for n in nets)
    return {n.name: days_per_net * study.max_iter(n) / longest for n in nets}


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


def plan(study: Study, nets: list[Net], gpus: list[int], days_per_net: float) -> list[tuple[Schedule, Schedule]]:
    """(per-net dependencies, block barriers) for each GPU count."""
    days = durations(study, nets, days_per_net)
    return [(simulate(nets, days, g, False), simulate(nets, days, g, True)) for g in gpus]
