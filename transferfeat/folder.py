"""The one place that knows file names: a results folder (StudyFolder), a net's folder in it
(NetFolder) and a dataset's folder under the data root (DatasetFolder).

Everything else asks these objects: which nets are rendered or done, where a net would resume,
where its logs, snapshots, locks, state files and job scripts are.
"""
from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

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
    state = property(lambda self: self.path / "tf-state.json")
    done_record = property(lambda self: self.path / "tf-done.json")   # the verified final snapshot
    lock = property(lambda self: self.path / ".tf-train.lock")
    job_script = property(lambda self: self.path / "tf-job.sbatch")
    job_state = property(lambda self: self.path / "tf-slurm.json")
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

    # -- logs
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

    # -- snapshots
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

    def snapshot_at(self, iteration: int) -> Optional[Path]:
        """The weights file written at ``iteration``, as it is on disk (unverified: see
        ``StudyFolder.final_snapshot``), or None."""
        return self.snapshots().get(iteration)

    # -- state
    def read_state(self) -> dict:
        return _read_json(self.state)

    def write_state(self, **fields) -> dict:
        from . import atomic
        state = {**self.read_state(), **fields, "updated": time.strftime("%Y-%m-%dT%H:%M:%S")}
        atomic.write_text(self.state, json.dumps(state, indent=1))
        return state

    def read_done(self) -> dict:
        return _read_json(self.done_record)

    def write_done(self, record: dict) -> None:
        from . import atomic
        atomic.write_text(self.done_record, json.dumps(record, indent=1))

    def read_job(self) -> dict:
        return _read_json(self.job_state)

    def write_job(self, **fields) -> None:
        from . import atomic
        atomic.write_text(self.job_state, json.dumps({**fields, "updated": time.strftime("%Y-%m-%dT%H:%M:%S")}))


def _read_json(path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


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
            from .errors import Error
            raise Error(f"no rendered net of study {self.study.config.name!r} under {self.root}: "
                        f"run `tf render … --root {self.root}` first")
        return nets

    def max_iter(self, name: str) -> int:
        return self.study.max_iter(self.study.net(name))

    def final_snapshot(self, name: str) -> Optional[Path]:
        """The final caffemodel that the net's completion record vouches for (None: not done)."""
        from .snapshots import SnapshotError, check_record
        try:
            return check_record(self.net(name), self.max_iter(name))
        except SnapshotError:
            return None

    def is_done(self, name: str) -> bool:
        """Done means: the final snapshot pair was verified whole and recorded, and is unchanged since."""
        return self.final_snapshot(name) is not None

    def final_weights(self, name: str) -> Path:
        """The final caffemodel, its digest checked against the completion record (for -weights)."""
        from .snapshots import check_record
        return check_record(self.net(name), self.max_iter(name), full=True)

    def damage(self, name: str) -> Optional[str]:
        """Why the recorded final snapshot can no longer be trusted (None: no record, or it holds)."""
        from .snapshots import SnapshotError, check_record
        if not self.net(name).read_done():
            return None
        try:
            check_record(self.net(name), self.max_iter(name))
            return None
        except SnapshotError as e:
            return str(e)

    def resume_point(self, name: str, echo=None) -> Optional[int]:
        """The iteration a new attempt of ``name`` would resume from (None: from the start): the
        newest whole snapshot pair, passing over those a crashed retry started from."""
        from .snapshots import resumable
        d = self.net(name)
        return resumable(d, exclude=d.read_state().get("bad_snapshots", ()), echo=echo)

    def dependants(self, name: str) -> list:
        return self.study.dependants(name)


class DatasetFolder:
    """The files of one dataset under a data root: list, class map, databases, mean."""

    def __init__(self, data_root, name: str):
        self.path = Path(data_root) / name
        self.name = name

    files = property(lambda self: self.path / "files.txt")
    idxmap = property(lambda self: self.path / "idxmap.txt")
    lmdb = property(lambda self: self.path / "lmdb")
    mean = property(lambda self: self.path / "mean.binaryproto")

    def db(self, kind: str = "lmdb") -> Path:
        return self.path / kind


def is_log(name: str) -> bool:
    return bool(_LOG_RE.search(name))


def segment_order(path) -> tuple:
    """Log files in the order they were written: by name, PBS job numbers compared as numbers."""
    name = Path(path).name
    m = _JOB.search(name)
    return (name[: m.start()], int(m.group(1))) if m else (name, -1)


def relpath(target, start) -> str:
    return os.path.relpath(Path(target).absolute(), Path(start).absolute())
