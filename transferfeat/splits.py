"""The derived ILSVRC12 list files, made exactly as the original split script made them.

Which lists exist is the families' business (families.py: the random halves use numpy's legacy
RNG as the original did, natman its natural/man-made lists); this module writes them:
- a class subset keeps the lines whose class is in it, in input order, relabelled by rank within the half;
- reduced N: the first N lines of each class, in file order, labels unchanged (train only).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from . import atomic
from .errors import Error
from .families import WHOLE_TRAIN, WHOLE_VALID
from .folder import DatasetFolder
from .resources import data_file
from .study import Study

PARTS = ("train", "valid")


@dataclass(frozen=True)
class Entry:
    path: str
    label: int


@dataclass(frozen=True)
class Written:
    dataset: str
    path: Path
    lines: int
    verdict: str        # "matches the paper", "MISMATCH …", or "no published md5"

    @property
    def mismatch(self) -> bool:
        return self.verdict.startswith("MISMATCH")


def read_list(path, classes: int) -> list[Entry]:
    """Read a ``path label`` list, rejecting bad lines with the file name and line number."""
    path = Path(path)
    entries, seen = [], {}
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise Error(f"{path}:{line}: not UTF-8 text") from None
    for i, line in enumerate(text.split("\n"), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise Error(f"{path}:{i}: expected 'FILE LABEL', got {line.rstrip()!r}")
        name, label = parts
        try:
            value = int(label)
        except ValueError:
            raise Error(f"{path}:{i}: label {label!r} is not an integer") from None
        if not 0 <= value < classes:
            raise Error(f"{path}:{i}: label {value} is out of range 0..{classes - 1}")
        if name in seen:
            raise Error(f"{path}:{i}: duplicate file {name!r} (first on line {seen[name]})")
        seen[name] = i
        entries.append(Entry(name, value))
    return entries


def half_lines(entries: list[Entry], classes: list[int]) -> str:
    rank = {c: i for i, c in enumerate(classes)}
    return "".join("%s %d\n" % (e.path, rank[e.label]) for e in entries if e.label in rank)


def idxmap(classes: list[int]) -> str:
    return "# Orig_idx new_idx\n" + "".join(f"{c} {i}\n" for i, c in enumerate(classes))


def reduced_lines(entries: list[Entry], per_class: int) -> str:
    counts: dict[int, int] = {}
    out = []
    for e in entries:
        n = counts.get(e.label, 0)
        if n < per_class:
            out.append("%s %d\n" % (e.path, e.label))
        counts[e.label] = n + 1
    return "".join(out)


def published_md5s() -> dict[str, str]:
    """The original's md5 sums, by dataset name (``half0A_train`` …)."""
    out = {}
    for line in data_file("split_md5sums.txt").read_text().splitlines():
        if line.strip():
            digest, name = line.split()
            out[name.split("/")[0]] = digest
    return out


def make_splits(study: Study, source, out, check_md5: bool = None) -> tuple[list[Written], list[str]]:
    """Write every list file the inputs allow; returns what was written and what was skipped (and why).

    md5 sums are checked for a study over the full 1000 classes (the paper's data); a mismatch is
    reported in the verdict, never an error: the original noted that platforms may differ.
    """
    source, out = Path(source), Path(out)
    classes = study.config.datasets.classes
    if check_md5 is None:
        check_md5 = classes == 1000
    md5s = published_md5s() if check_md5 else {}
    written, skipped = [], []
    wanted = set(study.datasets())

    def write(dataset: str, text: str, idx: str = None):
        d = DatasetFolder(out, dataset)
        d.path.mkdir(parents=True, exist_ok=True)
        data = text.encode()
        atomic.write_bytes(d.files, data)
        if idx is not None:
            atomic.write_text(d.idxmap, idx)
        want = md5s.get(dataset)
        if not check_md5 or want is None:
            verdict = "no published md5"
        elif hashlib.md5(data).hexdigest() == want:
            verdict = "matches the paper"
        else:
            verdict = f"MISMATCH: md5 {hashlib.md5(data).hexdigest()} != the paper's {want}"
        written.append(Written(dataset, d.files, text.count("\n"), verdict))

    specs = [d for name, d in study.dataset_specs.items() if name in wanted or name in (WHOLE_TRAIN, WHOLE_VALID)]
    for part in PARTS:
        whole = DatasetFolder(source, WHOLE_TRAIN if part == "train" else WHOLE_VALID)
        if not whole.files.is_file():
            skipped.append(f"{whole.name}: {whole.files} not found, so no {part} lists were made")
            continue
        entries = read_list(whole.files, classes)
        for spec in specs:
            if spec.part != part:
                continue
            if spec.classes is not None:
                write(spec.name, half_lines(entries, list(spec.classes)), idxmap(list(spec.classes)))
            elif spec.per_class is not None:
                write(spec.name, reduced_lines(entries, spec.per_class))
            else:
                write(spec.name, "".join("%s %d\n" % (e.path, e.label) for e in entries))
    return written, skipped
