"""Training throughput, torch engine against Caffe, in one run on the same net folder and data:
forward + backward (+ the SGD update for torch) images/s, same number of threads. Caffe's number is
`caffe time`'s "Average Forward-Backward" on the same train prototxt. Goal on the CPU: torch >= 3x.

    python benchmarks/bench_engine.py [--net paper|mini] [--batch 256] [--iterations 3] [--device cpu|cuda]
                                      [--records raw|encoded] [--cudnn-benchmark] [--channels-last] [--json FILE]
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from transferfeat.databases import build_db

from transferfeat.mean import compute_mean, write_mean
from transferfeat.engines.caffe import find_tool
from transferfeat.render import Renderer
from transferfeat.study import Study
from transferfeat.synth import synthesize



def folder(tmp: Path, net: str, batch: int, encoded: bool = False) -> Path:
    """half0A of the paper (or mini) study, on a small synthetic LMDB (raw or encoded records) at the
    study's image size."""
    study = Study.load("paper" if net == "paper" else "mini")
    size = study.config.input.resize
    synthesize(tmp / "img", classes=4, train_per_class=16, valid_per_class=1, size=(size, size), seed=1)
    data = tmp / "data"
    for name, part in (("half0A_train", "whole_train"), ("half0A_valid", "whole_valid")):
        d = data / name
        d.mkdir(parents=True)
        (d / "files.txt").write_text((tmp / "img" / part / "files.txt").read_text())
        build_db(d / "files.txt", tmp / "img" / ("train" if "train" in name else "val"), d / "lmdb",
                 classes=study.config.datasets.classes, shuffle=False, encoded=encoded, progress=False)
    write_mean(compute_mean(data / "half0A_train" / "lmdb", progress=False), data / "half0A_train" / "mean.binaryproto")
    d = Renderer(study).render(study.net("half0A"), tmp / "results", data_root=data)
    train = d / "imagenet_train.prototxt"
    train.write_text(re.sub(r"batch_size: \d+", f"batch_size: {batch}", train.read_text()))
    return d


def caffe_rate(d: Path, batch: int, iterations: int, threads: int) -> float:
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads), GLOG_logtostderr="1")
    out = subprocess.run([str(find_tool("caffe")), "time", "-model", "imagenet_train.prototxt", "-iterations",
                          str(iterations)], cwd=d, capture_output=True, text=True, env=env, timeout=3600)
    ms = float(re.search(r"Average Forward-Backward: ([\d.]+) ms", out.stderr).group(1))
    return batch / (ms / 1000)


def torch_rates(d: Path, batch: int, iterations: int, device: str, precision: str, cudnn_benchmark: bool = False,
                channels_last: bool = False) -> dict:
    """Images/s of the training step with its batch resident on the device (the model alone) and fed
    by the engine's feed; ``cudnn_benchmark`` and ``channels_last`` try those settings (measurement
    only: the engine runs neither)."""
    import torch
    from transferfeat.engines.torchnet.glog import Quiet
    from transferfeat.engines.torchnet.solver import Solver, to_device
    s = Solver(d / "imagenet_solver.prototxt", device, precision, log=Quiet())
    if cudnn_benchmark:
        torch.backends.cudnn.benchmark = True
    if channels_last:
        for blobs in s.net.params.values():
            for p in blobs:
                if p.dim() == 4:
                    p.data = p.data.contiguous(memory_format=torch.channels_last)
        feed = s.feed("train")
        plain = feed.next

        def channels_last_next(stop=lambda: False):
            data, labels = plain(stop)
            return data.contiguous(memory_format=torch.channels_last), labels
        feed.next = channels_last_next
    resident = to_device(s.feed("train").next(), s.device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def timed(step, n):
        step()
        sync()
        t = time.perf_counter()
        for _ in range(n):
            step()
        sync()
        return batch * n / (time.perf_counter() - t)
    model = timed(lambda: s.step(resident), iterations)
    full = timed(lambda: s.step(), iterations)
    s.close()
    return {"model_alone": model, "with_input": full}


def training_flops(d: Path) -> float:
    """FLOPs of one training image (forward + backward = 3 x forward), from the net's shapes."""
    import math
    from transferfeat.netspec import read
    spec = read(d / "imagenet_train.prototxt")
    macs = 0
    for layer in spec.layers:
        if layer.type == "Convolution":
            out = spec.shapes[layer.tops[0]]
            macs += math.prod(out[1:]) * math.prod(layer.params[0][1:])
        elif layer.type == "InnerProduct":
            macs += math.prod(layer.params[0])
    return 3 * 2 * macs


def matmul_peak(device: str, precision: str) -> float:
    """The machine's dense matmul FLOP/s (the ceiling any engine's convolutions and layers work under)."""
    import torch
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a = torch.randn(4096, 4096, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    a @ a
    sync()
    t, n = time.perf_counter(), 5
    for _ in range(n):
        a @ a
    sync()
    return 2 * 4096 ** 3 * n / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--net", choices=["paper", "mini"], default="paper")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--no-caffe", action="store_true", help="Skip Caffe (e.g. on a GPU box without it).")
    ap.add_argument("--records", choices=["raw", "encoded"], default="raw", help="What the LMDB holds.")
    ap.add_argument("--cudnn-benchmark", action="store_true", help="Try cuDNN autotuning (measurement only).")
    ap.add_argument("--channels-last", action="store_true", help="Try channels-last tensors (measurement only).")
    ap.add_argument("--json", help="Also write the numbers here.")
    args = ap.parse_args()
    import torch
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        d = folder(Path(tmp), args.net, args.batch, args.records == "encoded")
        result = {"net": args.net, "batch": args.batch, "device": args.device, "precision": args.precision,
                  "records": args.records, "cudnn_benchmark": args.cudnn_benchmark, "channels_last": args.channels_last,
                  "threads": threads, "torch": torch.__version__}
        result["torch_img_s"] = torch_rates(d, args.batch, args.iterations, args.device, args.precision,
                                            args.cudnn_benchmark, args.channels_last)
        result["train_gflop_per_image"] = training_flops(d) / 1e9
        result["matmul_peak_gflop_s"] = matmul_peak(args.device, args.precision) / 1e9
        result["ceiling_img_s"] = result["matmul_peak_gflop_s"] / result["train_gflop_per_image"]
        if not args.no_caffe:
            result["caffe_img_s"] = caffe_rate(d, args.batch, args.iterations, threads)
    t = result["torch_img_s"]
    print(f"{args.net} net, batch {args.batch}, {args.device} ({threads} threads), {args.precision}, torch {torch.__version__}")
    print(f"  ceiling: matmul peak {result['matmul_peak_gflop_s']:.0f} GFLOP/s / {result['train_gflop_per_image']:.2f} "
          f"GFLOP per training image = {result['ceiling_img_s']:.1f} img/s; torch reaches "
          f"{t['model_alone'] / result['ceiling_img_s']:.0%} of it")
    if "caffe_img_s" in result:
        c = result["caffe_img_s"]
        print(f"  caffe (OpenBLAS), forward+backward       {c:9.1f} img/s")
        print(f"  torch, model alone (+ SGD update)        {t['model_alone']:9.1f} img/s   {t['model_alone'] / c:5.2f}x caffe (goal >= 3x)")
        print(f"  torch, with its input pipeline           {t['with_input']:9.1f} img/s   {t['with_input'] / c:5.2f}x caffe")
    else:
        print(f"  torch, model alone {t['model_alone']:.1f} img/s, with input {t['with_input']:.1f} img/s")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    sys.exit(main())
