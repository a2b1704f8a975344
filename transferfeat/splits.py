"""The derived ILSVRC12 list files, made exactly as the original split script made them.

- random halves for seed s: numpy's legacy global RNG, ``np.random.seed([s])``, then
  ``A = sorted(np.random.choice(np.arange(K), K // 2, replace=False))``, B = the rest;
- natman: A = the natural classes, B = the man-made ones;
- a half keeps the lines whose class is in it, in input order, relabelled by rank within the half;
- reduced N: the first N lines of each class, in file order, labels unchanged (train only).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import atomic
from .errors import Error
from .netdir import dataset_dir
from .resources import data_file
from .study import Study, reduced_dataset

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


def read_list(path, classes: int) -> list[Entry]:
    """Read a ``path label`` list, rejecting bad lines with the file name and line number."""
    path = Path(path)
    entries, seen = [], {}
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
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


def random_halves(seed: int, classes: int) -> tuple[list[int], list[int]]:
    np.random.seed([seed])
    a = sorted(int(x) for x in np.random.choice(np.arange(classes), classes // 2, replace=False))
    chosen = set(a)
    return a, [c for c in range(classes) if c not in chosen]


def halves(study: Study) -> dict[str, list[int]]:
    """Class indices (original ids, sorted) of every half dataset prefix: ``half0A`` … ``halfnatmanB``."""
    classes = study.config.datasets.classes
    out = {}
    fam = study.config.families
    for s in (fam.half.seeds if fam.half else ()):
        out[f"half{s}A"], out[f"half{s}B"] = random_halves(s, classes)
    if fam.halfnatman is not None:
        nat = list(study.natural_classes())
        if any(not 0 <= c < classes for c in nat):
            raise Error(f"study {study.config.name}: datasets.natural has a class outside 0..{classes - 1}")
        out["halfnatmanA"] = nat
        out["halfnatmanB"] = [c for c in range(classes) if c not in set(nat)]
    return out


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
        d = dataset_dir(out, dataset)
        d.mkdir(parents=True, exist_ok=True)
        data = text.encode()
        atomic.write_bytes(d / "files.txt", data)
        if idx is not None:
            atomic.write_text(d / "idxmap.txt", idx)
        want = md5s.get(dataset)
        if not check_md5 or want is None:
            verdict = "no published md5"
        elif hashlib.md5(data).hexdigest() == want:
            verdict = "matches the paper"
        else:
            verdict = f"MISMATCH: md5 {hashlib.md5(data).hexdigest()} != the paper's {want}"
        written.append(Written(dataset, d / "files.txt", text.count("\n"), verdict))

    splits = halves(study)
    for part in PARTS:
        src = source / f"whole_{part}" / "files.txt"
        if not src.is_file():
            skipped.append(f"whole_{part}: {src} not found, so no {part} lists were made")
            continue
        entries = read_list(src, classes)
        write(f"whole_{part}", "".join("%s %d\n" % (e.path, e.label) for e in entries))
        for half, cls in splits.items():
            if f"{half}_{part}" in wanted:
                write(f"{half}_{part}", half_lines(entries, cls), idxmap(cls))
        if part == "train":
            full = study.config.datasets.train_per_class
            for k in study.config.datasets.reduced_per_class:
                name = reduced_dataset(k, full)
                if name != "whole_train":
                    write(name, reduced_lines(entries, k))
    return written, skipped
