"""The one place that knows file names: a results folder (StudyFolder), a net's folder in it
(NetFolder) and a dataset's folder under the data root (DatasetFolder). Paths only: what the files
say (is a net done? where would it resume?) is state.py's and snapshots.py's business.
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

from .errors import Error

STUDY_COPY = "tf-study.yaml"          # the study a results folder was rendered from
RUN_STATE = "tf-run.json"             # the local pool's state
SOLVER = "imagenet_solver.prototxt"
TRAIN = "imagenet_train.prototxt"
VAL = "imagenet_val.prototxt"
SNAPSHOT_PREFIX = "caffe_imagenet_train"
LOG_PREFIX = "tf-train-"

# The original's PBS job outputs ("140403_063910_half0A.o227963.gz", "catlog.oMANUAL.gz") and tf's logs.
_LOG_RE = re.compile(r"(\.[eo][A-Za-z0-9]+(\.gz)?$)|(^" + re.escape(LOG_PREFIX) + r".*\.log(\.gz)?$)")
_JOB = re.compile(r"\.[eo](\d+)(?:\.gz)?$")
_SNAP_RE = re.compile(re.escape(SNAPSHOT_PREFIX) + r"_iter_(\d+)(\.caffemodel)?$")
_STATE_RE = re.compile(re.escape(SNAPSHOT_PREFIX) + r"_iter_(\d+)\.solverstate$")


@dataclass(frozen=True)
class Listing:
    """What one look at a net's folder found: snapshots and solver states by iteration, and logs."""
    snapshots: dict
    solverstates: dict
    logs: list


class NetFolder:
    """The files of one net's folder under a results root."""

    def __init__(self, root, name: str):
        self.root = Path(root)
        self.name = name
        self.path = self.root / name

    solver = property(lambda self: self.path / SOLVER)
    train_prototxt = property(lambda self: self.path / TRAIN)
    val_prototxt = property(lambda self: self.path / VAL)
    basenet = property(lambda self: self.path / "basenet")
    attempt_record = property(lambda self: self.path / "tf-state.json")    # the last attempt: status, engine, …
    done_record = property(lambda self: self.path / "tf-done.json")        # the verified final snapshot
    lock = property(lambda self: self.path / ".tf-train.lock")
    job_script = property(lambda self: self.path / "tf-job.sbatch")
    job_record = property(lambda self: self.path / "tf-slurm.json")
    job_output = property(lambda self: self.path / "tf-slurm-%j.txt")     # sbatch fills in %j

    @staticmethod
    def link_names(db: str = "lmdb", image_data: bool = False) -> SimpleNamespace:
        """Names of the data links a net folder holds, as its prototxts refer to them."""
        if image_data:
            return SimpleNamespace(train="imagenet_train_files.txt", valid="imagenet_val_files.txt",
                                   train_images="imagenet_train_images", valid_images="imagenet_val_images",
                                   mean="imagenet_mean.binaryproto")
        return SimpleNamespace(train=f"imagenet_train_{db}", valid=f"imagenet_val_{db}",
                               mean="imagenet_mean.binaryproto")

    def base_file(self, path: Path) -> str:
        """How a file of the base net is named from inside this folder (through the ``basenet`` link)."""
        return f"{self.basenet.name}/{Path(path).name}"

    def scan(self) -> Listing:
        """The folder's snapshots (2014 names ``…_iter_N`` and Caffe 1.0 names ``….caffemodel``),
        solver states and logs (oldest first: by name, which starts with a timestamp), in one look."""
        snaps, states, logs = {}, {}, []
        if self.path.is_dir():
            for p in self.path.iterdir():
                m = _SNAP_RE.fullmatch(p.name) or _STATE_RE.fullmatch(p.name)
                if m and p.is_file():
                    (states if p.name.endswith(".solverstate") else snaps)[int(m.group(1))] = p
                elif is_log(p.name) and p.is_file():
                    logs.append(p)
        return Listing(snaps, states, sorted(logs, key=segment_order))

    def logs(self) -> list[Path]:
        return self.scan().logs

    def snapshots(self) -> dict[int, Path]:
        return self.scan().snapshots

    def solverstates(self) -> dict[int, Path]:
        return self.scan().solverstates

    def new_log(self) -> Path:
        """A fresh log file name for a new training attempt."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        i = 0
        while (self.path / f"{LOG_PREFIX}{stamp}-{i:02d}.log").exists():
            i += 1
        return self.path / f"{LOG_PREFIX}{stamp}-{i:02d}.log"      # names sort in the order of attempts


class StudyFolder:
    """A results folder: one sub-folder per net of one study, and the study's copy."""

    def __init__(self, root, study):
        self.root = Path(root)
        self.study = study

    study_copy = property(lambda self: self.root / STUDY_COPY)
    run_state = property(lambda self: self.root / RUN_STATE)

    @staticmethod
    def study_file(root) -> Optional[Path]:
        """The study copy a results folder keeps, if any."""
        path = Path(root) / STUDY_COPY
        return path if path.is_file() else None

    def net(self, name: str) -> NetFolder:
        return NetFolder(self.root, name)

    def is_rendered(self, name: str) -> bool:
        return self.net(name).solver.is_file()

    def rendered(self) -> list:
        """The study's nets that have a folder here, in catalog order."""
        return [n for n in self.study.nets.values() if self.is_rendered(n.name)]

    def select(self, globs=()) -> list:
        """The nets ``globs`` select; with none, every net rendered here (an error when there is none)."""
        if globs:
            return self.study.select(globs)
        nets = self.rendered()
        if not nets:
            raise Error(f"no rendered net of study {self.study.config.name!r} under {self.root}: "
                        f"run `tf render … --root {self.root}` first")
        return nets


class DatasetFolder:
    """The files of one dataset under a data root: list, class map, databases, mean."""

    def __init__(self, data_root, name: str):
        self.path = Path(data_root) / name
        self.name = name

    files = property(lambda self: self.path / "files.txt")
    idxmap = property(lambda self: self.path / "idxmap.txt")
    lmdb = property(lambda self: self.path / "lmdb")
    index = property(lambda self: self.path / "index")          # the dataset as records of the image store
    mean = property(lambda self: self.path / "mean.binaryproto")

    def db(self, kind: str = "lmdb") -> Path:
        return self.path / kind


def image_folder(images, part: str) -> Path:
    """The folder a ``part`` ("train" or "valid") list's paths start from: ``images/train`` and
    ``images/val`` in the ILSVRC layout; ``images`` itself for a class-folder data set (``tf split
    --folder``), whose lists name ``<class>/…`` and ``val/<class>/…``."""
    images = Path(images)
    if images.is_dir() and not (images / "train").is_dir():
        return images
    return images / ("train" if part == "train" else "val")


def is_log(name: str) -> bool:
    return bool(_LOG_RE.search(name))


def segment_order(path) -> tuple:
    """Log files in the order they were written: by name, PBS job numbers compared as numbers."""
    name = Path(path).name
    m = _JOB.search(name)
    return (name[: m.start()], int(m.group(1))) if m else (name, -1)


def relpath(target, start) -> str:
    return os.path.relpath(Path(target).absolute(), Path(start).absolute())
