"""The derived ILSVRC12 list files, made exactly as the original split script made them, and the
whole lists of a user's own class-folder data set.

Which lists exist is the families' business (families.py: the random halves use numpy's legacy
RNG as the original did, natman its natural/man-made lists); this module writes them:
- a class subset keeps the lines whose class is in it, in input order, relabelled by rank within the half;
- reduced N: the first N lines of each class, in file order, labels unchanged (train only).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import atomic
from .errors import Error, listable, shown_path
from .families import WHOLE_TRAIN, WHOLE_VALID
from .folder import DatasetFolder
from .resources import list_file
from .study import Study

PARTS = ("train", "valid")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".pbm", ".tif", ".tiff", ".webp", ".jp2"}  # OpenCV's
CLASSES_FILE = "classes.txt"    # under the data root: a class-folder data set's class names, in label order


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
    for line in list_file("split_md5sums.txt").read_text().splitlines():
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


@dataclass(frozen=True)
class FolderLists:
    classes: list[str]
    train: int
    valid: int
    held_out: bool              # validation images held out of the class folders (no val/ folder)
    skipped: list[str]          # "path: reason" for files that are not images


def folder_lists(folder, out, classes: int, valid_fraction: float = 0.1, seed: int = 0) -> FolderLists:
    """Write the whole train and validation lists (and ``classes.txt``) of a class-folder data set
    under data root ``out``: ``folder/<class>/*`` are the training images, labelled by the classes'
    sorted names; validation images come from ``folder/val/<class>/*`` when it exists, else a
    seeded ``valid_fraction`` of each class is held out. Paths in the lists start at ``folder``
    (``folder.image_folder``). Files without an image suffix, empty, unreadable or with a name a
    list file cannot hold are skipped and counted; a class without images, a single class, a count
    other than the study's ``classes``, a class name a list cannot hold, and links that would give
    one image two labels (a class folder reaching back into ``folder``, two classes sharing a folder
    or a file, a validation image that is a training image) are errors."""
    folder, out = Path(folder), Path(out)
    if not folder.is_dir():
        raise Error(f"{shown_path(folder)}: not a folder")
    names = sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name != "val" and not p.name.startswith("."))
    for n in names:
        if not listable(n):
            raise Error(f"{shown_path(folder / n)}: a class folder name that is not valid UTF-8 or holds white space "
                        f"or control characters cannot go in a list file; rename it")
    if "train" in names:
        raise Error(f"{folder / 'train'}: a class folder may not be named 'train' (tf reads a folder with train/ "
                    f"as the ILSVRC layout); rename it")
    if len(names) < 2:
        raise Error(f"{folder}: {len(names)} class folder(s); a study needs at least 2 (layout: {folder}/<class>/*.jpg)")
    if len(names) != classes:
        raise Error(f"{folder}: {len(names)} class folders, but the study's datasets.classes is {classes}")
    skipped: list[str] = []
    root = Path(os.path.realpath(folder))
    owners: dict[str, dict] = {"train": {}, "val": {}}     # real path of each folder and file read -> (class, as reached)

    def images(d: Path, label: str, part: str) -> list[str]:
        """The image files under class folder ``d``, links followed once each; an error where a link
        would give an image a second label."""
        found, seen = [], owners[part]

        def claim(p: Path, real: str) -> bool:
            """Whether ``p`` (real path ``real``) is new; an error when another class has it."""
            other = seen.get(real)
            if other is None:
                seen[real] = (label, p)
                return True
            if other[0] != label:
                raise Error(f"{shown_path(p)} is {shown_path(other[1])} (a link): its images would be labelled both "
                            f"{label!r} and {other[0]!r}; make each image belong to one class folder")
            skipped.append(f"{shown_path(p.relative_to(folder))}: the same as {shown_path(other[1].relative_to(folder))} (a link), read once")
            return False

        def walk(p: Path):
            real = os.path.realpath(p)
            if Path(real) == root or root.is_relative_to(real):
                raise Error(f"{shown_path(p)} links back to {shown_path(folder)}: every image there would be labelled "
                            f"{label!r}; remove the link")
            if not claim(p, real):
                return
            try:
                entries = sorted(os.scandir(p), key=lambda e: e.name)
            except OSError as e:
                skipped.append(f"{shown_path(p.relative_to(folder))}: cannot be read ({e.strerror})")
                return
            for e in entries:
                q = Path(e.path)
                rel = q.relative_to(folder).as_posix()
                if e.is_dir():
                    walk(q)
                elif not listable(rel):
                    skipped.append(f"{shown_path(rel)}: a name a list file cannot hold (not UTF-8, white space or "
                                   f"control characters)")
                elif q.suffix.lower() not in IMAGE_SUFFIXES:
                    skipped.append(f"{rel}: not an image file name")
                else:
                    try:
                        size = q.stat().st_size
                    except OSError as err:
                        skipped.append(f"{rel}: {'a broken link' if q.is_symlink() else 'cannot be read'} ({err.strerror})")
                        continue
                    if size == 0:
                        skipped.append(f"{rel}: empty file")
                    elif claim(q, os.path.realpath(q)):
                        found.append(rel)
        walk(d)
        return found

    val = folder / "val"
    held_out = not val.is_dir()
    if not held_out:
        extra = sorted(p.name for p in val.iterdir() if p.is_dir() and p.name not in names)
        if extra:
            raise Error(f"{shown_path(val / extra[0])}: a validation class with no training folder {shown_path(folder / extra[0])}")
    if held_out and not 0 < valid_fraction < 1:
        raise Error(f"{folder}: no val/ folder, and a held-out fraction of {valid_fraction} is not between 0 and 1")
    rng = np.random.RandomState(seed)
    train, valid = [], []
    for label, name in enumerate(names):
        files = images(folder / name, name, "train")
        if not files:
            raise Error(f"{folder / name}: no images in this class folder")
        if held_out:
            if len(files) < 2:
                raise Error(f"{folder / name}: 1 image; holding out validation images needs at least 2 per class")
            k = min(len(files) - 1, max(1, round(valid_fraction * len(files))))
            chosen = set(rng.permutation(len(files))[:k].tolist())
            valid += [(f, label) for i, f in enumerate(files) if i in chosen]
            files = [f for i, f in enumerate(files) if i not in chosen]
        else:
            vfiles = images(val / name, name, "val") if (val / name).is_dir() else []
            if not vfiles:
                raise Error(f"{val / name}: no validation images for class {name!r}")
            valid += [(f, label) for f in vfiles]
        train += [(f, label) for f in files]
    for f, _ in [] if held_out else valid:
        same = owners["train"].get(os.path.realpath(folder / f))
        if same:
            raise Error(f"{shown_path(folder / f)} is also a training image ({shown_path(same[1])}, through a link): "
                        f"validation images must not be training images")
    for dataset, entries in ((WHOLE_TRAIN, train), (WHOLE_VALID, valid)):
        d = DatasetFolder(out, dataset)
        d.path.mkdir(parents=True, exist_ok=True)
        atomic.write_text(d.files, "".join(f"{f} {label}\n" for f, label in entries))
    atomic.write_text(out / CLASSES_FILE, "".join(f"{n}\n" for n in names))
    return FolderLists(names, len(train), len(valid), held_out, skipped)
