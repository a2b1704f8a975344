"""The torch engine as a program, with `caffe train` and `caffe test`'s options and output. Every
failure ends in one glog ``F`` line ("Check failed: …") and exit code 1, never a Python traceback."""
from __future__ import annotations

import signal
import sys

# Signals are heard from the first moment (importing torch takes a second or two): a stop asked for
# then is honoured once the solver exists, instead of a KeyboardInterrupt traceback. tf starts this
# program with SIGINT blocked (procs.child_setup), so one sent during the interpreter's own start-up
# waits until here.
EARLY: list = []
signal.signal(signal.SIGINT, lambda *_: EARLY.append("stop"))
signal.signal(signal.SIGHUP, lambda *_: EARLY.append("snapshot"))
signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGHUP})

from importlib.metadata import version  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from ...errors import Error  # noqa: E402
from ...netspec import read as read_spec  # noqa: E402
from . import check_precision  # noqa: E402
from .feed import Feed, check_decode  # noqa: E402
from .glog import Log, g  # noqa: E402
from .model import Model, copy_weights  # noqa: E402
from .solver import Solver, score, set_precision  # noqa: E402

USAGE = ("usage: torchnet train -solver FILE [-snapshot S | -weights W] [-gpu N] [-precision P] | "
         "test -model FILE -weights W [-iterations K] [-gpu N] [-precision P]")
OPTIONS = {"train": ("solver", "snapshot", "weights", "gpu", "precision"),
           "test": ("model", "weights", "iterations", "gpu", "precision")}


def header(device: str, precision: str) -> str:
    return (f"transferfeat {version('transferfeat')} torch engine: torch {torch.__version__}, device {device}, "
            f"precision {precision}, threads {torch.get_num_threads()}")


def parse_args(argv: list) -> tuple[str, dict]:
    if not argv or argv[0] not in OPTIONS:
        raise Error(USAGE)
    command, args = argv[0], {}
    it = iter(argv[1:])
    for a in it:
        name = a.lstrip("-")
        if not a.startswith("-") or name not in OPTIONS[command]:
            raise Error(f"unexpected argument {a!r}; {USAGE}")
        args[name] = next(it, "")
    check_precision(args.setdefault("precision", "fp32"))
    return command, args


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    log, solver = Log(), None
    try:
        command, args = parse_args(argv)
        device = f"cuda:{args['gpu']}" if args.get("gpu") not in (None, "") else "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise Error("no CUDA device: torch sees no GPU (tf doctor)")
        check_decode(device)
        log(header(device, args["precision"]), "torchnet.py:1")
        if command == "test":
            return test(args, device, log)
        solver = Solver(args["solver"], device, args["precision"], log)
        signal.signal(signal.SIGINT, lambda *_: setattr(solver, "stop_requested", True))
        signal.signal(signal.SIGHUP, lambda *_: setattr(solver, "snapshot_requested", True))
        solver.stop_requested = "stop" in EARLY
        if args.get("weights") and not args.get("snapshot"):
            solver.copy_weights(args["weights"])
        solver.solve(resume=args.get("snapshot"))
        log("Optimization Done.", "caffe.cpp:250")
        return 0
    except Error as e:
        log(f"Check failed: {e}", "torchnet.py:0", "F")
        return 1
    except Exception as e:                              # noqa: BLE001 - torch's own errors, one line too
        log(f"Check failed: {type(e).__name__}: {' '.join(str(e).split())[:500]}", "torchnet.py:0", "F")
        return 1
    finally:
        if solver is not None:
            solver.close()


def test(args: dict, device: str, log: Log) -> int:
    """`caffe test`: score a model's TEST net on K batches; print each batch's outputs and the means."""
    set_precision(torch.device(device), args["precision"])
    spec = read_spec(Path(args["model"]), "TEST")
    net = Model(spec, torch.device(device), "TEST")
    copy_weights(net, Path(args["weights"]), log)

    def each(b, outs):
        for name, v, _ in outs:
            log(f"Batch {b}, {name} = {g(v)}", "caffe.cpp:304")
    feed = Feed(spec, "TEST", 0, log, device=device)
    try:
        means = score(net, feed, int(args.get("iterations", 50)), device, each=each)
    finally:
        feed.close()
    log(f"Loss: {g(sum(mean * w for _, mean, w in means))}", "caffe.cpp:309")
    for name, mean, w in means:
        extra = f" (* {g(w)} = {g(w * mean)} loss)" if w else ""
        log(f"{name} = {g(mean)}{extra}", "caffe.cpp:320")
    return 0


if __name__ == "__main__":
    sys.exit(main())
