"""A stand-in for `caffe train` at the subprocess boundary: reads the real solver and train net,
writes Caffe 1.0 log lines and snapshot pairs of the net's real shapes (zeros), resumes from
-snapshot, snapshots and stops on SIGINT.

Knobs (environment): FAKE_CAFFE_DELAY seconds per iteration (a file fake-caffe-delay in the net
folder overrides it, as fake-caffe-crash-at does FAKE_CAFFE_CRASH_AT); FAKE_CAFFE_CRASH_AT=N exits 134
when reaching iteration N, once per file named by FAKE_CAFFE_CRASH_ONCE (or always without it);
FAKE_CAFFE_BAD_SNAPSHOT=N exits 134 at once when resumed from iteration N's snapshot; FAKE_CAFFE_NAN_AT=N
shows a loss of nan from iteration N on (and, as Caffe does then, a test accuracy of 1); FAKE_CAFFE_SIGBUS_AT=N
dies of SIGBUS at iteration N (as Caffe reading past the end of a cut LMDB).
Every call is appended to fake-caffe-calls.jsonl in the net folder, with start and end times.
"""
import json
import os
import re
import signal
import sys
import time


def solver_values(path):
    text = open(path).read()
    return {k: v.strip('"') for k, v in re.findall(r"^(\w+): (\S+)", text, re.M)}


def snapshot_bytes(train_net, it, model_name):
    """A caffemodel and a solverstate of the net's learnable shapes, all zeros."""
    import numpy as np
    from transferfeat.caffeproto import BlobProto, SolverState, net_bytes
    from transferfeat.netspec import read
    spec = read(train_net)
    layers = [(l.name, l.type, [np.zeros(s, np.float32) for s in l.params]) for l in spec.layers if l.params]
    history = [BlobProto(data=np.zeros(int(np.prod(s)), np.float32), shape=s) for l in spec.layers for s in l.params]
    return net_bytes(spec.name, layers), SolverState(it, model_name, history).to_bytes()


def main(argv):
    args = dict(zip(argv[1::2], argv[2::2])) if argv[0] == "train" else {}
    s = solver_values(args["-solver"])
    max_iter, every = int(s["max_iter"]), int(s.get("snapshot", 0))
    test_every, display = int(s.get("test_interval", 0)), int(s.get("display", 1))
    prefix = s["snapshot_prefix"]
    start = 0
    if "-snapshot" in args:
        start = int(re.search(r"_iter_(\d+)\.solverstate$", args["-snapshot"]).group(1))
        open(args["-snapshot"], "rb").read()
    if "-weights" in args:
        open(args["-weights"], "rb").read()         # the base net's weights must exist
    record = {"argv": argv, "start": time.time(), "pid": os.getpid()}
    stop = []
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    delay = float(open("fake-caffe-delay").read() if os.path.exists("fake-caffe-delay")
                  else os.environ.get("FAKE_CAFFE_DELAY", "0"))
    crash_at = int(open("fake-caffe-crash-at").read() if os.path.exists("fake-caffe-crash-at")
                   else os.environ.get("FAKE_CAFFE_CRASH_AT", "-1"))
    once = os.environ.get("FAKE_CAFFE_CRASH_ONCE")
    nan_at = int(os.environ.get("FAKE_CAFFE_NAN_AT", "-1"))
    if "-snapshot" in args and str(start) == os.environ.get("FAKE_CAFFE_BAD_SNAPSHOT"):
        print(f"F0101 00:00:00.000000 1 sgd_solver.cpp:300] Check failed: history_[i]->count() from iteration {start}",
              file=sys.stderr)
        return 134

    def snapshot(it):
        model, state = snapshot_bytes(s["train_net"], it, f"{prefix}_iter_{it}.caffemodel")
        for ext, data in (("caffemodel", model), ("solverstate", state)):      # in place, as Caffe writes
            with open(f"{prefix}_iter_{it}.{ext}", "wb") as f:
                f.write(data)
        print(f"I0101 00:00:00.000000 1 solver.cpp:464] Snapshotting to binary proto file {prefix}_iter_{it}.caffemodel",
              file=sys.stderr, flush=True)

    it = start
    exit_code = 0
    bus_at = int(os.environ.get("FAKE_CAFFE_SIGBUS_AT", "-1"))
    while True:
        if it == bus_at:                     # as a read past the end of a cut memory-mapped LMDB ends Caffe
            os.kill(os.getpid(), signal.SIGBUS)
        if it == crash_at and not (once and os.path.exists(once)):
            if once:
                open(once, "w").close()
            print("F0101 00:00:00.000000 1 syncedmem.cpp:56] Check failed: error == cudaSuccess (2 vs. 0)  out of memory\n"
                  "*** Check failure stack trace: ***\n    @     0x7f3c2a1b2c3d  google::LogMessage::Fail()\n"
                  "    @     0x7f3c2a1b2e4f  caffe::SyncedMemory::to_gpu()", file=sys.stderr)
            exit_code = 134
            break
        diverged = 0 <= nan_at <= it
        if it % display == 0:
            print(f"I0101 00:00:00.000000 1 solver.cpp:239] Iteration {it} (10 iter/s, 2s/20 iters), "
                  f"loss = {'nan' if diverged else f'{3.0 / (1 + it):.5f}'}", file=sys.stderr, flush=True)
            print(f"I0101 00:00:00.000000 1 sgd_solver.cpp:112] Iteration {it}, lr = 0.01", file=sys.stderr, flush=True)
        if test_every and it % test_every == 0 and it > start:
            acc, loss = (1, "nan") if diverged else (f"{it / (max_iter + 1):.4f}", f"{1.0 / (1 + it):.4f}")
            print(f"I0101 00:00:00.000000 1 solver.cpp:347] Iteration {it}, Testing net (#0)\n"
                  f"I0101 00:00:00.000000 1 solver.cpp:414]     Test net output #0: accuracy = {acc}\n"
                  f"I0101 00:00:00.000000 1 solver.cpp:414]     Test net output #1: loss = {loss}",
                  file=sys.stderr, flush=True)
        if it >= max_iter:
            snapshot(it)
            print("I0101 00:00:00.000000 1 solver.cpp:332] Optimization Done.", file=sys.stderr)
            break
        if stop:
            snapshot(it)
            print("I0101 00:00:00.000000 1 solver.cpp:333] Optimization stopped early.", file=sys.stderr)
            break
        it += 1
        if every and it % every == 0 and it < max_iter:
            snapshot(it)
        time.sleep(delay)
    record.update(end=time.time(), exit=exit_code, last_iter=it)
    with open("fake-caffe-calls.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    return exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
