"""The torch engine: the rendered net folders run by PyTorch with Caffe's semantics (torchnet/),
as a program of its own, so that the runner, the pool and SLURM jobs treat it as they treat
`caffe train`: same folder, same files, SIGINT to snapshot and stop."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from ..errors import Error
from ..folder import SOLVER, NetFolder
from .base import Engine, register
from .torchnet import PRECISIONS, check_precision

INSTALL_HINT = ("TF_TORCH=torch==2.13.0 bash scripts/setup.sh   (or: pip install 'transferfeat[torch]'; on a machine "
                "without a GPU add --extra-index-url https://download.pytorch.org/whl/cpu: 0.7 GB, not 4.5)")
PROGRAM = "transferfeat.engines.torchnet"


def torch_module():
    """torch, or an error that says how to install it."""
    try:
        import torch
        return torch
    except ImportError:
        raise Error(f"the torch engine needs PyTorch, which is not installed: {INSTALL_HINT}") from None


@register
class TorchEngine(Engine):
    name = "torch"
    precisions = PRECISIONS
    holds_stop = True           # the trainer unblocks SIGINT once its handler is in place (__main__)

    def __init__(self, precision: str = "fp32"):
        self.precision = check_precision(precision)

    @classmethod
    def configure(cls, caffe=None, precision: str = "fp32") -> "TorchEngine":
        return cls(precision)

    def command(self, netdir: NetFolder, resume=None, weights=None, gpu=None) -> list:
        torch_module()
        from ..netspec import read, read_solver
        from .torchnet.feed import check_decode
        check_decode("cpu" if gpu is None else f"cuda:{gpu}")
        read_solver(netdir.solver, strict=True)          # a field or layer this engine cannot run: say so now
        read(netdir.train_prototxt, "TRAIN")
        read(netdir.val_prototxt, "TEST")
        args = [sys.executable, "-m", PROGRAM, "train", "-solver", SOLVER, "-precision", self.precision]
        if resume:
            args += ["-snapshot", resume]
        elif weights:
            args += ["-weights", weights]
        return args + (["-gpu", str(gpu)] if gpu is not None else [])

    def test_command(self, model: str, weights: str, iterations: int, gpu=None) -> list:
        torch_module()
        return [sys.executable, "-m", PROGRAM, "test", "-model", model, "-weights", weights,
                "-iterations", str(iterations), "-precision", self.precision] + (["-gpu", str(gpu)] if gpu is not None else [])

    def environment(self) -> dict:
        """The trainer imports the transferfeat that tf itself runs from (a checkout or an install)."""
        here = str(Path(__file__).resolve().parents[2])
        return {"PYTHONPATH": os.pathsep.join([here] + [p for p in [os.environ.get("PYTHONPATH")] if p])}

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
        from .torchnet.feed import DECODES, decode_default, device_decoder
        cuda, missing = torch.cuda.is_available(), []
        try:
            decode = decode_default()
        except Error as e:
            decode = None
            missing.append({"what": "TF_DECODE", "why": str(e), "fix": f"set TF_DECODE to one of {', '.join(DECODES)}, "
                            "or unset it (cpu: OpenCV decodes, as Caffe)"})
        try:
            if decode == "device":
                device_decoder()
        except Error as e:
            missing.append({"what": "torchvision", "why": str(e), "fix": "pip install 'transferfeat[gpu-decode]' "
                            "(a torchvision built for this PyTorch), or unset TF_DECODE"})
        if decode == "device" and not cuda:
            missing.append({"what": "GPU", "why": "TF_DECODE=device decodes on a GPU and torch sees none",
                            "fix": "unset TF_DECODE (or set it to cpu) on this machine"})
        return {"torch": torch.__version__, "cuda": torch.version.cuda if cuda else None,
                "torch_gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else []}, missing
