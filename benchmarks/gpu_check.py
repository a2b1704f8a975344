"""The torch engine on a GPU, in one run that writes its numbers as JSON:

1. equivalence: the mini net without dropout, one training step at a time on the CPU and on the GPU from
   the same weights, solver history and batch (the CPU engine is the one checked against real Caffe):
   the largest difference of each step's weights, relative to the blob's largest value; and one forward
   pass of the test net (loss, accuracy);
2. convergence: `tf train half0A --engine torch --gpu 0` on the mini study's data in fp32 and in bf16,
   their top-1 (mean of the 10 best tests) side by side;
3. throughput, per stage in one run (the paper's CaffeNet, batch 256, synthetic 256x256 records):
   benchmarks/bench_feed.py (the feed alone, per reader count, raw and encoded), the copy of a uint8
   batch to the GPU, benchmarks/bench_engine.py (the model alone, and end to end through the feed)
   for fp32, tf32 and bf16 on raw and on encoded records, and fp32 with cuDNN autotuning and with
   channels-last tensors;
4. the study's cost: `tf plan --images-per-second R` at each end-to-end rate measured;
5. the opt-in decode on the GPU (TF_DECODE=device, torchvision's nvJPEG): its pixels against OpenCV's
   on synthetic JPEGs (quality 90, 256x256), and the engine end to end on encoded records with it
   (in step 3).

    python benchmarks/gpu_check.py --out DIR [--gpu 0]      (--gpu -1: a dry run of the script on the CPU)
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from transferfeat.caffeproto import net_bytes
from transferfeat.demo import prepare_data
from transferfeat.engines.torchnet.feed import Feed
from transferfeat.engines.torchnet.glog import Quiet
from transferfeat.engines.torchnet.solver import Solver
from transferfeat.render import Renderer
from transferfeat.study import Study



def without_dropout(study: Study, data: Path, where: Path) -> Path:
    Renderer(study).render_all([study.net("half0A")], where, data)
    d = where / "half0A"
    train = d / "imagenet_train.prototxt"
    train.write_text("\nlayer {".join(b for b in train.read_text().split("\nlayer {") if 'type: "Dropout"' not in b))
    return d


def equivalence(study: Study, data: Path, tmp: Path, device: str, steps: int = 60) -> dict:
    d = without_dropout(study, data, tmp / "equivalence")
    cpu = Solver(d / "imagenet_solver.prototxt", "cpu", log=Quiet())
    gpu = Solver(d / "imagenet_solver.prototxt", device, log=Quiet())
    layers = [(l.name, l.type, [t.detach().numpy() for t in cpu.net.params.get(l.name, [])]) for l in cpu.train_spec.layers]
    (d / "init.caffemodel").write_bytes(net_bytes(cpu.train_spec.name, layers))
    gpu.copy_weights("init.caffemodel")
    feed = Feed(cpu.train_spec, "TRAIN", 0, Quiet())
    worst = []
    for _ in range(steps):
        batch = feed.next()
        cpu.step(batch)
        gpu.step(batch)
        diffs = []
        for name, blobs in cpu.net.params.items():
            for a, b in zip(blobs, gpu.net.params[name]):
                ref = a.detach().numpy()
                diffs.append(float(np.abs(b.detach().cpu().numpy() - ref).max()) / max(float(np.abs(ref).max()), 1e-12))
                b.data.copy_(a.data)                      # back in lockstep: each step is compared on its own
        for h_cpu, h_gpu in zip(cpu.history, gpu.history):
            h_gpu.copy_(h_cpu)
        worst.append(max(diffs))
    test_batch = Feed(cpu.test_specs[0], "TEST", 1, Quiet()).next()
    with torch.no_grad():
        out_cpu = cpu.test_nets[0].outputs(cpu.test_nets[0].forward(*test_batch))
        out_gpu = gpu.test_nets[0].outputs(gpu.test_nets[0].forward(test_batch[0].to(device), test_batch[1].to(device)))
    worst = np.array(worst)
    return {"steps": steps, "within_1e-5": int((worst <= 1e-5).sum()), "within_1e-3": int((worst <= 1e-3).sum()),
            "median_worst_blob": float(np.median(worst)), "max_worst_blob": float(worst.max()),
            "test_outputs_cpu": {n: v for n, v, _ in out_cpu}, "test_outputs_gpu": {n: v for n, v, _ in out_gpu}}


def convergence(study_file: Path, data: Path, tmp: Path, gpu: int) -> dict:
    out = {}
    study = Study.load(study_file)
    for precision in ("fp32", "bf16") if gpu >= 0 else ("fp32",):
        root = tmp / f"train-{precision}"
        Renderer(study).render_all([study.net("half0A")], root, data)
        t = time.perf_counter()
        on = ["--gpu", str(gpu)] if gpu >= 0 else []
        r = subprocess.run([sys.executable, "-m", "transferfeat.cli", "--study", str(study_file), "train", "half0A",
                            "--root", str(root), *on, "--engine", "torch", "--precision", precision],
                           capture_output=True, text=True)
        seconds = time.perf_counter() - t
        if r.returncode:
            out[precision] = {"error": (r.stdout + r.stderr)[-2000:]}
            continue
        res = subprocess.run([sys.executable, "-m", "transferfeat.cli", "--study", str(study_file), "results",
                              "--root", str(root), "--format", "json"], capture_output=True, text=True, check=True)
        net = json.loads(res.stdout)["nets"]["half0A"]
        out[precision] = {"seconds": round(seconds, 1), "top1_top10_mean": net["top1_top10_mean"],
                          "top1_last": net["top1_last"], "iterations": net["iterations"]}
    return out


def bench(out: Path, script: str, name: str, *args, env: dict = None) -> dict:
    """One of the benchmarks beside this file (``env``: variables added), its JSON read back (or its error)."""
    path = out / f"{name}.json"
    r = subprocess.run([sys.executable, str(Path(__file__).with_name(script)), *map(str, args), "--json", str(path)],
                       capture_output=True, text=True, env={**os.environ, **(env or {})})
    print(r.stdout, flush=True)
    return json.loads(path.read_text()) if path.is_file() else {"error": (r.stdout + r.stderr)[-2000:]}


def copy_rate(device: str, batch: int = 256, crop: int = 227, n: int = 50) -> float:
    """Images/s of the feed's uint8 batches from pinned memory to the device."""
    x = torch.empty((batch, 3, crop, crop), dtype=torch.uint8).pin_memory()
    x.to(device, non_blocking=True)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        x.to(device, non_blocking=True)
    torch.cuda.synchronize()
    return batch * n / (time.perf_counter() - t)


def throughput(out: Path, iterations: int, device: str) -> dict:
    """Where the time goes, per stage and in one run: the feed alone (per reader count, raw and
    encoded records), the copy to the device, the model alone and the engine end to end, per
    precision and record kind; fp32 with cuDNN autotuning and with channels-last tensors."""
    kind = device.split(":")[0]
    cores = len(os.sched_getaffinity(0))
    readers = ",".join(str(n) for n in sorted({1, 2, 4, 8, 16, cores}) if n <= cores)
    rates = {"feed_alone": bench(out, "bench_feed.py", "bench_feed", "--device", kind, "--readers", readers,
                                 "--images", 1024)}
    if kind == "cuda":
        rates["copy"] = copy_rate(device)
    for records in ("raw", "encoded"):
        for precision in (("fp32", "tf32", "bf16") if kind != "cpu" else ("fp32",)):
            rates[f"{records}_{precision}"] = bench(out, "bench_engine.py", f"bench_engine_{records}_{precision}",
                                                   "--device", kind, "--precision", precision, "--records", records,
                                                   "--no-caffe", "--iterations", iterations)
    if kind == "cuda":
        rates["encoded_fp32_decoded_on_the_device"] = bench(out, "bench_engine.py", "bench_engine_device_decode",
                                                            "--device", kind, "--precision", "fp32", "--records",
                                                            "encoded", "--no-caffe", "--iterations", iterations,
                                                            env={"TF_DECODE": "device"})
        for option in ("--cudnn-benchmark", "--channels-last"):
            rates[f"raw_fp32{option.replace('-', '_')}"] = bench(out, "bench_engine.py", f"bench_engine{option.replace('-', '_')}",
                                                                 "--device", kind, "--precision", "fp32", option,
                                                                 "--no-caffe", "--iterations", iterations)
    return rates


def device_decode(device: str, n: int = 512, size: int = 256) -> dict:
    """torchvision's decode_jpeg on ``device`` (nvJPEG) against OpenCV's decode (Caffe's) of the same
    JPEGs: how many pixel values differ and by how much, and both decoders' images/s on a batch."""
    import cv2
    from transferfeat.engines.torchnet.feed import device_decoder
    decode = device_decoder()
    from bench_db import photo
    rng = np.random.RandomState(0)
    jpegs = [cv2.imencode(".jpg", photo(rng, size, size), [cv2.IMWRITE_JPEG_QUALITY, 90])[1].ravel() for _ in range(n)]
    t = time.perf_counter()
    ref = np.stack([cv2.imdecode(j, cv2.IMREAD_COLOR) for j in jpegs])          # one core
    cpu_rate = n / (time.perf_counter() - t)
    data = [torch.from_numpy(j.copy()) for j in jpegs]
    decode(data[:8], device)
    torch.cuda.synchronize()
    t = time.perf_counter()
    got = torch.stack(decode(data, device)).flip(1)
    torch.cuda.synchronize()
    device_rate = n / (time.perf_counter() - t)
    diff = np.abs(got.permute(0, 2, 3, 1).cpu().numpy().astype(np.int16) - ref.astype(np.int16))
    return {"images": n, "size": size, "max_abs_difference": int(diff.max()), "mean_abs_difference": float(diff.mean()),
            "values_differing": float((diff > 0).mean()), "values_differing_by_more_than_2": float((diff > 2).mean()),
            "opencv_one_core_img_s": round(cpu_rate), "device_batch_img_s": round(device_rate)}


def study_cost(rates: dict) -> dict:
    """The paper study's GPU-hours and wall days on 1, 8 and 64 GPUs (tf plan) at each end-to-end rate measured."""
    out = {}
    for name, r in rates.items():
        speed = r.get("torch_img_s", {}).get("with_input") if isinstance(r, dict) else None
        if speed:
            p = subprocess.run([sys.executable, "-m", "transferfeat.cli", "plan", "--images-per-second", str(speed),
                                "--gpu-counts", "1,8,64", "--format", "json"], capture_output=True, text=True, check=True)
            plan = json.loads(p.stdout)
            out[name] = {"images_per_second": round(speed), "gpu_hours": round(plan["gpu_hours"]),
                         "wall_days": {s["gpus"]: {"per_net": round(s["per_net"]["makespan_days"], 1),
                                                   "blocks": round(s["blocks"]["makespan_days"], 1)}
                                       for s in plan["schedules"]}}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--gpu", type=int, default=0)
    ap.add_argument("--iterations", type=int, default=20, help="Timed iterations per throughput run.")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    device = f"cuda:{args.gpu}" if args.gpu >= 0 else "cpu"
    result = {"device": torch.cuda.get_device_name(args.gpu) if args.gpu >= 0 else "cpu", "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        study_file = Path(Study.load("mini").path)
        study = Study.load(study_file)
        t = time.perf_counter()
        data = prepare_data(study, tmp, study.select(["half0A"]), echo=lambda *_: None)
        result["data_seconds"] = round(time.perf_counter() - t, 1)
        for name, step in (("equivalence", lambda: equivalence(study, data, tmp, device)),
                           ("convergence", lambda: convergence(study_file, data, tmp, args.gpu)),
                           ("throughput", lambda: throughput(args.out, args.iterations, device)),
                           ("study_cost", lambda: study_cost(result.get("throughput", {}))),
                           ("device_decode", lambda: device_decode(device) if args.gpu >= 0 else "no GPU")):
            try:
                result[name] = step()
            except Exception as e:                        # keep what the other parts measured
                result[name] = {"error": f"{type(e).__name__}: {e}"}
            (args.out / "gpu_check.json").write_text(json.dumps(result, indent=1))
            print(name, json.dumps(result[name], indent=1)[:3000], flush=True)


if __name__ == "__main__":
    sys.exit(main())
