"""Output formats shared by the commands: aligned text tables, CSV, Markdown, JSON."""
from __future__ import annotations

import csv
import io
import json
import math

FORMATS = ("table", "csv", "markdown", "json")


def cell(v, digits: int = 4) -> str:
    return "-" if v is None else (f"{v:.{digits}f}" if isinstance(v, float) else str(v))


def table(rows: list[list], header: list[str]) -> str:
    rows = [[("" if c is None else str(c)) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()   # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def rows_as(fmt: str, rows: list[list], header: list[str]) -> str:
    """``rows`` under ``header`` as an aligned table, CSV or Markdown."""
    if fmt == "csv":
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows([header] + rows)
        return buf.getvalue().rstrip("\n")
    if fmt == "markdown":
        return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                         + ["| " + " | ".join(map(str, r)) + " |" for r in rows])
    return table(rows, header)


def as_json(data) -> str:
    """JSON, with NaN and infinities (which JSON has not) as null."""
    return json.dumps(_finite(data), indent=1, allow_nan=False)


def _finite(v):
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    return v


SERIES_LABELS = {"baseB": "baseB (base nets)", "selffer_BnB": "selffer BnB", "selffer_BnB_plus": "selffer BnB+ (fine-tuned)",
                 "transfer_AnB": "transfer AnB", "transfer_AnB_plus": "transfer AnB+ (fine-tuned)",
                 "natman_to_natural": "man-made -> natural", "natman_to_manmade": "natural -> man-made",
                 "random_frozen": "random frozen layers", "reduced": "reduced data"}


def series_tables(study, series: dict) -> str:
    """The paper's series as tables, one per axis (n, the layers copied; images per class, …): a row
    per series, a column per x, each cell the mean over its nets of each net's top-1 (the mean of its
    10 best tests)."""
    axes = {}
    for s, pts in series.items():
        axes.setdefault(study.axis(s), {})[s] = pts
    out = []
    for axis, rows in axes.items():
        xs = sorted({x for pts in rows.values() for x in pts}, key=float)
        copied = f"the units up to {', '.join(study.arch.cuts)} copied or frozen" if study.arch.cuts else \
            "the layers copied or frozen"
        head = f"top-1 accuracy by {axis}" + (f" ({copied})" if axis == "n" else "")
        out.append(head + "; a cell is the mean over its nets of each net's mean of its 10 best tests\n"
                   + table([[SERIES_LABELS.get(s, s)] + [cell(pts.get(x), 3) for x in xs] for s, pts in rows.items()],
                           ["series"] + [f"{axis.split()[0]}={x}" if axis == "n" else str(x) for x in xs]))
    return "\n\n".join(out)


def nbytes(n: float) -> str:
    """A size in binary units, three figures: ``"312 MiB"``, ``"2.05 TiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1000 or unit == "TiB":
            return f"{n:.3g} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
