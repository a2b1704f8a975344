"""Finding and invoking the Caffe binaries (caffe, convert_imageset, compute_image_mean).

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

from .errors import Error

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


def run_tool(name: str, args: list, caffe=None, **kwargs) -> subprocess.CompletedProcess:
    """Run one Caffe tool to completion; errors name the tool and show the end of its output."""
    tool = find_tool(name, caffe)
    proc = subprocess.run([str(tool), *map(str, args)], capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-8:])
        raise Error(f"{name} failed with exit code {proc.returncode}:\n{tail}")
    return proc


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
