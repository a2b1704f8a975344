"""The torch engine: the rendered net folders run by PyTorch with Caffe's semantics (torchnet.py),
as a program of its own, so that the runner, the pool and SLURM jobs treat it as they treat
`caffe train`: same folder, same files, SIGINT to snapshot and stop."""
from __future__ import annotations

import sys

from ..errors import Error
from ..folder import SOLVER, NetFolder
from . import Engine

INSTALL_HINT = "pip install 'transferfeat[torch]'   (or: pip install torch)"


def torch_module():
    """torch, or an error that says how to install it."""
    try:
        import torch
        return torch
    except ImportError:
        raise Error(f"the torch engine needs PyTorch, which is not installed: {INSTALL_HINT}") from None


class TorchEngine(Engine):
    name = "torch"

    def __init__(self, precision: str = "fp32"):
        from .torchnet import PRECISIONS
        if precision not in PRECISIONS:
            raise Error(f"precision {precision!r}: choose from {', '.join(PRECISIONS)}")
        self.precision = precision

    def command(self, folder: NetFolder, resume=None, weights=None, gpu=None) -> list:
        torch_module()
        from ..netspec import read
        read(folder.train_prototxt, "TRAIN")             # a layer this engine cannot run: say so now
        read(folder.val_prototxt, "TEST")
        args = [sys.executable, "-m", "transferfeat.engines.torchnet", "train", "-solver", SOLVER,
                "-precision", self.precision]
        if resume:
            args += ["-snapshot", resume]
        elif weights:
            args += ["-weights", weights]
        return args + (["-gpu", str(gpu)] if gpu is not None else [])

    def test_command(self, model: str, weights: str, iterations: int, gpu=None) -> list:
        torch_module()
        return [sys.executable, "-m", "transferfeat.engines.torchnet", "test", "-model", model, "-weights", weights,
                "-iterations", str(iterations), "-precision", self.precision] + (["-gpu", str(gpu)] if gpu is not None else [])

    def describe(self) -> dict:
        torch = torch_module()
        return {"engine": self.name, "version": f"torch {torch.__version__}", "precision": self.precision}

    def job_args(self) -> list:
        return ["--engine", "torch", "--precision", self.precision]

    def doctor(self) -> tuple[dict, list]:
        try:
            torch = torch_module()
        except Error as e:
            return {"torch": None}, [{"what": "torch", "why": str(e), "fix": INSTALL_HINT}]
        cuda = torch.cuda.is_available()
        return {"torch": torch.__version__, "cuda": torch.version.cuda if cuda else None,
                "torch_gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else []}, []
