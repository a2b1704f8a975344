"""The Caffe engine: `caffe train` on the net's folder, and finding the Caffe binaries.

Search order for ``caffe``: an explicit path (``--caffe``), ``$TF_CAFFE``, ``caffe`` on PATH, then the
prefix that scripts/install-caffe.sh uses. The other tools are looked for beside the chosen caffe
first, then the same way.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from ..errors import Error
from ..folder import SOLVER, NetFolder
from .base import Engine, register

TOOLS = ("caffe", "convert_imageset", "compute_image_mean")
ENV = "TF_CAFFE"
INSTALL_HINT = "bash scripts/install-caffe.sh   (or point --caffe / TF_CAFFE at your own caffe binary)"


class CaffeNotFound(Error):
    pass


def default_prefix() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "transferfeat" / "caffe" / "bin"


def _executable(p) -> bool:
    return p is not None and Path(p).is_file() and os.access(p, os.X_OK)


def find_tool(name: str = "caffe", caffe=None) -> Path:
    """The path of one Caffe tool, or CaffeNotFound naming where it looked and how to install it."""
    explicit = caffe or os.environ.get(ENV)
    looked = []
    if explicit:
        explicit = Path(explicit)
        if name == "caffe":
            if _executable(explicit):
                return explicit
            raise CaffeNotFound(f"caffe not found at {explicit} (from {'--caffe' if caffe else ENV})")
        sibling = explicit.parent / name
        if _executable(sibling):
            return sibling
        looked.append(str(sibling))
    on_path = shutil.which(name)
    if on_path:
        return Path(on_path)
    looked.append(f"{name} on PATH")
    installed = default_prefix() / name
    if _executable(installed):
        return installed
    looked.append(str(installed))
    raise CaffeNotFound(f"{name} not found (looked at {', '.join(looked)}); install it with: {INSTALL_HINT}")


def version(caffe: Path) -> str:
    try:
        out = subprocess.run([str(caffe), "--version"], capture_output=True, text=True, timeout=60)
    except OSError as e:
        raise CaffeNotFound(f"{caffe} does not run: {e.strerror}") from None
    m = re.search(r"caffe version (\S+)", out.stdout + out.stderr)
    return m.group(1) if m else "unknown (a Caffe older than 1.0?)"


def train_args(caffe, solver: str, gpu=None, snapshot=None, weights=None) -> list[str]:
    """The ``caffe train`` command line. SIGINT makes Caffe snapshot and stop; SIGHUP snapshot and go on."""
    args = [str(caffe), "train", "-solver", solver, "-sigint_effect", "stop", "-sighup_effect", "snapshot"]
    if snapshot:
        args += ["-snapshot", str(snapshot)]
    elif weights:
        args += ["-weights", str(weights)]
    if gpu is not None:
        args += ["-gpu", str(gpu)]
    return args


@register
class CaffeEngine(Engine):
    """BVLC Caffe 1.0 (or a compatible build) through its ``caffe train`` tool."""
    name = "caffe"

    def __init__(self, caffe=None):
        self.caffe = caffe                  # explicit binary (--caffe), else found as find_tool says

    @classmethod
    def configure(cls, caffe=None, precision: str = "fp32") -> "CaffeEngine":
        return cls(caffe)

    def command(self, netdir: NetFolder, resume=None, weights=None, gpu=None) -> list:
        from ..store import is_index
        for link in (netdir.path / "imagenet_train_lmdb", netdir.path / "imagenet_val_lmdb"):
            if is_index(link):
                raise Error(f"net {netdir.name}: {link.name} is an index into the image store (tf db --store), "
                            f"which only the torch engine reads; Caffe needs real LMDBs: build them with "
                            f"`tf db DATASET … --images DIR` and render again, or train with --engine torch")
        return train_args(find_tool("caffe", self.caffe), SOLVER, gpu, snapshot=resume, weights=weights)

    def test_command(self, model: str, weights: str, iterations: int, gpu=None) -> list:
        return [str(find_tool("caffe", self.caffe)), "test", "-model", model, "-weights", weights,
                "-iterations", str(iterations)] + (["-gpu", str(gpu)] if gpu is not None else [])

    def describe(self) -> dict:
        tool = find_tool("caffe", self.caffe)
        return {"engine": self.name, "version": version(tool), "binary": str(tool)}

    def job_args(self) -> list:
        return ["--caffe", str(self.caffe)] if self.caffe else []

    def doctor(self) -> tuple[dict, list]:
        tools, missing = {}, []
        for t in TOOLS:
            try:
                tools[t] = str(find_tool(t, self.caffe))
            except CaffeNotFound as e:
                tools[t] = None
                missing.append({"what": t, "why": str(e), "fix": INSTALL_HINT})
        return {"tools": tools, "caffe_version": version(Path(tools["caffe"])) if tools["caffe"] else None}, missing


def gpus() -> list[dict]:
    """GPUs that nvidia-smi reports (empty where there is none)."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        out = subprocess.run([smi, "--query-gpu=index,name,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    rows = [r.split(", ") for r in out.stdout.strip().splitlines() if r.count(", ") == 2]
    return [{"index": int(i), "name": n, "memory": m} for i, n, m in rows if i.isdigit()]
