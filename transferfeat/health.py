"""Is a net's training healthy? Divergence and chance level, read from its log.

A net has **diverged** at iteration N when, in its log:
- a displayed training loss or a test loss is NaN or infinite (N: where it first is), or
- after its first test, its displayed training loss stays above twice the loss of guessing
  uniformly, 2·ln(C) for C outputs, at every display for a whole test interval (N: where that run
  starts). Caffe clamps a loss at -ln(FLT_MIN) = 87.3 and shows "nan" once the weights are; a net
  that learns never sits above 2·ln(C) for that long after its first test.
A diverged net is never done: its trainer is stopped, no completion record is written, its
dependants are blocked, and its scores (Caffe's Accuracy counts NaN scores as right: top-1 = 1)
are left out of every statistic and figure.

A net **ends at chance** when the mean of its 10 best tests is at most twice chance, 2/C for the C
classes it trains on; it is flagged, not left out.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np


@dataclass(frozen=True)
class Divergence:
    iteration: int
    why: str

    def __str__(self) -> str:
        return f"diverged at iteration {self.iteration}: {self.why}"


def loss_bound(outputs: int) -> float:
    """Above this displayed loss for a whole test interval, a net has diverged: 2·ln(outputs)."""
    return 2 * math.log(max(outputs, 2))


def divergence(log, outputs: int) -> Optional[Divergence]:
    """Where ``log`` (a NetLog or Segment) shows the net diverging, or None. ``outputs``: the width of
    the net's last layer (the classes its loss is over)."""
    its, loss = (np.asarray(a) for a in log.loss)
    bad = np.flatnonzero(~np.isfinite(loss))
    found = [Divergence(int(its[bad[0]]), f"the training loss is {_word(loss[bad[0]])}")] if len(bad) else []
    tests = sorted(log.test)
    names = {v: k for k, v in getattr(log, "test_names", {}).items()}
    loss_index = names.get("loss", 1)
    for it in tests:
        v = log.test[it].get(loss_index)
        if v is not None and not math.isfinite(v):
            found.append(Divergence(it, f"the test loss is {_word(v)}"))
            break
    if len(tests) >= 1 and len(its):
        window = (tests[1] - tests[0]) if len(tests) >= 2 else 0
        bound = loss_bound(outputs)
        after = its > tests[0]
        high = after & (loss > bound)
        start = None
        for k in range(len(its)):
            if not after[k]:
                continue
            if high[k]:
                start = k if start is None else start
                if window and its[k] - its[start] >= window:
                    found.append(Divergence(int(its[start]), f"the training loss stayed above {bound:.3g} "
                                            f"(2·ln {outputs}) from iteration {int(its[start])} to {int(its[k])}"))
                    break
            else:
                start = None
    return min(found, key=lambda d: d.iteration) if found else None


def near_chance(top1: Optional[float], classes: int) -> bool:
    """Did a net end at chance: its statistic (mean of 10 best tests) at most twice 1/classes?"""
    return top1 is not None and math.isfinite(top1) and top1 <= 2.0 / max(classes, 1)


def _word(v) -> str:
    return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
