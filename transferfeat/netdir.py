"""NetDir: the one place that knows the files of a net's folder and of a dataset's folder."""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

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


class NetDir:
    """Paths of one net's folder under a results root."""

    def __init__(self, root, name: str):
        self.root = Path(root)
        self.name = name
        self.path = self.root / name

    solver = property(lambda self: self.path / SOLVER)
    train_prototxt = property(lambda self: self.path / TRAIN)
    val_prototxt = property(lambda self: self.path / VAL)
    basenet = property(lambda self: self.path / "basenet")
    state = property(lambda self: self.path / "tf-state.json")

    def logs(self) -> list[Path]:
        """Log files of every training attempt, oldest first (by name, which starts with a timestamp)."""
        if not self.path.is_dir():
            return []
        return sorted((p for p in self.path.iterdir() if p.is_file() and is_log(p.name)), key=segment_order)

    def new_log(self) -> Path:
        """A fresh log file name for a new training attempt."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        i = 0
        while (self.path / f"{LOG_PREFIX}{stamp}-{i:02d}.log").exists():
            i += 1
        return self.path / f"{LOG_PREFIX}{stamp}-{i:02d}.log"      # names sort in the order of attempts

    def _by_iteration(self, pattern) -> dict[int, Path]:
        out = {}
        if self.path.is_dir():
            for p in self.path.iterdir():
                m = pattern.fullmatch(p.name)
                if m and p.is_file():
                    out[int(m.group(1))] = p
        return out

    def snapshots(self) -> dict[int, Path]:
        """Weight snapshots by iteration: 2014 names (``…_iter_N``) and Caffe 1.0 names (``….caffemodel``)."""
        return self._by_iteration(_SNAP_RE)

    def solverstates(self) -> dict[int, Path]:
        return self._by_iteration(_STATE_RE)

    def final_snapshot(self, max_iter: int):
        """The weights after ``max_iter`` iterations, or None: a net is done only when they exist."""
        return self.snapshots().get(max_iter)

    def latest_resumable(self):
        """Iteration of the newest snapshot pair that is whole (Caffe writes snapshots in place, so a
        job killed mid-write can leave a truncated one: it is passed over), or None."""
        from .caffeproto import ProtoError, fields
        snaps, states = self.snapshots(), self.solverstates()
        for it in sorted(states, reverse=True):
            try:
                for path in (states[it], snaps.get(it)):
                    if path is None or not path.stat().st_size:
                        raise ProtoError("missing or empty")
                    for _ in fields(path.read_bytes()):
                        pass
                return it
            except (ProtoError, OSError):
                continue
        return None


def is_log(name: str) -> bool:
    return bool(_LOG_RE.search(name))


def segment_order(path) -> tuple:
    """Log files in the order they were written: by name, PBS job numbers compared as numbers."""
    name = Path(path).name
    m = _JOB.search(name)
    return (name[: m.start()], int(m.group(1))) if m else (name, -1)


def dataset_dir(data_root, dataset: str) -> Path:
    """Folder of one dataset: ``files.txt``, ``idxmap.txt``, ``lmdb/``, ``mean.binaryproto``."""
    return Path(data_root) / dataset


def relpath(target, start) -> str:
    return os.path.relpath(Path(target).absolute(), Path(start).absolute())
