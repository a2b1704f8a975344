"""Parse Caffe training logs (2014 and 1.0 formats; plain or gzip; one net's several segments).

Pure parsing: no plotting, no study knowledge. Recognised lines:

- 2014: ``Iteration N, lr = x``, ``Iteration N, loss = y``, ``Iteration N, Testing net`` then
  ``Test score #0: <top-1>`` and ``Test score #1: <val loss>``;
- 1.0: ``Iteration N (… iter/s, …), loss = y``, ``Iteration N, lr = x``, ``Iteration N, Testing net (#0)``,
  ``Test net output #k: name = v (* w = … loss)``; tf's torch engine adds its images/s inside the
  parentheses: ``Iteration N (x iter/s, y s/20 iters, z img/s), loss = v``.

Each pattern is found over the whole text at once and numbers are converted by numpy, which is
what makes parsing the authors' 6.6 M lines quick.
"""
from __future__ import annotations

import gzip
import re
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .folder import segment_order

_LOSS = re.compile(rb"Iteration (\d+(?: \([^)\n]*\))?, loss = [^\s,]+)")
_LR = re.compile(rb"Iteration (\d+, lr = [^\s,]+)")
_PARENS = re.compile(rb" \([^)\n]*\)")                 # 1.0: "N (x iter/s, y s/20 iters), loss = v"
_SPEED = re.compile(rb"Iteration (\d+) \(([0-9.eE+-]+) iter/s[^)\n]*?(?:, ([0-9.eE+-]+) img/s)?\)")
# A test block runs from "Testing net" to the next "Iteration" line (1.0 logs interleave data-layer lines).
_TEST = re.compile(rb"Iteration (\d+), Testing net[^\n]*\n((?:(?![^\n]*Iteration \d)[^\n]*\n)*)")
_SCORE = re.compile(rb"Test (?:score|net output) #(\d+): (?:(\S+) = )?([^\s(]+)")
_STAMP = re.compile(rb"^[IWEF](\d\d)(\d\d) (\d\d):(\d\d):(\d\d)", re.M)
_DAYS = (0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334)
_EMPTY = (np.zeros(0, np.int32), np.zeros(0))


def _pairs(pattern, data: bytes):
    """(iterations, values) arrays of every ``Iteration N…, KEY = value`` match.

    The matches are joined into one text that numpy reads in C ("N value N value …"): no Python
    object per number. A value numpy cannot read sends the file through the slow path, which
    drops unparsable values.
    """
    found = pattern.findall(data)
    if not found:
        return _EMPTY
    text = b" ".join(found).replace(b", loss = ", b" ").replace(b", lr = ", b" ")
    if b"(" in text:
        text = _PARENS.sub(b"", text)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        flat = np.fromstring(text, sep=" ")
    if flat.size == 2 * len(found):
        pairs = flat.reshape(-1, 2)
        return pairs[:, 0].astype(np.int32), pairs[:, 1]
    its, vals = [], []
    for item in found:
        parts = _PARENS.sub(b"", item).replace(b", loss = ", b" ").replace(b", lr = ", b" ").split()
        if len(parts) == 2 and _is_float(parts[1]):
            its.append(int(parts[0]))
            vals.append(float(parts[1]))
    return np.array(its, np.int32), np.array(vals, np.float64)


def _is_float(v) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


def _dedup_last(its, vals):
    """Sorted by iteration; where an iteration repeats, the last occurrence wins."""
    if not len(its):
        return its, vals
    rev_its, rev_vals = its[::-1], vals[::-1]
    uniq, first = np.unique(rev_its, return_index=True)
    return uniq, rev_vals[first]


@dataclass
class Segment:
    """One log file: what it recorded, by iteration."""
    path: str
    lr: tuple = _EMPTY                                  # (iterations, values)
    loss: tuple = _EMPTY                                # training loss at display iterations
    test: dict = field(default_factory=dict)            # iteration -> {score index: value}
    test_names: dict = field(default_factory=dict)      # score index -> name (1.0 logs)
    seconds: int = 0                                    # wall time the segment covers
    first_iter: int = None
    last_iter: int = None
    engine: str = "caffe"                               # "torch" when tf's torch engine wrote it
    speed: tuple = (_EMPTY[0], _EMPTY[1], _EMPTY[1])    # display intervals: (iterations, iter/s, img/s or nan)


def _speed(data: bytes) -> tuple:
    found = _SPEED.findall(data)
    its, per_s, img_s = [], [], []
    for it, a, b in found:
        if _is_float(a) and (not b or _is_float(b)):
            its.append(int(it))
            per_s.append(float(a))
            img_s.append(float(b) if b else np.nan)
    return np.array(its, np.int32), np.array(per_s), np.array(img_s)


@dataclass
class NetLog:
    """A net's segments merged in order; a later segment wins for a repeated iteration."""
    segments: list
    lr: tuple = _EMPTY
    loss: tuple = _EMPTY
    test: dict = field(default_factory=dict)
    test_names: dict = field(default_factory=dict)

    @property
    def engines(self) -> str:
        """The engines that wrote the segments, in order of first appearance ("caffe", "caffe+torch")."""
        return "+".join(dict.fromkeys(s.engine for s in self.segments))

    @property
    def iterations(self) -> int:
        return max((s.last_iter for s in self.segments if s.last_iter is not None), default=0)

    def images_per_second(self, batch: int) -> float:
        """The training speed (median over display intervals, tests and snapshots included as Caffe
        counts them): the engine's img/s where it logged them, else iter/s × ``batch``; for logs with
        neither (2014), iterations over the wall time the segments cover. None without any."""
        per_s = np.concatenate([s.speed[1] for s in self.segments] or [np.zeros(0)])
        img_s = np.concatenate([s.speed[2] for s in self.segments] or [np.zeros(0)])
        if len(per_s):
            rates = np.where(np.isnan(img_s), per_s * batch, img_s)
            rates = rates[np.isfinite(rates) & (rates > 0)]
            return float(np.median(rates)) if len(rates) else None
        spans = [(s.last_iter - s.first_iter, s.seconds) for s in self.segments
                 if s.first_iter is not None and s.seconds > 0]
        its, seconds = sum(a for a, _ in spans), sum(b for _, b in spans)
        return its * batch / seconds if its > 0 and seconds else None

    def score(self, which) -> dict:
        """Test values by iteration for a score index or name (``0``/``"accuracy"``, ``1``/``"loss"``)."""
        index = which
        if isinstance(which, str):
            names = {v: k for k, v in self.test_names.items()}
            index = names.get(which, {"accuracy": 0, "loss": 1}.get(which))
        return {it: s[index] for it, s in sorted(self.test.items()) if index in s}

    @property
    def accuracy(self) -> dict:
        return self.score("accuracy")

    @property
    def val_loss(self) -> dict:
        return self.score("loss")


def read_text(path) -> bytes:
    """A log's bytes; a truncated gzip file yields what it holds, a cut-off last line is dropped."""
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error):
            try:
                data = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(raw)
            except zlib.error:
                data = b""
    else:
        data = raw
    if data and not data.endswith(b"\n"):
        data = data[: data.rfind(b"\n") + 1]
    return data


def _clock(m):
    """Seconds into the year of a glog stamp ``MMDD hh:mm:ss``; None for one that is no date."""
    month, day, h, mi, s = (int(g) for g in m.groups())
    if not (1 <= month <= 12 and 1 <= day <= 31 and h < 24 and mi < 60 and s < 61):
        return None
    return ((_DAYS[month - 1] + day) * 24 + h) * 3600 + mi * 60 + s


def elapsed(clocks) -> int:
    """Seconds spanned by glog clock readings in order; glog has no year, so a backwards step of
    more than a day is a new year (Dec 31 -> Jan 1), not time running backwards."""
    total = 0
    for a, b in zip(clocks, clocks[1:]):
        step = b - a
        total += step + 365 * 86400 if step < -86400 else max(step, 0)
    return total


def _test_blocks(data: bytes):
    """Each "Iteration N, Testing net" line with the lines after it (found by a fast literal search)."""
    pos = data.find(b", Testing net")
    while pos >= 0:
        start = data.rfind(b"\n", 0, pos) + 1
        m = _TEST.match(data, data.rfind(b"Iteration ", start, pos))
        if m:
            yield start, m
        pos = data.find(b", Testing net", pos + 1)


def parse_segment(path, lr: bool = True) -> Segment:
    """One log file. ``lr=False`` skips the learning rates (the results need only losses and tests)."""
    data = read_text(path)
    seg = Segment(str(path), lr=_pairs(_LR, data) if lr else _EMPTY, loss=_pairs(_LOSS, data), speed=_speed(data))
    if b" torch engine: " in data[:4096]:
        seg.engine = "torch"
    clocks = []
    first = _STAMP.search(data)
    if first:
        clocks.append(_clock(first))
    for start, m in _test_blocks(data):
        it = int(m.group(1))
        stamp = _STAMP.match(data, start)
        if stamp:
            clocks.append(_clock(stamp))
        scores = {}
        for idx, name, value in _SCORE.findall(m.group(2)):
            if _is_float(value):
                scores[int(idx)] = float(value)
                if name:
                    seg.test_names[int(idx)] = name.decode(errors="replace")
        if scores:
            seg.test[it] = scores
    tail = data.rfind(b"\n", 0, len(data) - 1) + 1
    last = _STAMP.match(data, tail) if data else None
    if last:
        clocks.append(_clock(last))
    seg.seconds = elapsed([c for c in clocks if c is not None])
    its = [a[0] for a in (seg.lr, seg.loss) if len(a[0])] + ([np.array(list(seg.test))] if seg.test else [])
    if its:
        allits = np.concatenate(its)
        seg.first_iter, seg.last_iter = int(allits.min()), int(allits.max())
    return seg


def merge(segments: list[Segment]) -> NetLog:
    log = NetLog(segments)
    for attr in ("lr", "loss"):
        parts = [getattr(s, attr) for s in segments]
        its = np.concatenate([p[0] for p in parts]) if parts else _EMPTY[0]
        vals = np.concatenate([p[1] for p in parts]) if parts else _EMPTY[1]
        setattr(log, attr, _dedup_last(its, vals))
    for s in segments:
        log.test.update(s.test)
        log.test_names.update(s.test_names)
    log.test = dict(sorted(log.test.items()))
    return log


def parse_files(paths) -> NetLog:
    """Parse and merge one net's log files, in the order they were written."""
    return merge([parse_segment(p) for p in sorted(paths, key=segment_order)])
