"""Output formats shared by the commands: aligned text tables, CSV, Markdown, JSON."""
from __future__ import annotations

import csv
import io
import json

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
    return json.dumps(data, indent=1)


def series_rows(series: dict) -> list[list]:
    return [[s, " ".join(f"{x}:{v:.3f}" for x, v in pts.items())] for s, pts in series.items()]
